package media

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/netguard"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// site is a test web server that counts the requests for each path and remembers the
// User-Agent they came with.
type site struct {
	*httptest.Server
	mu        sync.Mutex
	hits      map[string]int
	userAgent string
}

func newSite(t *testing.T, handler http.Handler) *site {
	t.Helper()
	s := &site{hits: map[string]int{}}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.hits[r.URL.Path]++
		s.userAgent = r.Header.Get("User-Agent")
		s.mu.Unlock()
		handler.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *site) count(path string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hits[path]
}

func (s *site) lastUserAgent() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.userAgent
}

func (s *site) total() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, hits := range s.hits {
		n += hits
	}
	return n
}

// preview asks for the preview of target on the authenticated endpoint and decodes it.
func (tr *testRepo) preview(target, token string) (map[string]any, *httptest.ResponseRecorder) {
	tr.t.Helper()
	w := tr.get("/_matrix/client/v1/media/preview_url?url="+url.QueryEscape(target), token)
	if w.Code != http.StatusOK {
		return nil, w
	}
	var og map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &og); err != nil {
		tr.t.Fatalf("preview of %s: %v in %s", target, err, w.Body)
	}
	return og, w
}

// mustPreview is preview that fails the test unless the answer is 200.
func (tr *testRepo) mustPreview(target, token string) map[string]any {
	tr.t.Helper()
	og, w := tr.preview(target, token)
	if og == nil {
		tr.t.Fatalf("preview of %s: %d %s", target, w.Code, w.Body)
	}
	return og
}

const ogPage = `<!DOCTYPE html>
<html><head>
<title>The title tag</title>
<meta property="og:title" content="  The Open
  Graph title ">
<meta property="og:description" content="A page &amp; its preview">
<meta property="og:type" content="article">
<meta property="og:site_name" content="Example">
<meta property="og:image" content="/images/cat.png">
<meta property="og:image:width" content="999">
<meta property="og:image:alt" content="A cat">
<meta property="og:image" content="/images/second.png">
<meta name="twitter:title" content="Twitter title">
<meta name="twitter:label1" content="Reading time">
</head><body><h1>Body</h1></body></html>`

