package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// The syncing API that /sync replaced, deprecated since r0 but still specified:
// GET /initialSync and GET /events (old_sync.yaml), GET /events?room_id= (peeking_events.yaml,
// "Room Previews") and GET /rooms/{roomId}/initialSync (room_initial_sync.yaml).
//
// Tokens are those of /sync: "s<pos>", a position of the server-wide stream. The start and
// end of a room's messages can be handed to /rooms/{roomId}/messages, and the end of
// /initialSync to /events. What a user may read of a room is decided as for /messages
// (roomReader, historyVisibility in events.go).

func (a *API) oldSyncRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/initialSync", authed(a.initialSync))
	r.Method(http.MethodGet, "/events", authed(a.eventStream))
	r.Method(http.MethodGet, "/rooms/{roomId}/initialSync", authed(a.roomInitialSync))
}

// defaultEventsTimeout is the long-poll of GET /events without a timeout parameter.
// NOTSPEC: the spec gives none; Synapse waits 30 seconds.
const defaultEventsTimeout = 30 * time.Second

// peekPollInterval is how often GET /events re-reads a room the user peeks into without
// being joined: the stream wakes only a room's members, so a peeker is not woken by the
// room's new events.
const peekPollInterval = 500 * time.Millisecond

// maxRoomPresence bounds the presence events of GET /rooms/{roomId}/initialSync.
// NOTSPEC: Synapse sends one per joined member; a large room would make that huge.
const maxRoomPresence = 100

// roomInfo is a room as the initial syncs show it ("RoomInfo" of room_initial_sync.yaml
// and old_sync.yaml).
type roomInfo struct {
	RoomID     string `json:"room_id"`
	Membership string `json:"membership,omitempty"`
	// Invite is the invite event of a room the user is invited to (/initialSync only).
	Invite      *ClientEvent     `json:"invite,omitempty"`
	Messages    *paginationChunk `json:"messages,omitempty"`
	State       []ClientEvent    `json:"state,omitzero"`
	Visibility  string           `json:"visibility,omitempty"`
	AccountData []any            `json:"account_data"`
	// Presence and Receipts are sent by GET /rooms/{roomId}/initialSync only. NOTSPEC:
	// not in room_initial_sync.yaml, but Synapse sends them and old clients read them.
	Presence []any `json:"presence,omitzero"`
	Receipts []any `json:"receipts,omitzero"`
}

// paginationChunk is "PaginationChunk": a room's most recent messages, oldest first.
type paginationChunk struct {
	Chunk []ClientEvent `json:"chunk"`
	Start string        `json:"start,omitempty"`
	End   string        `json:"end"`
}

// initialSyncMembership is the membership a RoomInfo reports: the spec lists invite, join,
// leave and ban; a peeker (no membership, or a knock) gets none.
func initialSyncMembership(membership string) string {
	switch membership {
	case "invite", "join", "leave", "ban":
		return membership
	}
	return ""
}

// roomSnapshot is what the initial syncs show of the room rr reads: its latest limit
// messages the user may see up to rr.upper, and the state there, that is the current state
// while the user is joined or peeks, and the state after their leave or ban otherwise. It
// also returns that state, by tuple.
func (a *API) roomSnapshot(ctx context.Context, f *formatter, rr *roomReader, limit int) (*roomInfo, map[spec.StateTuple]*rooms.Event, error) {
	p := &page{cursor: rr.upper}
	if limit > 0 {
		var err error
		if p, err = a.scan(ctx, rr, &RoomEventFilter{}, rr.upper, minStreamPos, true, limit); err != nil {
			return nil, nil, err
		}
	}
	slices.Reverse(p.events)
	messages, err := f.formatAll(ctx, p.events)
	if err != nil {
		return nil, nil, err
	}

	var state map[spec.StateTuple]*rooms.Event
	if rr.membership == "leave" || rr.membership == "ban" {
		state, err = a.rooms.StateAfter(ctx, rr.memberEvent)
	} else {
		state, _, err = a.rooms.CurrentState(ctx, rr.roomID)
	}
	if err != nil {
		return nil, nil, err
	}
	stateEvents := make([]*rooms.Event, 0, len(state))
	for _, e := range state {
		stateEvents = append(stateEvents, e)
	}
	sortByStream(stateEvents)
	stateOut, err := f.formatAll(ctx, stateEvents)
	if err != nil {
		return nil, nil, err
	}

	public, err := storage.RoomIsPublic(ctx, a.db, rr.roomID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, nil, err
	}
	visibility := "private"
	if public {
		visibility = "public"
	}
	// NOTSPEC: start is always given, as in Synapse, even when the room has no earlier
	// events here: /messages may still find some on other servers (backfill).
	return &roomInfo{
		RoomID: rr.roomID, Membership: initialSyncMembership(rr.membership),
		Messages: &paginationChunk{Chunk: messages, Start: streamToken(p.cursor), End: streamToken(rr.upper)},
		State:    stateOut, Visibility: visibility, AccountData: []any{},
	}, state, nil
}

