package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Space hierarchies (client-server API "Spaces", space_hierarchy.yaml; server-server API
// "Spaces"): a space's m.space.child state events name its children; /hierarchy walks them
// depth first from the space and pages through the rooms it reaches. Rooms this server has
// are summarised from their current state; others are asked of the servers their
// m.space.child events name ("via").

// clientV1Routes mounts the endpoints under /_matrix/client/v1.
func (a *API) clientV1Routes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/rooms/{roomId}/hierarchy", authed(a.getHierarchy))
	r.Method(http.MethodGet, "/rooms/{roomId}/timestamp_to_event", authed(a.timestampToEvent))
	r.Method(http.MethodGet, "/rooms/{roomId}/relations/{eventId}", authed(a.relations))
	r.Method(http.MethodGet, "/rooms/{roomId}/relations/{eventId}/{relType}", authed(a.relations))
	r.Method(http.MethodGet, "/rooms/{roomId}/relations/{eventId}/{relType}/{eventType}", authed(a.relations))
	r.Method(http.MethodGet, "/rooms/{roomId}/threads", authed(a.threads))
	a.miscV1Routes(r, authed)
	r.Method(http.MethodPost, "/login/get_token", authed(a.getLoginToken))
	a.adminRoutes(r, authed)
}

// Bounds of a hierarchy walk. NOTSPEC: the spec sets none; these are Synapse's (page size
// 50 by default, at most 50 rooms per page) plus caps on the walk itself.
const (
	defaultHierarchyLimit = 50
	maxHierarchyLimit     = 50
	maxHierarchyRooms     = 1000 // rooms one walk may reach
	maxRemoteHierarchies  = 20   // other servers asked in one walk
	maxSpaceChildOrderLen = 50   // m.space.child "order": at most 50 characters
)

// spaceRoom is a room of the hierarchy (room_summary.yaml plus children_state).
type spaceRoom struct {
	publicRoomsChunk
	RoomVersion    string            `json:"room_version,omitempty"`
	Encryption     string            `json:"encryption,omitempty"`
	AllowedRoomIDs []string          `json:"allowed_room_ids,omitempty"`
	ChildrenState  []json.RawMessage `json:"children_state"`
}

// spaceChild is one m.space.child event of a space, with what ordering needs.
type spaceChild struct {
	roomID    string
	via       []string
	order     string
	suggested bool
	ts        int64
	stripped  json.RawMessage
}

// localSummary summarises a room this server has from its current state, with its valid
// children (those whose "via" is a non-empty list), in the order space_hierarchy.yaml
// gives: by "order" (rooms with one first), then by the child event's origin_server_ts,
// then by room ID.
func (a *API) localSummary(ctx context.Context, roomID string) (*spaceRoom, []spaceChild, error) {
	state, version, err := a.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	s := &spaceRoom{publicRoomsChunk: publicRoomsChunk{RoomID: roomID}, RoomVersion: version.ID, ChildrenState: []json.RawMessage{}}
	var children []spaceChild
	for tuple, e := range state {
		switch tuple.Type {
		case "m.room.member":
			if m, _ := e.Membership(); m == "join" {
				s.NumJoinedMembers++
			}
		case "m.room.encryption":
			var c struct {
				Algorithm string `json:"algorithm"`
			}
			if json.Unmarshal(e.Content(), &c) == nil {
				s.Encryption = c.Algorithm
			}
		case "m.room.join_rules":
			s.apply(e)
			s.AllowedRoomIDs = allowedRoomIDs(e.Content())
		case "m.space.child":
			if child, ok := parseSpaceChild(e); ok {
				children = append(children, child)
			}
		default:
			if tuple.StateKey == "" {
				s.apply(e)
			}
		}
	}
	sort.Slice(children, func(i, j int) bool { return children[i].less(children[j]) })
	for _, c := range children {
		s.ChildrenState = append(s.ChildrenState, c.stripped)
	}
	return s, children, nil
}

// parseSpaceChild reads an m.space.child event; ok is false for invalid ones (no "via").
func parseSpaceChild(e *rooms.Event) (spaceChild, bool) {
	var c struct {
		Via       []string `json:"via"`
		Order     any      `json:"order"`
		Suggested any      `json:"suggested"`
	}
	if e.StateKey() == nil || json.Unmarshal(e.Content(), &c) != nil || len(c.Via) == 0 {
		return spaceChild{}, false
	}
	if _, err := spec.ParseRoomID(*e.StateKey()); err != nil {
		return spaceChild{}, false
	}
	child := spaceChild{roomID: *e.StateKey(), via: c.Via, ts: e.OriginServerTS()}
	if order, ok := c.Order.(string); ok && validSpaceOrder(order) {
		child.order = order
	}
	child.suggested, _ = c.Suggested.(bool)
	child.stripped = mustJSON(map[string]any{
		"type": e.Type(), "state_key": *e.StateKey(), "sender": e.Sender(),
		"content": e.Content(), "origin_server_ts": e.OriginServerTS(),
	})
	return child, true
}

