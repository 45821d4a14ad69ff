package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Leaving rooms across servers (server-server API "Leaving Rooms (Rejecting Invites)";
// leaving-v1.yaml, leaving-v2.yaml): a server whose user was invited to (or knocked on) a
// room it is not part of cannot send a leave into the room itself. Like a join, it asks a
// resident server for a template (make_leave), signs it and hands it back (send_leave); the
// resident server sends it on to the room's other servers.

func (a *API) leaveRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_matrix/federation/v1/make_leave/{roomId}/{userId}", a.handler(a.makeLeave))
	r.Method(http.MethodPut, "/_matrix/federation/v2/send_leave/{roomId}/{eventId}", a.handler(a.sendLeaveV2))
	r.Method(http.MethodPut, "/_matrix/federation/v1/send_leave/{roomId}/{eventId}", a.handler(a.sendLeaveV1))
}

// GET /_matrix/federation/v1/make_leave/{roomId}/{userId}
func (a *API) makeLeave(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.makeMembership(w, r, origin, "leave")
}

// makeMembership answers make_join, make_leave and make_knock: a template of the member event of
// userId, a user of the origin, if it would pass the auth rules now.
func (a *API) makeMembership(w http.ResponseWriter, r *http.Request, origin, membership string) error {
	roomID, userID := pathParam(r, "roomId"), pathParam(r, "userId")
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	if user.Server() != origin {
		return httpapi.Forbidden("%s cannot make a %s event for %s", origin, membership, userID)
	}
	rv, err := a.Rooms.RoomVersion(r.Context(), roomID)
	if err != nil {
		return roomError(err, roomID)
	}
	switch membership {
	case "join", "knock":
		// "ver" lists the versions the asking server supports; for make_join, absent
		// means just "1" (joins-v1.yaml).
		versions := r.URL.Query()["ver"]
		if len(versions) == 0 && membership == "join" {
			versions = []string{"1"}
		}
		if !slices.Contains(versions, rv.ID) {
			return errIncompatibleRoomVersion(rv.ID, membership)
		}
		if membership == "knock" && !rv.AllowKnocking {
			return httpapi.Forbidden("Room version %s does not support knocking", rv.ID)
		}
	}
	content := json.RawMessage(`{"membership":"` + membership + `"}`)
	if err := a.Rooms.CheckWouldPass(r.Context(), roomID, userID, "m.room.member", &userID, content); err != nil {
		return roomError(err, roomID)
	}
	template, _, err := a.Rooms.Template(r.Context(), roomID, userID, "m.room.member", &userID, content)
	if err != nil {
		return roomError(err, roomID)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"room_version": rv.ID, "event": template})
	return nil
}

// PUT /_matrix/federation/v2/send_leave/{roomId}/{eventId}: the answer is {}.
func (a *API) sendLeaveV2(w http.ResponseWriter, r *http.Request, origin string) error {
	if _, err := a.receiveMembership(r, origin, "leave"); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// PUT /_matrix/federation/v1/send_leave/{roomId}/{eventId}: deprecated, [200, {}].
func (a *API) sendLeaveV1(w http.ResponseWriter, r *http.Request, origin string) error {
	if _, err := a.receiveMembership(r, origin, "leave"); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, []any{http.StatusOK, struct{}{}})
	return nil
}

// receiveMembership checks and accepts the join, leave or knock of send_join, send_leave and
// send_knock (M_INVALID_PARAM for the checks the spec lists) and forwards it to the room's
// other servers, which learn of it only from us.
func (a *API) receiveMembership(r *http.Request, origin, membership string) (*rooms.Event, error) {
	ctx := r.Context()
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	rv, err := a.Rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return nil, roomError(err, roomID)
	}
	body, err := httpapi.ReadBody(r, int64(spec.MaxEventSize))
	if err != nil {
		return nil, err
	}
	ev, err := spec.ParseEvent(body, rv)
	if err != nil {
		return nil, httpapi.BadJSON("Invalid %s event: %v", membership, err)
	}
	if ev.EventID() != eventID || ev.RoomID() != roomID {
		return nil, httpapi.InvalidParam("The event does not match the event and room IDs of the request")
	}
	if m, err := ev.Membership(); ev.Type() != "m.room.member" || err != nil || m != membership {
		return nil, httpapi.InvalidParam("Not a %s event", membership)
	}
	if !ev.StateKeyEquals(ev.Sender()) {
		return nil, httpapi.InvalidParam("The state_key of the %s is not its sender", membership)
	}
	if sender, err := spec.ParseUserID(ev.Sender()); err != nil || sender.Server() != origin {
		return nil, httpapi.InvalidParam("The sender is not a user of %s", origin)
	}
	keys := a.Keys.KeyLookup(ctx)
	if err := spec.VerifyEventSignatures(ev, keys); err != nil {
		return nil, httpapi.InvalidParam("The %s fails its signature check: %v", membership, err)
	}
	stored, err := a.Rooms.ReceiveEvent(ctx, ev, keys)
	if err != nil {
		return nil, roomError(err, roomID)
	}
	if stored.Status != storage.EventAccepted {
		return nil, httpapi.Forbidden("The %s does not pass the checks against the room's current state", membership)
	}
	if err := a.Rooms.Forward(ctx, stored, origin); err != nil {
		a.Log.Warn("federation: forward a membership", "event_id", stored.EventID(), "err", err)
	}
	return stored, nil
}

