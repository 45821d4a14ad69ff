package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/presence"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// /sync (client-server API "Syncing"; data/api/client-server/sync.yaml).
//
// A token is "s" followed by a position of the server-wide stream: everything at or below it
// has been delivered. Responses only ever cover positions up to the tracker's Current(), so
// an event that commits late is never skipped.

func (a *API) syncRoutes(r chi.Router, h func(httpapi.Handler) http.Handler, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/sync", authed(a.sync))
	r.Method(http.MethodPost, "/user/{userId}/filter", authed(a.createFilter))
	r.Method(http.MethodGet, "/user/{userId}/filter/{filterId}", authed(a.getFilter))
}

// defaultTimelineLimit is the number of timeline events per room without a filter limit.
// NOTSPEC: the spec leaves it to the server; Synapse uses 10.
const defaultTimelineLimit = 10

// maxSyncTimeout caps a long-poll. NOTSPEC: clients use 30 s; this bounds held connections.
const maxSyncTimeout = 5 * time.Minute

type syncResponse struct {
	NextBatch   string              `json:"next_batch"`
	Rooms       syncRooms           `json:"rooms"`
	AccountData eventList           `json:"account_data"`
	Presence    eventList           `json:"presence"`
	ToDevice    eventList           `json:"to_device"`
	DeviceLists map[string][]string `json:"device_lists"`
	// End-to-end encryption (client-server API "Extensions to /sync").
	OneTimeKeysCount       map[string]int `json:"device_one_time_keys_count"`
	UnusedFallbackKeyTypes []string       `json:"device_unused_fallback_key_types"`
}

type syncRooms struct {
	Join   map[string]*joinedRoom  `json:"join"`
	Invite map[string]*invitedRoom `json:"invite"`
	Leave  map[string]*leftRoom    `json:"leave"`
	Knock  map[string]*knockedRoom `json:"knock"`
}

type eventList struct {
	Events []any `json:"events"`
}

// timeline holds room events shaped by the filter (formatSync): client events, PDUs or
// field selections of either.
type timeline struct {
	Events    []any  `json:"events"`
	Limited   bool   `json:"limited"`
	PrevBatch string `json:"prev_batch,omitempty"`
}

type roomSummary struct {
	Heroes       []string `json:"m.heroes,omitempty"`
	JoinedCount  *int     `json:"m.joined_member_count,omitempty"`
	InvitedCount *int     `json:"m.invited_member_count,omitempty"`
}

// joinedRoom and leftRoom carry either State or StateAfter (use_state_after, v1.16).
type joinedRoom struct {
	Timeline    timeline     `json:"timeline"`
	State       *eventList   `json:"state,omitempty"`
	StateAfter  *eventList   `json:"state_after,omitempty"`
	AccountData eventList    `json:"account_data"`
	Ephemeral   eventList    `json:"ephemeral"`
	Summary     *roomSummary `json:"summary,omitempty"`
	// UnreadNotifications is set for every joined room of a response, zeros included.
	UnreadNotifications *unreadCounts `json:"unread_notifications,omitempty"`
}

// strippedState is the "events" object of invite_state and knock_state.
type strippedState struct {
	Events []strippedEvent `json:"events"`
}

type invitedRoom struct {
	InviteState strippedState `json:"invite_state"`
}

type knockedRoom struct {
	KnockState strippedState `json:"knock_state"`
}

type leftRoom struct {
	Timeline    timeline   `json:"timeline"`
	State       *eventList `json:"state,omitempty"`
	StateAfter  *eventList `json:"state_after,omitempty"`
	AccountData eventList  `json:"account_data"`
}

type strippedEvent struct {
	Content  json.RawMessage `json:"content"`
	Sender   string          `json:"sender"`
	StateKey string          `json:"state_key"`
	Type     string          `json:"type"`
}

// streamToken formats a stream position as a token: "s<pos>", where pos is negative
// ("s-42") inside history backfilled from other servers, which sits below the room's
// earliest local event (see events.go).
func streamToken(pos int64) string { return "s" + strconv.FormatInt(pos, 10) }

// parseStreamToken reads a token made by streamToken at a position of the live stream
// (not negative): the since token of /sync and the like, which never point into
// backfilled history.
func parseStreamToken(token string) (int64, bool) {
	pos, ok := parsePaginationToken(token)
	return pos, ok && pos >= 0
}

