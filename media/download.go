package media

import (
	"context"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// contentSecurityPolicy is the policy the content repository recommends for served content
// (client-server API "Content repository").
const contentSecurityPolicy = "sandbox; default-src 'none'; script-src 'none'; plugin-types application/pdf; style-src 'unsafe-inline'; object-src 'self';"

// cacheControl lets the client keep media, which never changes, for a day. NOTSPEC: Synapse
// says public; authenticated media is private, so that no shared cache hands it to
// whoever asks without a token.
const cacheControl = "private, max-age=86400, immutable"

// pollInterval is how often a download waiting for a pending upload looks in the database,
// for uploads received by another process sharing it; uploads received here wake it at once.
const pollInterval = time.Second

// GET /_matrix/client/v1/media/download/{serverName}/{mediaId}[/{fileName}]
// (getContentAuthed, getContentOverrideNameAuthed). The content is always served from here:
// the 307/308 redirects the spec allows are for servers that keep media elsewhere.
func (r *Repository) download(w http.ResponseWriter, req *http.Request, _ User) error {
	serverName, mediaID, err := mediaPath(req)
	if err != nil {
		return err
	}
	name, overridden, err := fileNameParam(req)
	if err != nil {
		return err
	}
	timeout, err := timeoutParam(req)
	if err != nil {
		return err
	}
	m, err := r.lookup(req.Context(), serverName, mediaID, timeout)
	if err != nil {
		return err
	}
	if !overridden {
		name = m.UploadName
	}
	contentType := servedType(m.ContentType)
	return r.serveFile(w, req, m.SHA256, contentType, contentDisposition(contentType, name), m.CreatedTS)
}

// GET /_matrix/media/v3/download/… and /_matrix/media/v3/thumbnail/… (getContent,
// getContentOverrideName, getContentThumbnail, deprecated): frozen, as the spec asks of
// servers since v1.12 ("Client behaviour"): media uploaded or cached after the freeze is
// served only by the authenticated endpoints, and all of ours is, so these answer 404
// M_NOT_FOUND for every media ID, after checking the path like the others. NOTSPEC: this is
// Synapse's default (enable_authenticated_media, under which all new media is
// authenticated). allow_remote, timeout_ms and allow_redirect need no handling then.
func (r *Repository) frozen(_ http.ResponseWriter, req *http.Request) error {
	if _, _, err := mediaPath(req); err != nil {
		return err
	}
	return httpapi.NotFound("Media is only served by the authenticated endpoints, /_matrix/client/v1/media/")
}

// lookup finds the media that mxc://origin/mediaID names, ready to serve: ours from the
// database, waiting up to timeout for the content of a pending upload; another server's
// from the cache, or fetched from its origin. Unknown, expired and quarantined media is
// 404 M_NOT_FOUND; a pending upload still pending after timeout 504 M_NOT_YET_UPLOADED.
func (r *Repository) lookup(ctx context.Context, origin, mediaID string, timeout time.Duration) (*storage.Media, error) {
	if origin == r.cfg.ServerName {
		return r.localMedia(ctx, mediaID, timeout)
	}
	m, err := storage.LoadMedia(ctx, r.cfg.DB, origin, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return r.fetchRemote(ctx, origin, mediaID, timeout)
	}
	if err != nil {
		return nil, err
	}
	if m.Quarantined {
		return nil, errNotFound()
	}
	return m, nil
}

// localMedia is our media mediaID, waiting up to timeout for a pending upload's content.
func (r *Repository) localMedia(ctx context.Context, mediaID string, timeout time.Duration) (*storage.Media, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	var poll *time.Ticker
	for {
		uploaded := r.uploadSignal()
		m, err := storage.LoadMedia(ctx, r.cfg.DB, r.cfg.ServerName, mediaID)
		switch {
		case errors.Is(err, storage.ErrNotFound):
			return nil, errNotFound()
		case err != nil:
			return nil, err
		case m.Quarantined:
			return nil, errNotFound()
		case !m.Pending():
			return m, nil
		case m.UnusedExpiresTS <= r.nowMS():
			return nil, errNotFound()
		}
		if poll == nil {
			poll = time.NewTicker(pollInterval)
			defer poll.Stop()
		}
		select {
		case <-uploaded:
		case <-poll.C:
		case <-deadline.C:
			return nil, errNotYetUploaded()
		case <-ctx.Done():
			return nil, errNotYetUploaded()
		}
	}
}

// openFile opens the file of the content whose SHA-256 is hash; 404 M_NOT_FOUND (and an
// error in the log: the database names a file that is gone) when it is missing.
func (r *Repository) openFile(hash string) (*os.File, error) {
	f, err := r.store.open(hash)
	if errors.Is(err, fs.ErrNotExist) {
		r.cfg.Log.Error("media file missing", "sha256", hash)
		return nil, errNotFound()
	}
	return f, err
}

// serveFile sends the content whose SHA-256 is hash with the headers the content repository
// wants: its type and disposition, the Content-Security-Policy and
// Cross-Origin-Resource-Policy, plus nosniff (NOTSPEC: as Synapse, so that no browser
// second-guesses the type) and caching. Range requests are answered (video players use
// them).
func (r *Repository) serveFile(w http.ResponseWriter, req *http.Request, hash, contentType, disposition string, createdTS int64) error {
	f, err := r.openFile(hash)
	if err != nil {
		return err
	}
	defer f.Close()
	header := w.Header()
	header.Set("Content-Type", contentType)
	header.Set("Content-Disposition", disposition)
	setSecurityHeaders(header)
	header.Set("Cache-Control", cacheControl)
	header.Set("ETag", `"`+hash+`"`)
	http.ServeContent(w, req, "", time.UnixMilli(createdTS), f)
	return nil
}

// setSecurityHeaders sets the headers that every piece of served content carries.
func setSecurityHeaders(header http.Header) {
	header.Set("Content-Security-Policy", contentSecurityPolicy)
	header.Set("Cross-Origin-Resource-Policy", "cross-origin")
	header.Set("X-Content-Type-Options", "nosniff")
}

// servedType is the Content-Type to serve stored content with: as stored, or
// application/octet-stream for none (downloadContentType).
func servedType(stored string) string {
	if stored == "" {
		return "application/octet-stream"
	}
	return stored
}

// fileNameParam is the {fileName} path parameter of a download, and whether there is one.
func fileNameParam(req *http.Request) (string, bool, error) {
	name := pathParam(req, "fileName")
	if name == "" {
		return "", false, nil
	}
	if len(name) > maxNameLength {
		return "", false, httpapi.InvalidParam("fileName must be at most %d bytes", maxNameLength)
	}
	return name, true, nil
}

// timeoutParam is the timeout_ms query parameter: 20 s when absent, at most maxTimeout.
func timeoutParam(req *http.Request) (time.Duration, error) {
	raw := req.URL.Query().Get("timeout_ms")
	if raw == "" {
		return defaultTimeout, nil
	}
	ms, err := strconv.ParseInt(raw, 10, 64)
	if err != nil {
		return 0, httpapi.InvalidParam("timeout_ms must be an integer")
	}
	return time.Duration(min(max(ms, 0), maxTimeout.Milliseconds())) * time.Millisecond, nil
}

func errNotFound() *httpapi.Error { return httpapi.NotFound("Media not found") }

func errNotYetUploaded() *httpapi.Error {
	return httpapi.NewError(http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED", "Content has not yet been uploaded")
}
