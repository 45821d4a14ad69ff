package media

import (
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

const testServerName = "media.test"

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testRepo is a Repository on a test database, its client and federation routes on one
// router; federation requests are authenticated as the server named by the X-Test-Origin
// header.
type testRepo struct {
	t      *testing.T
	db     *storage.DB
	repo   *Repository
	router chi.Router
	clock  *fakeClock
	dir    string
}

func newTestRepo(t *testing.T, db *storage.DB, configure ...func(*Config)) *testRepo {
	t.Helper()
	clock := &fakeClock{now: time.UnixMilli(1_700_000_000_000)}
	dir := t.TempDir()
	cfg := Config{ServerName: testServerName, DB: db, Dir: dir, MaxUploadSize: 1 << 20, Clock: clock.Now,
		Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Authenticate: testAuthenticate(db)}
	for _, c := range configure {
		c(&cfg)
	}
	repo, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	router := chi.NewRouter()
	repo.Routes(router)
	repo.FederationRoutes(router, func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			origin := r.Header.Get("X-Test-Origin")
			if origin == "" {
				http.Error(w, `{"errcode":"M_UNAUTHORIZED"}`, http.StatusUnauthorized)
				return
			}
			next.ServeHTTP(w, r.WithContext(federation.WithOrigin(r.Context(), origin)))
		})
	})
	return &testRepo{t: t, db: db, repo: repo, router: router, clock: clock, dir: dir}
}

// testAuthenticate looks the bearer token up in the database, as the client API does (it is
// what the server passes as Config.Authenticate, tested in package clientapi).
func testAuthenticate(db *storage.DB) func(*http.Request) (User, error) {
	return func(r *http.Request) (User, error) {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok {
			return User{}, httpapi.NewError(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
		}
		owner, err := storage.DeviceByToken(r.Context(), db, auth.HashToken(token))
		if err == storage.ErrNotFound {
			return User{}, httpapi.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Unknown access token")
		}
		if err != nil {
			return User{}, err
		}
		if owner.Locked {
			return User{}, httpapi.NewError(http.StatusUnauthorized, "M_USER_LOCKED", "This account has been locked")
		}
		return User{UserID: owner.UserID, Suspended: owner.Suspended}, nil
	}
}

// user registers a user with one device and returns its access token.
func (tr *testRepo) user(localpart string) string {
	tr.t.Helper()
	ctx := context.Background()
	userID := "@" + localpart + ":" + testServerName
	if err := storage.InsertUser(ctx, tr.db, &storage.UserRow{UserID: userID}, 1); err != nil {
		tr.t.Fatal(err)
	}
	token, hash := auth.NewToken("syt_")
	if err := storage.UpsertDevice(ctx, tr.db, userID, "DEVICE", "", hash, "", 1); err != nil {
		tr.t.Fatal(err)
	}
	return token
}

// request is one request to the test router.
type request struct {
	method, path, token string
	body                io.Reader
	header              map[string]string
}

func (tr *testRepo) do(req request) *httptest.ResponseRecorder {
	tr.t.Helper()
	body := req.body
	if body == nil {
		body = http.NoBody
	}
	r := httptest.NewRequest(req.method, req.path, body)
	if req.token != "" {
		r.Header.Set("Authorization", "Bearer "+req.token)
	}
	for k, v := range req.header {
		r.Header.Set(k, v)
	}
	w := httptest.NewRecorder()
	tr.router.ServeHTTP(w, r)
	return w
}

// get is a GET with token.
func (tr *testRepo) get(path, token string) *httptest.ResponseRecorder {
	tr.t.Helper()
	return tr.do(request{method: http.MethodGet, path: path, token: token})
}

// upload uploads data as token's user and returns the media ID.
func (tr *testRepo) upload(token string, data []byte, contentType, filename string) string {
	tr.t.Helper()
	path := "/_matrix/media/v3/upload"
	if filename != "" {
		path += "?filename=" + url.QueryEscape(filename)
	}
	w := tr.do(request{method: http.MethodPost, path: path, token: token, body: bytes.NewReader(data),
		header: map[string]string{"Content-Type": contentType}})
	if w.Code != http.StatusOK {
		tr.t.Fatalf("upload: %d %s", w.Code, w.Body)
	}
	var resp struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
		tr.t.Fatal(err)
	}
	prefix := "mxc://" + testServerName + "/"
	if !strings.HasPrefix(resp.ContentURI, prefix) || !validMediaID(resp.ContentURI[len(prefix):]) {
		tr.t.Fatalf("content_uri %q", resp.ContentURI)
	}
	return resp.ContentURI[len(prefix):]
}

// files lists the files under the repository's directory, relative to it.
func (tr *testRepo) files() []string {
	tr.t.Helper()
	var out []string
	err := filepath.WalkDir(tr.dir, func(path string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() {
			rel, _ := filepath.Rel(tr.dir, path)
			out = append(out, rel)
		}
		return err
	})
	if err != nil {
		tr.t.Fatal(err)
	}
	return out
}

// errcode is the errcode of a JSON error response.
func errcode(w *httptest.ResponseRecorder) string {
	var body struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &body)
	return body.ErrCode
}

// expectError fails unless w is the Matrix error status/errcode.
func expectError(t *testing.T, what string, w *httptest.ResponseRecorder, status int, code string) {
	t.Helper()
	if w.Code != status || errcode(w) != code {
		t.Fatalf("%s: %d %s, want %d %s", what, w.Code, w.Body, status, code)
	}
}

// testImage is a width × height image with a gradient, so that resizing has something to do.
func testImage(width, height int) *image.RGBA {
	img := image.NewRGBA(image.Rect(0, 0, width, height))
	for y := 0; y < height; y++ {
		for x := 0; x < width; x++ {
			img.Set(x, y, color.RGBA{uint8(x), uint8(y), uint8(x + y), 255})
		}
	}
	return img
}

func encodePNG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func encodeJPEG(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, nil); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// encodeGIF encodes a GIF of frames width × height frames.
func encodeGIF(t testing.TB, width, height, frames int) []byte {
	t.Helper()
	anim := &gif.GIF{}
	for i := 0; i < frames; i++ {
		frame := image.NewPaletted(image.Rect(0, 0, width, height), color.Palette{color.Black, color.White})
		frame.SetColorIndex(i%width, 0, 1)
		anim.Image = append(anim.Image, frame)
		anim.Delay = append(anim.Delay, 10)
	}
	var b bytes.Buffer
	if err := gif.EncodeAll(&b, anim); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// decodeImage decodes a served image and returns its format and size.
func decodeImage(t *testing.T, data []byte) (string, int, int) {
	t.Helper()
	cfg, format, err := image.DecodeConfig(bytes.NewReader(data))
	if err != nil {
		t.Fatalf("served image: %v", err)
	}
	return format, cfg.Width, cfg.Height
}
