package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Queries of the content repository (client-server API "Content repository"): the metadata
// of media, ours and other servers' cached here, and of the thumbnails made from it. The
// bytes themselves are files that package media keeps, named by SHA-256.

// Media is what is stored of one piece of media, mxc://Origin/MediaID.
type Media struct {
	Origin  string
	MediaID string
	// ContentType is as uploaded, or as the origin served it.
	ContentType string
	// UploadName is the filename given at upload; "" for none.
	UploadName string
	Size       int64
	// SHA256 is the lower-case hex SHA-256 of the content, "" while the media is a pending
	// asynchronous upload.
	SHA256 string
	// UserID is the uploader; "" for other servers' media.
	UserID    string
	CreatedTS int64
	// UnusedExpiresTS is when a pending upload's media ID expires unused; 0 once uploaded.
	UnusedExpiresTS int64
	Quarantined     bool
}

// Pending reports whether m is a media ID created for an asynchronous upload whose content
// has not arrived yet.
func (m *Media) Pending() bool { return m.SHA256 == "" }

// ErrTooManyPending is returned by CreatePendingMedia when the user already has as many
// pending uploads as allowed.
var ErrTooManyPending = errors.New("too many pending uploads")

const mediaColumns = `origin, media_id, content_type, upload_name, size, sha256, user_id, created_ts,
	unused_expires_ts, quarantined`

// InsertMedia stores uploaded or fetched media; ErrExists if its URI is taken (another
// process fetched the same remote media first, say).
func InsertMedia(ctx context.Context, q Querier, m *Media) error {
	res, err := q.Exec(ctx, `INSERT INTO media (`+mediaColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
		ON CONFLICT (origin, media_id) DO NOTHING`,
		m.Origin, m.MediaID, m.ContentType, m.UploadName, m.Size, m.SHA256, m.UserID, m.CreatedTS, m.UnusedExpiresTS, m.Quarantined)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrExists
	}
	return nil
}

// CreatePendingMedia stores a media ID created for an asynchronous upload by m.UserID, to
// expire unused at m.UnusedExpiresTS, unless that user already has maxPending pending
// uploads that have not expired at nowMS (ErrTooManyPending). Run it in a transaction so
// that the count and the insert agree.
func CreatePendingMedia(ctx context.Context, q Querier, m *Media, maxPending int, nowMS int64) error {
	var pending int
	if err := q.QueryRow(ctx, `SELECT COUNT(*) FROM media WHERE user_id = $1 AND sha256 = '' AND unused_expires_ts > $2`,
		m.UserID, nowMS).Scan(&pending); err != nil {
		return err
	}
	if pending >= maxPending {
		return ErrTooManyPending
	}
	if !m.Pending() {
		return errors.New("create pending media: it has content")
	}
	return InsertMedia(ctx, q, m)
}

// LoadMedia reads mxc://origin/mediaID; ErrNotFound if unknown.
func LoadMedia(ctx context.Context, q Querier, origin, mediaID string) (*Media, error) {
	m := &Media{}
	err := q.QueryRow(ctx, `SELECT `+mediaColumns+` FROM media WHERE origin = $1 AND media_id = $2`, origin, mediaID).Scan(
		&m.Origin, &m.MediaID, &m.ContentType, &m.UploadName, &m.Size, &m.SHA256, &m.UserID, &m.CreatedTS,
		&m.UnusedExpiresTS, &m.Quarantined)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return m, nil
}

// CompletePendingMedia gives a pending upload its content (m's content type, upload name,
// size, hash and created time) and reports whether it did: false when the media already
// had content, so that of two uploads racing to one media ID only the first lands.
func CompletePendingMedia(ctx context.Context, q Querier, m *Media) (bool, error) {
	res, err := q.Exec(ctx, `UPDATE media SET content_type = $3, upload_name = $4, size = $5, sha256 = $6,
			created_ts = $7, unused_expires_ts = 0
		WHERE origin = $1 AND media_id = $2 AND sha256 = ''`,
		m.Origin, m.MediaID, m.ContentType, m.UploadName, m.Size, m.SHA256, m.CreatedTS)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// DeleteExpiredPendingMedia forgets the pending uploads whose media IDs expired unused
// before nowMS, and returns how many.
func DeleteExpiredPendingMedia(ctx context.Context, q Querier, nowMS int64) (int64, error) {
	res, err := q.Exec(ctx, `DELETE FROM media WHERE sha256 = '' AND unused_expires_ts <= $1`, nowMS)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// SetMediaQuarantined quarantines media (it is no longer served) or releases it;
// ErrNotFound if unknown.
func SetMediaQuarantined(ctx context.Context, q Querier, origin, mediaID string, quarantined bool) error {
	res, err := q.Exec(ctx, `UPDATE media SET quarantined = $3 WHERE origin = $1 AND media_id = $2`, origin, mediaID, quarantined)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// Thumbnail is a thumbnail made from media: Width, Height and Method are the box it was
// made for, not its own dimensions.
type Thumbnail struct {
	Origin      string
	MediaID     string
	Width       int
	Height      int
	Method      string
	ContentType string
	Size        int64
	SHA256      string
	CreatedTS   int64
}

// LoadThumbnail reads the thumbnail of mxc://origin/mediaID for a box and method;
// ErrNotFound if none was made.
func LoadThumbnail(ctx context.Context, q Querier, origin, mediaID string, width, height int, method string) (*Thumbnail, error) {
	t := &Thumbnail{Origin: origin, MediaID: mediaID, Width: width, Height: height, Method: method}
	err := q.QueryRow(ctx, `SELECT content_type, size, sha256, created_ts FROM media_thumbnails
		WHERE origin = $1 AND media_id = $2 AND width = $3 AND height = $4 AND method = $5`,
		origin, mediaID, width, height, method).Scan(&t.ContentType, &t.Size, &t.SHA256, &t.CreatedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return t, nil
}

// InsertThumbnail stores a thumbnail; one already stored for the same box and method (made
// at the same time by another request or process) is kept.
func InsertThumbnail(ctx context.Context, q Querier, t *Thumbnail) error {
	_, err := q.Exec(ctx, `INSERT INTO media_thumbnails (origin, media_id, width, height, method, content_type, size, sha256, created_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (origin, media_id, width, height, method) DO NOTHING`,
		t.Origin, t.MediaID, t.Width, t.Height, t.Method, t.ContentType, t.Size, t.SHA256, t.CreatedTS)
	return err
}
