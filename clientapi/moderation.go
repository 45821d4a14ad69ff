package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Account moderation (client-server API "Account locking", "Account suspension", and the
// server administration endpoints of admin.yaml, v1.18).
//
// A locked account may use only POST /logout and POST /logout/all: requireAuth answers
// everything else with 401 M_USER_LOCKED and soft_logout, and login refuses it a new token.
// Its tokens stay valid, so its sessions resume when it is unlocked.
//
// A suspended account may still read (/sync, /messages, …), log in, manage its devices and
// keys, leave rooms, reject invites, redact its own events and deactivate itself. What it
// may not do answers 403 M_USER_SUSPENDED; the spec leaves the set to the server and
// recommends forbidding joins, knocks, invites, sending to rooms, profile changes and
// redacting others' events. Here that means the handlers of /join, /rooms/{roomId}/join,
// /knock, /invite, /send, PUT /state, /kick, /ban and /unban (events sent to a room), the
// profile PUT and DELETE, /createRoom and /upgrade (which join the sender to a new room), and
// /redact for another user's event. Each calls Device.requireNotSuspended; the state comes
// with the access-token lookup, so the check costs nothing.

// adminRoutes mounts the account moderation endpoints of the server administrators under
// /v1.
func (a *API) adminRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/admin/lock/{userId}", authed(a.getAdminLock))
	r.Method(http.MethodPut, "/admin/lock/{userId}", authed(a.setAdminLock))
	r.Method(http.MethodGet, "/admin/suspend/{userId}", authed(a.getAdminSuspend))
	r.Method(http.MethodPut, "/admin/suspend/{userId}", authed(a.setAdminSuspend))
}

// errUserLocked is the answer to a locked account (client-server API "Account locking").
func errUserLocked() *httpapi.Error {
	e := httpapi.NewError(http.StatusUnauthorized, "M_USER_LOCKED", "This account has been locked")
	e.Extra = map[string]any{"soft_logout": true}
	return e
}

// lockedMayUse reports whether r is one of the endpoints a locked account may still use:
// POST /logout and POST /logout/all (client-server API "Account locking"). It goes by the
// route that matched, whose pattern no path parameter can imitate.
func lockedMayUse(r *http.Request) bool {
	rctx := chi.RouteContext(r.Context())
	if r.Method != http.MethodPost || rctx == nil {
		return false
	}
	pattern := rctx.RoutePattern()
	return strings.HasSuffix(pattern, "/logout") || strings.HasSuffix(pattern, "/logout/all")
}

// requireNotSuspended answers 403 M_USER_SUSPENDED when the device's account is suspended
// (client-server API "Account suspension"). Handlers of the actions a suspended account may
// not take call it first.
func (d *Device) requireNotSuspended() error {
	if d.Suspended {
		return httpapi.NewError(http.StatusForbidden, "M_USER_SUSPENDED", "You cannot perform this action while suspended.")
	}
	return nil
}

// requireNotLocked answers M_USER_LOCKED when userID's account is locked: login calls it, as
// a locked account "cannot obtain a new access token until the account has been unlocked"
// (client-server API "Soft logout"). NOTSPEC: login.yaml names no error for it; this is the
// answer every other endpoint gives a locked account, as in Synapse.
func (a *API) requireNotLocked(r *http.Request, userID string) error {
	status, err := storage.LoadAccountStatus(r.Context(), a.db, userID)
	if err != nil {
		return err
	}
	if status.Locked {
		return errUserLocked()
	}
	return nil
}

// accountFlag is one of the two states the moderation endpoints read and set.
type accountFlag struct {
	// key names the state in the request and response bodies, and in the logs.
	key   string
	value func(*storage.AccountStatus) bool
	set   func(ctx context.Context, q storage.Querier, userID string, value bool) error
}

