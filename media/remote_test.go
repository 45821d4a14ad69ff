package media

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// fakeFederation answers the repository's federation requests with answer, counting them.
type fakeFederation struct {
	mu       sync.Mutex
	requests []federation.Request
	answer   func(req federation.Request) (io.ReadCloser, http.Header, error)
}

func (f *fakeFederation) DoStreamWithHeader(_ context.Context, req federation.Request) (io.ReadCloser, http.Header, error) {
	f.mu.Lock()
	f.requests = append(f.requests, req)
	f.mu.Unlock()
	return f.answer(req)
}

func (f *fakeFederation) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.requests)
}

// multipartAnswer is a multipart/mixed media answer: metadata, then a part with header and
// content.
func multipartAnswer(metadata string, header textproto.MIMEHeader, content []byte) (io.ReadCloser, http.Header, error) {
	var body bytes.Buffer
	parts := multipart.NewWriter(&body)
	first, _ := parts.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	first.Write([]byte(metadata))
	second, _ := parts.CreatePart(header)
	second.Write(content)
	parts.Close()
	return io.NopCloser(&body), http.Header{"Content-Type": {"multipart/mixed; boundary=" + parts.Boundary()}}, nil
}

// TestMediaRemote: another server's media is fetched once over federation (the content
// inline, behind a Location, or from the deprecated endpoint of an older server) and served
// from the cache after; the origin's errors and oversized or broken answers become the
// spec's errors.
func TestMediaRemote(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		located := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			w.Header().Set("Content-Disposition", `attachment; filename="located.png"`)
			w.Write([]byte("bytes behind a Location"))
		}))
		defer located.Close()
		fed := &fakeFederation{}
		fed.answer = func(req federation.Request) (io.ReadCloser, http.Header, error) {
			switch {
			case req.URI == "/_matrix/federation/v1/media/download/inline?timeout_ms=20000":
				return multipartAnswer(`{}`, textproto.MIMEHeader{"Content-Type": {"text/plain"},
					"Content-Disposition": {"inline; filename*=utf-8''na%C3%AFve.txt"}}, []byte("remote bytes"))
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/located"):
				return multipartAnswer(`{}`, textproto.MIMEHeader{"Location": {located.URL + "/file"}}, nil)
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/large"):
				return multipartAnswer(`{}`, textproto.MIMEHeader{"Content-Type": {"text/plain"}}, bytes.Repeat([]byte("z"), 2000))
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/bomb"):
				return multipartAnswer(`{}`, textproto.MIMEHeader{"Content-Type": {"image/png"}}, pngClaiming(100_000, 100_000))
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/notmultipart"):
				return io.NopCloser(strings.NewReader("plain")), http.Header{"Content-Type": {"text/plain"}}, nil
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/badmetadata"):
				return multipartAnswer(`[1]`, textproto.MIMEHeader{"Content-Type": {"text/plain"}}, []byte("x"))
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/pending"):
				return nil, nil, &federation.RemoteError{Status: http.StatusGatewayTimeout, ErrCode: "M_NOT_YET_UPLOADED"}
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/down"):
				return nil, nil, &federation.RemoteError{Status: http.StatusBadGateway}
			case strings.HasPrefix(req.URI, "/_matrix/federation/v1/media/download/old"):
				return nil, nil, &federation.RemoteError{Status: http.StatusNotFound, ErrCode: "M_UNRECOGNIZED"}
			case req.URI == "/_matrix/media/v3/download/old.test/old?allow_remote=false&timeout_ms=20000":
				return io.NopCloser(strings.NewReader("legacy bytes")),
					http.Header{"Content-Type": {"text/plain"}, "Content-Disposition": {"attachment; filename=legacy.txt"}}, nil
			}
			return nil, nil, &federation.RemoteError{Status: http.StatusNotFound, ErrCode: "M_NOT_FOUND"}
		}
		tr := newTestRepo(t, db, func(c *Config) {
			c.Federation, c.HTTPClient, c.MaxUploadSize = fed, http.DefaultClient, 1000
		})
		alice := tr.user("alice")
		download := func(origin, id string) *httptest.ResponseRecorder {
			return tr.get("/_matrix/client/v1/media/download/"+origin+"/"+id, alice)
		}

		for _, tc := range []struct {
			origin, id, body, contentType, disposition string
		}{
			{"remote.test", "inline", "remote bytes", "text/plain", "inline; filename*=utf-8''na%C3%AFve.txt"},
			{"remote.test", "located", "bytes behind a Location", "image/png", "inline; filename=located.png"},
			{"old.test", "old", "legacy bytes", "text/plain", "inline; filename=legacy.txt"},
		} {
			for range 2 {
				w := download(tc.origin, tc.id)
				if w.Code != http.StatusOK || w.Body.String() != tc.body || w.Header().Get("Content-Type") != tc.contentType ||
					w.Header().Get("Content-Disposition") != tc.disposition {
					t.Fatalf("%s: %d %q %q %q", tc.id, w.Code, w.Body, w.Header().Get("Content-Type"), w.Header().Get("Content-Disposition"))
				}
			}
		}
		// Fetched once each (the older server twice: both endpoints), then from the cache.
		if n := fed.count(); n != 4 {
			t.Fatalf("%d federation requests, want 4", n)
		}
		if fed.requests[0].Destination != "remote.test" || fed.requests[0].MaxResponseSize <= 1000 {
			t.Fatalf("request %+v", fed.requests[0])
		}
		// A thumbnail of remote media needs no new fetch.
		expectError(t, "thumbnail of remote text", tr.get("/_matrix/client/v1/media/thumbnail/remote.test/inline?width=32&height=32", alice),
			http.StatusBadRequest, "M_UNKNOWN")
		if n := fed.count(); n != 4 {
			t.Fatalf("%d federation requests after a thumbnail, want 4", n)
		}

		// Remote images too large to thumbnail are the origin's problem: 502.
		expectError(t, "thumbnail of a remote bomb", tr.get("/_matrix/client/v1/media/thumbnail/remote.test/bomb?width=32&height=32", alice),
			http.StatusBadGateway, "M_TOO_LARGE")
		expectError(t, "unknown", download("remote.test", "missing"), http.StatusNotFound, "M_NOT_FOUND")
		expectError(t, "too large", download("remote.test", "large"), http.StatusBadGateway, "M_TOO_LARGE")
		expectError(t, "not multipart", download("remote.test", "notmultipart"), http.StatusBadGateway, "M_UNKNOWN")
		expectError(t, "bad metadata", download("remote.test", "badmetadata"), http.StatusBadGateway, "M_UNKNOWN")
		expectError(t, "pending", download("remote.test", "pending"), http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
		expectError(t, "origin down", download("remote.test", "down"), http.StatusBadGateway, "M_UNKNOWN")
		for _, id := range []string{"missing", "large", "notmultipart", "badmetadata", "pending", "down"} {
			if _, err := storage.LoadMedia(context.Background(), db, "remote.test", id); err != storage.ErrNotFound {
				t.Errorf("failed fetch of %s cached: %v", id, err)
			}
		}
	})
}

