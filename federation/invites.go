package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Inviting to a room across servers (server-server API "Inviting to a room";
// invites-v1.yaml, invites-v2.yaml). The inviting server builds and signs the invite, the
// invitee's server checks it, adds its own signature and keeps it so that its user sees the
// invite; the inviting server then stores the co-signed event, which reaches the room's
// other servers like any local event. Leaving (leave.go) and knocking (knock.go) complete
// the membership handshakes.

// inviteRoutes mounts the invite, leave and knock endpoints.
func (a *API) inviteRoutes(r chi.Router) {
	r.Method(http.MethodPut, "/_matrix/federation/v1/invite/{roomId}/{eventId}", a.handler(a.inviteV1))
	r.Method(http.MethodPut, "/_matrix/federation/v2/invite/{roomId}/{eventId}", a.handler(a.inviteV2))
	a.leaveRoutes(r)
	a.knockRoutes(r)
}

// maxInviteBody bounds an invite request: the event (at most 64 KiB) and the stripped state
// that describes the room. NOTSPEC: the spec sets no limit; a few state events fit many times.
const maxInviteBody = 1 << 20

// maxStrippedState bounds the events of invite_room_state and knock_room_state. NOTSPEC: the
// spec recommends seven event types; the inviter's member event and a few more may follow.
const maxStrippedState = 50

// strippedEvent is a state event as clients see it in invite_state and knock_state
// (client-server API "Stripped state": only sender, type, state_key and content).
type strippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// strictStrippedStateFrom reports whether the stripped state of a room version must be
// full, correctly signed events of the room, m.room.create included: "servers MAY apply
// [this validation] to room versions 1 through 11 and SHOULD apply to all other room
// versions" (invites-v2.yaml). In the older versions entries that fail are dropped instead,
// and entries in the stripped form that older servers send are kept.
func strictStrippedStateFrom(rv *spec.RoomVersion) bool {
	switch rv.ID {
	case "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11":
		return false
	}
	return true
}

// checkStrippedState checks the stripped state that came with an invite or a knock of room
// roomID and returns it in the form clients see. In the room versions where the validation
// applies (strictStrippedStateFrom), an entry that is not a full event of the room signed by
// its sender's server, or a missing m.room.create, is an error when failOnInvalid (invites:
// M_INVALID_PARAM, invites-v2.yaml) and is left out otherwise (knocks: such entries "SHOULD
// be removed", knocks.yaml). In older versions bad events are left out and entries in the
// stripped form that servers from before v1.16 send are kept.
func checkStrippedState(raws []json.RawMessage, rv *spec.RoomVersion, roomID string, keys spec.KeyLookup, failOnInvalid bool) ([]strippedEvent, error) {
	if len(raws) > maxStrippedState {
		return nil, httpapi.InvalidParam("Too many stripped state events (%d)", len(raws))
	}
	strict := strictStrippedStateFrom(rv)
	fail := strict && failOnInvalid
	out := make([]strippedEvent, 0, len(raws))
	hasCreate := false
	for i, raw := range raws {
		ev, err := spec.ParseEvent(raw, rv)
		if err != nil {
			if fail {
				return nil, httpapi.InvalidParam("Stripped state entry %d is not an event of room version %s: %v", i, rv.ID, err)
			}
			var s strippedEvent
			if !strict && json.Unmarshal(raw, &s) == nil && s.Type != "" && bytes.HasPrefix(bytes.TrimSpace(s.Content), []byte("{")) {
				out = append(out, s)
			}
			continue
		}
		if !ev.IsState() || ev.RoomID() != roomID {
			if fail {
				return nil, httpapi.InvalidParam("Stripped state entry %d is not a state event of %s", i, roomID)
			}
			continue
		}
		if err := spec.VerifyEventSignatures(ev, keys); err != nil {
			if fail {
				return nil, httpapi.InvalidParam("Stripped state entry %d fails its signature check: %v", i, err)
			}
			continue
		}
		if ev.Type() == "m.room.create" && ev.StateKeyEquals("") {
			hasCreate = true
		}
		out = append(out, strippedEvent{Content: ev.Content(), Sender: ev.Sender(), StateKey: *ev.StateKey(), Type: ev.Type()})
	}
	if fail && !hasCreate {
		return nil, httpapi.InvalidParam("The stripped state has no m.room.create event")
	}
	return out, nil
}

// withUnsigned returns ev with its "unsigned" object replaced (removed when unsigned is nil).
// Signatures, hashes and the event ID do not cover it.
func withUnsigned(ev *spec.Event, unsigned map[string]any) (*spec.Event, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(ev.JSON(), &obj); err != nil {
		return nil, err
	}
	delete(obj, "unsigned")
	if unsigned != nil {
		raw, err := json.Marshal(unsigned)
		if err != nil {
			return nil, err
		}
		obj["unsigned"] = raw
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	canonical, err := spec.CanonicalJSONLenient(raw)
	if err != nil {
		return nil, err
	}
	return spec.EventFromTrusted(canonical, ev.EventID(), ev.Version())
}

// InvitePolicy says whether our users accept invites (the client API implements it).
type InvitePolicy interface {
	// InviteBlocked reports whether userID, one of ours, blocks invites (client-server API
	// "Invite permission": m.invite_permission_config).
	InviteBlocked(ctx context.Context, userID string) (bool, error)
}

// errCodeInviteBlocked is the answer to an invite of a user who blocks invites (403,
// invites-v2.yaml, added in v1.18).
const errCodeInviteBlocked = "M_INVITE_BLOCKED"

// errInviteIncompatible is the invitee's server's answer for a room version it does not
// support (invites-v2.yaml, 400).
func errInviteIncompatible(version string) *httpapi.Error {
	e := httpapi.NewError(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION",
		"This homeserver does not support the features required for a version %s room", version)
	e.Extra = map[string]any{"room_version": version}
	return e
}

// PUT /_matrix/federation/v2/invite/{roomId}/{eventId}
func (a *API) inviteV2(w http.ResponseWriter, r *http.Request, origin string) error {
	body, err := httpapi.ReadBody(r, maxInviteBody)
	if err != nil {
		return err
	}
	var req struct {
		RoomVersion     string            `json:"room_version"`
		Event           json.RawMessage   `json:"event"`
		InviteRoomState []json.RawMessage `json:"invite_room_state"`
	}
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	if req.RoomVersion == "" || len(req.Event) == 0 {
		return httpapi.MissingParam("room_version and event are required")
	}
	signed, err := a.acceptInvite(r.Context(), origin, pathParam(r, "roomId"), pathParam(r, "eventId"), req.RoomVersion, req.Event, req.InviteRoomState)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{"event": signed})
	return nil
}

// PUT /_matrix/federation/v1/invite/{roomId}/{eventId}: deprecated; the body is the event,
// with invite_room_state in its unsigned, and the answer is [200, {"event": …}].
func (a *API) inviteV1(w http.ResponseWriter, r *http.Request, origin string) error {
	body, err := httpapi.ReadBody(r, maxInviteBody)
	if err != nil {
		return err
	}
	var req struct {
		Unsigned struct {
			InviteRoomState []json.RawMessage `json:"invite_room_state"`
		} `json:"unsigned"`
	}
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	// "Servers which receive a v1 invite request must assume that the room version is
	// either "1" or "2"": both have the same event format; like Synapse we take "1".
	signed, err := a.acceptInvite(r.Context(), origin, pathParam(r, "roomId"), pathParam(r, "eventId"), "1", body, req.Unsigned.InviteRoomState)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, []any{http.StatusOK, map[string]json.RawMessage{"event": signed}})
	return nil
}

