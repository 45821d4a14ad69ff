package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// Token login (client-server API "Token-based" login, m.login.token; login_token.yaml,
// v1.7): a signed-in user asks for a single-use token with POST /login/get_token, after
// confirming with their password every time, and a new client logs in as them with it
// (signing in a second device by QR code, say). The token is 256 random bits, stored only as
// its hash, spent by the first login that presents it, and valid for loginTokenLifetime.

// loginTokenLifetime is how long a login token may be used. NOTSPEC: Synapse's 2 minutes.
const loginTokenLifetime = 2 * time.Minute

// loginTokenPrefix starts every login token, telling it apart from access tokens in logs
// and bug reports.
const loginTokenPrefix = "eggs_login_"

// POST /login/get_token (generateLoginToken): UIA with the user's password on every call
// ("servers MUST always re-prompt"), then a fresh token.
func (a *API) getLoginToken(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := rateLimit(a.limiters.LoginToken, d.UserID); err != nil {
		return err
	}
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	proceed, session, err := a.passwordUIA(w, r, d, req.Auth, "")
	if err != nil || !proceed {
		return err
	}
	a.uia.Delete(session)
	token, hash := auth.NewToken(loginTokenPrefix)
	now := a.clock()
	if err := storage.PutLoginToken(r.Context(), a.db, hash, d.UserID, now.Add(loginTokenLifetime).UnixMilli(), now.UnixMilli()); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"login_token": token, "expires_in_ms": loginTokenLifetime.Milliseconds(),
	})
	return nil
}

// tokenLoginUser spends the token of an m.login.token login and returns its user: 403
// M_FORBIDDEN for a token that is unknown, spent or expired, as the spec says.
func (a *API) tokenLoginUser(r *http.Request, body []byte) (string, error) {
	var creds struct {
		Token *string `json:"token"`
	}
	if err := httpapi.DecodeJSON(body, &creds); err != nil {
		return "", err
	}
	if creds.Token == nil || *creds.Token == "" {
		return "", httpapi.MissingParam("Missing token")
	}
	if len(*creds.Token) > maxTokenLength {
		return "", httpapi.Forbidden("Invalid login token")
	}
	userID, err := storage.SpendLoginToken(r.Context(), a.db, auth.HashToken(*creds.Token), a.nowMS())
	if errors.Is(err, storage.ErrNotFound) {
		return "", httpapi.Forbidden("Invalid login token")
	}
	if err != nil {
		return "", err
	}
	u, err := storage.LoadUser(r.Context(), a.db, userID)
	if err != nil {
		return "", err
	}
	if u.Deactivated {
		return "", errUserDeactivated()
	}
	return userID, nil
}

// maxTokenLength bounds a presented login token. NOTSPEC: ours are 54 characters.
const maxTokenLength = 1024
