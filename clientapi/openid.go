package clientapi

import (
	"net/http"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// OpenID (client-server API "OpenID", openid.yaml): a user asks for a token that proves their
// identity to a third party, which checks it with our federation endpoint
// GET /_matrix/federation/v1/openid/userinfo. The token is good for nothing else.

func (a *API) openIDRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/user/{userId}/openid/request_token", authed(a.requestOpenIDToken))
}

// openIDTokenLifetime is how long an OpenID token is valid. NOTSPEC: the spec leaves it to
// the server; Synapse gives an hour.
const openIDTokenLifetime = time.Hour

// POST /user/{userId}/openid/request_token (openid.yaml requestOpenIdToken). The body is an
// empty object.
func (a *API) requestOpenIDToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	if pathParam(r, "userId") != d.UserID {
		return httpapi.Forbidden("Cannot request an OpenID token for another user")
	}
	var body map[string]any
	if err := httpapi.ReadJSON(r, 4*1024, &body); err != nil {
		return err
	}
	token, hash := auth.NewToken("oid_")
	now := a.clock()
	if err := storage.InsertOpenIDToken(r.Context(), a.db, hash, d.UserID, now.Add(openIDTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"access_token":       token,
		"token_type":         "Bearer",
		"matrix_server_name": a.cfg.ServerName,
		"expires_in":         int64(openIDTokenLifetime / time.Second),
	})
	return nil
}
