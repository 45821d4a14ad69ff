package clientapi

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Account registration (client-server API "Account registration", registration.yaml,
// registration_tokens.yaml) and Synapse's shared-secret admin registration.

// registerRequest is the body of POST /register.
type registerRequest struct {
	Auth                     json.RawMessage `json:"auth"`
	Username                 *string         `json:"username"`
	Password                 *string         `json:"password"`
	DeviceID                 string          `json:"device_id"`
	InitialDeviceDisplayName string          `json:"initial_device_display_name"`
	InhibitLogin             bool            `json:"inhibit_login"`
	// RefreshToken is accepted and ignored: we issue no refresh tokens, which the spec allows
	// ("Refreshing access tokens": the server may ignore the request).
	RefreshToken bool `json:"refresh_token"`
}

// sessionDataRegisteredUser is the UIA session data key under which /register keeps the
// account it created, so that a retried request returns that account instead of failing
// with M_USER_IN_USE. NOTSPEC: Synapse behaves so.
const sessionDataRegisteredUser = "eggs.registered_user_id"

// errInvalidUsername is M_INVALID_USERNAME (registration.yaml, 400).
func errInvalidUsername(format string, args ...any) *httpapi.Error {
	return httpapi.NewError(http.StatusBadRequest, "M_INVALID_USERNAME", format, args...)
}

// errUserInUse is M_USER_IN_USE (registration.yaml, 400).
func errUserInUse() *httpapi.Error {
	return httpapi.NewError(http.StatusBadRequest, "M_USER_IN_USE", "Desired user ID is already taken.")
}

// errRegistrationDisabled is the 403 of /register when the server takes no registrations.
func errRegistrationDisabled() *httpapi.Error {
	return httpapi.Forbidden("Registration is disabled")
}

// newLocalUserID checks a desired username and builds the user ID.
//
// NOTSPEC: like Synapse, the username is lowercased first, so "Alice" registers @alice.
func (a *API) newLocalUserID(username string) (string, error) {
	localpart := strings.ToLower(username)
	id, err := spec.NewUserID(localpart, a.cfg.ServerName)
	if err != nil {
		return "", errInvalidUsername("User ID may contain only a-z, 0-9, and -._=/+, and be at most 255 bytes")
	}
	return id.String(), nil
}

// checkUsernameFree answers M_USER_IN_USE when userID has an account (deactivated ones
// included: user IDs are never reused).
func (a *API) checkUsernameFree(r *http.Request, userID string) error {
	_, err := storage.LoadUser(r.Context(), a.db, userID)
	switch {
	case err == nil:
		return errUserInUse()
	case errors.Is(err, storage.ErrNotFound):
		return nil
	default:
		return err
	}
}

// generatedLocalpart makes the localpart of a user who registered without a username
// (registration.yaml: "the homeserver MUST generate a Matrix ID local part"): 12 random
// characters of a-z and 2-7.
func generatedLocalpart() string {
	return strings.ToLower(rand.Text()[:12])
}

// registrationFlows is the UIA offer of POST /register for the configured mode.
func (a *API) registrationFlows() auth.AuthFlows {
	if a.cfg.Registration == config.RegistrationToken {
		return auth.AuthFlows{Flows: [][]string{{auth.StageRegistrationToken}}}
	}
	return auth.AuthFlows{Flows: [][]string{{auth.StageDummy}}}
}

// sessionOf reads auth.session of an auth dict, "" when absent or malformed (the UIA engine
// reports malformed dicts itself).
func sessionOf(authDict json.RawMessage) string {
	var d struct {
		Session string `json:"session"`
	}
	if len(bytes.TrimSpace(authDict)) == 0 || json.Unmarshal(authDict, &d) != nil {
		return ""
	}
	return d.Session
}

// POST /register (client-server API "Account registration", registration.yaml). Only
// kind=user is served; the mode (EGGS_REGISTRATION) chooses the UIA flow: open offers
// [m.login.dummy], token offers [m.login.registration_token], closed refuses with 403.
func (a *API) register(w http.ResponseWriter, r *http.Request) error {
	switch kind := r.URL.Query().Get("kind"); kind {
	case "", "user":
	case "guest":
		return httpapi.NewError(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", "Guest access is not allowed on this server")
	default:
		return httpapi.InvalidParam("Unknown kind %q", kind)
	}
	if a.cfg.Registration == config.RegistrationClosed {
		return errRegistrationDisabled()
	}
	if err := rateLimit(a.limiters.Register, clientIP(r)); err != nil {
		return err
	}
	var req registerRequest
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	if err := validateDeviceRequest(&req.DeviceID, &req.InitialDeviceDisplayName); err != nil {
		return err
	}
	if req.Password != nil && len(*req.Password) > auth.MaxPasswordBytes {
		return httpapi.InvalidParam("Password is longer than %d bytes", auth.MaxPasswordBytes)
	}

	// A retried request of a session that already created its account logs that account in
	// again instead of failing with M_USER_IN_USE.
	if session := sessionOf(req.Auth); session != "" {
		if v, ok := a.uia.SessionData(session, sessionDataRegisteredUser); ok {
			if userID, ok := v.(string); ok {
				return a.finishRegistration(w, r, &req, userID, "")
			}
		}
	}

	// registration.yaml: the username checks happen before User-Interactive Authentication.
	userID := ""
	if req.Username != nil && *req.Username != "" {
		var err error
		if userID, err = a.newLocalUserID(*req.Username); err != nil {
			return err
		}
		if err := a.checkUsernameFree(r, userID); err != nil {
			return err
		}
	}

	op := auth.Operation{Method: http.MethodPost, Path: r.URL.Path}
	stages := auth.Stages{
		auth.StageDummy: auth.DummyStage,
		auth.StageRegistrationToken: auth.RegistrationTokenStage(func(token string) (bool, error) {
			return storage.RegistrationTokenValid(r.Context(), a.db, token, a.nowMS())
		}),
	}
	done, resp, err := a.uia.Check(op, a.registrationFlows(), req.Auth, stages.Validate)
	if err != nil {
		return uiaError(err)
	}
	if !done {
		httpapi.WriteJSON(w, http.StatusUnauthorized, resp)
		return nil
	}

	token := ""
	if a.cfg.Registration == config.RegistrationToken {
		v, _ := a.uia.SessionData(resp.Session, auth.SessionDataRegistrationToken)
		token, _ = v.(string)
		if token == "" {
			return httpapi.Forbidden("Registration requires a registration token")
		}
	}
	hash := ""
	if req.Password != nil && *req.Password != "" {
		if hash, err = auth.HashPassword(*req.Password); err != nil {
			if errors.Is(err, auth.ErrPasswordTooLong) {
				return httpapi.InvalidParam("Password is too long")
			}
			return err
		}
	}
	userID, err = a.createAccount(r, userID, hash, false, "", token)
	if err != nil {
		return err
	}
	a.uia.SetSessionData(resp.Session, sessionDataRegisteredUser, userID)
	return a.finishRegistration(w, r, &req, userID, "")
}

// createAccount creates a local account with the given password hash ("" for none) and
// returns its user ID. An empty userID asks for a generated localpart. A registration
// token, when given, is charged in the same transaction, so concurrent registrations cannot
// overuse it; one used up since its UIA stage completed fails with 403 M_FORBIDDEN. The
// display name defaults to the localpart. NOTSPEC: as in Synapse, so that member events
// name the user.
func (a *API) createAccount(r *http.Request, userID, passwordHash string, admin bool, displayName, token string) (string, error) {
	generate := userID == ""
	for attempt := 0; ; attempt++ {
		if generate {
			id, err := spec.NewUserID(generatedLocalpart(), a.cfg.ServerName)
			if err != nil {
				return "", err
			}
			userID = id.String()
		}
		name := displayName
		if name == "" {
			parsed, err := spec.ParseUserID(userID)
			if err != nil {
				return "", err
			}
			name = parsed.Localpart()
		}
		row := &storage.UserRow{UserID: userID, PasswordHash: passwordHash, IsAdmin: admin, DisplayName: name}
		err := a.db.WithTx(r.Context(), func(tx *storage.Tx) error {
			if err := storage.InsertUser(r.Context(), tx, row, a.nowMS()); err != nil {
				return err
			}
			if token == "" {
				return nil
			}
			ok, err := storage.UseRegistrationToken(r.Context(), tx, token, a.nowMS())
			if err != nil {
				return err
			}
			if !ok {
				return httpapi.Forbidden("The registration token is no longer valid")
			}
			return nil
		})
		switch {
		case err == nil:
			return userID, nil
		case errors.Is(err, storage.ErrExists) && generate && attempt < 5:
			continue
		case errors.Is(err, storage.ErrExists):
			return "", errUserInUse()
		default:
			return "", err
		}
	}
}

// finishRegistration answers a successful /register: the user ID and, unless inhibit_login,
// a new device and access token.
func (a *API) finishRegistration(w http.ResponseWriter, r *http.Request, req *registerRequest, userID, homeServer string) error {
	if req.InhibitLogin {
		httpapi.WriteJSON(w, http.StatusOK, loginResponse{UserID: userID})
		return nil
	}
	resp, err := a.newSession(r, userID, req.DeviceID, req.InitialDeviceDisplayName)
	if err != nil {
		return err
	}
	resp.HomeServer = homeServer
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// GET /register/available (registration.yaml checkUsernameAvailability).
//
// NOTSPEC: as in Synapse, the answer is 403 M_FORBIDDEN while registration is closed.
func (a *API) registerAvailable(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Registration == config.RegistrationClosed {
		return errRegistrationDisabled()
	}
	username := r.URL.Query().Get("username")
	if username == "" {
		return httpapi.MissingParam("Missing username")
	}
	userID, err := a.newLocalUserID(username)
	if err != nil {
		return err
	}
	if err := a.checkUsernameFree(r, userID); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"available": true})
	return nil
}

// GET /register/m.login.registration_token/validity (registration_tokens.yaml). Rate
// limited per address, as the spec asks, with the registration budget.
func (a *API) registrationTokenValidity(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.Registration != config.RegistrationToken {
		return httpapi.Forbidden("Registration with tokens is not enabled on this homeserver.")
	}
	if err := rateLimit(a.limiters.Register, clientIP(r)); err != nil {
		return err
	}
	token, present := r.URL.Query()["token"]
	if !present || len(token) == 0 {
		return httpapi.MissingParam("Missing token")
	}
	if !auth.ValidRegistrationTokenSyntax(token[0]) {
		return httpapi.InvalidParam("Registration tokens are 1 to 64 characters of A-Z, a-z, 0-9, -._~")
	}
	valid, err := storage.RegistrationTokenValid(r.Context(), a.db, token[0], a.nowMS())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{"valid": valid})
	return nil
}