var (
	lockedFlag = accountFlag{
		key:   "locked",
		value: func(s *storage.AccountStatus) bool { return s.Locked },
		set:   storage.SetAccountLocked,
	}
	suspendedFlag = accountFlag{
		key:   "suspended",
		value: func(s *storage.AccountStatus) bool { return s.Suspended },
		set:   storage.SetAccountSuspended,
	}
)

// GET /admin/lock/{userId} (admin.yaml getAdminLockUser).
func (a *API) getAdminLock(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.getAccountFlag(w, r, d, lockedFlag)
}

// PUT /admin/lock/{userId} (admin.yaml setAdminLockUser).
func (a *API) setAdminLock(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.setAccountFlag(w, r, d, lockedFlag)
}

// GET /admin/suspend/{userId} (admin.yaml getAdminSuspendUser).
func (a *API) getAdminSuspend(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.getAccountFlag(w, r, d, suspendedFlag)
}

// PUT /admin/suspend/{userId} (admin.yaml setAdminSuspendUser).
func (a *API) setAdminSuspend(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.setAccountFlag(w, r, d, suspendedFlag)
}

// getAccountFlag answers {key: state} for a local account.
func (a *API) getAccountFlag(w http.ResponseWriter, r *http.Request, d *Device, flag accountFlag) error {
	userID, err := a.moderatedUserID(r, d)
	if err != nil {
		return err
	}
	status, err := a.moderatedAccount(r, d, userID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{flag.key: flag.value(status)})
	return nil
}

// setAccountFlag sets the state of a local account from the body {key: bool} and echoes it.
// The token cache is emptied, so that the account's next request sees the change.
func (a *API) setAccountFlag(w http.ResponseWriter, r *http.Request, d *Device, flag accountFlag) error {
	userID, err := a.moderatedUserID(r, d)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := httpapi.ReadJSON(r, maxAccountBody, &body); err != nil {
		return err
	}
	raw, ok := body[flag.key]
	if !ok {
		return httpapi.MissingParam("Missing %s", flag.key)
	}
	var value bool
	if err := json.Unmarshal(raw, &value); err != nil {
		return httpapi.BadJSON("%s must be a boolean", flag.key)
	}
	if userID == d.UserID {
		return httpapi.Forbidden("You cannot change this for your own account")
	}
	if _, err := a.moderatedAccount(r, d, userID); err != nil {
		return err
	}
	err = flag.set(r.Context(), a.db, userID, value)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("User not found")
	}
	if err != nil {
		return err
	}
	a.forgetTokens()
	a.log.Info("account moderation", "user", userID, flag.key, value, "admin", d.UserID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]bool{flag.key: value})
	return nil
}

// moderatedUserID checks that the requester is a server admin, before anything else so that
// the endpoints reveal nothing of accounts to others (admin.yaml), and returns the local
// user ID of the path: 400 M_INVALID_PARAM for another server's user or a malformed ID.
func (a *API) moderatedUserID(r *http.Request, d *Device) (string, error) {
	if !d.IsAdmin {
		return "", httpapi.Forbidden("Requesting user is not a server administrator")
	}
	id, err := spec.ParseUserID(pathParam(r, "userId"))
	if err != nil {
		return "", httpapi.InvalidParam("Invalid user ID")
	}
	if id.Server() != a.cfg.ServerName {
		return "", httpapi.InvalidParam("User does not belong to the local server")
	}
	return id.String(), nil
}

// moderatedAccount reads the account the moderation endpoints act on: 404 M_NOT_FOUND when
// it does not exist or is deactivated, 403 M_FORBIDDEN when it is another server admin.
func (a *API) moderatedAccount(r *http.Request, d *Device, userID string) (*storage.AccountStatus, error) {
	status, err := storage.LoadAccountStatus(r.Context(), a.db, userID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && status.Deactivated {
		return nil, httpapi.NotFound("User not found")
	}
	if err != nil {
		return nil, err
	}
	if status.IsAdmin && userID != d.UserID {
		return nil, httpapi.Forbidden("The target user is a server administrator")
	}
	return status, nil
}