// accountDataEvents splits a user's account data into the global events and the events
// of each room.
func accountDataEvents(rows []storage.AccountDataRow) (global []any, byRoom map[string][]any) {
	global, byRoom = []any{}, map[string][]any{}
	for _, row := range rows {
		ev := map[string]any{"type": row.Type, "content": json.RawMessage(row.Content)}
		if row.RoomID == "" {
			global = append(global, ev)
		} else {
			byRoom[row.RoomID] = append(byRoom[row.RoomID], ev)
		}
	}
	return global, byRoom
}

// GET /rooms/{roomId}/initialSync (room_initial_sync.yaml roomInitialSync): a snapshot of
// one room for a member, a former member (as the room was when they left), or anyone while
// the room is world_readable ("Room Previews"); 403 to everyone else. NOTSPEC: a limit
// parameter bounds the messages, 10 by default, as in Synapse.
func (a *API) roomInitialSync(w http.ResponseWriter, r *http.Request, d *Device) error {
	limit, err := parseLimit(r.URL.Query().Get("limit"), defaultPageLimit, maxTimelineLimit)
	if err != nil {
		return err
	}
	ctx := r.Context()
	rr, err := a.roomReader(ctx, pathParam(r, "roomId"), d.UserID)
	if err != nil {
		return err
	}
	info, state, err := a.roomSnapshot(ctx, a.formatter(d, true), rr, limit)
	if err != nil {
		return err
	}
	data, err := storage.AccountDataSince(ctx, a.db, d.UserID, 0, a.rooms.Stream().Current())
	if err != nil {
		return err
	}
	if _, byRoom := accountDataEvents(data); byRoom[rr.roomID] != nil {
		info.AccountData = byRoom[rr.roomID]
	}
	// Presence only for a joined user: others' presence is for those sharing a room with
	// them (module "Presence", "Security considerations"). Receipts as /sync gives a
	// member, except after the user left (as in Synapse).
	info.Presence, info.Receipts = []any{}, []any{}
	if rr.membership == "join" {
		if info.Presence, err = a.memberPresence(ctx, state); err != nil {
			return err
		}
	}
	if rr.membership != "leave" && rr.membership != "ban" {
		latest, err := storage.LatestReceipts(ctx, a.db, rr.roomNID, d.UserID, rr.upper, maxRoomReceipts)
		if err != nil {
			return err
		}
		if len(latest) > 0 {
			slices.Reverse(latest) // oldest first, so that the user's own are not overwritten
			receipts := receiptEvent(latest)
			receipts["room_id"] = rr.roomID
			info.Receipts = append(info.Receipts, receipts)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, info)
	return nil
}

// memberPresence is the m.presence events of the joined members in state, at most
// maxRoomPresence of them, by user ID.
func (a *API) memberPresence(ctx context.Context, state map[spec.StateTuple]*rooms.Event) ([]any, error) {
	var members []string
	for tuple, e := range state {
		if m, _ := e.Membership(); tuple.Type == "m.room.member" && m == "join" {
			members = append(members, tuple.StateKey)
		}
	}
	sort.Strings(members)
	members = members[:min(len(members), maxRoomPresence)]
	now := a.presence.Now()
	out := make([]any, 0, len(members))
	for _, userID := range members {
		status, err := a.presence.Get(ctx, userID)
		if err != nil {
			return nil, err
		}
		out = append(out, map[string]any{"type": "m.presence", "sender": userID, "content": status.Content(now)})
	}
	return out, nil
}

type initialSyncResponse struct {
	End         string      `json:"end"`
	Rooms       []*roomInfo `json:"rooms"`
	Presence    []any       `json:"presence"`
	AccountData []any       `json:"account_data"`
}

// GET /initialSync (old_sync.yaml initialSync, deprecated): every room the user is joined
// or invited to (and, with archived=true, has left or been banned from) with its messages
// and state, the presence of the users sharing a room with them, and their account data.
// end is where GET /events carries on. NOTSPEC: without a limit, 10 messages per room, as
// in Synapse.
func (a *API) initialSync(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), defaultPageLimit, maxTimelineLimit)
	if err != nil {
		return err
	}
	archived := q.Get("archived")
	if archived != "" && archived != "true" && archived != "false" {
		return httpapi.InvalidParam("archived must be true or false")
	}
	ctx := r.Context()
	end := a.rooms.Stream().Current()
	memberships, err := a.userMemberships(ctx, d.UserID)
	if err != nil {
		return err
	}
	data, err := storage.AccountDataSince(ctx, a.db, d.UserID, 0, end)
	if err != nil {
		return err
	}
	global, roomData := accountDataEvents(data)
	if global, err = a.withPushRules(ctx, d.UserID, global); err != nil {
		return err
	}
	resp := initialSyncResponse{End: streamToken(end), Rooms: []*roomInfo{}, AccountData: global}

	memberships = slices.Clone(memberships)
	sort.Slice(memberships, func(i, j int) bool { return memberships[i].RoomID < memberships[j].RoomID })
	f := a.formatter(d, true)
	forgotten := forgottenRooms{api: a, userID: d.UserID}
	var invitesBlocked *bool // read on the first invite
	for _, m := range memberships {
		var info *roomInfo
		switch m.Membership {
		case "invite":
			// Invites are hidden while the user blocks them (client-server API "Invite
			// permission"), as in /sync.
			if invitesBlocked == nil {
				blocked, err := a.InviteBlocked(ctx, d.UserID)
				if err != nil {
					return err
				}
				invitesBlocked = &blocked
			}
			if *invitesBlocked {
				continue
			}
			if info, err = a.invitedRoomInfo(ctx, f, m); err != nil {
				return err
			}
		case "join", "leave", "ban":
			if m.Membership != "join" {
				if archived != "true" {
					continue
				}
				// "Forget": a forgotten room is gone from the user's room list for good.
				gone, err := forgotten.contains(ctx, m.RoomID)
				if err != nil {
					return err
				}
				if gone {
					continue
				}
			}
			rr, err := a.roomReader(ctx, m.RoomID, d.UserID)
			if errors.Is(err, errNoAccess) {
				continue // the membership changed since it was listed
			}
			if err != nil {
				return err
			}
			// Nothing after end: GET /events from end delivers it.
			rr.upper = min(rr.upper, end)
			if info, _, err = a.roomSnapshot(ctx, f, rr, limit); err != nil {
				return err
			}
		default:
			continue // knocks are not part of this API
		}
		if events := roomData[m.RoomID]; events != nil {
			info.AccountData = events
		}
		resp.Rooms = append(resp.Rooms, info)
	}

	if resp.Presence, err = a.syncPresence(ctx, d.UserID, &EventFilter{}, 0, end, true, nil); err != nil {
		return err
	}
	if resp.Presence == nil {
		resp.Presence = []any{}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// invitedRoomInfo is a room the user is invited to: the invite event and nothing of the
// room itself, which the user may not read yet.
func (a *API) invitedRoomInfo(ctx context.Context, f *formatter, m storage.RoomMembership) (*roomInfo, error) {
	info := &roomInfo{RoomID: m.RoomID, Membership: "invite", Visibility: "private", AccountData: []any{}}
	events, err := a.rooms.EventsByNID(ctx, []int64{m.EventNID})
	if err != nil {
		return nil, err
	}
	if len(events) > 0 {
		invite, err := f.formatAll(ctx, events[:1])
		if err != nil {
			return nil, err
		}
		info.Invite = &invite[0]
	}
	public, err := storage.RoomIsPublic(ctx, a.db, m.RoomID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	if public {
		info.Visibility = "public"
	}
	return info, nil
}

type eventsResponse struct {
	Start string        `json:"start"`
	End   string        `json:"end"`
	Chunk []ClientEvent `json:"chunk"`
}

// GET /events (old_sync.yaml getEvents, deprecated; peeking_events.yaml peekEvents): the
// room events after from, oldest first, long-polling up to timeout for the first. Without
// room_id they are those of the rooms the user is joined to, plus the user's own
// membership changes (invites, leaves, kicks, bans); with it, those of that room, which
// the user must be joined to or which must be world_readable ("Room Previews"), 403
// otherwise. end is the token for the next request. NOTSPEC, as in Synapse: without from,
// the stream starts now; without timeout, the long-poll lasts 30 seconds; limit bounds the
// events of one response, 10 by default, and 0 means no limit but maxTimelineLimit.
func (a *API) eventStream(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	stream := a.rooms.Stream()
	current := stream.Current()
	from := current
	if s := q.Get("from"); s != "" {
		pos, ok := parseStreamToken(s)
		if !ok {
			return httpapi.InvalidParam("Invalid from token")
		}
		// A token from the future starts from now, as for /sync.
		from = min(pos, current)
	}
	timeout := defaultEventsTimeout
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return httpapi.InvalidParam("Invalid timeout")
		}
		timeout = time.Duration(min(ms, maxSyncTimeout.Milliseconds())) * time.Millisecond
	}
	limit, err := parseLimit(q.Get("limit"), defaultPageLimit, maxTimelineLimit)
	if err != nil {
		return err
	}
	if limit == 0 {
		limit = maxTimelineLimit
	}
	ctx := r.Context()
	es := &eventSource{a: a, userID: d.UserID, limit: limit, readers: map[int64]*roomReader{}}
	if roomID := q.Get("room_id"); roomID != "" {
		if es.room, err = a.peekReader(ctx, roomID, d.UserID); err != nil {
			return err
		}
	}
	peeking := es.room != nil && es.room.membership != "join"

	// The device counts as connected while the request runs, as with /sync (Synapse does
	// the same for this endpoint).
	done, err := a.presence.Syncing(ctx, d.UserID, d.DeviceID, "")
	if err != nil {
		return err
	}
	defer done()

	events, end, err := es.read(ctx, from, current)
	if err != nil {
		return err
	}
	if len(events) == 0 && timeout > 0 {
		waitCtx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		for len(events) == 0 && waitCtx.Err() == nil {
			next := a.waitPast(waitCtx, d.UserID, end, peeking)
			if next <= end {
				break
			}
			if events, end, err = es.read(ctx, end, next); err != nil {
				return err
			}
		}
		if ctx.Err() != nil {
			return nil // the client went away
		}
	}
	chunk, err := a.formatter(d, true).formatAll(ctx, events)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, eventsResponse{Start: streamToken(from), End: streamToken(end), Chunk: chunk})
	return nil
}

