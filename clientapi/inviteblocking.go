package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Invite blocking (client-server API "Invite permission", v1.18): a user whose global
// m.invite_permission_config has default_action "block" receives no invites. Their server
// refuses new ones with 403 M_INVITE_BLOCKED (POST /invite, /createRoom's invite list,
// PUT /state/m.room.member with membership invite, and the federation invite endpoints),
// and /sync hides those already here. No one is exempt, and other endpoints (room state,
// application services) see invites as before.

// invitePermissionType is the global account data that holds the setting.
const invitePermissionType = "m.invite_permission_config"

// errCodeInviteBlocked is the error of an invite refused by invite blocking.
const errCodeInviteBlocked = "M_INVITE_BLOCKED"

// errInviteBlocked is the 403 M_INVITE_BLOCKED answer to an invite of invitee.
func errInviteBlocked(invitee string) *httpapi.Error {
	return httpapi.NewError(http.StatusForbidden, errCodeInviteBlocked, "%s does not accept invites", invitee)
}

// InviteBlocked reports whether userID, when one of our users, blocks invites: their
// m.invite_permission_config has default_action "block". "A missing, invalid or unsupported
// value means that the user wants to receive invites as normal", as does any content that
// is not a JSON object. Other servers' users are their server's to check. The federation
// API asks it of invites from other servers.
func (a *API) InviteBlocked(ctx context.Context, userID string) (bool, error) {
	if u, err := spec.ParseUserID(userID); err != nil || u.Server() != a.cfg.ServerName {
		return false, nil
	}
	content, err := storage.GetAccountData(ctx, a.db, userID, "", invitePermissionType)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return blocksInvites(content), nil
}

// blocksInvites reports whether m.invite_permission_config content blocks invites.
func blocksInvites(content []byte) bool {
	var c struct {
		DefaultAction any `json:"default_action"`
	}
	return json.Unmarshal(content, &c) == nil && c.DefaultAction == "block"
}

// checkInvite refuses, with 403 M_INVITE_BLOCKED, an invite of invitee who blocks invites.
func (a *API) checkInvite(ctx context.Context, invitee string) error {
	blocked, err := a.InviteBlocked(ctx, invitee)
	if err != nil {
		return err
	}
	if blocked {
		return errInviteBlocked(invitee)
	}
	return nil
}

// checkInvites is checkInvite for each of invitees.
func (a *API) checkInvites(ctx context.Context, invitees []string) error {
	for _, invitee := range invitees {
		if err := a.checkInvite(ctx, invitee); err != nil {
			return err
		}
	}
	return nil
}

// checkMemberInvite is checkInvite for an m.room.member event sent as state: only an
// invite (content membership "invite") of stateKey is checked; malformed content is left to
// the auth rules.
func (a *API) checkMemberInvite(ctx context.Context, stateKey string, content json.RawMessage) error {
	var c struct {
		Membership any `json:"membership"`
	}
	if json.Unmarshal(content, &c) != nil || c.Membership != "invite" {
		return nil
	}
	return a.checkInvite(ctx, stateKey)
}

// remoteInviteBlocked reports whether a remote invite failed because the invitee's server
// answered M_INVITE_BLOCKED (the federation's refusal says so through an InviteBlocked
// method), which the inviter then sees as it is.
func remoteInviteBlocked(err error) bool {
	var refusal interface{ InviteBlocked() bool }
	return errors.As(err, &refusal) && refusal.InviteBlocked()
}

// syncInvites decides which invites one /sync response shows: while the user blocks
// invites, none ("invite events for this user already in the database, or received over
// federation, MUST NOT be served"); otherwise the new ones (all in an initial sync) and, in
// the first response after the setting changed, all pending ones, so that invites hidden
// while blocking come back (the spec's MAY). The account data is read once, and only when
// there is an invite to decide on.
type syncInvites struct {
	api             *API
	userID          string
	since, to       int64
	everything      bool
	loaded, blocked bool
	settingChanged  bool
}

// syncInvites starts the decisions of the response covering (since, to]; everything is an
// initial or full-state sync.
func (a *API) syncInvites(userID string, since, to int64, everything bool) *syncInvites {
	return &syncInvites{api: a, userID: userID, since: since, to: to, everything: everything}
}

// show reports whether a pending invite is in the response; isNew is whether it arrived
// in the window.
func (s *syncInvites) show(ctx context.Context, isNew bool) (bool, error) {
	if !s.everything && !isNew && !s.api.rooms.Stream().ChangedSince(streams.AccountDataKey(s.userID), s.since) {
		return false, nil // neither new nor possibly unhidden: an answer without reading
	}
	if !s.loaded {
		if err := s.load(ctx); err != nil {
			return false, err
		}
	}
	if s.blocked {
		return false, nil
	}
	return s.everything || isNew || s.settingChanged, nil
}

// load reads the setting and, in an incremental sync, whether it changed in the window.
func (s *syncInvites) load(ctx context.Context) error {
	blocked, err := s.api.InviteBlocked(ctx, s.userID)
	if err != nil {
		return err
	}
	s.loaded, s.blocked = true, blocked
	if s.everything || blocked {
		return nil
	}
	rows, err := storage.AccountDataSince(ctx, s.api.db, s.userID, s.since, s.to)
	if err != nil {
		return err
	}
	for _, row := range rows {
		s.settingChanged = s.settingChanged || (row.RoomID == "" && row.Type == invitePermissionType)
	}
	return nil
}
