package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Room membership (client-server API "Room membership"; joining.yaml, inviting.yaml,
// leaving.yaml, kicking.yaml, banning.yaml, list_joined_rooms.yaml).

func (a *API) membershipRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/rooms/{roomId}/join", authed(a.joinRoomByID))
	r.Method(http.MethodPost, "/join/{roomIdOrAlias}", authed(a.joinRoomByIDOrAlias))
	r.Method(http.MethodPost, "/rooms/{roomId}/invite", authed(a.inviteEitherForm))
	r.Method(http.MethodPost, "/rooms/{roomId}/leave", authed(a.leave))
	r.Method(http.MethodPost, "/knock/{roomIdOrAlias}", authed(a.knock))
	r.Method(http.MethodPost, "/rooms/{roomId}/forget", authed(a.forget))
	r.Method(http.MethodPost, "/rooms/{roomId}/kick", authed(a.kick))
	r.Method(http.MethodPost, "/rooms/{roomId}/ban", authed(a.ban))
	r.Method(http.MethodPost, "/rooms/{roomId}/unban", authed(a.unban))
	r.Method(http.MethodGet, "/joined_rooms", authed(a.joinedRooms))
}

type membershipRequest struct {
	UserID string `json:"user_id"`
	Reason string `json:"reason"`
}

// maxReasonLength bounds a membership reason. NOTSPEC: the spec sets no limit; an event is
// limited to 64 KiB anyway, this gives a clearer error.
const maxReasonLength = 4096

// profileContent is a member event's displayname and avatar_url from the user's profile.
func (a *API) profileContent(r *http.Request, userID string) (map[string]any, error) {
	content := map[string]any{}
	u, err := storage.LoadUser(r.Context(), a.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return content, nil
	}
	if err != nil {
		return nil, err
	}
	if u.DisplayName != "" {
		content["displayname"] = u.DisplayName
	}
	if u.AvatarURL != "" {
		content["avatar_url"] = u.AvatarURL
	}
	return content, nil
}

// setMembership sends the member event that sets target's membership in roomID.
func (a *API) setMembership(r *http.Request, d *Device, roomID, target, membership, reason string, extra map[string]any) (*rooms.Event, error) {
	if len(reason) > maxReasonLength {
		return nil, httpapi.BadJSON("reason too long")
	}
	content := map[string]any{}
	if target == d.UserID && (membership == "join" || membership == "knock") {
		var err error
		if content, err = a.profileContent(r, target); err != nil {
			return nil, err
		}
	}
	for k, v := range extra {
		content[k] = v
	}
	content["membership"] = membership
	if reason != "" {
		content["reason"] = reason
	}
	stateKey := target
	return a.sendEvent(r, d, roomID, rooms.EventRequest{Type: "m.room.member", StateKey: &stateKey, Content: mustJSON(content)})
}

// readMembershipRequest reads {user_id, reason}; the user ID is required when needTarget.
func readMembershipRequest(r *http.Request, needTarget bool) (*membershipRequest, error) {
	var req membershipRequest
	if err := httpapi.ReadJSON(r, httpapi.MaxBodySize, &req); err != nil {
		return nil, err
	}
	if needTarget {
		if req.UserID == "" {
			return nil, httpapi.MissingParam("Missing user_id")
		}
		if _, err := spec.ParseUserID(req.UserID); err != nil {
			return nil, httpapi.InvalidParam("Invalid user_id")
		}
	}
	return &req, nil
}

// join joins roomID, answering {room_id}. servers are those to try when the room lives
// only on other servers.
func (a *API) join(w http.ResponseWriter, r *http.Request, d *Device, roomID string, servers []string) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	req, err := readMembershipRequest(r, false)
	if err != nil {
		return err
	}
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	// A room known only through an invite (or a knock) is joined through the servers that
	// sent it, the inviter's first.
	if outside, err := a.rooms.OutsideMembership(r.Context(), roomID, d.UserID); err != nil {
		return err
	} else if outside != nil {
		return a.joinRemote(w, r, d, roomID, req.Reason, append(outsideServers(outside), servers...))
	}
	if membership, _, err := a.rooms.Membership(r.Context(), roomID, d.UserID); err == nil && membership == "join" {
		// NOTSPEC: joining a room one is in already succeeds without a new event, as in Synapse
		// when the profile did not change.
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
		return nil
	} else if errors.Is(err, rooms.ErrRoomNotFound) {
		return a.joinRemote(w, r, d, roomID, req.Reason, servers)
	} else if err != nil {
		return err
	}
	if _, err := a.setMembership(r, d, roomID, d.UserID, "join", req.Reason, nil); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	return nil
}