// TestPreviewURL: previews of pages (Open Graph with the image stored as our media, the
// <title> and meta description fallbacks, charsets), of images, and of other content, on
// both endpoints; bad parameters are 400 and oversized images 502.
func TestPreviewURL(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		cat := encodePNG(t, testImage(40, 30))
		web := newSite(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/page":
				w.Header().Set("Content-Type", "text/html; charset=utf-8")
				fmt.Fprint(w, ogPage)
			case "/moved":
				http.Redirect(w, r, "/page", http.StatusFound)
			case "/images/cat.png":
				w.Header().Set("Content-Type", "image/png")
				w.Write(cat)
			case "/plain":
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, `<html><head><title> Just a
					title </title><meta name="Description" content="Described"><svg><title>icon</title></svg></head></html>`)
			case "/latin1":
				w.Header().Set("Content-Type", "text/html; charset=iso-8859-1")
				w.Write([]byte("<title>Caf\xe9</title>"))
			case "/metacharset":
				w.Header().Set("Content-Type", "text/html")
				w.Write([]byte(`<meta charset="windows-1252"><meta property="og:title" content="Na&iuml;ve &#8364; caf` + "\xe9" + `">`))
			case "/untyped.png":
				w.Header()["Content-Type"] = nil
				w.Write(cat)
			case "/photo.png":
				w.Header().Set("Content-Type", "image/png")
				w.Header().Set("Content-Disposition", `inline; filename="photo.png"`)
				w.Write(cat)
			case "/large.png":
				w.Header().Set("Content-Type", "image/png")
				w.Write(bytes.Repeat([]byte{0}, 3000))
			case "/page-with-large-image":
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, `<title>Large</title><meta property="og:image" content="large.png">`)
			case "/long":
				// More than the limit, then nothing until the client hangs up: only a fetch
				// that stops reading at the limit answers in time.
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, `<html><head><title>Long page</title></head><body>`)
				w.Write(bytes.Repeat([]byte("<p>padding</p>\n"), 2*maxPreviewHTMLSize/15))
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			case "/file.pdf":
				w.Header().Set("Content-Type", "application/pdf")
				w.Write([]byte("%PDF-1.4"))
			default:
				http.NotFound(w, r)
			}
		}))
		tr := newTestRepo(t, db, func(c *Config) { c.HTTPClient, c.MaxUploadSize = http.DefaultClient, 2000 })
		alice := tr.user("alice")

		og := tr.mustPreview(web.URL+"/page#section", alice)
		image, _ := og["og:image"].(string)
		mediaID, ok := strings.CutPrefix(image, "mxc://"+testServerName+"/")
		if !ok || !validMediaID(mediaID) {
			t.Fatalf("og:image %q in %v", image, og)
		}
		want := map[string]any{
			"og:title": "The Open Graph title", "og:description": "A page & its preview", "og:type": "article",
			"og:site_name": "Example", "og:image": image, "og:image:type": "image/png", "og:image:alt": "A cat",
			"og:image:width": 40.0, "og:image:height": 30.0, "matrix:image:size": float64(len(cat)),
			"og:label1": "Reading time",
		}
		if fmt.Sprint(og) != fmt.Sprint(want) {
			t.Fatalf("preview\n%v, want\n%v", og, want)
		}
		if w := tr.get("/_matrix/client/v1/media/download/"+testServerName+"/"+mediaID, alice); w.Code != http.StatusOK ||
			!bytes.Equal(w.Body.Bytes(), cat) || w.Header().Get("Content-Type") != "image/png" {
			t.Fatalf("download of the preview image: %d %q", w.Code, w.Header().Get("Content-Type"))
		}
		if m, err := storage.LoadMedia(context.Background(), db, testServerName, mediaID); err != nil || m.UserID != "@alice:"+testServerName {
			t.Fatalf("preview image row %+v, %v", m, err)
		}
		if web.count("/images/second.png") != 0 {
			t.Fatal("the second og:image was fetched")
		}
		if ua := web.lastUserAgent(); !strings.Contains(ua, "ScrambledEggs") || !strings.Contains(ua, testServerName) {
			t.Fatalf("User-Agent %q", ua)
		}
		// The deprecated endpoint answers the same, from the cache.
		w := tr.get("/_matrix/media/v3/preview_url?url="+url.QueryEscape(web.URL+"/page")+"&ts=1510610716656", alice)
		var v3 map[string]any
		if w.Code != http.StatusOK || json.Unmarshal(w.Body.Bytes(), &v3) != nil || fmt.Sprint(v3) != fmt.Sprint(want) {
			t.Fatalf("v3 preview: %d %s", w.Code, w.Body)
		}
		// Redirects are followed; relative image URLs are relative to where they led.
		if og := tr.mustPreview(web.URL+"/moved", alice); og["og:title"] != "The Open Graph title" || og["og:image"] == nil {
			t.Fatalf("redirected preview %v", og)
		}

		for _, tc := range []struct {
			path string
			want map[string]any
		}{
			{"/plain", map[string]any{"og:title": "Just a title", "og:description": "Described"}},
			{"/latin1", map[string]any{"og:title": "Café"}},
			{"/metacharset", map[string]any{"og:title": "Naïve € café"}},
			{"/page-with-large-image", map[string]any{"og:title": "Large"}},
			{"/long", map[string]any{"og:title": "Long page"}},
			{"/file.pdf", map[string]any{}},
		} {
			if og := tr.mustPreview(web.URL+tc.path, alice); fmt.Sprint(og) != fmt.Sprint(tc.want) {
				t.Errorf("preview of %s: %v, want %v", tc.path, og, tc.want)
			}
		}

		// An image is its own preview.
		for _, path := range []string{"/photo.png", "/untyped.png"} {
			og := tr.mustPreview(web.URL+path, alice)
			if id, ok := strings.CutPrefix(fmt.Sprint(og["og:image"]), "mxc://"+testServerName+"/"); !ok || !validMediaID(id) ||
				og["og:image:type"] != "image/png" || og["og:image:width"] != 40.0 || og["matrix:image:size"] != float64(len(cat)) {
				t.Fatalf("preview of %s: %v", path, og)
			}
			if path == "/photo.png" && og["og:description"] != "photo.png" {
				t.Fatalf("preview of %s: description %v", path, og["og:description"])
			}
		}

		_, w = tr.preview(web.URL+"/large.png", alice)
		expectError(t, "image over the upload limit", w, http.StatusBadGateway, "M_TOO_LARGE")
		_, w = tr.preview(web.URL+"/missing", alice)
		expectError(t, "404 page", w, http.StatusBadGateway, "M_UNKNOWN")

		for _, tc := range []struct {
			what, query string
			status      int
			errcode     string
		}{
			{"no url", "", http.StatusBadRequest, "M_MISSING_PARAM"},
			{"relative url", "url=/page", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"ftp url", "url=" + url.QueryEscape("ftp://example.org/"), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"javascript url", "url=javascript:alert(1)", http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unparsable url", "url=" + url.QueryEscape("http://[::1"), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"long url", "url=" + url.QueryEscape("https://example.org/"+strings.Repeat("a", maxPreviewURLLength)), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"bad ts", "url=" + url.QueryEscape(web.URL+"/page") + "&ts=yesterday", http.StatusBadRequest, "M_INVALID_PARAM"},
		} {
			expectError(t, tc.what, tr.get("/_matrix/client/v1/media/preview_url?"+tc.query, alice), tc.status, tc.errcode)
		}
		for _, path := range []string{"/_matrix/client/v1/media/preview_url", "/_matrix/media/v3/preview_url"} {
			expectError(t, "no token", tr.get(path+"?url="+url.QueryEscape(web.URL+"/page"), ""), http.StatusUnauthorized, "M_MISSING_TOKEN")
		}
	})
}

