package media

import (
	"mime"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestContentDisposition: inline only for the spec's list of types (parameters and case
// aside), and file names as bare tokens when they can be, else RFC 8187 encoded.
func TestContentDisposition(t *testing.T) {
	for _, tc := range []struct {
		contentType, filename, want string
	}{
		{"image/png", "", "inline"},
		{"image/png", "cat.png", "inline; filename=cat.png"},
		{"IMAGE/PNG", "cat.png", "inline; filename=cat.png"},
		{"text/plain; charset=utf-8", "a.txt", "inline; filename=a.txt"},
		{"application/ld+json", "x", "inline; filename=x"},
		{"audio/x-flac", "x", "inline; filename=x"},
		{"text/html", "page.html", "attachment; filename=page.html"},
		{"image/svg+xml", "logo.svg", "attachment; filename=logo.svg"},
		{"application/octet-stream", "", "attachment"},
		{"", "", "attachment"},
		{"not a type", "x", "attachment; filename=x"},
		{"image/png, text/html", "x", "attachment; filename=x"},
		{"text/plain", "hello world.txt", "inline; filename*=utf-8''hello%20world.txt"},
		{"text/plain", "naïve ☺.txt", "inline; filename*=utf-8''na%C3%AFve%20%E2%98%BA.txt"},
		{"text/plain", `quote".txt`, "inline; filename*=utf-8''quote%22.txt"},
		{"text/plain", "semi;colon", "inline; filename*=utf-8''semi%3Bcolon"},
		{"text/plain", "100%.txt", "inline; filename*=utf-8''100%25.txt"},
		{"text/plain", "line\r\nbreak", "inline; filename*=utf-8''line%0D%0Abreak"},
		{"text/plain", "bad\xffutf8", "inline; filename*=utf-8''bad%EF%BF%BDutf8"},
		{"text/plain", "it's*fine~", "inline; filename=it's*fine~"},
	} {
		if got := contentDisposition(tc.contentType, tc.filename); got != tc.want {
			t.Errorf("%q, %q: %q, want %q", tc.contentType, tc.filename, got, tc.want)
		}
	}
}

// FuzzContentDisposition: whatever the name, the header is printable ASCII, and a standard
// parser (Go's, RFC 2231/8187-aware) reads back the disposition and the name (made valid
// UTF-8).
func FuzzContentDisposition(f *testing.F) {
	for _, seed := range []string{"", "a.txt", "hello world", "naïve ☺", `"quoted"`, "100%", "a;b=c", "\r\n", "\xff\xfe", "*", "'", "日本語.pdf"} {
		f.Add("text/plain", seed)
	}
	f.Add("text/html", "x")
	f.Fuzz(func(t *testing.T, contentType, filename string) {
		header := contentDisposition(contentType, filename)
		for i := 0; i < len(header); i++ {
			if header[i] < 0x20 || header[i] >= 0x7f {
				t.Fatalf("%q: byte %#x in the header", header, header[i])
			}
		}
		disposition, params, err := mime.ParseMediaType(header)
		if err != nil {
			t.Fatalf("%q does not parse: %v", header, err)
		}
		if want := map[bool]string{true: "inline", false: "attachment"}[servesInline(contentType)]; disposition != want {
			t.Fatalf("%q: disposition %q, want %q", header, disposition, want)
		}
		if want := strings.ToValidUTF8(filename, "\uFFFD"); params["filename"] != want || !utf8.ValidString(params["filename"]) {
			t.Fatalf("%q: filename %q, want %q", header, params["filename"], want)
		}
	})
}
