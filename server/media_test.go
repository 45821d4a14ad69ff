package server_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"testing"

	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestMediaMounted: every server has the content repository, with EGGS_MAX_UPLOAD_SIZE as
// its limit and its files under the data directory; without the federation listener it
// serves local media only.
func TestMediaMounted(t *testing.T) {
	srv := testserver.Start(t, storage.SQLite, testserver.WithSetting(func(c *config.Config) { c.MaxUploadSize = "1K" }))
	ctx := context.Background()
	alice := srv.Register(t, "alice")
	mediaConfig, err := alice.GetMediaConfig(ctx)
	if err != nil || mediaConfig.UploadSize != 1024 {
		t.Fatalf("media config: %+v, %v", mediaConfig, err)
	}
	uploaded, err := alice.UploadBytes(ctx, []byte("kept"), "text/plain")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := alice.DownloadBytes(ctx, uploaded.ContentURI); err != nil || string(got) != "kept" {
		t.Fatalf("download: %q, %v", got, err)
	}
	// Media requests are authenticated by the client API: a token in the query, as the spec
	// still allows, works; a wrong one is M_UNKNOWN_TOKEN.
	download := srv.URL + "/_matrix/client/v1/media/download/" + uploaded.ContentURI.Homeserver + "/" + uploaded.ContentURI.FileID
	for token, want := range map[string]int{alice.AccessToken: http.StatusOK, "nope": http.StatusUnauthorized} {
		resp, err := http.Get(download + "?access_token=" + token)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("download with the token in the query (%s): %d, want %d", token, resp.StatusCode, want)
		}
	}
	if _, err := alice.UploadBytes(ctx, make([]byte, 1025), "text/plain"); !testserver.IsMatrixError(err, "M_TOO_LARGE") {
		t.Fatalf("upload over EGGS_MAX_UPLOAD_SIZE: %v, want M_TOO_LARGE", err)
	}
	if _, err := alice.DownloadBytes(ctx, id.ContentURI{Homeserver: "elsewhere.test", FileID: "abc"}); !testserver.IsMatrixError(err, "M_NOT_FOUND") {
		t.Fatalf("remote media without federation: %v, want M_NOT_FOUND", err)
	}
	entries, err := os.ReadDir(filepath.Join(srv.Config.DataDir, "media", "content"))
	if err != nil || len(entries) != 1 {
		t.Fatalf("media files: %v, %v", entries, err)
	}
}