// TestPreviewCache: a preview is fetched once, page and image, and served from the cache
// until it expires; a failure is cached for less time; expired previews are deleted.
func TestPreviewCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		down := true
		var mu sync.Mutex
		web := newSite(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			defer mu.Unlock()
			switch {
			case r.URL.Path == "/page":
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, ogPage)
			case r.URL.Path == "/images/cat.png":
				w.Header().Set("Content-Type", "image/png")
				w.Write(encodePNG(t, testImage(4, 4)))
			case r.URL.Path == "/flaky" && !down:
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprint(w, "<title>Back</title>")
			default:
				http.Error(w, "down", http.StatusServiceUnavailable)
			}
		}))
		tr := newTestRepo(t, db, func(c *Config) { c.HTTPClient = http.DefaultClient })
		alice, bob := tr.user("alice"), tr.user("bob")

		first := tr.mustPreview(web.URL+"/page", alice)
		if again := tr.mustPreview(web.URL+"/page#other-fragment", bob); fmt.Sprint(again) != fmt.Sprint(first) {
			t.Fatalf("cached preview %v, want %v", again, first)
		}
		if web.count("/page") != 1 || web.count("/images/cat.png") != 1 {
			t.Fatalf("fetched %v, want the page and its image once", web.hits)
		}
		tr.clock.Advance(previewExpiry)
		if refreshed := tr.mustPreview(web.URL+"/page", alice); refreshed["og:image"] == first["og:image"] {
			t.Fatalf("expired preview served: %v", refreshed)
		}
		if web.count("/page") != 2 || web.count("/images/cat.png") != 2 {
			t.Fatalf("fetched %v after expiry, want the page and its image twice", web.hits)
		}

		_, w := tr.preview(web.URL+"/flaky", alice)
		expectError(t, "site down", w, http.StatusBadGateway, "M_UNKNOWN")
		mu.Lock()
		down = false
		mu.Unlock()
		_, w = tr.preview(web.URL+"/flaky", alice)
		expectError(t, "cached failure", w, http.StatusBadGateway, "M_UNKNOWN")
		if n := web.count("/flaky"); n != 1 {
			t.Fatalf("failing page fetched %d times, want 1", n)
		}
		tr.clock.Advance(previewErrorExpiry)
		if og := tr.mustPreview(web.URL+"/flaky", alice); og["og:title"] != "Back" {
			t.Fatalf("preview after the failure expired: %v", og)
		}

		tr.clock.Advance(previewExpiry)
		tr.repo.expirePreviews(context.Background())
		for _, page := range []string{"/page", "/flaky"} {
			if _, err := storage.LoadURLPreview(context.Background(), db, web.URL+page, 0); err != storage.ErrNotFound {
				t.Errorf("expired preview of %s kept: %v", page, err)
			}
		}
	})
}

// TestPreviewBlocked: with the default client, URLs of this machine are refused with 403,
// whether named by address or by a name that resolves to one, before any connection.
func TestPreviewBlocked(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		internal := newSite(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			fmt.Fprint(w, "<title>Internal</title>")
		}))
		port := internal.Listener.Addr().(*net.TCPAddr).Port
		tr := newTestRepo(t, db)
		alice := tr.user("alice")
		for _, target := range []string{
			internal.URL + "/admin",
			fmt.Sprintf("http://localhost:%d/admin", port),
			fmt.Sprintf("http://[::1]:%d/admin", port),
			fmt.Sprintf("http://[::ffff:127.0.0.1]:%d/admin", port),
			"http://0.0.0.0:1/",
		} {
			_, w := tr.preview(target, alice)
			expectError(t, target, w, http.StatusForbidden, "M_UNKNOWN")
		}
		if n := internal.total(); n != 0 {
			t.Fatalf("internal site reached %d times", n)
		}
	})
}

