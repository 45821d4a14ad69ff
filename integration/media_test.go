package integration

import (
	"bytes"
	"context"
	"crypto/rand"
	"image"
	"image/color"
	"image/png"
	"io"
	"mime"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestMediaFederation: Alice on the first server uploads a file and a picture; Bob on the
// second downloads both through his own server (authenticated media), which fetches them
// from the first over federation (multipart/mixed) and serves them with their file names,
// and makes thumbnails of the picture. A 10 MiB file makes the same trip, timed.
func TestMediaFederation(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob := hs2.Register(t, "bob")

		note := []byte("a note from hs1")
		uploaded, err := alice.UploadBytesWithName(ctx, note, "text/plain", "note ☺.txt")
		if err != nil {
			t.Fatalf("alice uploads: %v", err)
		}
		if uploaded.ContentURI.Homeserver != hs1.ServerName {
			t.Fatalf("content URI %s is not hs1's", uploaded.ContentURI)
		}
		for _, cli := range []*mautrix.Client{alice, bob, bob} { // bob's second read is from hs2's cache
			got, err := cli.DownloadBytes(ctx, uploaded.ContentURI)
			if err != nil || !bytes.Equal(got, note) {
				t.Fatalf("%s downloads %s: %q, %v", cli.UserID, uploaded.ContentURI, got, err)
			}
		}
		resp, err := bob.Download(ctx, uploaded.ContentURI)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if _, params, err := mime.ParseMediaType(resp.Header.Get("Content-Disposition")); err != nil || params["filename"] != "note ☺.txt" {
			t.Fatalf("Content-Disposition through hs2: %q", resp.Header.Get("Content-Disposition"))
		}
		if _, err := bob.DownloadBytes(ctx, id.ContentURI{Homeserver: hs1.ServerName, FileID: "nothing"}); !testserver.IsMatrixError(err, "M_NOT_FOUND") {
			t.Fatalf("unknown remote media: %v, want M_NOT_FOUND", err)
		}

		picture := image.NewRGBA(image.Rect(0, 0, 640, 480))
		for i := range picture.Pix {
			picture.Pix[i] = uint8(i)
		}
		picture.Set(0, 0, color.White)
		var encoded bytes.Buffer
		if err := png.Encode(&encoded, picture); err != nil {
			t.Fatal(err)
		}
		pictureURI, err := alice.UploadBytes(ctx, encoded.Bytes(), "image/png")
		if err != nil {
			t.Fatal(err)
		}
		thumb, err := bob.DownloadThumbnail(ctx, pictureURI.ContentURI, 96, 96, mautrix.DownloadThumbnailExtra{Method: "crop"})
		if err != nil {
			t.Fatalf("bob's thumbnail of alice's picture: %v", err)
		}
		cfg, format, err := image.DecodeConfig(thumb.Body)
		thumb.Body.Close()
		if err != nil || format != "png" || cfg.Width != 96 || cfg.Height != 96 {
			t.Fatalf("thumbnail: %s %dx%d, %v", format, cfg.Width, cfg.Height, err)
		}

		// The authenticated federation endpoint refuses an unsigned request.
		plain, err := hs1.FederationClient().Get(hs1.FederationURL + "/_matrix/federation/v1/media/download/" + uploaded.ContentURI.FileID)
		if err != nil {
			t.Fatal(err)
		}
		plain.Body.Close()
		if plain.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unsigned federation download: %d", plain.StatusCode)
		}

		big := make([]byte, 10<<20)
		rand.Read(big)
		start := time.Now()
		bigURI, err := alice.UploadBytes(ctx, big, "application/octet-stream")
		if err != nil {
			t.Fatal(err)
		}
		uploadTime := time.Since(start)
		start = time.Now()
		fetched, err := bob.Download(ctx, bigURI.ContentURI)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(fetched.Body)
		fetched.Body.Close()
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("10 MiB through federation: %d bytes, %v", len(got), err)
		}
		federatedTime := time.Since(start)
		start = time.Now()
		if got, err := bob.DownloadBytes(ctx, bigURI.ContentURI); err != nil || len(got) != len(big) {
			t.Fatalf("10 MiB from the cache: %d bytes, %v", len(got), err)
		}
		t.Logf("10 MiB: upload %v (%.0f MiB/s), download through federation %v (%.0f MiB/s), from the cache %v",
			uploadTime, 10/uploadTime.Seconds(), federatedTime, 10/federatedTime.Seconds(), time.Since(start))
	})
}
