package media

import (
	"crypto/rand"
	"errors"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// mediaIDLength is the length of the media IDs we make: 24 characters of base32 (A-Z, 2-7),
// 120 random bits.
const mediaIDLength = 24

// newMediaID makes a random media ID.
func newMediaID() string {
	return rand.Text()[:mediaIDLength]
}

// POST /_matrix/media/v3/upload (client-server API "Content repository", uploadContent).
func (r *Repository) upload(w http.ResponseWriter, req *http.Request, user User) error {
	if err := r.mayUploadNow(user); err != nil {
		return err
	}
	m, err := r.receive(req)
	if err != nil {
		return err
	}
	m.Origin, m.MediaID, m.UserID = r.cfg.ServerName, newMediaID(), user.UserID
	if err := storage.InsertMedia(req.Context(), r.cfg.DB, m); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"content_uri": "mxc://" + m.Origin + "/" + m.MediaID})
	return nil
}

// POST /_matrix/media/v1/create (createContent): a media ID whose content comes later by
// PUT /upload/{serverName}/{mediaId}, unless it expires unused first.
func (r *Repository) create(w http.ResponseWriter, req *http.Request, user User) error {
	if err := r.mayUploadNow(user); err != nil {
		return err
	}
	now := r.cfg.Clock()
	m := &storage.Media{Origin: r.cfg.ServerName, MediaID: newMediaID(), UserID: user.UserID,
		CreatedTS: now.UnixMilli(), UnusedExpiresTS: now.Add(unusedExpiry).UnixMilli()}
	err := r.cfg.DB.WithTx(req.Context(), func(tx *storage.Tx) error {
		return storage.CreatePendingMedia(req.Context(), tx, m, maxPendingUploads, now.UnixMilli())
	})
	if errors.Is(err, storage.ErrTooManyPending) {
		// The spec asks for 429 M_LIMIT_EXCEEDED; the earliest of the pending uploads to
		// expire frees a slot within unusedExpiry at the latest.
		return httpapi.LimitExceeded(unusedExpiry)
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"content_uri":       "mxc://" + m.Origin + "/" + m.MediaID,
		"unused_expires_at": m.UnusedExpiresTS,
	})
	return nil
}

// PUT /_matrix/media/v3/upload/{serverName}/{mediaId} (uploadContentToMXC): the content of
// a media ID from POST /create, by the user who created it, once.
func (r *Repository) uploadPending(w http.ResponseWriter, req *http.Request, user User) error {
	if err := mayUpload(user); err != nil {
		return err
	}
	serverName, mediaID, err := mediaPath(req)
	if err != nil {
		return err
	}
	if serverName != r.cfg.ServerName {
		return httpapi.NotFound("Unknown media ID")
	}
	existing, err := storage.LoadMedia(req.Context(), r.cfg.DB, serverName, mediaID)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Unknown media ID")
	}
	if err != nil {
		return err
	}
	switch {
	case existing.UserID != user.UserID:
		return httpapi.Forbidden("This media ID was created by another user")
	case !existing.Pending():
		return errCannotOverwrite()
	case existing.UnusedExpiresTS <= r.nowMS():
		return httpapi.NotFound("This media ID has expired")
	}
	m, err := r.receive(req)
	if err != nil {
		return err
	}
	m.Origin, m.MediaID = serverName, mediaID
	ok, err := storage.CompletePendingMedia(req.Context(), r.cfg.DB, m)
	if err != nil {
		return err
	}
	if !ok {
		return errCannotOverwrite()
	}
	r.notifyUploaded()
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{})
	return nil
}

func errCannotOverwrite() *httpapi.Error {
	return httpapi.NewError(http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA", "Media already uploaded")
}

// mayUpload refuses uploads to suspended accounts with 403 M_USER_SUSPENDED (client-server
// API "Account suspension" leaves the set of forbidden actions to the server). NOTSPEC: as
// Synapse, which counts uploads among what a suspended account may not do.
func mayUpload(user User) error {
	if user.Suspended {
		return httpapi.NewError(http.StatusForbidden, "M_USER_SUSPENDED", "You cannot perform this action while suspended.")
	}
	return nil
}

// mayUploadNow is mayUpload with the request charged to the user's rate limit: for uploads
// and media IDs (PUT to a created ID was charged when the ID was created).
func (r *Repository) mayUploadNow(user User) error {
	if err := mayUpload(user); err != nil {
		return err
	}
	return r.limit(user)
}

// limit charges a request to the user's media rate limit (Config.Limit).
func (r *Repository) limit(user User) error {
	if r.cfg.Limit == nil {
		return nil
	}
	return r.cfg.Limit(user.UserID)
}

// receive stores an upload's body and returns its metadata, without origin, media ID and
// uploader: the content type from the Content-Type header (application/octet-stream when
// none, as the spec says), the filename from the filename query parameter.
func (r *Repository) receive(req *http.Request) (*storage.Media, error) {
	contentType := req.Header.Get("Content-Type")
	if contentType == "" {
		contentType = "application/octet-stream"
	}
	if !validName(contentType) {
		return nil, httpapi.InvalidParam("Content-Type must be at most %d bytes of printable UTF-8", maxNameLength)
	}
	filename := req.URL.Query().Get("filename")
	if !validName(filename) {
		return nil, httpapi.InvalidParam("filename must be at most %d bytes of printable UTF-8", maxNameLength)
	}
	limit := r.cfg.MaxUploadSize
	if req.ContentLength > limit {
		return nil, errUploadTooLarge(limit)
	}
	hash, size, err := r.store.write(req.Body, limit)
	var readErr *sourceError
	switch {
	case errors.Is(err, errTooLarge):
		return nil, errUploadTooLarge(limit)
	case errors.As(err, &readErr):
		return nil, httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "Could not read the upload")
	case err != nil:
		return nil, err
	}
	return &storage.Media{ContentType: contentType, UploadName: filename, Size: size, SHA256: hash, CreatedTS: r.nowMS()}, nil
}

func errUploadTooLarge(limit int64) *httpapi.Error {
	return httpapi.TooLarge("Cannot upload files larger than %d bytes", limit)
}

// GET /_matrix/client/v1/media/config and /_matrix/media/v3/config (getConfigAuthed,
// getConfig).
func (r *Repository) config(w http.ResponseWriter, _ *http.Request, _ User) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]int64{"m.upload.size": r.cfg.MaxUploadSize})
	return nil
}