// TestPreviewRedirectBlocked: a public site (played by a test server the client is allowed
// to reach) cannot lead the client to an internal address, by redirect or by og:image.
func TestPreviewRedirectBlocked(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		internal := newSite(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "image/png")
			w.Write(encodePNG(t, testImage(4, 4)))
		}))
		internalByName := fmt.Sprintf("http://localhost:%d", internal.Listener.Addr().(*net.TCPAddr).Port)
		public := newSite(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			switch r.URL.Path {
			case "/to-address":
				http.Redirect(w, r, internal.URL+"/secret", http.StatusFound)
			case "/to-name":
				http.Redirect(w, r, internalByName+"/secret", http.StatusMovedPermanently)
			case "/image-inside":
				w.Header().Set("Content-Type", "text/html")
				fmt.Fprintf(w, `<title>Outside</title><meta property="og:image" content="%s/secret.png">`, internalByName)
			}
		}))
		publicAddress := public.Listener.Addr().String()
		client := newRedirectClient()
		client.Transport.(*http.Transport).DialContext = (&net.Dialer{Timeout: time.Second,
			Control: func(network, address string, c syscall.RawConn) error {
				if address == publicAddress {
					return nil
				}
				return netguard.Control(network, address, c)
			}}).DialContext
		tr := newTestRepo(t, db, func(c *Config) { c.HTTPClient = client })
		alice := tr.user("alice")

		for _, path := range []string{"/to-address", "/to-name"} {
			_, w := tr.preview(public.URL+path, alice)
			expectError(t, "redirect "+path, w, http.StatusForbidden, "M_UNKNOWN")
		}
		if og := tr.mustPreview(public.URL+"/image-inside", alice); fmt.Sprint(og) != fmt.Sprint(map[string]any{"og:title": "Outside"}) {
			t.Fatalf("preview with an internal image: %v", og)
		}
		if public.count("/to-address") != 1 || public.count("/to-name") != 1 {
			t.Fatalf("public site hits %v", public.hits)
		}
		if n := internal.total(); n != 0 {
			t.Fatalf("internal site reached %d times", n)
		}
	})
}

// TestPreviewOpenGraph: what is read of a page's markup.
func TestPreviewOpenGraph(t *testing.T) {
	long := strings.Repeat("word ", 300)
	for _, tc := range []struct {
		name, contentType, page string
		want                    map[string]string
	}{
		{"empty", "text/html", "", map[string]string{}},
		{"first of duplicates", "text/html",
			`<meta property="og:title" content="One"><meta property="og:title" content="Two">`,
			map[string]string{"og:title": "One"}},
		{"og in name", "text/html", `<meta name="og:title" content="Named">`, map[string]string{"og:title": "Named"}},
		{"article and profile", "text/html",
			`<meta property="article:author" content="A"><meta property="profile:username" content="u"><meta property="fb:app_id" content="1">`,
			map[string]string{"article:author": "A", "profile:username": "u"}},
		{"og wins over twitter and title", "text/html",
			`<title>T</title><meta name="twitter:title" content="Tw"><meta property="og:title" content="OG"><meta name="twitter:card" content="summary">`,
			map[string]string{"og:title": "OG"}},
		{"twitter over title", "text/html",
			`<title>T</title><meta name="twitter:title" content="Tw"><meta name="twitter:site" content="@x">`,
			map[string]string{"og:title": "Tw"}},
		{"blank ignored", "text/html", `<meta property="og:title" content="  "><title>T</title>`, map[string]string{"og:title": "T"}},
		{"svg title ignored", "text/html", `<svg><title>Icon</title></svg><title>Page</title>`, map[string]string{"og:title": "Page"}},
		{"empty title", "text/html", `<title></title><p>text</p>`, map[string]string{}},
		{"long description shortened", "text/html", `<meta name="description" content="` + long + `">`,
			map[string]string{"og:description": shorten(strings.TrimSpace(long), maxOGValueLength)}},
		{"long value dropped", "text/html", `<meta property="og:url" content="https://x/` + strings.Repeat("a", maxOGValueLength) + `">`,
			map[string]string{}},
		{"long key dropped", "text/html", `<meta property="og:` + strings.Repeat("k", maxOGKeyLength) + `" content="v">`,
			map[string]string{}},
		{"utf-16 by BOM", "text/html", "\xff\xfe<\x00t\x00i\x00t\x00l\x00e\x00>\x00\xe9\x00<\x00/\x00t\x00i\x00t\x00l\x00e\x00>\x00",
			map[string]string{"og:title": "é"}},
		{"cut short", "text/html", `<meta property="og:title" content="Whole"><meta property="og:description" content="Cu`,
			map[string]string{"og:title": "Whole"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := openGraph([]byte(tc.page), tc.contentType); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
	t.Run("at most maxOGTags", func(t *testing.T) {
		var page strings.Builder
		for i := range 2 * maxOGTags {
			fmt.Fprintf(&page, `<meta property="og:tag%d" content="%d">`, i, i)
		}
		if got := openGraph([]byte(page.String()), "text/html"); len(got) != maxOGTags || got["og:tag0"] != "0" {
			t.Fatalf("%d tags", len(got))
		}
	})
}
