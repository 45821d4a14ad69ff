package media

import (
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"
)

// Our media served to other servers (server-server API "Content Repository"), as
// multipart/mixed: a JSON metadata part (an empty object: the spec defines no metadata yet),
// then the content with its Content-Type and Content-Disposition. Only our own media is
// served: a server asks the origin, never a cache.

// GET /_matrix/federation/v1/media/download/{mediaId} (server-server getContent).
func (r *Repository) federationDownload(w http.ResponseWriter, req *http.Request) error {
	mediaID := pathParam(req, "mediaId")
	if !validMediaID(mediaID) {
		return errNotFound()
	}
	timeout, err := timeoutParam(req)
	if err != nil {
		return err
	}
	m, err := r.localMedia(req.Context(), mediaID, timeout)
	if err != nil {
		return err
	}
	contentType := servedType(m.ContentType)
	return r.serveMultipart(w, m.SHA256, contentType, contentDisposition(contentType, m.UploadName))
}

// GET /_matrix/federation/v1/media/thumbnail/{mediaId} (server-server getContentThumbnail).
func (r *Repository) federationThumbnail(w http.ResponseWriter, req *http.Request) error {
	mediaID := pathParam(req, "mediaId")
	if !validMediaID(mediaID) {
		return errNotFound()
	}
	t, err := r.thumbnailFor(req, r.cfg.ServerName, mediaID)
	if err != nil {
		return err
	}
	return r.serveMultipart(w, t.SHA256, t.ContentType, thumbnailDisposition(t.ContentType))
}

// serveMultipart sends the content whose SHA-256 is hash as the two-part answer of the
// federation media endpoints, streamed from its file.
func (r *Repository) serveMultipart(w http.ResponseWriter, hash, contentType, disposition string) error {
	f, err := r.openFile(hash)
	if err != nil {
		return err
	}
	defer f.Close()
	parts := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+parts.Boundary())
	w.WriteHeader(http.StatusOK)
	// From here on the status is sent: a failure can only cut the answer short, which the
	// receiver sees as a missing closing boundary.
	if err := writeParts(parts, f, contentType, disposition); err != nil {
		r.cfg.Log.Debug("media answer cut short", "sha256", hash, "err", err)
	}
	return nil
}

// writeParts writes the metadata part, the content part with content's bytes, and the
// closing boundary.
func writeParts(parts *multipart.Writer, content io.Reader, contentType, disposition string) error {
	metadata, err := parts.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err != nil {
		return err
	}
	if _, err := metadata.Write([]byte("{}")); err != nil {
		return err
	}
	part, err := parts.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disposition}})
	if err != nil {
		return err
	}
	if _, err := io.Copy(part, content); err != nil {
		return err
	}
	return parts.Close()
}