// peekReader is the reader of the room_id of GET /events: a room the user is joined to or
// that is world_readable. Unlike for /messages, a former member of a room that is not
// world_readable may not follow it (there is nothing new they may see), as in Synapse.
func (a *API) peekReader(ctx context.Context, roomID, userID string) (*roomReader, error) {
	rr, err := a.roomReader(ctx, roomID, userID)
	if err != nil {
		return nil, err
	}
	if rr.membership == "leave" || rr.membership == "ban" {
		worldReadable, err := a.worldReadable(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if !worldReadable {
			return nil, errNoAccess
		}
	}
	return rr, nil
}

// waitPast waits until the stream has moved past pos with something for userID, or ctx
// ends, and returns the stream's current position. poll (a peeker, whom the room's events
// do not wake) re-checks every peekPollInterval whether the stream moved at all.
func (a *API) waitPast(ctx context.Context, userID string, pos int64, poll bool) int64 {
	stream := a.rooms.Stream()
	if !poll {
		return stream.Wait(ctx, userID, pos)
	}
	for ctx.Err() == nil {
		pollCtx, cancel := context.WithTimeout(ctx, peekPollInterval)
		next := stream.Wait(pollCtx, userID, pos)
		cancel()
		if next > pos {
			return next
		}
	}
	return pos
}

// eventSource reads the events GET /events delivers to one user.
type eventSource struct {
	a      *API
	userID string
	limit  int
	// room is the one room of a room_id request, nil for the user's joined rooms.
	room *roomReader
	// readers are the user's joined rooms read so far, by room NID.
	readers map[int64]*roomReader
}

// read returns the first events (at most limit) with from < stream_pos <= to that the
// user may see, oldest first, and the position up to which they cover the stream: to, or
// the last event returned when there were more.
func (s *eventSource) read(ctx context.Context, from, to int64) ([]*rooms.Event, int64, error) {
	stream := s.a.rooms.Stream()
	var events []*rooms.Event
	var readers []*roomReader
	if s.room != nil {
		readers = append(readers, s.room)
	} else {
		memberships, err := s.a.userMemberships(ctx, s.userID)
		if err != nil {
			return nil, 0, err
		}
		for _, m := range memberships {
			if m.Membership != "join" || !stream.ChangedSince(streams.RoomKey(m.RoomNID), from) {
				continue
			}
			rr, err := s.reader(ctx, m, to)
			if err != nil {
				return nil, 0, err
			}
			readers = append(readers, rr)
		}
		// NOTSPEC: the user's own membership events are shown whatever the history
		// visibility (as /sync shows invites and leaves), so that the client learns of
		// rooms it is invited to or removed from.
		if stream.ChangedSince(streams.MembershipKey(s.userID), from) {
			rows, err := storage.MembershipChanges(ctx, s.a.db, s.userID, from, to)
			if err != nil {
				return nil, 0, err
			}
			own, err := s.a.rooms.EventsFromRows(rows)
			if err != nil {
				return nil, 0, err
			}
			events = append(events, own...)
		}
	}
	// Each room gives its first limit events; the response may cover the stream only up
	// to where a room stopped.
	covered := to
	for _, rr := range readers {
		p, err := s.a.scan(ctx, rr, &RoomEventFilter{}, from, to, false, s.limit)
		if err != nil {
			return nil, 0, err
		}
		events = append(events, p.events...)
		if p.more {
			covered = min(covered, p.cursor)
		}
	}
	sortByStream(events)
	out := events[:0]
	for _, e := range events {
		// A membership event of a joined room comes from both sources.
		if e.StreamPos > covered || (len(out) > 0 && out[len(out)-1].NID == e.NID) {
			continue
		}
		out = append(out, e)
	}
	if len(out) > s.limit {
		out = out[:s.limit]
		covered = out[len(out)-1].StreamPos
	}
	return out, covered, nil
}

// reader is the reader of a joined room, made once per request.
func (s *eventSource) reader(ctx context.Context, m storage.RoomMembership, upper int64) (*roomReader, error) {
	if rr, ok := s.readers[m.RoomNID]; ok {
		return rr, nil
	}
	visibility, err := s.a.newHistoryVisibility(ctx, m.RoomNID, s.userID, upper)
	if err != nil {
		return nil, err
	}
	rr := &roomReader{roomID: m.RoomID, roomNID: m.RoomNID, upper: upper, membership: "join", visibility: visibility}
	s.readers[m.RoomNID] = rr
	return rr, nil
}
