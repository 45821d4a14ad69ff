package clientapi

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// Account management (client-server API "Account registration and management", "Login",
// "Client Config", "Device Management", "Profiles", "Capabilities negotiation";
// registration.yaml, login.yaml, logout.yaml, whoami.yaml, password_management.yaml,
// account_deactivation.yaml, device_management.yaml, profile.yaml, account-data.yaml,
// capabilities.yaml, registration_tokens.yaml).

// accountRoutes mounts the account endpoints under one client-server API version prefix.
func (a *API) accountRoutes(r chi.Router, h func(httpapi.Handler) http.Handler, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/register", h(a.register))
	r.Method(http.MethodGet, "/register/available", h(a.registerAvailable))
	r.Method(http.MethodGet, "/register/m.login.registration_token/validity", h(a.registrationTokenValidity))

	r.Method(http.MethodGet, "/login", h(a.loginFlows))
	r.Method(http.MethodPost, "/login", h(a.login))
	r.Method(http.MethodPost, "/logout", authed(a.logout))
	r.Method(http.MethodPost, "/logout/all", authed(a.logoutAll))
	r.Method(http.MethodGet, "/account/whoami", authed(a.whoami))
	r.Method(http.MethodPost, "/account/password", authed(a.changePassword))
	r.Method(http.MethodPost, "/account/deactivate", authed(a.deactivate))

	r.Method(http.MethodGet, "/devices", authed(a.listDevices))
	r.Method(http.MethodGet, "/devices/{deviceId}", authed(a.getDevice))
	r.Method(http.MethodPut, "/devices/{deviceId}", authed(a.updateDevice))
	r.Method(http.MethodDelete, "/devices/{deviceId}", authed(a.deleteDevice))
	r.Method(http.MethodPost, "/delete_devices", authed(a.deleteDevices))

	r.Method(http.MethodGet, "/profile/{userId}", h(a.getProfile))
	r.Method(http.MethodGet, "/profile/{userId}/{keyName}", h(a.getProfileField))
	r.Method(http.MethodPut, "/profile/{userId}/{keyName}", authed(a.setProfileField))
	r.Method(http.MethodDelete, "/profile/{userId}/{keyName}", authed(a.deleteProfileField))

	r.Method(http.MethodGet, "/user/{userId}/account_data/{type}", authed(a.getAccountData))
	r.Method(http.MethodPut, "/user/{userId}/account_data/{type}", authed(a.putAccountData))
	r.Method(http.MethodGet, "/user/{userId}/rooms/{roomId}/account_data/{type}", authed(a.getAccountData))
	r.Method(http.MethodPut, "/user/{userId}/rooms/{roomId}/account_data/{type}", authed(a.putAccountData))

	r.Method(http.MethodGet, "/capabilities", authed(a.capabilities))
}

// maxAccountBody bounds the request bodies of the account endpoints: none legitimately
// comes near it. NOTSPEC: the spec sets no limit.
const maxAccountBody = 64 * 1024

// maxDeviceIDLength bounds client-chosen device IDs. NOTSPEC: device IDs are opaque and the
// spec sets no limit; Synapse refuses more than 512 characters, we are stricter because a
// device ID appears in every key upload and to-device message.
const maxDeviceIDLength = 255

// maxDeviceDisplayName is the longest device display name, in characters, as Synapse's
// MAX_DEVICE_DISPLAY_NAME_LEN. NOTSPEC: the spec sets no limit.
const maxDeviceDisplayName = 100

// clientIP is the address the request came from, the key of per-address rate limits.
//
// NOTSPEC: X-Forwarded-For is not trusted, since no reverse proxy is configured.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// errUserDeactivated is login's answer for a deactivated account (login.yaml, 403).
func errUserDeactivated() *httpapi.Error {
	return httpapi.NewError(http.StatusForbidden, "M_USER_DEACTIVATED", "This account has been deactivated")
}

// errInvalidCredentials is login's answer for an unknown user or a wrong password; both get
// the same answer so that login does not tell which accounts exist.
func errInvalidCredentials() *httpapi.Error {
	return httpapi.Forbidden("Invalid username or password")
}

