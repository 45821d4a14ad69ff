package federation

import (
	"encoding/json"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"
)

// TestVersion answers GET /_matrix/federation/v1/version in the shape of version.yaml.
func TestVersion(t *testing.T) {
	router := chi.NewRouter()
	Routes(router, nil, nil)
	recorder := httptest.NewRecorder()
	router.ServeHTTP(recorder, httptest.NewRequest("GET", "/_matrix/federation/v1/version", nil))
	var body struct {
		Server struct {
			Name    string `json:"name"`
			Version string `json:"version"`
		} `json:"server"`
	}
	if err := json.Unmarshal(recorder.Body.Bytes(), &body); err != nil || recorder.Code != 200 {
		t.Fatalf("%d %s: %v", recorder.Code, recorder.Body, err)
	}
	if body.Server.Name != ServerSoftware || body.Server.Version == "" {
		t.Errorf("got %+v", body)
	}
}