// TestMediaRemoteConcurrent: concurrent downloads of the same remote media share one fetch.
func TestMediaRemoteConcurrent(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		release := make(chan struct{})
		var fetches atomic.Int32
		fed := &fakeFederation{answer: func(federation.Request) (io.ReadCloser, http.Header, error) {
			fetches.Add(1)
			<-release
			return multipartAnswer(`{}`, textproto.MIMEHeader{"Content-Type": {"text/plain"}}, []byte("shared"))
		}}
		tr := newTestRepo(t, db, func(c *Config) { c.Federation = fed })
		alice := tr.user("alice")
		var wg sync.WaitGroup
		results := make([]*httptest.ResponseRecorder, 4)
		for i := range results {
			wg.Go(func() { results[i] = tr.get("/_matrix/client/v1/media/download/remote.test/same", alice) })
		}
		for fetches.Load() == 0 {
			time.Sleep(time.Millisecond)
		}
		close(release)
		wg.Wait()
		for i, w := range results {
			if w.Code != http.StatusOK || w.Body.String() != "shared" {
				t.Fatalf("download %d: %d %s", i, w.Code, w.Body)
			}
		}
		if n := fetches.Load(); n != 1 {
			t.Fatalf("%d fetches, want 1", n)
		}
	})
}

// TestMediaFederationServing: our media is served to other servers as multipart/mixed, the
// content (or thumbnail) in the second part with its headers; only to authenticated servers,
// only ours, and pending uploads are waited for.
func TestMediaFederationServing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		tr := newTestRepo(t, db)
		alice := tr.user("alice")
		id := tr.upload(alice, []byte("for other servers"), "text/plain", "note.txt")
		picture := tr.upload(alice, encodePNG(t, testImage(400, 300)), "image/png", "")
		fedGet := func(path string) *httptest.ResponseRecorder {
			return tr.do(request{method: http.MethodGet, path: path, header: map[string]string{"X-Test-Origin": "other.test"}})
		}
		read := func(w *httptest.ResponseRecorder) (*multipart.Part, []byte) {
			t.Helper()
			if w.Code != http.StatusOK {
				t.Fatalf("federation download: %d %s", w.Code, w.Body)
			}
			part, err := contentPart(w.Header(), w.Body)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(part)
			if err != nil {
				t.Fatal(err)
			}
			return part, data
		}

		part, data := read(fedGet("/_matrix/federation/v1/media/download/" + id))
		if string(data) != "for other servers" || part.Header.Get("Content-Type") != "text/plain" ||
			part.Header.Get("Content-Disposition") != "inline; filename=note.txt" {
			t.Fatalf("content part: %q %v", data, part.Header)
		}
		part, data = read(fedGet("/_matrix/federation/v1/media/thumbnail/" + picture + "?width=96&height=96&method=crop"))
		if format, width, height := decodeImage(t, data); format != "png" || width != 96 || height != 96 ||
			part.Header.Get("Content-Disposition") != "inline; filename=thumbnail.png" {
			t.Fatalf("thumbnail part: %s %dx%d %v", format, width, height, part.Header)
		}

		if w := tr.get("/_matrix/federation/v1/media/download/"+id, ""); w.Code != http.StatusUnauthorized {
			t.Fatalf("unauthenticated: %d", w.Code)
		}
		expectError(t, "unknown", fedGet("/_matrix/federation/v1/media/download/unknown"), http.StatusNotFound, "M_NOT_FOUND")
		expectError(t, "bad ID", fedGet("/_matrix/federation/v1/media/download/a.b"), http.StatusNotFound, "M_NOT_FOUND")
		expectError(t, "thumbnail, bad size", fedGet("/_matrix/federation/v1/media/thumbnail/"+picture+"?width=x&height=1"),
			http.StatusBadRequest, "M_INVALID_PARAM")
		// Other servers' media cached here is not served on: servers ask the origin.
		if err := storage.InsertMedia(context.Background(), db, &storage.Media{Origin: "third.test", MediaID: "cached",
			SHA256: strings.Repeat("0", 64), CreatedTS: 1}); err != nil {
			t.Fatal(err)
		}
		expectError(t, "cached remote", fedGet("/_matrix/federation/v1/media/download/cached"), http.StatusNotFound, "M_NOT_FOUND")

		w := tr.do(request{method: http.MethodPost, path: "/_matrix/media/v1/create", token: alice})
		var created struct {
			ContentURI string `json:"content_uri"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &created); err != nil {
			t.Fatal(err)
		}
		pending := strings.TrimPrefix(created.ContentURI, "mxc://"+testServerName+"/")
		expectError(t, "pending", fedGet("/_matrix/federation/v1/media/download/"+pending+"?timeout_ms=0"),
			http.StatusGatewayTimeout, "M_NOT_YET_UPLOADED")
	})
}