// POST /rooms/{roomId}/join
func (a *API) joinRoomByID(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.join(w, r, d, pathParam(r, "roomId"), joinServers(r, pathParam(r, "roomId")))
}

// POST /join/{roomIdOrAlias}
func (a *API) joinRoomByIDOrAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	target := pathParam(r, "roomIdOrAlias")
	if strings.HasPrefix(target, "#") {
		alias, err := spec.ParseRoomAlias(target)
		if err != nil {
			return httpapi.InvalidParam("Invalid room alias")
		}
		// The servers the alias names come after the request's own (via, server_name).
		roomID, servers, err := a.resolveAlias(r.Context(), target, alias.Server())
		if err != nil {
			return err
		}
		return a.join(w, r, d, roomID, append(joinServers(r, roomID), servers...))
	}
	return a.join(w, r, d, target, joinServers(r, target))
}

// joinServers are the servers to join a room through: the request's "via" (and deprecated
// "server_name") parameters, then the server of the room ID when it has one (not in room
// version 12).
func joinServers(r *http.Request, roomID string) []string {
	q := r.URL.Query()
	servers := append(append([]string{}, q["via"]...), q["server_name"]...)
	if parsed, err := spec.ParseRoomID(roomID); err == nil && parsed.HasDomain() {
		servers = append(servers, parsed.Server())
	}
	return servers
}