// acceptInvite checks an invite of one of our users, signs it and stores it so that the
// user sees it; it returns the event with our signature added, otherwise untouched.
func (a *API) acceptInvite(ctx context.Context, origin, roomID, eventID, version string, raw json.RawMessage, inviteState []json.RawMessage) (json.RawMessage, error) {
	rv, ok := spec.LookupRoomVersion(version)
	if !ok {
		return nil, errInviteIncompatible(version)
	}
	ev, err := spec.ParseEvent(raw, rv)
	if err != nil {
		return nil, httpapi.BadJSON("Invalid invite event: %v", err)
	}
	// The checks every invitee's server must make (invites-v2.yaml), M_INVALID_PARAM.
	if ev.EventID() != eventID || ev.RoomID() != roomID {
		return nil, httpapi.InvalidParam("The event does not match the event and room IDs of the request")
	}
	if m, err := ev.Membership(); ev.Type() != "m.room.member" || err != nil || m != "invite" || ev.StateKey() == nil {
		return nil, httpapi.InvalidParam("Not an invite event")
	}
	if sender, err := spec.ParseUserID(ev.Sender()); err != nil || sender.Server() != origin {
		return nil, httpapi.InvalidParam("The sender of the invite is not a user of %s", origin)
	}
	invitee, err := spec.ParseUserID(*ev.StateKey())
	if err != nil || invitee.Server() != a.ServerName {
		return nil, httpapi.InvalidParam("The invitee is not a user of %s", a.ServerName)
	}
	if u, err := storage.LoadUser(ctx, a.DB, invitee.String()); errors.Is(err, storage.ErrNotFound) {
		return nil, httpapi.NotFound("Unknown user %s", invitee)
	} else if err != nil {
		return nil, err
	} else if u.Deactivated {
		return nil, httpapi.Forbidden("%s is deactivated", invitee)
	}
	if a.Invites != nil {
		if blocked, err := a.Invites.InviteBlocked(ctx, invitee.String()); err != nil {
			return nil, err
		} else if blocked {
			return nil, httpapi.NewError(http.StatusForbidden, errCodeInviteBlocked, "%s does not accept invites", invitee)
		}
	}
	keys := a.Keys.KeyLookup(ctx)
	if err := spec.VerifyEventSignatures(ev, keys); err != nil {
		return nil, httpapi.InvalidParam("The invite fails its signature check: %v", err)
	}
	if err := ev.CheckContentHash(); err != nil {
		return nil, httpapi.InvalidParam("The invite fails its content hash check")
	}
	stripped, err := checkStrippedState(inviteState, rv, roomID, keys, true)
	if err != nil {
		return nil, err
	}

	id := a.Client.cfg.Identity
	signedJSON, err := spec.SignEvent(ev.JSON(), rv, id.ServerName, id.KeyID, id.Key)
	if err != nil {
		return nil, fmt.Errorf("sign invite: %w", err)
	}
	signed, err := spec.ParseEvent(signedJSON, rv)
	if err != nil {
		return nil, fmt.Errorf("parse signed invite: %w", err)
	}
	// Kept with the stripped state in its unsigned, where /sync finds it while the room
	// is not here (client-server API m.room.member, unsigned.invite_room_state).
	kept, err := withUnsigned(signed, map[string]any{"invite_room_state": stripped})
	if err != nil {
		return nil, err
	}
	stored, err := a.Rooms.ReceiveInvite(ctx, kept, keys)
	if err != nil {
		return nil, roomError(err, roomID)
	}
	if stored != nil && stored.Status != storage.EventAccepted && stored.Status != storage.EventOutlier {
		return nil, httpapi.Forbidden("The invite does not pass the checks against the room's current state")
	}
	return signedJSON, nil
}

