package media

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestMediaUploadDownload: an upload comes back byte for byte from the authenticated
// download, with the headers the spec asks for; identical uploads share one file; the
// deprecated unauthenticated endpoints are frozen.
func TestMediaUploadDownload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		tr := newTestRepo(t, db)
		alice := tr.user("alice")
		data := []byte("hello, media")
		id := tr.upload(alice, data, "text/plain; charset=utf-8", "hello world.txt")
		path := "/_matrix/client/v1/media/download/" + testServerName + "/" + id

		w := tr.get(path, alice)
		if w.Code != http.StatusOK || w.Body.String() != string(data) {
			t.Fatalf("download: %d %q", w.Code, w.Body)
		}
		for header, want := range map[string]string{
			"Content-Type":                 "text/plain; charset=utf-8",
			"Content-Disposition":          "inline; filename*=utf-8''hello%20world.txt",
			"Content-Security-Policy":      contentSecurityPolicy,
			"Cross-Origin-Resource-Policy": "cross-origin",
			"X-Content-Type-Options":       "nosniff",
			"Cache-Control":                cacheControl,
			"Content-Length":               "12",
		} {
			if got := w.Header().Get(header); got != want {
				t.Errorf("%s = %q, want %q", header, got, want)
			}
		}

		// The file name in the path replaces the uploaded one; bob may download too.
		bob := tr.user("bob")
		w = tr.get(path+"/other.txt", bob)
		if w.Code != http.StatusOK || w.Header().Get("Content-Disposition") != "inline; filename=other.txt" {
			t.Fatalf("download as other.txt: %d %q", w.Code, w.Header().Get("Content-Disposition"))
		}
		// Ranges, for video players.
		w = tr.do(request{method: http.MethodGet, path: path, token: alice, header: map[string]string{"Range": "bytes=7-"}})
		if w.Code != http.StatusPartialContent || w.Body.String() != "media" {
			t.Fatalf("range: %d %q", w.Code, w.Body)
		}

		// HTML is never inline; no filename was given, so none is sent.
		htmlID := tr.upload(alice, []byte("<script>alert(1)</script>"), "text/html", "")
		w = tr.get("/_matrix/client/v1/media/download/"+testServerName+"/"+htmlID, alice)
		if w.Header().Get("Content-Disposition") != "attachment" || w.Header().Get("Content-Type") != "text/html" {
			t.Fatalf("html: %q %q", w.Header().Get("Content-Disposition"), w.Header().Get("Content-Type"))
		}

		// The same bytes again: a new media ID, the same file.
		again := tr.upload(bob, data, "application/octet-stream", "")
		if again == id {
			t.Fatal("second upload got the same media ID")
		}
		if files := tr.files(); len(files) != 2 {
			t.Fatalf("files %v, want 2 (identical content stored once)", files)
		}

		expectError(t, "no token", tr.get(path, ""), http.StatusUnauthorized, "M_MISSING_TOKEN")
		expectError(t, "bad token", tr.get(path, "nope"), http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		expectError(t, "unknown media", tr.get("/_matrix/client/v1/media/download/"+testServerName+"/nothing", alice),
			http.StatusNotFound, "M_NOT_FOUND")
		expectError(t, "bad media ID", tr.get("/_matrix/client/v1/media/download/"+testServerName+"/..%2F..%2Fetc", alice),
			http.StatusBadRequest, "M_INVALID_PARAM")
		expectError(t, "bad server name", tr.get("/_matrix/client/v1/media/download/bad%20name/"+id, alice),
			http.StatusBadRequest, "M_INVALID_PARAM")
		expectError(t, "bad timeout", tr.get(path+"?timeout_ms=soon", alice), http.StatusBadRequest, "M_INVALID_PARAM")
		expectError(t, "remote media without federation", tr.get("/_matrix/client/v1/media/download/other.test/abc", alice),
			http.StatusNotFound, "M_NOT_FOUND")
		for _, frozen := range []string{
			"/_matrix/media/v3/download/" + testServerName + "/" + id,
			"/_matrix/media/v3/download/" + testServerName + "/" + id + "/name.txt",
			"/_matrix/media/v3/thumbnail/" + testServerName + "/" + id + "?width=32&height=32",
		} {
			expectError(t, frozen, tr.get(frozen, ""), http.StatusNotFound, "M_NOT_FOUND")
		}

		// Quarantined media is gone.
		if err := storage.SetMediaQuarantined(context.Background(), db, testServerName, id, true); err != nil {
			t.Fatal(err)
		}
		expectError(t, "quarantined", tr.get(path, alice), http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestMediaUploadLimits: the size limit (announced by /config) holds whether or not the
// client announces the length, and leaves nothing on disk; bad filenames and content types,
// locked and suspended accounts are refused.
func TestMediaUploadLimits(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		tr := newTestRepo(t, db, func(c *Config) { c.MaxUploadSize = 1000 })
		alice := tr.user("alice")
		for _, path := range []string{"/_matrix/client/v1/media/config", "/_matrix/media/v3/config"} {
			w := tr.get(path, alice)
			if w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != `{"m.upload.size":1000}` {
				t.Fatalf("%s: %d %s", path, w.Code, w.Body)
			}
		}
		tr.upload(alice, bytes.Repeat([]byte("x"), 1000), "text/plain", "") // exactly the limit

		big := bytes.Repeat([]byte("y"), 1001)
		w := tr.do(request{method: http.MethodPost, path: "/_matrix/media/v3/upload", token: alice, body: bytes.NewReader(big)})
		expectError(t, "announced too large", w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		// No Content-Length: found out while streaming.
		w = tr.do(request{method: http.MethodPost, path: "/_matrix/media/v3/upload", token: alice, body: io.MultiReader(bytes.NewReader(big))})
		expectError(t, "streamed too large", w, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		if files := tr.files(); len(files) != 1 {
			t.Fatalf("files %v: a refused upload left something", files)
		}

		expectError(t, "long filename", tr.do(request{method: http.MethodPost, token: alice, body: strings.NewReader("x"),
			path: "/_matrix/media/v3/upload?filename=" + strings.Repeat("a", 256)}), http.StatusBadRequest, "M_INVALID_PARAM")
		expectError(t, "invalid UTF-8 filename", tr.do(request{method: http.MethodPost, token: alice, body: strings.NewReader("x"),
			path: "/_matrix/media/v3/upload?filename=%FF"}), http.StatusBadRequest, "M_INVALID_PARAM")
		expectError(t, "long content type", tr.do(request{method: http.MethodPost, token: alice, body: strings.NewReader("x"),
			path: "/_matrix/media/v3/upload", header: map[string]string{"Content-Type": "a/" + strings.Repeat("b", 300)}}),
			http.StatusBadRequest, "M_INVALID_PARAM")
		expectError(t, "no token", tr.do(request{method: http.MethodPost, path: "/_matrix/media/v3/upload", body: strings.NewReader("x")}),
			http.StatusUnauthorized, "M_MISSING_TOKEN")

		ctx := context.Background()
		userID := "@alice:" + testServerName
		if err := storage.SetAccountSuspended(ctx, db, userID, true); err != nil {
			t.Fatal(err)
		}
		expectError(t, "suspended upload", tr.do(request{method: http.MethodPost, path: "/_matrix/media/v3/upload", token: alice,
			body: strings.NewReader("x")}), http.StatusForbidden, "M_USER_SUSPENDED")
		expectError(t, "suspended create", tr.do(request{method: http.MethodPost, path: "/_matrix/media/v1/create", token: alice}),
			http.StatusForbidden, "M_USER_SUSPENDED")
		if err := storage.SetAccountLocked(ctx, db, userID, true); err != nil {
			t.Fatal(err)
		}
		expectError(t, "locked", tr.get("/_matrix/client/v1/media/config", alice), http.StatusUnauthorized, "M_USER_LOCKED")
	})
}

// TestMediaAsyncUpload: POST /create gives a media ID that expires in 24 hours; downloads
// wait for its content up to timeout_ms, then answer M_NOT_YET_UPLOADED; only its creator
// uploads to it, once; a user has at most five pending; expired ones are gone.
func TestMediaAsyncUpload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		tr := newTestRepo(t, db)
		alice, bob := tr.user("alice"), tr.user("bob")
		create := func(token string) (string, int64) {
			t.Helper()
			w := tr.do(request{method: http.MethodPost, path: "/_matrix/media/v1/create", token: token})
			if w.Code != http.StatusOK {
				t.Fatalf("create: %d %s", w.Code, w.Body)
			}
			var resp struct {
				ContentURI      string `json:"content_uri"`
				UnusedExpiresAt int64  `json:"unused_expires_at"`
			}
			if err := json.Unmarshal(w.Body.Bytes(), &resp); err != nil {
				t.Fatal(err)
			}
			return strings.TrimPrefix(resp.ContentURI, "mxc://"+testServerName+"/"), resp.UnusedExpiresAt
		}
		put := func(token, id, body string) *httptest.ResponseRecorder {
			return tr.do(request{method: http.MethodPut, path: "/_matrix/media/v3/upload/" + testServerName + "/" + id + "?filename=late.txt",
				token: token, body: strings.NewReader(body), header: map[string]string{"Content-Type": "text/plain"}})
		}

		id, expires := create(alice)
		if want := tr.clock.Now().Add(24 * time.Hour).UnixMilli(); expires != want {
			t.Fatalf("unused_expires_at = %d, want %d", expires, want)
		}
		download := "/_matrix/client/v1/media/download/" + testServerName + "/" + id
		expectError(t, "pending, no wait", tr.get(download+"?timeout_ms=0", alice), http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
		expectError(t, "thumbnail, pending", tr.get("/_matrix/client/v1/media/thumbnail/"+testServerName+"/"+id+"?width=32&height=32&timeout_ms=0", alice),
			http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")

		// A download waiting for the content gets it as soon as it is uploaded.
		var waited *httptest.ResponseRecorder
		var wg sync.WaitGroup
		wg.Go(func() { waited = tr.get(download+"?timeout_ms=10000", bob) })
		time.Sleep(50 * time.Millisecond)
		expectError(t, "upload by another user", put(bob, id, "nope"), http.StatusForbidden, "M_FORBIDDEN")
		if w := put(alice, id, "at last"); w.Code != http.StatusOK || strings.TrimSpace(w.Body.String()) != "{}" {
			t.Fatalf("upload: %d %s", w.Code, w.Body)
		}
		wg.Wait()
		if waited.Code != http.StatusOK || waited.Body.String() != "at last" ||
			waited.Header().Get("Content-Disposition") != "inline; filename=late.txt" {
			t.Fatalf("waiting download: %d %q %q", waited.Code, waited.Body, waited.Header().Get("Content-Disposition"))
		}
		expectError(t, "second upload", put(alice, id, "again"), http.StatusConflict, "M_CANNOT_OVERWRITE_MEDIA")
		expectError(t, "upload to an unknown ID", put(alice, "unknown", "x"), http.StatusNotFound, "M_NOT_FOUND")
		w := tr.do(request{method: http.MethodPut, path: "/_matrix/media/v3/upload/other.test/" + id, token: alice, body: strings.NewReader("x")})
		expectError(t, "upload to another server's ID", w, http.StatusNotFound, "M_NOT_FOUND")

		// Five pending at most.
		var pending []string
		for range maxPendingUploads {
			id, _ := create(alice)
			pending = append(pending, id)
		}
		w = tr.do(request{method: http.MethodPost, path: "/_matrix/media/v1/create", token: alice})
		expectError(t, "sixth pending upload", w, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		if w.Header().Get("Retry-After") == "" {
			t.Fatal("no Retry-After")
		}
		create(bob) // others are not held back

		// A day later they have expired: not to be uploaded to nor downloaded, and deleted.
		tr.clock.Advance(24*time.Hour + time.Second)
		expectError(t, "expired upload", put(alice, pending[0], "x"), http.StatusNotFound, "M_NOT_FOUND")
		expectError(t, "expired download", tr.get("/_matrix/client/v1/media/download/"+testServerName+"/"+pending[1], alice),
			http.StatusNotFound, "M_NOT_FOUND")
		create(alice)
		tr.repo.expirePending(context.Background())
		if _, err := storage.LoadMedia(context.Background(), db, testServerName, pending[2]); err != storage.ErrNotFound {
			t.Fatalf("expired pending upload still there: %v", err)
		}
		if w := tr.get(download, alice); w.Code != http.StatusOK {
			t.Fatalf("uploaded media after housekeeping: %d", w.Code)
		}
	})
}

// TestMediaRateLimited: uploads, created media IDs and URL previews are charged to the
// user's rate limit (Config.Limit); once it is spent they get 429 M_LIMIT_EXCEEDED, while
// downloads are not charged.
func TestMediaRateLimited(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		var mu sync.Mutex
		charged := map[string]int{}
		tr := newTestRepo(t, db, func(c *Config) {
			c.Limit = func(userID string) error {
				mu.Lock()
				defer mu.Unlock()
				if charged[userID]++; charged[userID] > 2 {
					return httpapi.LimitExceeded(time.Second)
				}
				return nil
			}
		})
		alice := tr.user("alice")
		id := tr.upload(alice, []byte("one"), "text/plain", "")
		tr.do(request{method: http.MethodPost, path: "/_matrix/media/v1/create", token: alice})
		w := tr.do(request{method: http.MethodPost, path: "/_matrix/media/v3/upload", token: alice, body: bytes.NewReader([]byte("three")),
			header: map[string]string{"Content-Type": "text/plain"}})
		expectError(t, "third upload", w, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		w = tr.do(request{method: http.MethodPost, path: "/_matrix/media/v1/create", token: alice})
		expectError(t, "create", w, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		_, w = tr.preview("https://example.org/", alice)
		expectError(t, "preview", w, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
		if w := tr.get("/_matrix/client/v1/media/download/"+testServerName+"/"+id, alice); w.Code != http.StatusOK {
			t.Fatalf("download after the limit: %d", w.Code)
		}
	})
}