// parsePaginationToken reads any token made by streamToken, negative positions included:
// the from and to tokens of /messages, which page into backfilled history, and the at
// token of /members.
func parsePaginationToken(token string) (int64, bool) {
	rest, ok := strings.CutPrefix(token, "s")
	if !ok || rest == "" || rest[0] == '+' {
		return 0, false
	}
	pos, err := strconv.ParseInt(rest, 10, 64)
	return pos, err == nil
}

// GET /sync. A since token or timeout that cannot be read is a bad parameter, 400
// M_INVALID_PARAM (client-server API "Common error codes").
func (a *API) sync(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	var since int64
	if s := q.Get("since"); s != "" {
		pos, ok := parseStreamToken(s)
		if !ok {
			return httpapi.InvalidParam("Invalid since token")
		}
		since = pos
	}
	var timeout time.Duration
	if t := q.Get("timeout"); t != "" {
		ms, err := strconv.ParseInt(t, 10, 64)
		if err != nil || ms < 0 {
			return httpapi.InvalidParam("Invalid timeout")
		}
		timeout = time.Duration(min(ms, maxSyncTimeout.Milliseconds())) * time.Millisecond // no overflow
	}
	filter, err := a.loadFilter(r, d.UserID, q.Get("filter"))
	if err != nil {
		return err
	}
	fullState := q.Get("full_state") == "true"
	stateAfter := q.Get("use_state_after") == "true"
	setPresence := q.Get("set_presence")
	if setPresence != "" && !presence.Valid(setPresence) {
		return httpapi.InvalidParam("set_presence must be online, unavailable or offline")
	}

	ctx := r.Context()
	// The device counts as connected for as long as the request runs (module "Presence").
	done, err := a.presence.Syncing(ctx, d.UserID, d.DeviceID, setPresence)
	if err != nil {
		return err
	}
	defer done()
	current := a.rooms.Stream().Current()
	if since > current {
		// A token from the future (say, of a server restored from backup): start over from
		// now rather than wait for positions that may never come.
		since = current
	}
	resp, err := a.buildSync(ctx, d, filter, since, current, fullState, stateAfter)
	if err != nil {
		return err
	}
	// NOTSPEC: like Synapse, an initial sync (no since) answers at once even when empty: the
	// client needs its first token to start long-polling.
	if timeout > 0 && resp.empty() && !fullState && q.Get("since") != "" {
		waitCtx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		from := current
		for resp.empty() && waitCtx.Err() == nil {
			next := a.rooms.Stream().Wait(waitCtx, d.UserID, from)
			if next <= from {
				break
			}
			if resp, err = a.buildSync(ctx, d, filter, since, next, false, stateAfter); err != nil {
				return err
			}
			from = next
		}
		if ctx.Err() != nil {
			return nil // the client went away
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

func (s *syncResponse) empty() bool {
	return len(s.Rooms.Join) == 0 && len(s.Rooms.Invite) == 0 && len(s.Rooms.Leave) == 0 && len(s.Rooms.Knock) == 0 &&
		len(s.AccountData.Events) == 0 && len(s.ToDevice.Events) == 0 && len(s.Presence.Events) == 0 &&
		len(s.DeviceLists["changed"]) == 0 && len(s.DeviceLists["left"]) == 0
}

// buildSync computes the response covering (since, to]; since 0 is an initial sync.
// fullState (sync.yaml "full_state") returns every room the user is in with its full state,
// as an initial sync does, while timelines still start at since. stateAfter
// (use_state_after) gives rooms the state at the end of their timelines, in state_after,
// instead of the state at their start.
func (a *API) buildSync(ctx context.Context, d *Device, filter *Filter, since, to int64, fullState, stateAfter bool) (*syncResponse, error) {
	// To-device messages first: when more are waiting than one response carries, the whole
	// response stops at the last one delivered.
	toDevice, to, err := a.syncToDevice(ctx, d.UserID, d.DeviceID, since, to)
	if err != nil {
		return nil, err
	}
	resp := &syncResponse{
		NextBatch: streamToken(to),
		Rooms: syncRooms{Join: map[string]*joinedRoom{}, Invite: map[string]*invitedRoom{},
			Leave: map[string]*leftRoom{}, Knock: map[string]*knockedRoom{}},
		AccountData: eventList{Events: []any{}}, Presence: eventList{Events: []any{}},
		ToDevice: eventList{Events: toDevice}, DeviceLists: map[string][]string{"changed": {}, "left": {}},
	}
	if resp.OneTimeKeysCount, resp.UnusedFallbackKeyTypes, err = a.oneTimeKeyState(ctx, d.UserID, d.DeviceID); err != nil {
		return nil, err
	}
	// everything: every room and all account data, not only what changed.
	everything := since == 0 || fullState
	f := a.formatter(d, false)

	// The stream's change index tells which parts of the response can have anything new,
	// so that an incremental sync reads only those from the database.
	stream := a.rooms.Stream()
	changedSince := func(key string) bool { return everything || stream.ChangedSince(key, since) }

	// Rooms whose membership changed in the window, by the user's last membership there.
	changed := map[string]*rooms.Event{}
	if since > 0 && stream.ChangedSince(streams.MembershipKey(d.UserID), since) {
		rows, err := storage.MembershipChanges(ctx, a.db, d.UserID, since, to)
		if err != nil {
			return nil, err
		}
		events, err := a.rooms.EventsFromRows(rows)
		if err != nil {
			return nil, err
		}
		for _, e := range events {
			changed[e.RoomID()] = e
		}
	}

	memberships, err := a.userMemberships(ctx, d.UserID)
	if err != nil {
		return nil, err
	}
	// device_lists is only for incremental syncs (client-server API "Extensions to /sync").
	var newlyShared []string
	if since > 0 {
		changedLists, leftLists, shared, err := a.deviceListChanges(ctx, d.UserID, since, to, func(roomNID int64) bool {
			return stream.ChangedSince(streams.RoomMembersKey(roomNID), since)
		})
		if err != nil {
			return nil, err
		}
		resp.DeviceLists["changed"], resp.DeviceLists["left"], newlyShared = changedLists, leftLists, shared
	}
	active := map[int64]bool{}
	receiptsChanged := false
	if !everything {
		for _, m := range memberships {
			if m.Membership == "join" {
				active[m.RoomNID] = changedSince(streams.RoomKey(m.RoomNID))
				receiptsChanged = receiptsChanged || changedSince(streams.ReceiptKey(m.RoomNID))
			}
		}
	}
	// Receipts of the window, by room; an initial sync reads each room's latest instead.
	var newReceipts map[int64][]storage.ReceiptRow
	if receiptsChanged {
		if newReceipts, err = a.receiptsBetween(ctx, d.UserID, since, to); err != nil {
			return nil, err
		}
	}
	unread := newUnreadCounter(d.UserID)
	forgotten := forgottenRooms{api: a, userID: d.UserID}
	invites := a.syncInvites(d.UserID, since, to, everything)
	for _, m := range memberships {
		if !allowsRoom(filter.Room.Rooms, filter.Room.NotRooms, m.RoomID) {
			continue
		}
		memberEvent := changed[m.RoomID]
		if memberEvent != nil && memberEvent.StreamPos > to {
			continue
		}
		switch m.Membership {
		case "join":
			newlyJoined := memberEvent != nil && wasNotJoined(ctx, a, memberEvent)
			if !everything && !active[m.RoomNID] && !newlyJoined &&
				!a.ephemeralChanged(filter, m.RoomID, newReceipts[m.RoomNID], since, to) {
				continue
			}
			jr, err := a.syncJoinedRoom(ctx, f, filter, m.RoomNID, since, to, everything, newlyJoined, stateAfter)
			if err != nil {
				return nil, err
			}
			if err := a.addEphemeral(ctx, jr, filter, d.UserID, m, newReceipts[m.RoomNID], since, to, everything || newlyJoined); err != nil {
				return nil, err
			}
			if jr.UnreadNotifications, err = a.unreadNotifications(ctx, unread, m, to); err != nil {
				return nil, err
			}
			resp.Rooms.Join[m.RoomID] = jr
		case "invite", "knock":
			show := everything || memberEvent != nil
			if m.Membership == "invite" {
				// Invite blocking (inviteblocking.go) hides invites, and shows them again.
				if show, err = invites.show(ctx, memberEvent != nil); err != nil {
					return nil, err
				}
			}
			if !show {
				continue
			}
			state, err := a.strippedRoomState(ctx, m.RoomID, d.UserID, m.EventNID)
			if err != nil {
				return nil, err
			}
			if m.Membership == "invite" {
				resp.Rooms.Invite[m.RoomID] = &invitedRoom{InviteState: state}
			} else {
				resp.Rooms.Knock[m.RoomID] = &knockedRoom{KnockState: state}
			}
		case "leave", "ban":
			// A room left in the window (a leave, kick, ban, rejected or rescinded invite or
			// knock) moves to "leave"; rooms left earlier only on request (include_leave).
			if memberEvent == nil {
				if !everything || !filter.Room.IncludeLeave {
					continue
				}
				loaded, err := a.rooms.EventsByNID(ctx, []int64{m.EventNID})
				if err != nil {
					return nil, err
				}
				if len(loaded) == 0 || loaded[0].StreamPos > to {
					continue
				}
				memberEvent = loaded[0]
			}
			if left, _ := memberEvent.Membership(); left != "leave" && left != "ban" {
				continue // the membership changed again after the window; the next sync has it
			}
			// "Forget": a forgotten room is gone from the user's room list for good.
			gone, err := forgotten.contains(ctx, m.RoomID)
			if err != nil {
				return nil, err
			}
			if gone {
				continue
			}
			lr, err := a.syncLeftRoom(ctx, f, filter, d.UserID, m.RoomNID, since, memberEvent, everything, stateAfter)
			if err != nil {
				return nil, err
			}
			resp.Rooms.Leave[m.RoomID] = lr
		}
	}

	presenceEvents, err := a.syncPresence(ctx, d.UserID, &filter.Presence, since, to, everything, newlyShared)
	if err != nil {
		return nil, err
	}
	resp.Presence.Events = append(resp.Presence.Events, presenceEvents...)

	var data []storage.AccountDataRow
	if changedSince(streams.AccountDataKey(d.UserID)) {
		accountFrom := since
		if everything {
			accountFrom = 0
		}
		if data, err = storage.AccountDataSince(ctx, a.db, d.UserID, accountFrom, to); err != nil {
			return nil, err
		}
	}
	roomData := &filter.Room.AccountData
	for _, row := range data {
		ev := map[string]any{"type": row.Type, "content": json.RawMessage(row.Content)}
		if row.RoomID == "" {
			if filter.AccountData.Allows(row.Type, "") {
				resp.AccountData.Events = append(resp.AccountData.Events, ev)
			}
			continue
		}
		if !allowsRoom(filter.Room.Rooms, filter.Room.NotRooms, row.RoomID) ||
			!allowsRoom(roomData.Rooms, roomData.NotRooms, row.RoomID) || !roomData.Allows(row.Type, "") {
			continue
		}
		if jr, ok := resp.Rooms.Join[row.RoomID]; ok {
			jr.AccountData.Events = append(jr.AccountData.Events, ev)
		} else if lr, ok := resp.Rooms.Leave[row.RoomID]; ok {
			lr.AccountData.Events = append(lr.AccountData.Events, ev)
		} else if m, joined := joinedMembership(memberships, row.RoomID); joined && !everything {
			// A joined room whose only news is account data.
			jr := emptyJoinedRoom(stateAfter)
			jr.AccountData.Events = append(jr.AccountData.Events, ev)
			if jr.UnreadNotifications, err = a.unreadNotifications(ctx, unread, m, to); err != nil {
				return nil, err
			}
			resp.Rooms.Join[row.RoomID] = jr
		}
	}
	// An initial sync carries the user's push rules even when they never changed one, and
	// upgraded to the server's predefined rules (client-server API "Push Rules: Events";
	// clients rely on finding them there, as Synapse sends them).
	if everything && filter.AccountData.Allows(pushRulesType, "") {
		if resp.AccountData.Events, err = a.withPushRules(ctx, d.UserID, resp.AccountData.Events); err != nil {
			return nil, err
		}
	}
	return resp, nil
}

// forgottenRooms is the set of rooms a user forgot (POST /rooms/{roomId}/forget), read from
// the database on first use: most responses hold no left room and never need it.
type forgottenRooms struct {
	api    *API
	userID string
	rooms  map[string]bool
}

func (r *forgottenRooms) contains(ctx context.Context, roomID string) (bool, error) {
	if r.rooms == nil {
		list, err := storage.ForgottenRooms(ctx, r.api.db, r.userID)
		if err != nil {
			return false, err
		}
		r.rooms = make(map[string]bool, len(list))
		for _, id := range list {
			r.rooms[id] = true
		}
	}
	return r.rooms[roomID], nil
}

// joinedMembership finds the user's membership in roomID if it is "join".
func joinedMembership(memberships []storage.RoomMembership, roomID string) (storage.RoomMembership, bool) {
	for _, m := range memberships {
		if m.RoomID == roomID && m.Membership == "join" {
			return m, true
		}
	}
	return storage.RoomMembership{}, false
}

// emptyJoinedRoom is a joined room with nothing new, its state in state_after if stateAfter
// (which "is required if use_state_after was set to true in the request, even if it is
// empty").
func emptyJoinedRoom(stateAfter bool) *joinedRoom {
	jr := &joinedRoom{
		Timeline: timeline{Events: []any{}}, AccountData: eventList{Events: []any{}}, Ephemeral: eventList{Events: []any{}},
	}
	jr.State, jr.StateAfter = stateLists(nil, stateAfter)
	return jr
}

// stateLists places a room's state events in state, or in state_after if stateAfter.
func stateLists(events []any, stateAfter bool) (state, after *eventList) {
	if events == nil {
		events = []any{}
	}
	if stateAfter {
		return nil, &eventList{Events: events}
	}
	return &eventList{Events: events}, nil
}

// wasNotJoined reports whether the user's membership before e (e's replaced state) was not
// "join", i.e. e starts a new stay in the room.
func wasNotJoined(ctx context.Context, a *API, e *rooms.Event) bool {
	if m, _ := e.Membership(); m != "join" {
		return false
	}
	if e.ReplacesNID == 0 {
		return true
	}
	prev, err := a.rooms.EventsByNID(ctx, []int64{e.ReplacesNID})
	if err != nil || len(prev) == 0 {
		return true
	}
	m, _ := prev[0].Membership()
	return m != "join"
}

// syncJoinedRoom is one joined room's part of the response. fullState sends the whole state
// (initial sync, full_state); a room the user newly joined gets its recent timeline and
// whole state whatever since is.
func (a *API) syncJoinedRoom(ctx context.Context, f *formatter, filter *Filter, roomNID, since, to int64, fullState, newlyJoined, stateAfter bool) (*joinedRoom, error) {
	from := since
	if newlyJoined {
		from = 0
	}
	// A timeline that reaches back before the user's join shows only what the room's
	// history visibility lets them see ("History visibility"); later events they saw live.
	var visible func(*rooms.Event) (bool, error)
	if from == 0 {
		history, err := a.newHistoryVisibility(ctx, roomNID, f.userID, to)
		if err != nil {
			return nil, err
		}
		visible = func(e *rooms.Event) (bool, error) { return history.allows(ctx, e) }
	}
	section, err := a.roomSection(ctx, f, filter, roomNID, since, from, to, fullState || newlyJoined, stateAfter, visible)
	if err != nil {
		return nil, err
	}
	jr := emptyJoinedRoom(stateAfter)
	jr.Timeline = section.timeline
	jr.State, jr.StateAfter = stateLists(section.state, stateAfter)
	if fullState || newlyJoined || hasMemberEvents(section.events) {
		if section.stateStart != nil {
			jr.Summary = summarize(section.stateStart, section.events, f.userID)
		} else if section.stateEnd != nil {
			jr.Summary = summarize(section.stateEnd, nil, f.userID)
		}
	}
	return jr, nil
}

// syncLeftRoom is a room the user left, was kicked or banned from, or whose invite or knock
// ended: its timeline from since up to and including that membership event, and its state,
// as for a joined room ("leave" in sync.yaml). Events are subject to history visibility, as
// the user may not have been joined in the window (a rescinded invite shows only its end).
func (a *API) syncLeftRoom(ctx context.Context, f *formatter, filter *Filter, userID string, roomNID, since int64, leave *rooms.Event, fullState, stateAfter bool) (*leftRoom, error) {
	history, err := a.newHistoryVisibility(ctx, roomNID, userID, leave.StreamPos)
	if err != nil {
		return nil, err
	}
	visible := func(e *rooms.Event) (bool, error) {
		if e.NID == leave.NID {
			// NOTSPEC: the event that ends the membership is always shown, also after an
			// invite the user could not read the room with (as Synapse does), so that the
			// client sees the room go.
			return true, nil
		}
		return history.allows(ctx, e)
	}
	section, err := a.roomSection(ctx, f, filter, roomNID, since, since, leave.StreamPos, fullState, stateAfter, visible)
	if err != nil {
		return nil, err
	}
	lr := &leftRoom{Timeline: section.timeline, AccountData: eventList{Events: []any{}}}
	lr.State, lr.StateAfter = stateLists(section.state, stateAfter)
	return lr, nil
}

// roomSection is the timeline and state part of one room in a response.
type roomSection struct {
	timeline timeline
	state    []any
	// events are the timeline's events; stateStart the state at the start of the timeline
	// (nil when the section needs no state, or gives the state after it); stateEnd the state
	// at its end (set only when the section gives the state after it and had to read it).
	events     []*rooms.Event
	stateStart map[spec.StateTuple]*rooms.Event
	stateEnd   map[spec.StateTuple]*rooms.Event
}

// roomSection computes a room's timeline of events with from < stream_pos <= upper that pass
// the timeline filter (and visible, if set), and its "state" (sync.yaml): the whole state at
// the start of the timeline if fullState, otherwise the state that changed between since and
// the start of the timeline. With stateAfter, the state is "state_after" instead (see
// stateAfterSection).
func (a *API) roomSection(ctx context.Context, f *formatter, filter *Filter, roomNID, since, from, upper int64, fullState, stateAfter bool, visible func(*rooms.Event) (bool, error)) (*roomSection, error) {
	limit := filter.Room.Timeline.limit(defaultTimelineLimit)
	events, limited, err := a.filteredTimeline(ctx, &filter.Room.Timeline, roomNID, from, upper, limit, visible)
	if err != nil {
		return nil, err
	}
	section := &roomSection{events: events, state: []any{}}
	section.timeline.Limited = limited
	if len(events) > 0 {
		section.timeline.PrevBatch = streamToken(events[0].StreamPos - 1)
	} else {
		section.timeline.PrevBatch = streamToken(upper)
	}
	if section.timeline.Events, err = f.formatSync(ctx, filter, events); err != nil {
		return nil, err
	}
	if stateAfter {
		return section, a.stateAfterSection(ctx, f, filter, section, roomNID, since, upper, fullState)
	}

	// A timeline that holds everything since the last sync needs no state at all (unless
	// members are lazy-loaded or a membership change is to be summarised).
	if !fullState && !limited && !filter.Room.State.LazyLoadMembers && !hasMemberEvents(events) {
		return section, nil
	}
	if len(events) > 0 {
		section.stateStart, err = a.rooms.StateAt(ctx, events[0].StateBefore)
	} else {
		section.stateStart, err = a.rooms.StateAtPosition(ctx, roomNID, upper)
	}
	if err != nil {
		return nil, err
	}
	var stateEvents []*rooms.Event
	if fullState {
		for _, e := range section.stateStart {
			stateEvents = append(stateEvents, e)
		}
	} else if limited {
		before, err := a.rooms.StateAtPosition(ctx, roomNID, since)
		if err != nil {
			return nil, err
		}
		for tuple, e := range section.stateStart {
			if old, ok := before[tuple]; !ok || old.NID != e.NID {
				stateEvents = append(stateEvents, e)
			}
		}
	}
	stateEvents = a.filterState(&filter.Room.State, stateEvents, events, section.stateStart, f.userID)
	sort.Slice(stateEvents, func(i, j int) bool { return stateEvents[i].StreamPos < stateEvents[j].StreamPos })
	if section.state, err = f.formatSync(ctx, filter, stateEvents); err != nil {
		return nil, err
	}
	return section, nil
}

// stateAfterSection sets the state of a section to "state_after" (use_state_after, v1.16):
// the state at the end of the timeline, upper, whole if fullState, otherwise what changed
// between since and upper, the timeline's own state events included, since clients then
// "MUST NOT update their local state with events in timeline". Members are lazy-loaded for
// the timeline's senders as for "state".
func (a *API) stateAfterSection(ctx context.Context, f *formatter, filter *Filter, section *roomSection, roomNID, since, upper int64, fullState bool) error {
	end, err := storage.LastEventAtOrBefore(ctx, a.db, roomNID, upper)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	unchanged := false
	before := map[spec.StateTuple]*rooms.Event{}
	if !fullState {
		start, err := storage.LastEventAtOrBefore(ctx, a.db, roomNID, since)
		switch {
		case errors.Is(err, storage.ErrNotFound):
		case err != nil:
			return err
		case start.StateAfter == end.StateAfter:
			// Nothing changed: only lazy-loaded members can be due.
			if !filter.Room.State.LazyLoadMembers {
				return nil
			}
			unchanged = true
		default:
			if before, err = a.rooms.StateAt(ctx, start.StateAfter); err != nil {
				return err
			}
		}
	}
	stateEnd, err := a.rooms.StateAt(ctx, end.StateAfter)
	if err != nil {
		return err
	}
	var stateEvents []*rooms.Event
	for tuple, e := range stateEnd {
		if old, ok := before[tuple]; fullState || (!unchanged && (!ok || old.NID != e.NID)) {
			stateEvents = append(stateEvents, e)
		}
	}
	stateEvents = a.filterState(&filter.Room.State, stateEvents, section.events, stateEnd, f.userID)
	sort.Slice(stateEvents, func(i, j int) bool { return stateEvents[i].StreamPos < stateEvents[j].StreamPos })
	section.stateEnd = stateEnd
	section.state, err = f.formatSync(ctx, filter, stateEvents)
	return err
}

// filteredTimeline fetches up to limit events that pass the filter (and visible, if set),
// newest last.
func (a *API) filteredTimeline(ctx context.Context, ef *RoomEventFilter, roomNID, from, to int64, limit int, visible func(*rooms.Event) (bool, error)) ([]*rooms.Event, bool, error) {
	if limit == 0 {
		events, _, err := a.rooms.Timeline(ctx, roomNID, from, to, 1)
		return nil, len(events) > 0, err
	}
	var out []*rooms.Event
	upper := to
	// Fetch in pages so that a filter that drops most events still fills the limit.
	for page := 0; page < 20; page++ {
		events, more, err := a.rooms.Timeline(ctx, roomNID, from, upper, limit)
		if err != nil {
			return nil, false, err
		}
		kept := make([]*rooms.Event, 0, len(events))
		for _, e := range events {
			if !ef.AllowsEvent(e) {
				continue
			}
			if visible != nil {
				ok, err := visible(e)
				if err != nil {
					return nil, false, err
				}
				if !ok {
					continue
				}
			}
			kept = append(kept, e)
		}
		out = append(kept, out...)
		if len(out) >= limit {
			return out[len(out)-limit:], true, nil
		}
		if !more || len(events) == 0 {
			return out, false, nil
		}
		upper = events[0].StreamPos - 1
	}
	return out, true, nil
}

// filterState applies the state filter, including lazy loading of members (client-server API
// "Lazy-loading room members"): only the members who sent timeline events, and the user.
func (a *API) filterState(sf *RoomEventFilter, state, timelineEvents []*rooms.Event, stateStart map[spec.StateTuple]*rooms.Event, userID string) []*rooms.Event {
	var senders map[string]bool
	if sf.LazyLoadMembers {
		senders = map[string]bool{userID: true}
		for _, e := range timelineEvents {
			senders[e.Sender()] = true
		}
	}
	out := state[:0:0]
	seen := map[int64]bool{}
	for _, e := range state {
		if !sf.AllowsEvent(e) {
			continue
		}
		if senders != nil && e.Type() == "m.room.member" && !senders[*e.StateKey()] {
			continue
		}
		seen[e.NID] = true
		out = append(out, e)
	}
	if senders != nil {
		// Members of timeline senders even when their member event did not change.
		for sender := range senders {
			if e, ok := stateStart[spec.StateTuple{Type: "m.room.member", StateKey: sender}]; ok && !seen[e.NID] {
				out = append(out, e)
			}
		}
	}
	return out
}

func hasMemberEvents(events []*rooms.Event) bool {
	return slices.ContainsFunc(events, func(e *rooms.Event) bool { return e.Type() == "m.room.member" })
}

// summarize computes the room summary (client-server API "Room summary") from the state at
// the start of the timeline plus the timeline's state events.
func summarize(state map[spec.StateTuple]*rooms.Event, timelineEvents []*rooms.Event, userID string) *roomSummary {
	members := map[string]string{}
	for tuple, e := range state {
		if tuple.Type == "m.room.member" {
			members[tuple.StateKey], _ = e.Membership()
		}
	}
	for _, e := range timelineEvents {
		if e.Type() == "m.room.member" {
			members[*e.StateKey()], _ = e.Membership()
		}
	}
	joined, invited := 0, 0
	var heroes []string
	for user, m := range members {
		switch m {
		case "join":
			joined++
		case "invite":
			invited++
		}
		if user != userID && (m == "join" || m == "invite") {
			heroes = append(heroes, user)
		}
	}
	sort.Strings(heroes)
	if len(heroes) > 5 {
		heroes = heroes[:5]
	}
	return &roomSummary{Heroes: heroes, JoinedCount: &joined, InvitedCount: &invited}
}

// strippedStateTypes are the state events shown to invitees and knockers (client-server API
// "Stripped state", which lists these; m.room.create is required since v1.16).
var strippedStateTypes = []string{
	"m.room.create", "m.room.join_rules", "m.room.canonical_alias", "m.room.avatar",
	"m.room.name", "m.room.encryption", "m.room.topic",
}

// strippedRoomState is the stripped state of a room the user is invited to or knocked on:
// the recommended events, then the member event of whoever invited the user, then the
// user's own member event (the invite or knock, as in sync.yaml's example). memberNID is
// that member event: when the room's state here does not hold it, the room is one this
// server is not part of, and its stripped state is what came with the event.
func (a *API) strippedRoomState(ctx context.Context, roomID, userID string, memberNID int64) (strippedState, error) {
	state, _, err := a.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return strippedState{}, err
	}
	if own, ok := state[spec.StateTuple{Type: "m.room.member", StateKey: userID}]; !ok || own.NID != memberNID {
		return a.carriedStrippedState(ctx, memberNID)
	}
	out := strippedState{Events: []strippedEvent{}}
	for _, t := range strippedStateTypes {
		if e, ok := state[spec.StateTuple{Type: t}]; ok {
			out.Events = append(out.Events, stripped(e))
		}
	}
	own, ok := state[spec.StateTuple{Type: "m.room.member", StateKey: userID}]
	if !ok {
		return out, nil
	}
	// NOTSPEC: "The server might include events not described here"; like Synapse, the
	// inviter's member event is included so that the client can show who invited the user
	// by name and avatar.
	if m, _ := own.Membership(); m == "invite" && own.Sender() != userID {
		if inviter, ok := state[spec.StateTuple{Type: "m.room.member", StateKey: own.Sender()}]; ok {
			out.Events = append(out.Events, stripped(inviter))
		}
	}
	out.Events = append(out.Events, stripped(own))
	return out, nil
}

func stripped(e *rooms.Event) strippedEvent {
	return strippedEvent{Content: e.Content(), Sender: e.Sender(), StateKey: *e.StateKey(), Type: e.Type()}
}

// userMemberships lists the rooms a user has a membership in, from a cache that holds until
// the stream's change index says the user's memberships changed.
func (a *API) userMemberships(ctx context.Context, userID string) ([]storage.RoomMembership, error) {
	stream := a.rooms.Stream()
	if cached, ok := a.memberships.get(userID); ok && !stream.ChangedSince(streams.MembershipKey(userID), cached.asOf) {
		return cached.list, nil
	}
	// Every position up to asOf has finished, so the query sees all of them; a change above
	// it invalidates the entry.
	asOf := stream.Current()
	list, err := storage.UserMemberships(ctx, a.db, userID, "join", "invite", "leave", "ban", "knock")
	if err != nil {
		return nil, err
	}
	a.memberships.put(userID, membershipEntry{asOf: asOf, list: list})
	return list, nil
}

// membershipEntry is a user's memberships as read at stream position asOf.
type membershipEntry struct {
	asOf int64
	list []storage.RoomMembership
}

// maxMembershipEntries bounds the cache of membership lists.
const maxMembershipEntries = 100_000

// carriedStrippedState is the stripped state that came with an invite from another server
// or with the answer to a knock through one, kept in the member event's unsigned
// (invite_room_state, knock_room_state), followed by the member event itself.
func (a *API) carriedStrippedState(ctx context.Context, memberNID int64) (strippedState, error) {
	out := strippedState{Events: []strippedEvent{}}
	events, err := a.rooms.EventsByNID(ctx, []int64{memberNID})
	if err != nil || len(events) == 0 {
		return out, err
	}
	own := events[0]
	var unsigned struct {
		InviteRoomState []strippedEvent `json:"invite_room_state"`
		KnockRoomState  []strippedEvent `json:"knock_room_state"`
	}
	_ = json.Unmarshal(own.Unsigned(), &unsigned)
	carried := unsigned.InviteRoomState
	if m, _ := own.Membership(); m == "knock" {
		carried = unsigned.KnockRoomState
	}
	for _, e := range carried {
		if e.Type != "m.room.member" || e.StateKey != *own.StateKey() {
			out.Events = append(out.Events, e)
		}
	}
	out.Events = append(out.Events, stripped(own))
	return out, nil
}