// joinRemote joins a room this server does not have, over federation.
func (a *API) joinRemote(w http.ResponseWriter, r *http.Request, d *Device, roomID, reason string, servers []string) error {
	if a.remote == nil || len(servers) == 0 {
		return httpapi.NotFound("No known servers to join %s through", roomID)
	}
	if err := rateLimit(a.limiters.Send, d.UserID); err != nil {
		return err
	}
	content, err := a.profileContent(r, d.UserID)
	if err != nil {
		return err
	}
	if reason != "" {
		content["reason"] = reason
	}
	if err := a.remote.JoinRemote(r.Context(), roomID, d.UserID, servers, content); err != nil {
		a.log.Info("remote join failed", "room_id", roomID, "user_id", d.UserID, "err", err)
		return httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not join %s through any of %v", roomID, servers)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	return nil
}

// POST /rooms/{roomId}/invite
func (a *API) invite(w http.ResponseWriter, r *http.Request, d *Device) error {
	req, err := readMembershipRequest(r, true)
	if err != nil {
		return err
	}
	roomID := pathParam(r, "roomId")
	if membership, _, err := a.rooms.Membership(r.Context(), roomID, req.UserID); err == nil && membership == "ban" {
		return httpapi.Forbidden("%s is banned from the room", req.UserID)
	}
	if err := a.checkInvite(r.Context(), req.UserID); err != nil {
		return err
	}
	var extra map[string]any
	if isDirect, err := a.isDirectRoom(r, roomID, d.UserID); err == nil && isDirect {
		extra = map[string]any{"is_direct": true}
	}
	if invitee, _ := spec.ParseUserID(req.UserID); invitee.Server() != a.cfg.ServerName && a.remote != nil {
		return a.inviteRemote(w, r, d, roomID, req, extra)
	}
	if _, err := a.setMembership(r, d, roomID, req.UserID, "invite", req.Reason, extra); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// isDirectRoom reports whether the inviter's own member event marked the room as direct.
func (a *API) isDirectRoom(r *http.Request, roomID, userID string) (bool, error) {
	_, e, err := a.rooms.Membership(r.Context(), roomID, userID)
	if err != nil || e == nil {
		return false, err
	}
	var c struct {
		IsDirect bool `json:"is_direct"`
	}
	_ = json.Unmarshal(e.Content(), &c)
	return c.IsDirect, nil
}

// POST /rooms/{roomId}/leave
func (a *API) leave(w http.ResponseWriter, r *http.Request, d *Device) error {
	req, err := readMembershipRequest(r, false)
	if err != nil {
		return err
	}
	roomID := pathParam(r, "roomId")
	if outside, err := a.rooms.OutsideMembership(r.Context(), roomID, d.UserID); err != nil {
		return err
	} else if outside != nil {
		return a.leaveRemote(w, r, d, roomID, req.Reason, outside)
	}
	membership, _, err := a.rooms.Membership(r.Context(), roomID, d.UserID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return httpapi.NotFound("Unknown room")
	}
	if err != nil {
		return err
	}
	switch membership {
	case "leave", "ban":
		// NOTSPEC: leaving a room one already left succeeds, as in Synapse.
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	case "":
		return httpapi.Forbidden("You are not a member of this room")
	}
	if _, err := a.setMembership(r, d, roomID, d.UserID, "leave", req.Reason, nil); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /rooms/{roomId}/forget
func (a *API) forget(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID := pathParam(r, "roomId")
	membership, _, err := a.rooms.Membership(r.Context(), roomID, d.UserID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return httpapi.NotFound("Unknown room")
	}
	if err != nil {
		return err
	}
	if membership == "join" || membership == "invite" || membership == "knock" {
		return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "You must leave the room before forgetting it")
	}
	if err := storage.ForgetRoom(r.Context(), a.db, d.UserID, roomID); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// kickOrBan sends a leave (kick, unban) or ban for another user.
func (a *API) kickOrBan(w http.ResponseWriter, r *http.Request, d *Device, membership string, requireCurrent ...string) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	req, err := readMembershipRequest(r, true)
	if err != nil {
		return err
	}
	roomID := pathParam(r, "roomId")
	if len(requireCurrent) > 0 {
		current, _, err := a.rooms.Membership(r.Context(), roomID, req.UserID)
		if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
			return err
		}
		ok := false
		for _, m := range requireCurrent {
			ok = ok || current == m
		}
		if !ok {
			return httpapi.Forbidden("%s is not in a state this action applies to", req.UserID)
		}
	}
	if _, err := a.setMembership(r, d, roomID, req.UserID, membership, req.Reason, nil); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /rooms/{roomId}/kick
func (a *API) kick(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.kickOrBan(w, r, d, "leave", "join", "invite", "knock")
}

// POST /rooms/{roomId}/ban
func (a *API) ban(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.kickOrBan(w, r, d, "ban")
}

// POST /rooms/{roomId}/unban
func (a *API) unban(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.kickOrBan(w, r, d, "leave", "ban")
}

// GET /joined_rooms
func (a *API) joinedRooms(w http.ResponseWriter, r *http.Request, d *Device) error {
	memberships, err := storage.UserMemberships(r.Context(), a.db, d.UserID, "join")
	if err != nil {
		return err
	}
	ids := make([]string, 0, len(memberships))
	for _, m := range memberships {
		ids = append(ids, m.RoomID)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string][]string{"joined_rooms": ids})
	return nil
}

// checkCanonicalAlias refuses an m.room.canonical_alias whose local aliases do not point to
// the room (client-server API "m.room.canonical_alias": M_BAD_ALIAS).
func (a *API) checkCanonicalAlias(r *http.Request, roomID string, content json.RawMessage) error {
	var c struct {
		Alias      *string  `json:"alias"`
		AltAliases []string `json:"alt_aliases"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httpapi.BadJSON("Invalid m.room.canonical_alias content")
	}
	aliases := c.AltAliases
	if c.Alias != nil && *c.Alias != "" {
		aliases = append(aliases, *c.Alias)
	}
	for _, alias := range aliases {
		parsed, err := spec.ParseRoomAlias(alias)
		if err != nil {
			return httpapi.InvalidParam("Invalid alias %q", alias)
		}
		if parsed.Server() != a.cfg.ServerName {
			continue
		}
		target, err := storage.LookupAlias(r.Context(), a.db, alias)
		if err != nil {
			return err
		}
		if target != roomID {
			return httpapi.NewError(http.StatusBadRequest, "M_BAD_ALIAS", "Alias %s does not point to this room", alias)
		}
	}
	return nil
}

// inviteRemote invites a user of another server: their server co-signs the invite before it
// is stored (server-server API "Inviting to a room"). A refusal by that server, or no answer,
// is 403 M_FORBIDDEN, except invite blocking (M_INVITE_BLOCKED), which the inviter sees.
func (a *API) inviteRemote(w http.ResponseWriter, r *http.Request, d *Device, roomID string, req *membershipRequest, extra map[string]any) error {
	if len(req.Reason) > maxReasonLength {
		return httpapi.BadJSON("reason too long")
	}
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	if err := rateLimit(a.limiters.Send, d.UserID); err != nil {
		return err
	}
	content := map[string]any{}
	for k, v := range extra {
		content[k] = v
	}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	if err := a.remote.InviteRemote(r.Context(), roomID, d.UserID, req.UserID, content); err != nil {
		var authErr *spec.AuthError
		if errors.As(err, &authErr) || errors.Is(err, rooms.ErrRoomNotFound) {
			return submitError(err)
		}
		if remoteInviteBlocked(err) {
			return errInviteBlocked(req.UserID)
		}
		a.log.Info("remote invite failed", "room_id", roomID, "invitee", req.UserID, "err", err)
		return httpapi.Forbidden("The server of %s did not accept the invite", req.UserID)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// outsideServers are the servers to reach a room through that this server knows only by a
// membership recorded outside it (an invite, a knock): the member event's sender's (the
// inviter's), those of the senders of the stripped state that came with it, and the room
// ID's.
func outsideServers(e *rooms.Event) []string {
	var servers []string
	seen := map[string]bool{}
	add := func(server string) {
		if server != "" && !seen[server] {
			seen[server] = true
			servers = append(servers, server)
		}
	}
	if u, err := spec.ParseUserID(e.Sender()); err == nil {
		add(u.Server())
	}
	var unsigned struct {
		InviteRoomState []struct {
			Sender string `json:"sender"`
		} `json:"invite_room_state"`
		KnockRoomState []struct {
			Sender string `json:"sender"`
		} `json:"knock_room_state"`
	}
	_ = json.Unmarshal(e.Unsigned(), &unsigned)
	for _, s := range append(unsigned.InviteRoomState, unsigned.KnockRoomState...) {
		if u, err := spec.ParseUserID(s.Sender); err == nil {
			add(u.Server())
		}
	}
	if parsed, err := spec.ParseRoomID(e.RoomID()); err == nil && parsed.HasDomain() {
		add(parsed.Server())
	}
	return servers
}

// leaveRemote leaves a room this server knows only by the user's invite or knock: rejecting
// the invite or retracting the knock through a resident server (server-server API "Leaving
// Rooms (Rejecting Invites)").
func (a *API) leaveRemote(w http.ResponseWriter, r *http.Request, d *Device, roomID, reason string, outside *rooms.Event) error {
	if m, _ := outside.Membership(); m == "leave" || a.remote == nil {
		// NOTSPEC: leaving a room one already left succeeds, as in Synapse.
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	if len(reason) > maxReasonLength {
		return httpapi.BadJSON("reason too long")
	}
	if err := rateLimit(a.limiters.Send, d.UserID); err != nil {
		return err
	}
	content := map[string]any{}
	if reason != "" {
		content["reason"] = reason
	}
	servers := append(outsideServers(outside), joinServers(r, roomID)...)
	if err := a.remote.LeaveRemote(r.Context(), roomID, d.UserID, servers, content); err != nil {
		a.log.Info("remote leave failed", "room_id", roomID, "user_id", d.UserID, "err", err)
		return httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "Could not leave %s through any of %v", roomID, servers)
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /knock/{roomIdOrAlias} (client-server API "Knocking on rooms", room versions 7 and
// later): a knock event in a room this server is part of, or through one of the servers
// given (via, server_name) or known for the room otherwise.
func (a *API) knock(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	req, err := readMembershipRequest(r, false)
	if err != nil {
		return err
	}
	roomID := pathParam(r, "roomIdOrAlias")
	var aliasServers []string
	if strings.HasPrefix(roomID, "#") {
		alias, err := spec.ParseRoomAlias(roomID)
		if err != nil {
			return httpapi.InvalidParam("Invalid room alias")
		}
		if roomID, aliasServers, err = a.resolveAlias(r.Context(), alias.String(), alias.Server()); err != nil {
			return err
		}
	}
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	create, err := a.rooms.CurrentStateEvent(r.Context(), roomID, "m.room.create", "")
	if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
		return err
	}
	if create != nil {
		// The room is here: the knock is an event like any other, which the auth rules
		// allow only when the join rule is "knock" (or "knock_restricted").
		if _, err := a.setMembership(r, d, roomID, d.UserID, "knock", req.Reason, nil); err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
		return nil
	}
	servers := append(joinServers(r, roomID), aliasServers...)
	if outside, err := a.rooms.OutsideMembership(r.Context(), roomID, d.UserID); err != nil {
		return err
	} else if outside != nil {
		servers = append(servers, outsideServers(outside)...)
	}
	if a.remote == nil || len(servers) == 0 {
		return httpapi.NotFound("No known servers to knock on %s through", roomID)
	}
	if len(req.Reason) > maxReasonLength {
		return httpapi.BadJSON("reason too long")
	}
	if err := rateLimit(a.limiters.Send, d.UserID); err != nil {
		return err
	}
	content, err := a.profileContent(r, d.UserID)
	if err != nil {
		return err
	}
	if req.Reason != "" {
		content["reason"] = req.Reason
	}
	if err := a.remote.KnockRemote(r.Context(), roomID, d.UserID, servers, content); err != nil {
		a.log.Info("remote knock failed", "room_id", roomID, "user_id", d.UserID, "err", err)
		return httpapi.Forbidden("Could not knock on %s through any of %v", roomID, servers)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"room_id": roomID})
	return nil
}
