package clientapi

import (
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
)

// supportedVersions are the spec versions whose every required endpoint and behaviour this
// server has (checked against each version's changelog, content/changelog, up to v1.19).
// Advertise only what works: clients choose their code paths by these. Optional parts that
// are not offered: SSO and OAuth 2.0 login (GET /auth_metadata answers 404 M_UNRECOGNIZED,
// as the spec asks of servers without it), terms of service at registration, application
// services, the m.forget_forced_upon_leave capability.
var supportedVersions = []string{
	"r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9",
	"v1.10", "v1.11", "v1.12", "v1.13", "v1.14", "v1.15", "v1.16", "v1.17", "v1.18", "v1.19",
}

// unstableFeatures are the unstable_features of /versions. org.matrix.msc3916.stable:
// authenticated media (v1.11), for clients that look for the flag rather than the version
// before they stop using the frozen /_matrix/media/v3 downloads.
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