// InviteRemote invites invitee, a user of another server, to roomID on behalf of inviter,
// one of ours: the invite is built and authorised here, sent to the invitee's server to be
// co-signed (v2, falling back to v1 for room versions 1 and 2), and stored once it comes
// back, from where the sender queue takes it to the room's other servers. content is the
// member event's content (membership is set here).
func (a *API) InviteRemote(ctx context.Context, roomID, inviter, invitee string, content map[string]any) error {
	target, err := spec.ParseUserID(invitee)
	if err != nil {
		return err
	}
	merged := make(map[string]any, len(content)+1)
	for k, v := range content {
		merged[k] = v
	}
	merged["membership"] = "invite"
	body, err := json.Marshal(merged)
	if err != nil {
		return err
	}
	invite, err := a.Rooms.PrepareEvent(ctx, roomID, rooms.EventRequest{Sender: inviter, Type: "m.room.member", StateKey: &invitee, Content: body})
	if err != nil {
		return err
	}
	state, err := a.Rooms.StrippedState(ctx, roomID, inviter)
	if err != nil {
		return err
	}
	returned, err := a.sendInvite(ctx, target.Server(), invite, pduList(state))
	if err != nil {
		return &InviteRefusedError{Server: target.Server(), Err: err}
	}
	if err := checkCosigned(invite, returned, target.Server(), a.Keys.KeyLookup(ctx)); err != nil {
		return &InviteRefusedError{Server: target.Server(), Err: err}
	}
	// What the invitee's server put in unsigned is not ours to relay.
	if returned, err = withUnsigned(returned, nil); err != nil {
		return err
	}
	_, err = a.Rooms.SendPrepared(ctx, returned)
	return err
}

