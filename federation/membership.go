package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Joining rooms across servers (server-server API "Joining Rooms"): make_join hands the
// joining server an event template, send_join takes the signed join and answers with the
// room's state and auth chain. JoinRemote is the joining side.

func (a *API) membershipRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_matrix/federation/v1/make_join/{roomId}/{userId}", a.handler(a.makeJoin))
	r.Method(http.MethodPut, "/_matrix/federation/v2/send_join/{roomId}/{eventId}", a.handler(a.sendJoinV2))
	r.Method(http.MethodPut, "/_matrix/federation/v1/send_join/{roomId}/{eventId}", a.handler(a.sendJoinV1))
}

// errIncompatibleRoomVersion is make_join's answer when the joining server supports none of
// the room's version.
func errIncompatibleRoomVersion(version string) *httpapi.Error {
	e := httpapi.NewError(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION",
		"Your homeserver does not support the features required to join this version %s room", version)
	e.Extra = map[string]any{"room_version": version}
	return e
}

// roomError maps the room server's errors for a federation caller.
func roomError(err error, roomID string) error {
	var authErr *spec.AuthError
	var rejected *rooms.RejectedError
	switch {
	case errors.Is(err, rooms.ErrRoomNotFound):
		return httpapi.NotFound("Unknown room %s", roomID)
	case errors.As(err, &authErr):
		return httpapi.Forbidden("%s", authErr.Reason)
	case errors.As(err, &rejected):
		return httpapi.Forbidden("%v", rejected.Reason)
	case errors.Is(err, rooms.ErrBadSignature):
		return httpapi.Forbidden("%v", err)
	}
	return err
}

// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=…
func (a *API) makeJoin(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID, userID := pathParam(r, "roomId"), pathParam(r, "userId")
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	if user.Server() != origin {
		return httpapi.Forbidden("%s cannot make a join event for %s", origin, userID)
	}
	rv, err := a.Rooms.RoomVersion(r.Context(), roomID)
	if err != nil {
		return roomError(err, roomID)
	}
	// "ver" lists the versions the joining server supports; absent means just "1".
	versions := r.URL.Query()["ver"]
	if len(versions) == 0 {
		versions = []string{"1"}
	}
	if !slices.Contains(versions, rv.ID) {
		return errIncompatibleRoomVersion(rv.ID)
	}
	content := json.RawMessage(`{"membership":"join"}`)
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

// sendJoinResponse is the body of send_join (v2).
type sendJoinResponse struct {
	Origin         string            `json:"origin"`
	State          []json.RawMessage `json:"state"`
	AuthChain      []json.RawMessage `json:"auth_chain"`
	Event          json.RawMessage   `json:"event,omitempty"`
	MembersOmitted bool              `json:"members_omitted"`
	ServersInRoom  []string          `json:"servers_in_room"`
}

// PUT /_matrix/federation/v2/send_join/{roomId}/{eventId}
func (a *API) sendJoinV2(w http.ResponseWriter, r *http.Request, origin string) error {
	resp, err := a.sendJoin(r, origin)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// PUT /_matrix/federation/v1/send_join/{roomId}/{eventId}: deprecated, the same answer
// wrapped as [200, {…}].
func (a *API) sendJoinV1(w http.ResponseWriter, r *http.Request, origin string) error {
	resp, err := a.sendJoin(r, origin)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, []any{http.StatusOK, resp})
	return nil
}

// sendJoin checks and accepts a join from another server and gathers the state and auth
// chain to send back. With omit_members (MSC3706, partial state) the state leaves out the
// room's member events other than the joiner's, and the auth chain covers what remains.
func (a *API) sendJoin(r *http.Request, origin string) (*sendJoinResponse, error) {
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
		return nil, httpapi.BadJSON("Invalid join event: %v", err)
	}
	if ev.EventID() != eventID || ev.RoomID() != roomID {
		return nil, httpapi.BadJSON("The event does not match the event and room IDs of the request")
	}
	if m, err := ev.Membership(); err != nil || m != "join" || !ev.StateKeyEquals(ev.Sender()) {
		return nil, httpapi.BadJSON("Not a join event of its sender")
	}
	if sender, err := spec.ParseUserID(ev.Sender()); err != nil || sender.Server() != origin {
		return nil, httpapi.Forbidden("%s cannot send a join for %s", origin, ev.Sender())
	}
	join, err := a.Rooms.ReceiveEvent(ctx, ev, a.Keys.KeyLookup(ctx))
	if err != nil {
		return nil, roomError(err, roomID)
	}
	if join.Status != storage.EventAccepted {
		return nil, httpapi.Forbidden("The join does not pass the checks against the room's current state")
	}
	// The other servers of the room learn of the join from us, its only recipient.
	if err := a.Rooms.Forward(ctx, join, origin); err != nil {
		a.Log.Warn("federation: forward a join", "event_id", join.EventID(), "err", err)
	}
	state, err := a.Rooms.StateBefore(ctx, join)
	if err != nil {
		return nil, err
	}
	omitMembers := r.URL.Query().Get("omit_members") == "true"
	servers := map[string]bool{a.ServerName: true}
	kept := state[:0:0]
	for _, e := range state {
		if e.Type() == "m.room.member" {
			if m, _ := e.Membership(); m == "join" {
				if u, err := spec.ParseUserID(*e.StateKey()); err == nil {
					servers[u.Server()] = true
				}
			}
			if omitMembers && *e.StateKey() != ev.Sender() {
				continue
			}
		}
		kept = append(kept, e)
	}
	chain, err := a.Rooms.AuthChain(ctx, append(kept, join))
	if err != nil {
		return nil, err
	}
	resp := &sendJoinResponse{Origin: a.ServerName, MembersOmitted: omitMembers, Event: join.JSON(),
		State: pduList(kept), AuthChain: pduList(chain)}
	for s := range servers {
		resp.ServersInRoom = append(resp.ServersInRoom, s)
	}
	sort.Strings(resp.ServersInRoom)
	return resp, nil
}

