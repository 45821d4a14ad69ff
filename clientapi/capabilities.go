package clientapi

import (
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// GET /capabilities (client-server API "Capabilities negotiation", capabilities.yaml).
//
//   - m.change_password: enabled, through POST /account/password.
//   - m.room_versions: every version the server knows, with its stability.
//   - m.profile_fields: every field may be changed (v1.16); m.set_displayname and
//     m.set_avatar_url, deprecated, say the same for older clients.
//   - m.3pid_changes: disabled, this server keeps no third-party identifiers.
//   - m.get_login_token: enabled, through POST /login/get_token (logintoken.go).
//   - m.account_moderation (v1.18): server admins may lock and suspend accounts
//     (moderation.go); omitted for everyone else, as the spec asks when both are false.
func (a *API) capabilities(w http.ResponseWriter, r *http.Request, d *Device) error {
	available := make(map[string]string, len(spec.RoomVersions()))
	for id, rv := range spec.RoomVersions() {
		if rv.Stable {
			available[id] = "stable"
		} else {
			available[id] = "unstable"
		}
	}
	enabled := map[string]bool{"enabled": true}
	disabled := map[string]bool{"enabled": false}
	capabilities := map[string]any{
		"m.change_password": enabled,
		"m.room_versions": map[string]any{
			"default":   spec.DefaultRoomVersion,
			"available": available,
		},
		"m.profile_fields":  enabled,
		"m.set_displayname": enabled,
		"m.set_avatar_url":  enabled,
		"m.3pid_changes":    disabled,
		"m.get_login_token": enabled,
	}
	if d.IsAdmin {
		capabilities["m.account_moderation"] = map[string]bool{"suspend": true, "lock": true}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"capabilities": capabilities})
	return nil
}
