package clientapi

import (
	"errors"
	"net/http"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// Login and logout (client-server API "Login", "Logout"; login.yaml, logout.yaml,
// whoami.yaml).

// loginRequest is the part of a POST /login body besides the credentials, which
// auth.ParsePasswordCredentials reads.
type loginRequest struct {
	Type                     string `json:"type"`
	DeviceID                 string `json:"device_id"`
	InitialDeviceDisplayName string `json:"initial_device_display_name"`
	// RefreshToken is accepted and ignored: we issue no refresh tokens.
	RefreshToken bool `json:"refresh_token"`
}

// GET /login: the login types this server accepts (login.yaml getLoginFlows): passwords, and
// tokens from POST /login/get_token (there is no SSO).
func (a *API) loginFlows(w http.ResponseWriter, r *http.Request) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"flows": []map[string]any{{"type": auth.StagePassword}, {"type": loginTypeToken, "get_login_token": true}},
	})
	return nil
}

// loginTypeToken is the login type of token login (logintoken.go).
const loginTypeToken = "m.login.token"

// POST /login (client-server API "Password-based" login, login.yaml). Rate limits, in
// Synapse's manner: every attempt counts against the client's address (LoginAddress) and
// the account (LoginAccount), failed attempts also against the account's LoginFailed
// budget, which is checked before the password so that guessing stops once it is spent.
func (a *API) login(w http.ResponseWriter, r *http.Request) error {
	if err := rateLimit(a.limiters.LoginAddress, clientIP(r)); err != nil {
		return err
	}
	body, err := httpapi.ReadBody(r, maxAccountBody)
	if err != nil {
		return err
	}
	var req loginRequest
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	switch req.Type {
	case "":
		return httpapi.MissingParam("Missing login type")
	case auth.StagePassword, loginTypeToken:
	default:
		return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "Bad login type.")
	}
	if err := validateDeviceRequest(&req.DeviceID, &req.InitialDeviceDisplayName); err != nil {
		return err
	}
	if req.Type == loginTypeToken {
		userID, err := a.tokenLoginUser(r, body)
		if err != nil {
			return err
		}
		return a.startSession(w, r, userID, req)
	}
	creds, err := auth.ParsePasswordCredentials(body)
	if err != nil {
		return uiaError(err)
	}
	if creds.Identifier.Type != auth.IdentifierUser {
		// No third-party identifiers are bound to accounts here (login.yaml: 403).
		return httpapi.Forbidden("Unknown third-party identifier")
	}

	u, err := a.lookupLogin(r, creds.Identifier)
	if errors.Is(err, storage.ErrNotFound) {
		if userID, ok := a.localUserID(creds.Identifier.User); ok {
			if err := rateLimit(a.limiters.LoginAccount, userID); err != nil {
				return err
			}
		}
		burnPasswordCheck(creds.Password)
		return errInvalidCredentials()
	}
	if err != nil {
		return err
	}
	if err := rateLimit(a.limiters.LoginAccount, u.UserID); err != nil {
		return err
	}
	if u.Deactivated {
		return errUserDeactivated()
	}
	ok, err := a.checkUserPassword(r, u, creds.Password)
	if err != nil {
		return err
	}
	if !ok {
		return errInvalidCredentials()
	}
	return a.startSession(w, r, u.UserID, req)
}

// startSession gives a user who proved who they are a device and an access token, unless
// the account is locked.
func (a *API) startSession(w http.ResponseWriter, r *http.Request, userID string, req loginRequest) error {
	if err := a.requireNotLocked(r, userID); err != nil {
		return err
	}
	resp, err := a.newSession(r, userID, req.DeviceID, req.InitialDeviceDisplayName)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// POST /logout (logout.yaml): the access token, and so the device it belongs to, stops
// working; the device's keys and pending to-device messages go with it.
func (a *API) logout(w http.ResponseWriter, r *http.Request, d *Device) error {
	err := a.removeDevicesAnnounced(r.Context(), d.UserID, []string{d.DeviceID})
	a.forgetTokens()
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /logout/all (logout.yaml): every access token and device of the user goes,
// including the one of this request, with their keys and pending to-device messages.
func (a *API) logoutAll(w http.ResponseWriter, r *http.Request, d *Device) error {
	err := a.changeDeviceList(r.Context(), d.UserID, func(tx *storage.Tx, _ int64) (bool, error) {
		return true, deleteOtherDevicesE2E(r.Context(), tx, d.UserID, "")
	})
	a.forgetTokens()
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /account/whoami (whoami.yaml). There are no guest accounts.
func (a *API) whoami(w http.ResponseWriter, r *http.Request, d *Device) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"user_id":   d.UserID,
		"device_id": d.DeviceID,
		"is_guest":  false,
	})
	return nil
}