// LeaveRemote makes userID (one of ours) leave roomID, a room this server is not part of
// (rejecting an invite, retracting a knock), through one of servers in turn: make_leave,
// sign, send_leave (v2, else v1). The leave is then recorded here so that the room moves to
// "leave" in the user's /sync.
func (a *API) LeaveRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error {
	var leave *spec.Event
	err := a.throughEach(roomID, servers, "leave", func(server string) (err error) {
		leave, err = a.leaveThrough(ctx, server, roomID, userID, content)
		return err
	})
	if err != nil {
		return err
	}
	_, err = a.Rooms.RecordOutsideMembership(ctx, leave)
	return err
}

// throughEach calls try with each of servers in turn (dedupeServers: without repeats,
// empty names and our own) until one succeeds; it returns nil then, else every server's
// error. action ("join", "leave", "knock") names the attempt in the log and the errors.
func (a *API) throughEach(roomID string, servers []string, action string, try func(server string) error) error {
	var errs []error
	for _, server := range dedupeServers(servers, a.ServerName) {
		err := try(server)
		if err == nil {
			return nil
		}
		a.Log.Info("federation: "+action+" through server failed", "room_id", roomID, "server", server, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	if len(errs) == 0 {
		return errors.New("no server to " + action + " through")
	}
	return errors.Join(errs...)
}

// dedupeServers is servers without repeats, empty names and our own name, in order.
func dedupeServers(servers []string, own string) []string {
	seen := map[string]bool{own: true, "": true}
	out := make([]string, 0, len(servers))
	for _, s := range servers {
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

func (a *API) leaveThrough(ctx context.Context, server, roomID, userID string, content map[string]any) (*spec.Event, error) {
	leave, err := a.makeThrough(ctx, server, "make_leave", "", roomID, userID, "leave", content)
	if err != nil {
		return nil, err
	}
	path := url.PathEscape(roomID) + "/" + url.PathEscape(leave.EventID())
	err = a.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: server,
		URI: "/_matrix/federation/v2/send_leave/" + path, Body: json.RawMessage(leave.JSON())}, nil)
	var remote *RemoteError
	if errors.As(err, &remote) && remote.Status == http.StatusNotFound && remote.ErrCode == "M_UNRECOGNIZED" {
		// A server without the v2 endpoint: the deprecated v1 one.
		err = a.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: server,
			URI: "/_matrix/federation/v1/send_leave/" + path, Body: json.RawMessage(leave.JSON())}, nil)
	}
	if err != nil {
		return nil, fmt.Errorf("send_leave: %w", err)
	}
	return leave, nil
}

// makeThrough asks server for a membership template (make_join, make_leave, make_knock; query is
// added to the URI) and completes and signs it.
func (a *API) makeThrough(ctx context.Context, server, endpoint, query, roomID, userID, membership string, content map[string]any) (*spec.Event, error) {
	var made struct {
		RoomVersion string          `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	uri := "/_matrix/federation/v1/" + endpoint + "/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID)
	if query != "" {
		uri += "?" + query
	}
	if err := a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: server, URI: uri}, &made); err != nil {
		return nil, fmt.Errorf("%s: %w", endpoint, err)
	}
	if made.RoomVersion == "" {
		made.RoomVersion = "1" // NOTSPEC: servers from before room versions omitted it
	}
	rv, ok := spec.LookupRoomVersion(made.RoomVersion)
	if !ok {
		return nil, fmt.Errorf("%s: unsupported room version %q", endpoint, made.RoomVersion)
	}
	ev, err := a.completeMembershipTemplate(made.Event, rv, roomID, userID, membership, content)
	if err != nil {
		return nil, fmt.Errorf("%s template: %w", endpoint, err)
	}
	return ev, nil
}

// completeMembershipTemplate checks a make_leave or make_knock template — room, sender,
// state key, type and membership as asked (knocks.yaml: otherwise "the response MUST be
// treated as malformed and discarded") — and fills it in with content and signs it.
func (a *API) completeMembershipTemplate(raw json.RawMessage, rv *spec.RoomVersion, roomID, userID, membership string, content map[string]any) (*spec.Event, error) {
	var t struct {
		Type       string          `json:"type"`
		Sender     string          `json:"sender"`
		StateKey   *string         `json:"state_key"`
		RoomID     string          `json:"room_id"`
		Content    json.RawMessage `json:"content"`
		PrevEvents json.RawMessage `json:"prev_events"`
		AuthEvents json.RawMessage `json:"auth_events"`
		Depth      int64           `json:"depth"`
	}
	if err := json.Unmarshal(raw, &t); err != nil {
		return nil, err
	}
	var templateContent struct {
		Membership string `json:"membership"`
	}
	_ = json.Unmarshal(t.Content, &templateContent)
	if t.Type != "m.room.member" || t.Sender != userID || t.StateKey == nil || *t.StateKey != userID || t.RoomID != roomID ||
		templateContent.Membership != membership {
		return nil, fmt.Errorf("the template is not a %s of this user in this room", membership)
	}
	merged := map[string]any{}
	for k, v := range content {
		merged[k] = v
	}
	merged["membership"] = membership
	body, err := json.Marshal(merged)
	if err != nil {
		return nil, err
	}
	proto := spec.ProtoEvent{Type: t.Type, StateKey: t.StateKey, Sender: userID, RoomID: roomID, Content: body,
		Depth: t.Depth, OriginServerTS: a.Clock().UnixMilli(), ReferenceHashes: map[string]string{}}
	if proto.PrevEvents, err = eventRefs(t.PrevEvents, proto.ReferenceHashes); err != nil {
		return nil, fmt.Errorf("prev_events: %w", err)
	}
	if proto.AuthEvents, err = eventRefs(t.AuthEvents, proto.ReferenceHashes); err != nil {
		return nil, fmt.Errorf("auth_events: %w", err)
	}
	id := a.Client.cfg.Identity
	return proto.Build(rv, id.ServerName, id.KeyID, id.Key)
}