// sharedSecretRequest is the body of POST /_synapse/admin/v1/register.
type sharedSecretRequest struct {
	Nonce       string `json:"nonce"`
	Username    string `json:"username"`
	Password    string `json:"password"`
	Admin       bool   `json:"admin"`
	UserType    string `json:"user_type"`
	DisplayName string `json:"displayname"`
	MAC         string `json:"mac"`
}

// errSharedSecretDisabled answers both shared-secret endpoints when no secret is set.
func errSharedSecretDisabled() *httpapi.Error {
	return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "Shared secret registration is not enabled")
}

// GET /_synapse/admin/v1/register: a nonce for shared-secret registration.
//
// NOTSPEC: Synapse's admin API (see auth/sharedsecret.go), used by register_new_matrix_user
// and setup scripts. It works whatever EGGS_REGISTRATION says.
func (a *API) sharedSecretNonce(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.RegistrationSharedSecret == "" {
		return errSharedSecretDisabled()
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"nonce": a.nonces.New()})
	return nil
}

// POST /_synapse/admin/v1/register: create an account (an admin, if asked) authorised by
// an HMAC of the request under the shared secret. NOTSPEC: Synapse's admin API.
func (a *API) sharedSecretRegister(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.RegistrationSharedSecret == "" {
		return errSharedSecretDisabled()
	}
	var req sharedSecretRequest
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	switch {
	case req.Nonce == "":
		return httpapi.MissingParam("nonce must be specified")
	case req.Username == "":
		return httpapi.MissingParam("username must be specified")
	case req.MAC == "":
		return httpapi.MissingParam("mac must be specified")
	case strings.ContainsRune(req.Username, 0), strings.ContainsRune(req.Password, 0), strings.ContainsRune(req.UserType, 0):
		return httpapi.InvalidParam("Fields must not contain NUL characters")
	case len(req.Password) > auth.MaxPasswordBytes:
		return httpapi.InvalidParam("Password is longer than %d bytes", auth.MaxPasswordBytes)
	case len([]rune(req.DisplayName)) > maxDisplayNameLength:
		return httpapi.InvalidParam("displayname is longer than %d characters", maxDisplayNameLength)
	}
	// The nonce is burnt before the MAC is checked, so a wrong MAC cannot be retried.
	if !a.nonces.Consume(req.Nonce) {
		return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "Unrecognised nonce")
	}
	if !auth.VerifyRegistrationMAC(a.cfg.RegistrationSharedSecret, req.Nonce, req.Username, req.Password, req.Admin, req.UserType, req.MAC) {
		return httpapi.Forbidden("HMAC incorrect")
	}
	userID, err := a.newLocalUserID(req.Username)
	if err != nil {
		return err
	}
	if err := a.checkUsernameFree(r, userID); err != nil {
		return err
	}
	hash := ""
	if req.Password != "" {
		if hash, err = auth.HashPassword(req.Password); err != nil {
			if errors.Is(err, auth.ErrPasswordTooLong) {
				return httpapi.InvalidParam("Password is too long")
			}
			return err
		}
	}
	if userID, err = a.createAccount(r, userID, hash, req.Admin, req.DisplayName, ""); err != nil {
		return err
	}
	return a.finishRegistration(w, r, &registerRequest{}, userID, a.cfg.ServerName)
}