// pduList is events in federation format.
func pduList(events []*rooms.Event) []json.RawMessage {
	out := make([]json.RawMessage, 0, len(events))
	for _, e := range events {
		out = append(out, e.JSON())
	}
	return out
}

// JoinRemote joins userID (one of ours) to roomID through one of servers, trying each in
// turn: make_join, sign, send_join, then store the room from the answer. content is the
// join's content (membership is set here).
func (a *API) JoinRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error {
	var errs []error
	for _, server := range servers {
		if server == a.ServerName || server == "" {
			continue
		}
		err := a.joinThrough(ctx, server, roomID, userID, content)
		if err == nil {
			return nil
		}
		a.Log.Info("federation: join through server failed", "room_id", roomID, "server", server, "err", err)
		errs = append(errs, fmt.Errorf("%s: %w", server, err))
	}
	if len(errs) == 0 {
		return errors.New("no server to join through")
	}
	return errors.Join(errs...)
}

// supportedVersionsQuery is the "ver" query of make_join: every room version we support.
func supportedVersionsQuery() string {
	q := url.Values{}
	ids := make([]string, 0, len(spec.RoomVersions()))
	for id := range spec.RoomVersions() {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	q["ver"] = ids
	return q.Encode()
}

func (a *API) joinThrough(ctx context.Context, server, roomID, userID string, content map[string]any) error {
	var made struct {
		RoomVersion string          `json:"room_version"`
		Event       json.RawMessage `json:"event"`
	}
	err := a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: server,
		URI: "/_matrix/federation/v1/make_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(userID) + "?" + supportedVersionsQuery()}, &made)
	if err != nil {
		return fmt.Errorf("make_join: %w", err)
	}
	if made.RoomVersion == "" {
		made.RoomVersion = "1" // NOTSPEC: servers from before room versions omitted it
	}
	rv, ok := spec.LookupRoomVersion(made.RoomVersion)
	if !ok {
		return fmt.Errorf("make_join: unsupported room version %q", made.RoomVersion)
	}
	join, err := a.completeTemplate(made.Event, rv, roomID, userID, content)
	if err != nil {
		return fmt.Errorf("make_join template: %w", err)
	}
	// The answer holds the room's whole state. The client hands the body over as received
	// (within MaxResponseSize); rooms.JoinFromStream reads it as a stream and parses, checks
	// and stores its events a batch at a time, never all at once. It also takes the resident
	// server's copy of our join ("event") when there is one.
	body, err := a.Client.Do(ctx, Request{Method: http.MethodPut, Destination: server,
		URI:  "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID()),
		Body: json.RawMessage(join.JSON()), MaxResponseSize: 256 << 20})
	if err != nil {
		return fmt.Errorf("send_join: %w", err)
	}
	_, err = a.Rooms.JoinFromStream(ctx, join, bytes.NewReader(body), a.Keys.KeyLookup(ctx))
	return err
}

// completeTemplate fills in and signs a make_join template.
func (a *API) completeTemplate(raw json.RawMessage, rv *spec.RoomVersion, roomID, userID string, content map[string]any) (*spec.Event, error) {
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
	if t.Type != "m.room.member" || t.Sender != userID || t.StateKey == nil || *t.StateKey != userID || t.RoomID != roomID {
		return nil, errors.New("the template is not a join of this user to this room")
	}
	merged := map[string]any{}
	_ = json.Unmarshal(t.Content, &merged) // keeps join_authorised_via_users_server
	for k, v := range content {
		merged[k] = v
	}
	merged["membership"] = "join"
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

// eventRefs reads a list of event references: IDs, or (room versions 1 and 2)
// [event_id, {"sha256": hash}] pairs, whose hashes go to hashes.
func eventRefs(raw json.RawMessage, hashes map[string]string) ([]string, error) {
	var ids []string
	if err := json.Unmarshal(raw, &ids); err == nil {
		return ids, nil
	}
	var pairs [][]json.RawMessage
	if err := json.Unmarshal(raw, &pairs); err != nil {
		return nil, err
	}
	ids = make([]string, 0, len(pairs))
	for _, p := range pairs {
		if len(p) != 2 {
			return nil, errors.New("malformed event reference")
		}
		var id string
		var h struct {
			SHA256 string `json:"sha256"`
		}
		if json.Unmarshal(p[0], &id) != nil || !strings.HasPrefix(id, "$") {
			return nil, errors.New("malformed event reference")
		}
		_ = json.Unmarshal(p[1], &h)
		if h.SHA256 != "" {
			hashes[id] = h.SHA256
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// parsePDUs parses events of room version rv, dropping those that do not parse (the spec's
// receivers ignore malformed events).
func parsePDUs(raws []json.RawMessage, rv *spec.RoomVersion) ([]*spec.Event, error) {
	if len(raws) > 500_000 {
		return nil, fmt.Errorf("%d events", len(raws))
	}
	out := make([]*spec.Event, 0, len(raws))
	for _, raw := range raws {
		if e, err := spec.ParseEvent(raw, rv); err == nil {
			out = append(out, e)
		}
	}
	return out, nil
}
