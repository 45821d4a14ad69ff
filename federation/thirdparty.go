package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Third-party invites across servers (server-server API "Third-party invites";
// third_party_invite.yaml). A room's m.room.third_party_invite event holds a token and
// the public keys of the identity server that stored an invite for a third-party
// identifier. Once someone binds that identifier to a Matrix ID, the identity server
// tells the ID's homeserver (PUT /3pid/onbind), handing over, per pending invite, an
// object with the ID and the token signed by it. The invitee's homeserver turns each
// into an m.room.member invite with content.third_party_invite: itself when it is in
// the room and the inviter is one of its users, else by asking the inviter's server
// (PUT /exchange_third_party_invite/{roomId}), which checks the signed object against
// the room's m.room.third_party_invite (auth rules, "If content has a
// third_party_invite property"), completes the event as the original inviter and
// issues it like any invite ("Inviting to a room").

const (
	// exchangeThirdPartyInvitePath is the prefix of PUT
	// /_matrix/federation/v1/exchange_third_party_invite/{roomId}.
	exchangeThirdPartyInvitePath = "/_matrix/federation/v1/exchange_third_party_invite/"
	// onBindPath is PUT /_matrix/federation/v1/3pid/onbind.
	onBindPath = "/_matrix/federation/v1/3pid/onbind"
	// maxExchangeBody bounds an exchange request: a partial member event, which must fit
	// in an event's 64 KiB ("Size limits").
	maxExchangeBody = 64 << 10
	// maxOnBindBody and maxOnBindInvites bound an onbind notification. NOTSPEC: the spec
	// sets no limit; an identifier rarely has more than a few pending invites.
	maxOnBindBody    = 1 << 20
	maxOnBindInvites = 100
	// thirdPartyInviteType is the state event that a third-party invite rests on.
	thirdPartyInviteType = "m.room.third_party_invite"
)

// thirdPartyRoutes mounts PUT /exchange_third_party_invite/{roomId}, which other servers
// call with X-Matrix authentication: mount it among the authenticated routes.
func (a *API) thirdPartyRoutes(r chi.Router) {
	r.Method(http.MethodPut, exchangeThirdPartyInvitePath+"{roomId}", a.handler(a.exchangeThirdPartyInvite))
}

// openThirdPartyRoutes mounts PUT /3pid/onbind, which identity servers call without
// request signing (third_party_invite.yaml gives it no security requirement): mount it
// outside the X-Matrix authentication.
func (a *API) openThirdPartyRoutes(r chi.Router) {
	r.Method(http.MethodPut, onBindPath, httpapi.Handler(a.onBind))
}

// signedThirdPartyInvite is the part of a signed third-party invite object that the
// servers read (signed_third_party_invite.yaml); the object itself travels untouched, as
// its signatures cover all of it.
type signedThirdPartyInvite struct {
	MXID  string `json:"mxid"`
	Token string `json:"token"`
}

// parseSignedThirdPartyInvite reads a signed object; it must be a JSON object with mxid
// and token strings and a signatures object.
func parseSignedThirdPartyInvite(raw json.RawMessage) (*signedThirdPartyInvite, error) {
	var s struct {
		MXID       *string                      `json:"mxid"`
		Token      *string                      `json:"token"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &s); err != nil {
		return nil, fmt.Errorf("signed is not an object with mxid, token and signatures: %v", err)
	}
	if s.MXID == nil || s.Token == nil || *s.Token == "" || len(s.Signatures) == 0 {
		return nil, errors.New("signed needs mxid, token and signatures")
	}
	return &signedThirdPartyInvite{MXID: *s.MXID, Token: *s.Token}, nil
}

// exchangeRequest is the partial m.room.member event of an exchange (third_party_invite.yaml).
type exchangeRequest struct {
	Type     string  `json:"type"`
	RoomID   string  `json:"room_id"`
	Sender   string  `json:"sender"`
	StateKey *string `json:"state_key"`
	Content  struct {
		Membership       string `json:"membership"`
		ThirdPartyInvite *struct {
			DisplayName string          `json:"display_name"`
			Signed      json.RawMessage `json:"signed"`
		} `json:"third_party_invite"`
	} `json:"content"`
}

// PUT /_matrix/federation/v1/exchange_third_party_invite/{roomId}: the invitee's server
// (origin) asks us, the server of the user who sent the room's m.room.third_party_invite,
// to issue the invite. Malformed requests are 400 M_INVALID_PARAM (M_BAD_JSON for what is
// not JSON), a room we do not have 404 M_NOT_FOUND, and an invite that the room's state
// does not allow (no such token, another inviter, a signature that the identity server's
// keys do not verify, a banned invitee) 403 M_FORBIDDEN.
func (a *API) exchangeThirdPartyInvite(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	body, err := httpapi.ReadBody(r, maxExchangeBody)
	if err != nil {
		return err
	}
	var req exchangeRequest
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("Invalid exchange request: %v", err)
	}
	tpi := req.Content.ThirdPartyInvite
	switch {
	case req.Type != "m.room.member":
		return httpapi.InvalidParam("type must be m.room.member")
	case req.RoomID != roomID:
		return httpapi.InvalidParam("room_id does not match the path")
	case req.Content.Membership != "invite":
		return httpapi.InvalidParam("content.membership must be invite")
	case req.StateKey == nil:
		return httpapi.InvalidParam("Missing state_key")
	case tpi == nil || len(tpi.Signed) == 0:
		return httpapi.InvalidParam("Missing content.third_party_invite.signed")
	}
	if _, err := parseSignedThirdPartyInvite(tpi.Signed); err != nil {
		return httpapi.InvalidParam("Invalid third_party_invite: %v", err)
	}
	sender, err := spec.ParseUserID(req.Sender)
	if err != nil || sender.Server() != a.ServerName {
		return httpapi.InvalidParam("The sender is not a user of %s", a.ServerName)
	}
	invitee, err := spec.ParseUserID(*req.StateKey)
	if err != nil || invitee.Server() != origin {
		// The invitee's server asks for its own user (server-server API "Third-party
		// invites": "the invited homeserver ... will need to request the inviting
		// homeserver to auth the event").
		return httpapi.InvalidParam("The invitee is not a user of %s", origin)
	}
	if err := a.CheckServerACL(ctx, roomID, origin); err != nil {
		return err
	}
	if err := a.issueThirdPartyInvite(ctx, roomID, req.Sender, *req.StateKey, tpi.Signed); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// issueThirdPartyInvite sends, as sender (one of our users), the m.room.member invite of
// invitee that a signed third-party invite object stands for: its token names the room's
// m.room.third_party_invite, whose display_name the invite carries. The room's auth rules
// then check the object's signature against that event's public keys. An invitee of
// another server gets the invite through its server ("Inviting to a room").
func (a *API) issueThirdPartyInvite(ctx context.Context, roomID, sender, invitee string, signed json.RawMessage) error {
	parsed, err := parseSignedThirdPartyInvite(signed)
	if err != nil {
		return httpapi.InvalidParam("Invalid third_party_invite: %v", err)
	}
	state, _, err := a.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		return roomError(err, roomID)
	}
	if !hostInRoom(state, a.ServerName) {
		return httpapi.Forbidden("%s is not in room %s", a.ServerName, roomID)
	}
	tpiEvent := state[spec.StateTuple{Type: thirdPartyInviteType, StateKey: parsed.Token}]
	if tpiEvent == nil {
		return httpapi.Forbidden("No m.room.third_party_invite with this token in %s", roomID)
	}
	if tpiEvent.Sender() != sender {
		return httpapi.Forbidden("%s did not send the m.room.third_party_invite of this token", sender)
	}
	var tpiContent struct {
		DisplayName string `json:"display_name"`
	}
	_ = json.Unmarshal(tpiEvent.Content(), &tpiContent)
	content := map[string]any{
		"third_party_invite": map[string]any{"display_name": tpiContent.DisplayName, "signed": signed},
	}
	target, err := spec.ParseUserID(invitee)
	if err != nil {
		return httpapi.InvalidParam("Invalid invitee")
	}
	if target.Server() != a.ServerName {
		err = a.InviteRemote(ctx, roomID, sender, invitee, content)
		var refused *InviteRefusedError
		if errors.As(err, &refused) {
			return httpapi.Forbidden("%v", refused)
		}
		return roomError(err, roomID)
	}
	content["membership"] = "invite"
	raw, err := json.Marshal(content)
	if err != nil {
		return err
	}
	_, err = a.Rooms.Send(ctx, roomID, rooms.EventRequest{Sender: sender, Type: "m.room.member", StateKey: &invitee, Content: raw})
	return roomError(err, roomID)
}

// hostInRoom reports whether a user of server is joined in a room's state.
func hostInRoom(state map[spec.StateTuple]*rooms.Event, server string) bool {
	for tuple, e := range state {
		if tuple.Type != "m.room.member" || !strings.HasSuffix(tuple.StateKey, ":"+server) {
			continue
		}
		if m, _ := e.Membership(); m == "join" {
			return true
		}
	}
	return false
}

// onBindInvite is one pending invite of an onbind notification (third_party_invite.yaml).
type onBindInvite struct {
	Medium  string          `json:"medium"`
	Address string          `json:"address"`
	MXID    string          `json:"mxid"`
	RoomID  string          `json:"room_id"`
	Sender  string          `json:"sender"`
	Signed  json.RawMessage `json:"signed"`
}

// PUT /_matrix/federation/v1/3pid/onbind: an identity server tells us that a third-party
// identifier is now bound to mxid, one of our users, and hands over the invites pending
// for it. Each becomes an invite of mxid to its room (issueThirdPartyInvite here, or the
// inviter's server through exchange_third_party_invite). The notification itself needs
// mxid, medium and address (400 M_MISSING_PARAM, M_INVALID_PARAM for a user that is not
// ours); an invite that cannot be turned into a member event is logged and skipped, as
// Synapse does: the identity server has no use for the failure of one room's invite.
func (a *API) onBind(w http.ResponseWriter, r *http.Request) error {
	body, err := httpapi.ReadBody(r, maxOnBindBody)
	if err != nil {
		return err
	}
	var req struct {
		Medium  string         `json:"medium"`
		Address string         `json:"address"`
		MXID    string         `json:"mxid"`
		Invites []onBindInvite `json:"invites"`
	}
	if err := json.Unmarshal(body, &req); err != nil {
		return httpapi.BadJSON("Invalid onbind request: %v", err)
	}
	if req.Medium == "" || req.Address == "" || req.MXID == "" {
		return httpapi.MissingParam("medium, address and mxid are required")
	}
	user, err := spec.ParseUserID(req.MXID)
	if err != nil || user.Server() != a.ServerName {
		return httpapi.InvalidParam("%s is not a user of %s", req.MXID, a.ServerName)
	}
	if len(req.Invites) > maxOnBindInvites {
		return httpapi.InvalidParam("Too many invites (%d, at most %d)", len(req.Invites), maxOnBindInvites)
	}
	ctx := r.Context()
	if u, err := storage.LoadUser(ctx, a.DB, req.MXID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Unknown user %s", req.MXID)
	} else if err != nil {
		return err
	} else if u.Deactivated {
		return httpapi.Forbidden("%s is deactivated", req.MXID)
	}
	for _, inv := range req.Invites {
		if err := a.bindInvite(ctx, req.MXID, inv); err != nil {
			a.Log.Info("federation: third-party invite not issued", "room_id", inv.RoomID, "sender", inv.Sender,
				"mxid", req.MXID, "err", err)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// bindInvite turns one pending invite of an onbind notification into an invite of mxid.
func (a *API) bindInvite(ctx context.Context, mxid string, inv onBindInvite) error {
	if inv.MXID != mxid {
		return fmt.Errorf("the invite is for %q, not %s", inv.MXID, mxid)
	}
	if _, err := spec.ParseRoomID(inv.RoomID); err != nil {
		return fmt.Errorf("invalid room ID %q", inv.RoomID)
	}
	sender, err := spec.ParseUserID(inv.Sender)
	if err != nil {
		return fmt.Errorf("invalid sender %q", inv.Sender)
	}
	signed, err := parseSignedThirdPartyInvite(inv.Signed)
	if err != nil {
		return err
	}
	if signed.MXID != mxid {
		return fmt.Errorf("the signed object is for %q, not %s", signed.MXID, mxid)
	}
	if sender.Server() == a.ServerName {
		// Our own user invited: we can complete and sign the invite ourselves if we are
		// still in the room.
		if state, _, err := a.Rooms.CurrentState(ctx, inv.RoomID); err == nil && hostInRoom(state, a.ServerName) {
			return a.issueThirdPartyInvite(ctx, inv.RoomID, inv.Sender, mxid, inv.Signed)
		}
	}
	var errs []error
	for _, server := range exchangeServers(inv.Sender, inv.RoomID, a.ServerName) {
		if err := a.requestExchange(ctx, server, inv, mxid); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		return nil
	}
	if len(errs) == 0 {
		return errors.New("no server to exchange the invite with")
	}
	return errors.Join(errs...)
}

// exchangeServers is where an exchange is asked for: the inviter's server, which sent the
// m.room.third_party_invite and can sign as the inviter, then the server named in the room
// ID (room versions before 12), never ours.
func exchangeServers(sender, roomID, ours string) []string {
	var out []string
	for _, id := range []string{sender, roomID} {
		_, server, ok := strings.Cut(id, ":")
		if ok && server != ours && validServerName(server) && !slices.Contains(out, server) {
			out = append(out, server)
		}
	}
	return out
}

// requestExchange asks server to issue the invite of mxid (PUT exchange_third_party_invite).
// NOTSPEC: the display_name is the third-party address, as the notification carries none;
// the inviting server replaces it with its m.room.third_party_invite's, as Synapse and we do.
func (a *API) requestExchange(ctx context.Context, server string, inv onBindInvite, mxid string) error {
	body := map[string]any{
		"type":      "m.room.member",
		"room_id":   inv.RoomID,
		"sender":    inv.Sender,
		"state_key": mxid,
		"content": map[string]any{
			"membership": "invite",
			"third_party_invite": map[string]any{
				"display_name": inv.Address,
				"signed":       inv.Signed,
			},
		},
	}
	var resp json.RawMessage
	return a.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: server,
		URI: exchangeThirdPartyInvitePath + url.PathEscape(inv.RoomID), Body: body}, &resp)
}