// localUserID resolves the user of an m.id.user identifier, a full user ID or a localpart,
// to a local user ID. ok is false for users of other servers and malformed IDs.
func (a *API) localUserID(user string) (string, bool) {
	if strings.HasPrefix(user, "@") {
		localpart, server, found := strings.Cut(user[1:], ":")
		if !found || server != a.cfg.ServerName || localpart == "" {
			return "", false
		}
		return user, true
	}
	if user == "" || strings.ContainsAny(user, ":") {
		return "", false
	}
	return "@" + user + ":" + a.cfg.ServerName, true
}

// lookupLogin finds the account an m.id.user identifier names. User IDs are matched as
// given, then lowercased: registration lowercases new localparts, and users type their
// name in any case. ErrNotFound when there is no such local account.
func (a *API) lookupLogin(r *http.Request, id auth.Identifier) (*storage.UserRow, error) {
	if id.Type != auth.IdentifierUser {
		// No third-party identifiers are bound on this server (login.yaml: 403 when the
		// identifier is not known).
		return nil, storage.ErrNotFound
	}
	userID, ok := a.localUserID(id.User)
	if !ok {
		return nil, storage.ErrNotFound
	}
	u, err := storage.LoadUser(r.Context(), a.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		if lower := strings.ToLower(userID); lower != userID {
			u, err = storage.LoadUser(r.Context(), a.db, lower)
		}
	}
	return u, err
}

var (
	dummyHashOnce sync.Once
	dummyHash     string
)

// burnPasswordCheck spends the time of a password check when there is no account to check
// against, so that response times do not reveal which accounts exist.
func burnPasswordCheck(password string) {
	dummyHashOnce.Do(func() {
		dummyHash, _ = auth.HashPassword("scrambled eggs dummy password")
	})
	auth.CheckPassword(dummyHash, password)
}

// checkUserPassword verifies a password of a loaded account, counting failures against
// the user's LoginFailed budget, and upgrades the stored hash when its parameters are
// outdated. It reports whether the password is right; err is a rate-limit or internal
// error.
func (a *API) checkUserPassword(r *http.Request, u *storage.UserRow, password string) (bool, error) {
	if ok, retry := a.limiters.LoginFailed.Peek(u.UserID); !ok {
		return false, httpapi.LimitExceeded(retry)
	}
	if u.PasswordHash == "" || !auth.CheckPassword(u.PasswordHash, password) {
		if u.PasswordHash == "" {
			burnPasswordCheck(password)
		}
		a.limiters.LoginFailed.Allow(u.UserID)
		return false, nil
	}
	if auth.NeedsRehash(u.PasswordHash) {
		if hash, err := auth.HashPassword(password); err == nil {
			if err := storage.SetPasswordHash(r.Context(), a.db, u.UserID, hash); err != nil {
				a.log.Warn("rehash password", "user", u.UserID, "err", err)
			}
		}
	}
	return true, nil
}

