package clientapi

import (
	"net/http"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestVersions: /versions needs no token and lists what the server supports, authenticated
// media among the unstable features.
func TestVersions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		got := s.do("GET", "/_matrix/client/versions", "", nil, http.StatusOK)
		var versions []string
		for _, v := range got["versions"].([]any) {
			versions = append(versions, v.(string))
		}
		if !slices.Equal(versions, supportedVersions) || !slices.Contains(versions, "v1.1") {
			t.Fatalf("versions %v", versions)
		}
		if got["unstable_features"].(map[string]any)["org.matrix.msc3916.stable"] != true {
			t.Fatalf("unstable_features %v", got["unstable_features"])
		}
	})
}