// validSpaceOrder: "order" is at most 50 characters in the range \x20 to \x7E.
func validSpaceOrder(order string) bool {
	if len(order) > maxSpaceChildOrderLen {
		return false
	}
	for i := 0; i < len(order); i++ {
		if order[i] < 0x20 || order[i] > 0x7e {
			return false
		}
	}
	return true
}

func (c spaceChild) less(o spaceChild) bool {
	if (c.order != "") != (o.order != "") {
		return c.order != ""
	}
	if c.order != o.order {
		return c.order < o.order
	}
	if c.ts != o.ts {
		return c.ts < o.ts
	}
	return c.roomID < o.roomID
}

// allowedRoomIDs lists the rooms of a restricted join rule's "allow" conditions.
func allowedRoomIDs(content json.RawMessage) []string {
	var c struct {
		Allow []struct {
			Type   string `json:"type"`
			RoomID string `json:"room_id"`
		} `json:"allow"`
	}
	if json.Unmarshal(content, &c) != nil {
		return nil
	}
	var out []string
	for _, cond := range c.Allow {
		if cond.Type == "m.room_membership" && cond.RoomID != "" {
			out = append(out, cond.RoomID)
		}
	}
	return out
}

// openToAll reports whether anyone may peek into or try to join a room with this summary:
// world-readable, or a public or knock join rule.
func (s *spaceRoom) openToAll() bool {
	switch s.JoinRule {
	case "public", "knock", "knock_restricted":
		return true
	}
	return s.WorldReadable
}

// accessibleTo reports whether userID may see a local room in the hierarchy: a member
// (joined or invited), a room open to all, or a restricted room whose allowed rooms the
// user is joined to.
func (a *API) accessibleTo(ctx context.Context, s *spaceRoom, userID string) (bool, error) {
	if s.openToAll() {
		return true, nil
	}
	membership, _, err := a.rooms.Membership(ctx, s.RoomID, userID)
	if err != nil {
		return false, err
	}
	if membership == "join" || membership == "invite" {
		return true, nil
	}
	if s.JoinRule == "restricted" {
		for _, allowed := range s.AllowedRoomIDs {
			if m, _, err := a.rooms.Membership(ctx, allowed, userID); err == nil && m == "join" {
				return true, nil
			}
		}
	}
	return false, nil
}

// hierarchyToken is the "from"/"next_batch" token: the position in the walk and the
// parameters it was made for, which must not change between pages.
func hierarchyToken(offset, maxDepth int, suggestedOnly bool) string {
	return fmt.Sprintf("h%d_%d_%t", offset, maxDepth, suggestedOnly)
}

