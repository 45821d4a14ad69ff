package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
)

// Joining rooms across servers (server-server API "Joining Rooms"): make_join hands the
// joining server an event template, send_join takes the signed join and answers with the
// room's state and auth chain. JoinRemote is the joining side.

func (a *API) membershipRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_matrix/federation/v1/make_join/{roomId}/{userId}", a.handler(a.makeJoin))
	r.Method(http.MethodPut, "/_matrix/federation/v2/send_join/{roomId}/{eventId}", a.handler(a.sendJoinV2))
	r.Method(http.MethodPut, "/_matrix/federation/v1/send_join/{roomId}/{eventId}", a.handler(a.sendJoinV1))
}

// errIncompatibleRoomVersion is the answer of make_join and make_knock when the asking
// server does not support the room's version.
func errIncompatibleRoomVersion(version, action string) *httpapi.Error {
	e := httpapi.NewError(http.StatusBadRequest, "M_INCOMPATIBLE_ROOM_VERSION",
		"Your homeserver does not support the features required to %s this version %s room", action, version)
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
	var missing *rooms.MissingEventsError
	if errors.As(err, &missing) {
		// The event names events we do not have: the sender's to fix, not ours.
		return httpapi.BadJSON("%v", missing)
	}
	return err
}

// GET /_matrix/federation/v1/make_join/{roomId}/{userId}?ver=…
func (a *API) makeJoin(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.makeMembership(w, r, origin, "join")
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
	join, err := a.receiveMembership(r, origin, "join")
	if err != nil {
		return nil, err
	}
	ev := join.Event
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
	return a.throughEach(roomID, servers, "join", func(server string) error {
		return a.joinThrough(ctx, server, roomID, userID, content)
	})
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
	join, err := a.makeThrough(ctx, server, "make_join", supportedVersionsQuery(), roomID, userID, "join", content)
	if err != nil {
		return err
	}
	// The answer holds the room's whole state: it is read from the network as it arrives
	// (within MaxResponseSize), and rooms.JoinFromStream parses, checks and stores its
	// events a batch at a time, never all at once. It also takes the resident server's copy
	// of our join ("event") when there is one.
	body, err := a.Client.DoStream(ctx, Request{Method: http.MethodPut, Destination: server,
		URI:  "/_matrix/federation/v2/send_join/" + url.PathEscape(roomID) + "/" + url.PathEscape(join.EventID()),
		Body: json.RawMessage(join.JSON()), MaxResponseSize: 256 << 20})
	if err != nil {
		return fmt.Errorf("send_join: %w", err)
	}
	defer body.Close()
	if _, err = a.Rooms.JoinFromStream(ctx, join, body, a.Keys.KeyLookup(ctx)); err != nil {
		return fmt.Errorf("send_join: %w", err)
	}
	return nil
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
