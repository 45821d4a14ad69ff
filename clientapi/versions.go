package clientapi

import (
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
)

// supportedVersions are the spec versions whose every required endpoint this server serves.
// Advertise only what works: clients choose their code paths by these.
var supportedVersions = []string{"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10"}

// unstableFeatures are the unstable_features of /versions: flags by which clients find
// features of versions not (yet) advertised. org.matrix.msc3916.stable: authenticated media
// (v1.11) is served, which clients (matrix-js-sdk, mautrix) then use instead of the frozen
// /_matrix/media/v3 downloads.
var unstableFeatures = map[string]bool{"org.matrix.msc3916.stable": true}

// GET /_matrix/client/versions (client-server API "Server discovery": versions.yaml).
func (a *API) versions(w http.ResponseWriter, r *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"versions":          supportedVersions,
		"unstable_features": unstableFeatures,
	})
	return nil
}

// GET /.well-known/matrix/client (client-server API "Well-known URIs").
func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) error {
	base := "http://" + a.cfg.ServerName
	if r.TLS != nil {
		base = "https://" + a.cfg.ServerName
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"m.homeserver": map[string]string{"base_url": base},
	})
	return nil
}