// passwordUIA runs User-Interactive Authentication with the single flow [m.login.password]
// for an operation of the authenticated user d (client-server API "Password-based"
// authentication type). The password must be that of d's own account. It reports whether
// the operation may proceed; when not, the 401 response has been written. fingerprint binds
// the session to the parts of the request body that must not change between stages.
func (a *API) passwordUIA(w http.ResponseWriter, r *http.Request, d *Device, authDict json.RawMessage, fingerprint string) (proceed bool, sessionID string, err error) {
	op := auth.Operation{Method: r.Method, Path: r.URL.Path, UserID: d.UserID, Fingerprint: fingerprint}
	offer := auth.AuthFlows{Flows: [][]string{{auth.StagePassword}}}
	stages := auth.Stages{auth.StagePassword: auth.PasswordStage(func(creds auth.PasswordCredentials) error {
		u, err := a.lookupLogin(r, creds.Identifier)
		if errors.Is(err, storage.ErrNotFound) {
			if creds.Identifier.Type != auth.IdentifierUser {
				return &auth.Error{Status: http.StatusForbidden, Code: auth.ErrCodeForbidden, Message: "Unknown third-party identifier"}
			}
			return &auth.StageError{Code: auth.ErrCodeForbidden, Message: "Invalid password"}
		}
		if err != nil {
			return err
		}
		if u.UserID != d.UserID {
			return &auth.StageError{Code: auth.ErrCodeForbidden, Message: "Invalid password"}
		}
		// A rate-limit *httpapi.Error passes through the engine wrapped, and WriteError
		// still finds it with errors.As.
		ok, err := a.checkUserPassword(r, u, creds.Password)
		if err != nil {
			return err
		}
		if !ok {
			return &auth.StageError{Code: auth.ErrCodeForbidden, Message: "Invalid password"}
		}
		return nil
	})}
	done, resp, err := a.uia.Check(op, offer, authDict, stages.Validate)
	if err != nil {
		return false, "", uiaError(err)
	}
	if !done {
		httpapi.WriteJSON(w, http.StatusUnauthorized, resp)
		return false, "", nil
	}
	return true, resp.Session, nil
}

// uiaError turns the engine's *auth.Error into a Matrix error; other errors are internal.
func uiaError(err error) error {
	var authErr *auth.Error
	if errors.As(err, &authErr) {
		return httpapi.NewError(authErr.Status, authErr.Code, "%s", authErr.Message)
	}
	return err
}

// fingerprint is a digest of request fields a UIA session is bound to.
func fingerprint(parts ...string) string {
	h := sha256.New()
	for _, p := range parts {
		h.Write([]byte(p))
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))
}

// loginResponse is the body of a successful /login or /register (login.yaml,
// registration.yaml). We issue no refresh tokens and our access tokens do not expire.
type loginResponse struct {
	UserID      string `json:"user_id"`
	AccessToken string `json:"access_token,omitempty"`
	DeviceID    string `json:"device_id,omitempty"`
	HomeServer  string `json:"home_server,omitempty"`
}

// validateDeviceRequest checks a client-chosen device ID, and shortens an initial device
// display name that is too long. NOTSPEC: Synapse truncates over-long initial names rather
// than failing the login, and so do we.
func validateDeviceRequest(deviceID, displayName *string) error {
	if len(*deviceID) > maxDeviceIDLength {
		return httpapi.InvalidParam("device_id is longer than %d bytes", maxDeviceIDLength)
	}
	if strings.ContainsAny(*deviceID, "\x00") {
		return httpapi.InvalidParam("device_id contains a NUL character")
	}
	if name := []rune(*displayName); len(name) > maxDeviceDisplayName {
		*displayName = string(name[:maxDeviceDisplayName])
	}
	return nil
}

// newSession creates (or, for a known device ID, re-keys) a device of userID and returns
// the login response with its fresh access token.
func (a *API) newSession(r *http.Request, userID, deviceID, displayName string) (*loginResponse, error) {
	if deviceID == "" {
		deviceID = auth.NewDeviceID()
	}
	token, hash := auth.NewToken(auth.TokenPrefix)
	err := storage.UpsertDevice(r.Context(), a.db, userID, deviceID, displayName, hash, clientIP(r), a.nowMS())
	a.forgetTokens() // a login with an existing device ID replaces that device's token
	if err != nil {
		return nil, err
	}
	return &loginResponse{UserID: userID, AccessToken: token, DeviceID: deviceID}, nil
}

// changePasswordRequest is the body of POST /account/password.
type changePasswordRequest struct {
	Auth          json.RawMessage `json:"auth"`
	NewPassword   *string         `json:"new_password"`
	LogoutDevices *bool           `json:"logout_devices"`
}

