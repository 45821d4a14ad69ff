// Package media is the content repository of Scrambled Eggs (client-server API "Content
// repository", server-server API "Content Repository", spec v1.19): it stores what users
// upload, serves it back with the headers the spec asks for, makes thumbnails of images,
// fetches other servers' media over federation and caches it, serves ours to other
// servers, and previews the web pages that users link to (preview.go).
//
// Metadata lives in the database (storage.Media, storage.Thumbnail); the bytes live in files
// under Config.Dir named by their SHA-256, so identical content is stored once and a file,
// once in place, never changes:
//
//	<dir>/content/ab/cdef…   the content whose SHA-256 is abcdef… (hex)
//	<dir>/tmp/               uploads being written, renamed into content/ once complete
//
// A file is written to tmp/ while it is hashed, synced, then renamed into place, so nothing
// half-written is ever served; its database row is written after that.
//
// The handlers are mounted by Routes (client API) and FederationRoutes (federation API);
// Run does the housekeeping.
package media

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/scrambledeggs/eggs/storage"
)

const (
	// maxPendingUploads bounds a user's asynchronous uploads created and not yet uploaded
	// (POST /create: "the server should limit the number of concurrent pending media
	// uploads"). NOTSPEC: Synapse's max_pending_media_uploads default.
	maxPendingUploads = 5
	// unusedExpiry is how long a media ID from POST /create waits for its content: the
	// spec's recommended default.
	unusedExpiry = 24 * time.Hour
	// defaultTimeout and maxTimeout are the timeout_ms of downloads: its default (20 s, per
	// the spec) and the maximum the spec wants the server to impose. NOTSPEC: Synapse's
	// maximum, a minute.
	defaultTimeout = 20 * time.Second
	maxTimeout     = time.Minute
	// maxNameLength bounds an upload's filename and content type. NOTSPEC: the spec sets no
	// limit; 255 bytes is what file systems allow a name.
	maxNameLength = 255
	// housekeepingInterval is how often Run forgets expired pending uploads.
	housekeepingInterval = time.Hour
	// staleTempAge is how old a file in tmp/ must be for New to remove it: left there by a
	// process that died while writing.
	staleTempAge = time.Hour
)

// Config configures a Repository.
type Config struct {
	// ServerName is ours: media with this origin is local.
	ServerName string
	DB         *storage.DB
	// Dir holds the files (see the package doc); it is created if missing.
	Dir string
	// MaxUploadSize bounds every piece of media, uploaded or fetched (EGGS_MAX_UPLOAD_SIZE).
	MaxUploadSize int64
	// Federation fetches other servers' media; nil serves local media only.
	Federation Federation
	// HTTPClient fetches the Location that another server may answer a media download with,
	// and the pages and images of URL previews; nil means one that refuses private and
	// loopback addresses (see newRedirectClient).
	HTTPClient *http.Client
	// Authenticate finds the user of a client request's access token, with the client API's
	// errors (M_MISSING_TOKEN, M_UNKNOWN_TOKEN, M_USER_LOCKED): the client API's own lookup.
	Authenticate func(*http.Request) (User, error)
	// Limit charges an upload, a media ID created or a URL preview to the user's rate limit,
	// answering M_LIMIT_EXCEEDED when it is spent; nil limits nothing.
	Limit func(userID string) error
	// Clock is time.Now outside tests.
	Clock func() time.Time
	Log   *slog.Logger
}

// User is the account behind a client request.
type User struct {
	UserID string
	// Suspended accounts may not upload (client-server API "Account suspension").
	Suspended bool
}

// Repository is the content repository of one server. It is safe for concurrent use.
type Repository struct {
	cfg   Config
	store *store
	http  *http.Client
	// thumbnails bounds concurrent thumbnail generation, each of which may hold a decoded
	// image of up to maxImagePixels in memory.
	thumbnails chan struct{}
	// flights joins concurrent fetches of the same remote media and concurrent generation of
	// the same thumbnail.
	flights singleflight.Group

	mu sync.Mutex
	// uploaded is closed, and replaced, whenever a pending upload gets its content: the
	// downloads waiting for one (timeout_ms) look again.
	uploaded chan struct{}
}

// New prepares the repository's directory (removing stale temporary files) and returns it.
func New(cfg Config) (*Repository, error) {
	if cfg.DB == nil || cfg.ServerName == "" || cfg.Dir == "" || cfg.MaxUploadSize <= 0 || cfg.Authenticate == nil {
		return nil, errors.New("media: server name, database, directory, maximum upload size and authentication required")
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	st, err := openStore(cfg.Dir, cfg.Clock().Add(-staleTempAge))
	if err != nil {
		return nil, fmt.Errorf("media directory %s: %w", cfg.Dir, err)
	}
	client := cfg.HTTPClient
	if client == nil {
		client = newRedirectClient()
	}
	return &Repository{
		cfg: cfg, store: st, http: client,
		thumbnails: make(chan struct{}, maxConcurrentThumbnails),
		uploaded:   make(chan struct{}),
	}, nil
}

// Run does the repository's housekeeping until ctx ends: every hour it forgets the pending
// uploads whose media IDs expired unused, and the expired URL previews.
func (r *Repository) Run(ctx context.Context) {
	ticker := time.NewTicker(housekeepingInterval)
	defer ticker.Stop()
	for {
		r.expirePending(ctx)
		r.expirePreviews(ctx)
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}

// expirePending forgets the pending uploads whose media IDs have expired.
func (r *Repository) expirePending(ctx context.Context) {
	n, err := storage.DeleteExpiredPendingMedia(ctx, r.cfg.DB, r.nowMS())
	if err != nil && ctx.Err() == nil {
		r.cfg.Log.Warn("expire pending uploads", "err", err)
	} else if n > 0 {
		r.cfg.Log.Debug("expired pending uploads", "count", n)
	}
}

// uploadSignal returns the channel closed at the next completed pending upload.
func (r *Repository) uploadSignal() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.uploaded
}

// notifyUploaded wakes the downloads waiting for a pending upload.
func (r *Repository) notifyUploaded() {
	r.mu.Lock()
	defer r.mu.Unlock()
	close(r.uploaded)
	r.uploaded = make(chan struct{})
}

func (r *Repository) nowMS() int64 { return r.cfg.Clock().UnixMilli() }