// GET /_matrix/client/v1/rooms/{roomId}/hierarchy (space_hierarchy.yaml getSpaceHierarchy).
func (a *API) getHierarchy(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	q := r.URL.Query()
	suggestedOnly := q.Get("suggested_only") == "true"
	limit, maxDepth := defaultHierarchyLimit, -1
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n <= 0 {
			return httpapi.InvalidParam("limit must be a positive integer")
		}
		limit = min(n, maxHierarchyLimit)
	}
	if s := q.Get("max_depth"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			return httpapi.InvalidParam("max_depth must be a non-negative integer")
		}
		maxDepth = n
	}
	offset := 0
	if from := q.Get("from"); from != "" {
		var n, depth int
		var suggested bool
		if _, err := fmt.Sscanf(from, "h%d_%d_%t", &n, &depth, &suggested); err != nil || n < 0 ||
			hierarchyToken(n, depth, suggested) != from || depth != maxDepth || suggested != suggestedOnly {
			return httpapi.InvalidParam("Unknown from token, or the parameters changed since it was given")
		}
		offset = n
	}

	walk := &hierarchyWalk{a: a, userID: d.UserID, suggestedOnly: suggestedOnly, maxDepth: maxDepth,
		seen: map[string]bool{}, remote: map[string]*spaceRoom{}}
	root, rootChildren, err := walk.summary(ctx, roomID, nil)
	if err != nil {
		return err
	}
	if root == nil {
		return httpapi.Forbidden("You cannot see room %s", roomID)
	}
	walk.seen[roomID] = true
	walk.visit(ctx, root, rootChildren, 0)

	resp := map[string]any{"rooms": []*spaceRoom{}}
	if offset < len(walk.rooms) {
		end := min(offset+limit, len(walk.rooms))
		resp["rooms"] = walk.rooms[offset:end]
		if end < len(walk.rooms) {
			resp["next_batch"] = hierarchyToken(end, maxDepth, suggestedOnly)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// hierarchyWalk is one depth-first walk of a space for a user.
type hierarchyWalk struct {
	a             *API
	userID        string
	suggestedOnly bool
	maxDepth      int // -1: no limit
	seen          map[string]bool
	rooms         []*spaceRoom
	// remote holds the summaries other servers gave, by room ID, with the children they
	// listed; remoteAsked counts the servers asked.
	remote      map[string]*spaceRoom
	remoteAsked int
}

// visit adds a room and, depth first, its children.
func (h *hierarchyWalk) visit(ctx context.Context, s *spaceRoom, children []spaceChild, depth int) {
	h.rooms = append(h.rooms, s)
	if h.maxDepth >= 0 && depth >= h.maxDepth {
		return
	}
	for _, child := range children {
		if len(h.rooms) >= maxHierarchyRooms {
			return
		}
		if h.seen[child.roomID] || (h.suggestedOnly && !child.suggested) {
			continue
		}
		h.seen[child.roomID] = true
		cs, grandchildren, err := h.summary(ctx, child.roomID, child.via)
		if err != nil || cs == nil {
			continue // inaccessible or unknown rooms are left out
		}
		h.visit(ctx, cs, grandchildren, depth+1)
	}
}

// summary is a room's summary and children if the user may see it (nil otherwise): from
// our state when we have the room, else from one of via over the federation.
func (h *hierarchyWalk) summary(ctx context.Context, roomID string, via []string) (*spaceRoom, []spaceChild, error) {
	s, children, err := h.a.localSummary(ctx, roomID)
	if err == nil {
		ok, err := h.a.accessibleTo(ctx, s, h.userID)
		if err != nil || !ok {
			return nil, nil, err
		}
		return s, children, nil
	}
	if !errors.Is(err, rooms.ErrRoomNotFound) {
		return nil, nil, err
	}
	s = h.remote[roomID]
	if s == nil {
		s = h.fetchRemote(ctx, roomID, via)
	}
	if s == nil || !s.openToAll() {
		// NOTSPEC: a room we are not in is shown only when anyone may see it; restricted
		// rooms of other servers would need the user's memberships checked there.
		return nil, nil, nil
	}
	var remoteChildren []spaceChild
	for _, raw := range s.ChildrenState {
		if c, ok := strippedSpaceChild(raw); ok {
			remoteChildren = append(remoteChildren, c)
		}
	}
	sort.Slice(remoteChildren, func(i, j int) bool { return remoteChildren[i].less(remoteChildren[j]) })
	return s, remoteChildren, nil
}

// fetchRemote asks the servers of via for a room's hierarchy and keeps the summaries of the
// room and of the children they give.
func (h *hierarchyWalk) fetchRemote(ctx context.Context, roomID string, via []string) *spaceRoom {
	if h.a.remote == nil {
		return nil
	}
	for _, server := range via {
		if h.remoteAsked >= maxRemoteHierarchies {
			return nil
		}
		if server == h.a.cfg.ServerName || spec.ValidateServerName(server) != nil {
			continue
		}
		h.remoteAsked++
		raw, err := h.a.remote.SpaceHierarchy(ctx, server, roomID, h.suggestedOnly)
		if err != nil {
			h.a.log.Info("space hierarchy from another server", "room", roomID, "server", server, "err", err)
			continue
		}
		var resp struct {
			Room     *spaceRoom   `json:"room"`
			Children []*spaceRoom `json:"children"`
		}
		if json.Unmarshal(raw, &resp) != nil || resp.Room == nil || resp.Room.RoomID != roomID {
			continue
		}
		for _, c := range resp.Children {
			if c != nil && c.RoomID != "" && h.remote[c.RoomID] == nil {
				h.remote[c.RoomID] = c
			}
		}
		h.remote[roomID] = resp.Room
		return resp.Room
	}
	return nil
}

// strippedSpaceChild reads an m.space.child event of children_state.
func strippedSpaceChild(raw json.RawMessage) (spaceChild, bool) {
	var e struct {
		Type     string `json:"type"`
		StateKey string `json:"state_key"`
		TS       int64  `json:"origin_server_ts"`
		Content  struct {
			Via       []string `json:"via"`
			Order     any      `json:"order"`
			Suggested any      `json:"suggested"`
		} `json:"content"`
	}
	if json.Unmarshal(raw, &e) != nil || e.Type != "m.space.child" || len(e.Content.Via) == 0 {
		return spaceChild{}, false
	}
	if _, err := spec.ParseRoomID(e.StateKey); err != nil {
		return spaceChild{}, false
	}
	c := spaceChild{roomID: e.StateKey, via: e.Content.Via, ts: e.TS, stripped: raw}
	if order, ok := e.Content.Order.(string); ok && validSpaceOrder(order) {
		c.order = order
	}
	c.suggested, _ = e.Content.Suggested.(bool)
	return c, true
}

// LocalSpaceHierarchy answers another server's GET /hierarchy/{roomId} (federation.LocalData):
// the space and its direct children, those the server could peek or join as "children", the
// others' IDs as "inaccessible_children"; children we do not have are left out. A server may
// see a room open to all, a restricted one (it checks allowed_room_ids itself), or one where
// it has joined members.
func (a *API) LocalSpaceHierarchy(ctx context.Context, roomID string, suggestedOnly bool, server string) (json.RawMessage, error) {
	root, children, err := a.localSummary(ctx, roomID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return nil, httpapi.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	if ok, err := a.serverMaySee(ctx, root, server); err != nil {
		return nil, err
	} else if !ok {
		return nil, httpapi.NotFound("Room %s is not accessible to %s", roomID, server)
	}
	resp := struct {
		Room                 *spaceRoom   `json:"room"`
		Children             []*spaceRoom `json:"children"`
		InaccessibleChildren []string     `json:"inaccessible_children"`
	}{Room: root, Children: []*spaceRoom{}, InaccessibleChildren: []string{}}
	for _, child := range children {
		if suggestedOnly && !child.suggested {
			continue
		}
		cs, _, err := a.localSummary(ctx, child.roomID)
		if errors.Is(err, rooms.ErrRoomNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		if ok, err := a.serverMaySee(ctx, cs, server); err != nil {
			return nil, err
		} else if ok {
			resp.Children = append(resp.Children, cs)
		} else {
			resp.InaccessibleChildren = append(resp.InaccessibleChildren, child.roomID)
		}
	}
	return json.Marshal(resp)
}

// serverMaySee reports whether a server could peek into or join a local room.
func (a *API) serverMaySee(ctx context.Context, s *spaceRoom, server string) (bool, error) {
	if s.openToAll() || s.JoinRule == "restricted" {
		return true, nil
	}
	state, _, err := a.rooms.CurrentState(ctx, s.RoomID)
	if err != nil {
		return false, err
	}
	for tuple, e := range state {
		if tuple.Type != "m.room.member" || !strings.HasSuffix(tuple.StateKey, ":"+server) {
			continue
		}
		if m, _ := e.Membership(); m == "join" {
			return true, nil
		}
	}
	return false, nil
}

// GET /_matrix/client/v1/rooms/{roomId}/timestamp_to_event?ts=&dir=
// (room_event_by_timestamp.yaml): the event of the room closest to ts, from our copy of
// the room. NOTSPEC: the spec lets a server ask others when it lacks history; ours answers
// from what it has, as the events it lacks are backfilled through /messages.
func (a *API) timestampToEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	ts, forward, err := httpapi.TimestampQuery(r.URL.Query())
	if err != nil {
		return err
	}
	membership, _, err := a.rooms.Membership(ctx, roomID, d.UserID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return httpapi.Forbidden("You are not in room %s", roomID)
	}
	if err != nil {
		return err
	}
	if membership != "join" {
		if readable, err := a.worldReadable(ctx, roomID); err != nil {
			return err
		} else if !readable {
			return httpapi.Forbidden("You are not in room %s", roomID)
		}
	}
	roomNID, err := a.rooms.RoomNID(ctx, roomID)
	if err != nil {
		return err
	}
	eventID, originTS, err := eventNearTimestamp(ctx, a, roomNID, ts, forward)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"event_id": eventID, "origin_server_ts": originTS})
	return nil
}

// eventNearTimestamp looks up the event closest to ts; 404 M_NOT_FOUND when there is none.
func eventNearTimestamp(ctx context.Context, a *API, roomNID, ts int64, forward bool) (string, int64, error) {
	eventID, originTS, err := storage.EventNearTimestamp(ctx, a.db, roomNID, ts, forward)
	if errors.Is(err, storage.ErrNotFound) {
		return "", 0, httpapi.NotFound("No event found from %d in that direction", ts)
	}
	return eventID, originTS, err
}