// InviteRefusedError says the invitee's server did not co-sign an invite (it refused, or
// could not be reached, or answered with something else than our event).
type InviteRefusedError struct {
	Server string
	Err    error
}

// Error describes the refusal. There is deliberately no Unwrap: the cause is the other
// server's, and callers must not mistake it for an error of our room server.
func (e *InviteRefusedError) Error() string {
	return fmt.Sprintf("invite refused by %s: %v", e.Server, e.Err)
}

// InviteBlocked reports whether the refusal is the invitee's invite blocking (403
// M_INVITE_BLOCKED), which the client API passes on to the inviter.
func (e *InviteRefusedError) InviteBlocked() bool {
	var remote *RemoteError
	return errors.As(e.Err, &remote) && remote.Status == http.StatusForbidden && remote.ErrCode == errCodeInviteBlocked
}

// sendInvite asks server to co-sign invite and returns its answer's event.
func (a *API) sendInvite(ctx context.Context, server string, invite *spec.Event, state []json.RawMessage) (*spec.Event, error) {
	rv := invite.Version()
	path := url.PathEscape(invite.RoomID()) + "/" + url.PathEscape(invite.EventID())
	var v2 struct {
		Event json.RawMessage `json:"event"`
	}
	err := a.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: server, URI: "/_matrix/federation/v2/invite/" + path,
		Body: map[string]any{"room_version": rv.ID, "event": json.RawMessage(invite.JSON()), "invite_room_state": state}}, &v2)
	var remote *RemoteError
	if err != nil && errors.As(err, &remote) && (remote.Status == http.StatusBadRequest || remote.Status == http.StatusNotFound) &&
		rv.EventIDFormat == spec.EventIDOriginGenerated {
		// "Senders which receive a 400 or 404 response to this endpoint should retry using
		// the v1 API as the server may be older, if the room version is "1" or "2"."
		return a.sendInviteV1(ctx, server, path, invite, state)
	}
	if err != nil {
		return nil, fmt.Errorf("invite: %w", err)
	}
	return spec.ParseEvent(v2.Event, rv)
}

// sendInviteV1 is sendInvite through the deprecated v1 endpoint.
func (a *API) sendInviteV1(ctx context.Context, server, path string, invite *spec.Event, state []json.RawMessage) (*spec.Event, error) {
	withState, err := withUnsigned(invite, map[string]any{"invite_room_state": state})
	if err != nil {
		return nil, err
	}
	var v1 []json.RawMessage
	err = a.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: server, URI: "/_matrix/federation/v1/invite/" + path,
		Body: json.RawMessage(withState.JSON())}, &v1)
	if err != nil {
		return nil, fmt.Errorf("invite (v1): %w", err)
	}
	var answer struct {
		Event json.RawMessage `json:"event"`
	}
	if len(v1) != 2 || json.Unmarshal(v1[1], &answer) != nil {
		return nil, errors.New("invite (v1): malformed answer")
	}
	return spec.ParseEvent(answer.Event, invite.Version())
}

// checkCosigned checks that the event a server returned from the invite endpoint is our
// invite, unchanged ("All other fields of the events should remain untouched"), with a valid
// signature of that server.
func checkCosigned(ours, returned *spec.Event, server string, keys spec.KeyLookup) error {
	if returned.EventID() != ours.EventID() {
		return fmt.Errorf("returned event %s instead of %s", returned.EventID(), ours.EventID())
	}
	ourHash, err := ours.ReferenceHash()
	if err != nil {
		return err
	}
	theirHash, err := returned.ReferenceHash()
	if err != nil || theirHash != ourHash || returned.CheckContentHash() != nil {
		return errors.New("the returned invite differs from ours")
	}
	redacted, err := returned.Redacted()
	if err != nil {
		return err
	}
	var doc struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(redacted.JSON(), &doc); err != nil {
		return err
	}
	var atTS int64
	if returned.Version().EnforceKeyValidity {
		atTS = returned.OriginServerTS()
	}
	verified := 0
	for keyID := range doc.Signatures[server] {
		if !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		key, err := keys(server, keyID, atTS)
		if err != nil {
			continue
		}
		if err := spec.VerifyJSON(redacted.JSON(), server, keyID, key); err != nil {
			return fmt.Errorf("signature of %s: %w", server, err)
		}
		verified++
	}
	if verified == 0 {
		return fmt.Errorf("no valid signature of %s on the returned invite", server)
	}
	return nil
}