// POST /account/password (client-server API "Password management",
// password_management.yaml): UIA [m.login.password] with the current password, then the
// new password replaces it. Unless logout_devices is false, every other device of the user
// is logged out; the requesting device never is (the spec says SHOULD NOT).
//
// NOTSPEC: an access token is required, as in Synapse without e-mail password reset; with
// no 3PIDs there is no other way to name the account.
func (a *API) changePassword(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req changePasswordRequest
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	// As Synapse: a new password that is given is checked before UIA, so that a bad one
	// does not cost the user their password stage; its absence only after.
	if req.NewPassword != nil && len(*req.NewPassword) > auth.MaxPasswordBytes {
		return httpapi.InvalidParam("Password is longer than %d bytes", auth.MaxPasswordBytes)
	}
	proceed, session, err := a.passwordUIA(w, r, d, req.Auth, "")
	if err != nil || !proceed {
		return err
	}
	if req.NewPassword == nil || *req.NewPassword == "" {
		return httpapi.MissingParam("Missing new_password")
	}
	hash, err := auth.HashPassword(*req.NewPassword)
	if errors.Is(err, auth.ErrPasswordTooLong) {
		return httpapi.InvalidParam("Password is too long")
	}
	if err != nil {
		return err
	}
	logout := req.LogoutDevices == nil || *req.LogoutDevices
	err = a.changeDeviceList(r.Context(), d.UserID, func(tx *storage.Tx, _ int64) (bool, error) {
		if err := storage.SetPasswordHash(r.Context(), tx, d.UserID, hash); err != nil {
			return false, err
		}
		if logout {
			return true, deleteOtherDevicesE2E(r.Context(), tx, d.UserID, d.DeviceID)
		}
		return false, nil
	})
	a.forgetTokens()
	if err != nil {
		return err
	}
	a.uia.Delete(session)
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// deactivateRequest is the body of POST /account/deactivate.
type deactivateRequest struct {
	Auth     json.RawMessage `json:"auth"`
	IDServer string          `json:"id_server"`
	Erase    bool            `json:"erase"`
}

// POST /account/deactivate (client-server API "Account deactivation",
// account_deactivation.yaml): UIA [m.login.password], then the account loses its password,
// profile and devices (so every access token), and with erase its account data; finally
// the user leaves every room they are joined to or invited to.
//
// The answer is id_server_unbind_result "success": the spec requires it when the server
// has no third-party identifiers to unbind, and this server binds none.
//
// NOTSPEC: an access token is required, as in Synapse.
func (a *API) deactivate(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req deactivateRequest
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	proceed, session, err := a.passwordUIA(w, r, d, req.Auth, "")
	if err != nil || !proceed {
		return err
	}
	if err := a.changeDeviceList(r.Context(), d.UserID, func(tx *storage.Tx, _ int64) (bool, error) {
		// The devices' keys and pending to-device messages go with the devices.
		if err := deleteOtherDevicesE2E(r.Context(), tx, d.UserID, ""); err != nil {
			return false, err
		}
		return true, storage.DeactivateUser(r.Context(), tx, d.UserID, req.Erase)
	}); err != nil {
		a.forgetTokens()
		return err
	}
	a.forgetTokens()
	a.uia.Delete(session)
	a.leaveAllRooms(r, d.UserID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "success"})
	return nil
}

// leaveAllRooms makes a deactivated user leave the rooms they are joined to, invited to or
// knocking on. A room whose leave fails is logged and skipped: the account is already
// deactivated, and failing the request would only make the client retry it.
func (a *API) leaveAllRooms(r *http.Request, userID string) {
	// The leaves finish even if the client goes away meanwhile.
	ctx := context.WithoutCancel(r.Context())
	memberships, err := storage.UserMemberships(ctx, a.db, userID, "join", "invite", "knock")
	if err != nil {
		a.log.Error("list rooms of deactivated user", "user", userID, "err", err)
		return
	}
	content := mustJSON(map[string]string{"membership": "leave"})
	for _, m := range memberships {
		stateKey := userID
		_, err := a.rooms.Send(ctx, m.RoomID, rooms.EventRequest{
			Sender: userID, Type: "m.room.member", StateKey: &stateKey, Content: content,
		})
		if err != nil {
			a.log.Warn("leave room of deactivated user", "user", userID, "room", m.RoomID, "err", err)
		}
	}
}
