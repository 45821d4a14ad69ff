package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Reading a room's history (client-server API "Getting events for a room":
// message_pagination.yaml, event_context.yaml, rooms.yaml) under the rules of "Room History
// Visibility".
//
// Pagination tokens are the stream tokens of /sync: "s<pos>" sits right after stream
// position pos. Paginating backwards from s<P> returns the events at or below P, newest
// first; forwards from s<P> the events above P, oldest first.
//
// A room joined over federation starts here with the join: what came before is on other
// servers. When backwards pagination runs out of local events and the room's earliest
// event here is not its create event, /messages asks the servers in the room for the
// older history (RemoteRooms.Backfill, server-server API "Backfilling and retrieving
// missing events"), which is stored at negative stream positions below everything else,
// and carries on into it: tokens there read "s-<n>". Position 0 is no place in the
// timeline (outliers hold it) and is skipped. Pagination ends, without an end token, once
// the create event has been passed ("Clients should continue to paginate until no end
// property is returned", message_pagination.yaml).

func (a *API) eventRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/rooms/{roomId}/messages", authed(a.messages))
	r.Method(http.MethodGet, "/rooms/{roomId}/context/{eventId}", authed(a.eventContext))
	r.Method(http.MethodGet, "/rooms/{roomId}/event/{eventId}", authed(a.getEvent))
	r.Method(http.MethodGet, "/rooms/{roomId}/members", authed(a.members))
	r.Method(http.MethodGet, "/rooms/{roomId}/joined_members", authed(a.joinedMembers))
}

// defaultPageLimit is the limit of /messages and /context without a limit parameter
// (message_pagination.yaml, event_context.yaml: "Default: 10").
const defaultPageLimit = 10

// maxScannedEvents bounds the events one request examines while skipping the ones that the
// filter or history visibility hide. NOTSPEC: the spec allows an empty chunk with an end
// token ("Clients should continue to paginate until no end property is returned"), so a
// long hidden stretch costs the client several requests rather than the server one huge one.
const maxScannedEvents = 2000

// minStreamPos is below every stream position, backfilled ones included: the bound of
// backwards pagination without a to token.
const minStreamPos int64 = math.MinInt64

// maxBackfillRounds bounds the /backfill requests one /messages request makes while the
// backfilled events are hidden by its filter or by history visibility; the client gets an
// end token to carry on with.
const maxBackfillRounds = 3

// minBackfillBatch is the fewest events one /backfill request asks for.
const minBackfillBatch = 20

// parseLimit reads a non-negative integer query parameter, def when absent, capped at max.
func parseLimit(param string, def, max int) (int, error) {
	if param == "" {
		return def, nil
	}
	n, err := strconv.Atoi(param)
	if err != nil || n < 0 {
		return 0, httpapi.InvalidParam("limit must be a non-negative integer")
	}
	return min(n, max), nil
}

// roomEventFilter reads the "filter" query parameter of /messages and /context: a JSON
// RoomEventFilter. NOTSPEC: a stored filter ID is accepted too (its room timeline filter
// applies), as event_context.yaml's example suggests and clients sometimes send.
func (a *API) roomEventFilter(r *http.Request, userID, param string) (*RoomEventFilter, error) {
	if param == "" {
		return &RoomEventFilter{}, nil
	}
	if !strings.HasPrefix(strings.TrimSpace(param), "{") {
		f, err := a.loadFilter(r, userID, param)
		if err != nil {
			return nil, err
		}
		return &f.Room.Timeline, nil
	}
	if len(param) > maxFilterSize {
		return nil, httpapi.TooLarge("Filter too large")
	}
	f := &RoomEventFilter{}
	if err := httpapi.DecodeJSON([]byte(param), f); err != nil {
		return nil, err
	}
	if f.Limit != nil && *f.Limit < 0 {
		return nil, httpapi.BadJSON("limit must not be negative")
	}
	return f, nil
}

// roomReader is what one user may read of one room: events up to a stream position, each
// subject to history visibility.
type roomReader struct {
	roomID  string
	roomNID int64
	// upper is the highest stream position the user may read: the current position while
	// they are joined (or peek into a world-readable room), their departure otherwise.
	upper int64
	// membership is the user's current membership ("" if none), memberEvent its event.
	membership  string
	memberEvent *rooms.Event
	visibility  *historyVisibility
}

// errNoAccess is the answer to a user who may not read a room at all.
var errNoAccess = httpapi.Forbidden("You aren't a member of the room and weren't previously a member of the room")

// roomReader decides what userID may read of roomID: members and former members, and anyone
// while the room's history is world_readable ("Room History Visibility"). A user who may
// read nothing gets errNoAccess (also for unknown rooms, which are not revealed).
func (a *API) roomReader(ctx context.Context, roomID, userID string) (*roomReader, error) {
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return nil, httpapi.InvalidParam("Invalid room ID")
	}
	membership, memberEvent, err := a.rooms.Membership(ctx, roomID, userID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return nil, errNoAccess
	}
	if err != nil {
		return nil, err
	}
	roomNID, err := a.rooms.RoomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rr := &roomReader{roomID: roomID, roomNID: roomNID, upper: a.rooms.Stream().Current(),
		membership: membership, memberEvent: memberEvent}
	switch membership {
	case "join":
	case "leave", "ban":
		// "After a user has left a room, they may see any events which they were allowed to
		// see before they left the room, but no events received after they left."
		rr.upper = min(rr.upper, memberEvent.StreamPos)
	default:
		worldReadable, err := a.worldReadable(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if !worldReadable {
			return nil, errNoAccess
		}
	}
	rr.visibility, err = a.newHistoryVisibility(ctx, roomNID, userID, rr.upper)
	if err != nil {
		return nil, err
	}
	return rr, nil
}

// worldReadable reports whether the room's current history visibility is world_readable.
func (a *API) worldReadable(ctx context.Context, roomID string) (bool, error) {
	e, err := a.rooms.CurrentStateEvent(ctx, roomID, "m.room.history_visibility", "")
	if err != nil || e == nil {
		return false, err
	}
	return historyVisibilityOf(e.Content()) == "world_readable", nil
}

// historyVisibilityOf reads m.room.history_visibility content; "shared" when absent or not
// understood ("Server behaviour": "By default if no history_visibility is set, or if the
// value is not understood, the visibility is assumed to be shared").
func historyVisibilityOf(content json.RawMessage) string {
	var c struct {
		HistoryVisibility string `json:"history_visibility"`
	}
	_ = json.Unmarshal(content, &c)
	switch c.HistoryVisibility {
	case "world_readable", "shared", "invited", "joined":
		return c.HistoryVisibility
	}
	return "shared"
}

// historyVisibility applies the rules of "Room History Visibility" (server behaviour) to one
// user's view of one room, with the state at each event: the room's history visibility and
// the user's membership before it. Both are looked up per state snapshot and cached, so a
// page of messages between two state changes costs one lookup.
type historyVisibility struct {
	a       *API
	userID  string
	roomNID int64
	// lastJoin is the stream position of the user's latest join at or below the readable
	// range (0 if they never joined): rule 3 lets a user who joined after an event in a
	// "shared" room see it.
	lastJoin int64
	bySnap   map[int64]visibilityState
}

// visibilityState is the part of a room state that history visibility depends on.
type visibilityState struct {
	visibility string
	membership string
}

// maxMembershipScan bounds the member events read to find the user's latest join.
const maxMembershipScan = 5000

func (a *API) newHistoryVisibility(ctx context.Context, roomNID int64, userID string, upper int64) (*historyVisibility, error) {
	v := &historyVisibility{a: a, userID: userID, roomNID: roomNID, bySnap: map[int64]visibilityState{}}
	before := upper
	for scanned := 0; scanned < maxMembershipScan && before > 0; {
		rows, err := storage.UserMemberEventsBefore(ctx, a.db, roomNID, userID, before, 100)
		if err != nil {
			return nil, err
		}
		events, err := a.rooms.EventsFromRows(rows)
		if err != nil {
			return nil, err
		}
		for _, e := range events {
			if m, _ := e.Membership(); m == "join" {
				v.lastJoin = e.StreamPos
				return v, nil
			}
			before = e.StreamPos - 1
		}
		if len(rows) < 100 {
			break
		}
		scanned += len(rows)
	}
	return v, nil
}

// stateBefore is the history visibility and the user's membership in the state before e.
func (v *historyVisibility) stateBefore(ctx context.Context, e *rooms.Event) (visibilityState, error) {
	if st, ok := v.bySnap[e.StateBefore]; ok {
		return st, nil
	}
	hvTuple := [2]string{"m.room.history_visibility", ""}
	memberTuple := [2]string{"m.room.member", v.userID}
	nids, err := storage.SnapshotStateEventNIDs(ctx, v.a.db, e.StateBefore, [][2]string{hvTuple, memberTuple})
	if err != nil {
		return visibilityState{}, err
	}
	st := visibilityState{visibility: "shared"}
	var want []int64
	for _, nid := range nids {
		want = append(want, nid)
	}
	if len(want) > 0 {
		events, err := v.a.rooms.EventsByNID(ctx, want)
		if err != nil {
			return visibilityState{}, err
		}
		for _, se := range events {
			switch se.Type() {
			case "m.room.history_visibility":
				st.visibility = historyVisibilityOf(se.Content())
			case "m.room.member":
				st.membership, _ = se.Membership()
			}
		}
	}
	v.bySnap[e.StateBefore] = st
	return st, nil
}

// allowedWith is rules 1-5 of "Room History Visibility" for an event at stream position pos.
func (v *historyVisibility) allowedWith(visibility, membership string, pos int64) bool {
	switch {
	case visibility == "world_readable":
		return true
	case membership == "join":
		return true
	case visibility == "shared" && v.lastJoin > pos:
		return true
	case visibility == "invited" && membership == "invite":
		return true
	}
	return false
}

// allows reports whether the user may see e.
func (v *historyVisibility) allows(ctx context.Context, e *rooms.Event) (bool, error) {
	st, err := v.stateBefore(ctx, e)
	if err != nil {
		return false, err
	}
	if v.allowedWith(st.visibility, st.membership, e.StreamPos) {
		return true, nil
	}
	// "For m.room.history_visibility events themselves, the user should be allowed to see the
	// event if the history_visibility before or after the event would allow them to see it."
	if e.Type() == "m.room.history_visibility" && e.StateKeyEquals("") {
		return v.allowedWith(historyVisibilityOf(e.Content()), st.membership, e.StreamPos), nil
	}
	// "Likewise, for the user's own m.room.member events, … if their membership before or
	// after the event would allow them to see it."
	if e.Type() == "m.room.member" && e.StateKeyEquals(v.userID) {
		after, _ := e.Membership()
		return v.allowedWith(st.visibility, after, e.StreamPos), nil
	}
	return false, nil
}

// page is the outcome of scanning a room's timeline for visible events.
type page struct {
	events []*rooms.Event
	// cursor is the stream token position after the last examined event in the direction
	// of travel; more is whether events remain beyond it within the bound.
	cursor int64
	more   bool
}

// scan collects up to limit events that the user may see and that pass filter, starting
// at stream position from: backwards (positions bound < pos <= from, newest first) or
// forwards (from < pos <= bound, oldest first).
func (a *API) scan(ctx context.Context, rr *roomReader, filter *RoomEventFilter, from, bound int64, backwards bool, limit int) (*page, error) {
	return a.scanVisible(ctx, rr, from, bound, backwards, limit, func(cursor int64, want int) ([]scanned, error) {
		batch, err := a.timelinePage(ctx, rr.roomNID, cursor, bound, backwards, want)
		items := make([]scanned, len(batch))
		for i, e := range batch {
			items[i] = scanned{pos: e.StreamPos}
			if filter.AllowsEvent(e) {
				items[i].event = e
			}
		}
		return items, err
	})
}

// scanned is one position examined by scanVisible: the event there, or nil when it is not
// one to return whatever its visibility (filtered out, unreadable).
type scanned struct {
	pos   int64
	event *rooms.Event
}

// scanVisible pages through positions from from towards bound with fetch (which returns up
// to want positions past cursor in the direction of travel) and collects up to limit of the
// events the user may see. It stops with more set after maxScannedEvents positions, so that
// a long stretch of hidden history costs a bounded amount per request.
func (a *API) scanVisible(ctx context.Context, rr *roomReader, from, bound int64, backwards bool, limit int,
	fetch func(cursor int64, want int) ([]scanned, error)) (*page, error) {
	p := &page{cursor: from}
	examined := 0
	for limit > 0 {
		if (backwards && p.cursor <= bound) || (!backwards && p.cursor >= bound) {
			return p, nil
		}
		want := min(max(limit-len(p.events)+1, 50), limit+1)
		batch, err := fetch(p.cursor, want)
		if err != nil {
			return nil, err
		}
		for _, item := range batch {
			if len(p.events) == limit {
				p.more = true
				return p, nil
			}
			examined++
			if backwards {
				p.cursor = item.pos - 1
			} else {
				p.cursor = item.pos
			}
			if item.event == nil {
				continue
			}
			ok, err := rr.visibility.allows(ctx, item.event)
			if err != nil {
				return nil, err
			}
			if ok {
				p.events = append(p.events, item.event)
			}
		}
		if len(batch) < want {
			return p, nil
		}
		if examined >= maxScannedEvents {
			p.more = true
			return p, nil
		}
	}
	return p, nil
}

// timelinePage reads up to limit of a room's timeline events between from and bound, as
// rooms.Server.Page does (backwards: bound < pos <= from, newest first; forwards:
// from < pos <= bound, oldest first), across the live stream (positive positions) and
// backfilled history (negative ones) and never at position 0, where outliers sit.
func (a *API) timelinePage(ctx context.Context, roomNID, from, bound int64, backwards bool, limit int) ([]*rooms.Event, error) {
	var out []*rooms.Event
	if backwards {
		if from > 0 && bound < from {
			batch, err := a.rooms.Page(ctx, roomNID, from, max(bound, 0), true, limit)
			if err != nil || len(batch) == limit || bound >= 0 {
				return batch, err
			}
			out = batch
		}
		if hi := min(from, -1); hi > bound {
			batch, err := a.rooms.Page(ctx, roomNID, hi, bound, true, limit-len(out))
			if err != nil {
				return nil, err
			}
			out = append(out, batch...)
		}
		return out, nil
	}
	if from < -1 && bound > from {
		batch, err := a.rooms.Page(ctx, roomNID, from, min(bound, -1), false, limit)
		if err != nil || len(batch) == limit || bound <= -1 {
			return batch, err
		}
		out = batch
	}
	if lo := max(from, 0); bound > lo {
		batch, err := a.rooms.Page(ctx, roomNID, lo, bound, false, limit-len(out))
		if err != nil {
			return nil, err
		}
		out = append(out, batch...)
	}
	return out, nil
}

// historyComplete reports whether this server holds the room's history back to its
// creation: whether its earliest timeline event is the create event. A room created
// here always starts with it; a room joined over federation starts with the join (and
// holds the create event as an outlier, off the timeline) until backfill reaches it.
func (a *API) historyComplete(ctx context.Context, roomNID int64) (bool, error) {
	rows, err := storage.EarliestRoomEvents(ctx, a.db, roomNID, 1)
	if err != nil || len(rows) == 0 {
		return false, err
	}
	events, err := a.rooms.EventsFromRows(rows)
	if err != nil || len(events) == 0 {
		return false, err
	}
	return events[0].Type() == "m.room.create" && events[0].StateKeyEquals(""), nil
}

// backfill continues a backwards page p that ran out of local events into the room's
// older history on other servers: while the history here is incomplete and the page not
// full, it backfills a batch and scans the new events below p's cursor. The page ends
// (more stays false) when the create event is passed or no server has anything older.
func (a *API) backfill(ctx context.Context, rr *roomReader, filter *RoomEventFilter, p *page, limit int) (*page, error) {
	for round := 0; ; round++ {
		complete, err := a.historyComplete(ctx, rr.roomNID)
		if err != nil {
			return nil, err
		}
		if complete || a.remote == nil {
			return p, nil
		}
		if len(p.events) >= limit || round == maxBackfillRounds {
			p.more = true
			return p, nil
		}
		n, err := a.remote.Backfill(ctx, rr.roomID, max(limit-len(p.events), minBackfillBatch))
		if err != nil {
			a.log.Info("backfill failed", "room_id", rr.roomID, "err", err)
		}
		if n == 0 {
			// NOTSPEC: as in Synapse, history that no server hands over ends the pagination.
			return p, nil
		}
		next, err := a.scan(ctx, rr, filter, p.cursor, minStreamPos, true, limit-len(p.events))
		if err != nil {
			return nil, err
		}
		p.events = append(p.events, next.events...)
		p.cursor = next.cursor
		if next.more {
			p.more = true
			return p, nil
		}
	}
}

type messagesResponse struct {
	Chunk []ClientEvent `json:"chunk"`
	Start string        `json:"start"`
	End   string        `json:"end,omitempty"`
	State []ClientEvent `json:"state,omitempty"`
}

// GET /rooms/{roomId}/messages (message_pagination.yaml)
func (a *API) messages(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	dir := q.Get("dir")
	if dir != "b" && dir != "f" {
		return httpapi.InvalidParam("dir must be b or f")
	}
	backwards := dir == "b"
	limit, err := parseLimit(q.Get("limit"), defaultPageLimit, maxTimelineLimit)
	if err != nil {
		return err
	}
	filter, err := a.roomEventFilter(r, d.UserID, q.Get("filter"))
	if err != nil {
		return err
	}
	if q.Get("limit") == "" && filter.Limit != nil {
		// NOTSPEC: the filter's limit stands in for an absent limit parameter, as in Synapse.
		limit = filter.limit(defaultPageLimit)
	}
	var from, to int64
	var hasFrom, hasTo bool
	if s := q.Get("from"); s != "" {
		if from, hasFrom = parsePaginationToken(s); !hasFrom {
			return httpapi.InvalidParam("Invalid from token")
		}
	}
	if s := q.Get("to"); s != "" {
		if to, hasTo = parsePaginationToken(s); !hasTo {
			return httpapi.InvalidParam("Invalid to token")
		}
	}
	ctx := r.Context()
	rr, err := a.roomReader(ctx, pathParam(r, "roomId"), d.UserID)
	if err != nil {
		return err
	}
	// From the last (dir=b) or first (dir=f) visible event when from is absent.
	if !hasFrom {
		from = 0
		if backwards {
			from = rr.upper
		}
	}
	resp := messagesResponse{Chunk: []ClientEvent{}, Start: streamToken(from)}
	if hasFrom {
		resp.Start = q.Get("from")
	}
	var bound int64
	if backwards {
		from = min(from, rr.upper)
		bound = minStreamPos
		if hasTo {
			bound = to
		}
	} else {
		bound = rr.upper
		if hasTo {
			bound = min(bound, to)
		}
	}
	p := &page{cursor: from}
	if limit > 0 {
		if p, err = a.scan(ctx, rr, filter, from, bound, backwards, limit); err != nil {
			return err
		}
		if backwards && !hasTo && !p.more {
			if p, err = a.backfill(ctx, rr, filter, p, limit); err != nil {
				return err
			}
		}
	} else {
		p.more = (backwards && from > bound) || (!backwards && from < bound)
	}
	if p.more {
		resp.End = streamToken(p.cursor)
	}
	f := a.formatter(d, true)
	if resp.Chunk, err = f.formatAll(ctx, p.events); err != nil {
		return err
	}
	if filter.LazyLoadMembers && len(p.events) > 0 {
		members, err := a.senderMembers(ctx, p.events)
		if err != nil {
			return err
		}
		if resp.State, err = f.formatAll(ctx, members); err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// senderMembers is the member events of the senders of events, each as of the sender's
// first event among them ("Lazy-loading room members"). NOTSPEC: include_redundant_members
// makes no difference, since every response carries all the members it needs.
func (a *API) senderMembers(ctx context.Context, events []*rooms.Event) ([]*rooms.Event, error) {
	bySnapshot := map[int64][][2]string{}
	seen := map[string]bool{}
	for _, e := range events {
		if seen[e.Sender()] {
			continue
		}
		seen[e.Sender()] = true
		bySnapshot[e.StateBefore] = append(bySnapshot[e.StateBefore], [2]string{"m.room.member", e.Sender()})
	}
	inChunk := map[int64]bool{}
	for _, e := range events {
		inChunk[e.NID] = true
	}
	var nids []int64
	have := map[int64]bool{}
	for snapshot, tuples := range bySnapshot {
		found, err := storage.SnapshotStateEventNIDs(ctx, a.db, snapshot, tuples)
		if err != nil {
			return nil, err
		}
		for _, nid := range found {
			if !have[nid] && !inChunk[nid] {
				have[nid] = true
				nids = append(nids, nid)
			}
		}
	}
	members, err := a.rooms.EventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	sortByStream(members)
	return members, nil
}

type contextResponse struct {
	Start        string        `json:"start"`
	End          string        `json:"end"`
	EventsBefore []ClientEvent `json:"events_before"`
	Event        ClientEvent   `json:"event"`
	EventsAfter  []ClientEvent `json:"events_after"`
	State        []ClientEvent `json:"state"`
}

// visibleEvent reads eventID as the reader's user may see it; 404 M_NOT_FOUND when it does
// not exist, is in another room, is not in the timeline or is hidden from the user.
func (a *API) visibleEvent(ctx context.Context, rr *roomReader, eventID string) (*rooms.Event, error) {
	notFound := httpapi.NotFound("Event not found")
	if eventID == "" || len(eventID) > spec.MaxIdentifierLength {
		return nil, notFound
	}
	e, err := a.rooms.TimelineEventByID(ctx, eventID)
	if errors.Is(err, rooms.ErrEventNotFound) {
		return nil, notFound
	}
	if err != nil {
		return nil, err
	}
	if e.RoomID() != rr.roomID || e.StreamPos == 0 || e.StreamPos > rr.upper {
		return nil, notFound
	}
	ok, err := rr.visibility.allows(ctx, e)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, notFound
	}
	return e, nil
}

// GET /rooms/{roomId}/context/{eventId} (event_context.yaml)
func (a *API) eventContext(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), defaultPageLimit, maxTimelineLimit)
	if err != nil {
		return err
	}
	filter, err := a.roomEventFilter(r, d.UserID, q.Get("filter"))
	if err != nil {
		return err
	}
	ctx := r.Context()
	rr, err := a.roomReader(ctx, pathParam(r, "roomId"), d.UserID)
	if err != nil {
		return err
	}
	e, err := a.visibleEvent(ctx, rr, pathParam(r, "eventId"))
	if err != nil {
		return err
	}
	// NOTSPEC: the limit is split as Synapse does, the smaller half before the event.
	beforeLimit := limit / 2
	afterLimit := limit - beforeLimit
	before, err := a.scan(ctx, rr, filter, e.StreamPos-1, minStreamPos, true, beforeLimit)
	if err != nil {
		return err
	}
	after, err := a.scan(ctx, rr, filter, e.StreamPos, rr.upper, false, afterLimit)
	if err != nil {
		return err
	}
	// The state "at the last event returned".
	last := e
	if len(after.events) > 0 {
		last = after.events[len(after.events)-1]
	}
	stateMap, err := a.rooms.StateAfter(ctx, last)
	if err != nil {
		return err
	}
	stateEvents := make([]*rooms.Event, 0, len(stateMap))
	for _, se := range stateMap {
		stateEvents = append(stateEvents, se)
	}
	timelineEvents := append(append(append([]*rooms.Event{}, before.events...), e), after.events...)
	stateEvents = a.filterState(filter, stateEvents, timelineEvents, stateMap, d.UserID)
	sortByStream(stateEvents)

	f := a.formatter(d, true)
	resp := contextResponse{Start: streamToken(before.cursor), End: streamToken(after.cursor)}
	if resp.EventsBefore, err = f.formatAll(ctx, before.events); err != nil {
		return err
	}
	if resp.EventsAfter, err = f.formatAll(ctx, after.events); err != nil {
		return err
	}
	if resp.State, err = f.formatAll(ctx, stateEvents); err != nil {
		return err
	}
	event, err := f.formatAll(ctx, []*rooms.Event{e})
	if err != nil {
		return err
	}
	resp.Event = event[0]
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// GET /rooms/{roomId}/event/{eventId} (rooms.yaml): 404 when the event is not found or the
// user may not see it.
func (a *API) getEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	_, e, err := a.readableEvent(r.Context(), pathParam(r, "roomId"), d.UserID, pathParam(r, "eventId"))
	if err != nil {
		return err
	}
	return a.writeEvent(w, r, d, e)
}

// readableEvent reads eventID of roomID as userID may see it, with the room's reader: 404
// M_NOT_FOUND when the user cannot read the room, or the event is not in its timeline or is
// hidden from them.
func (a *API) readableEvent(ctx context.Context, roomID, userID, eventID string) (*roomReader, *rooms.Event, error) {
	rr, err := a.roomReader(ctx, roomID, userID)
	if err == errNoAccess {
		return nil, nil, httpapi.NotFound("Event not found")
	}
	if err != nil {
		return nil, nil, err
	}
	e, err := a.visibleEvent(ctx, rr, eventID)
	return rr, e, err
}

// writeEvent answers one event, formatted for the device.
func (a *API) writeEvent(w http.ResponseWriter, r *http.Request, d *Device, e *rooms.Event) error {
	out, err := a.formatter(d, true).formatAll(r.Context(), []*rooms.Event{e})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out[0])
	return nil
}

// memberships are the values of the membership and not_membership parameters of /members.
var memberships = map[string]bool{"join": true, "invite": true, "knock": true, "leave": true, "ban": true}

// GET /rooms/{roomId}/members (rooms.yaml): the current members while joined, the members
// when the user left otherwise; at picks an earlier point in time.
func (a *API) members(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	membership, notMembership := q.Get("membership"), q.Get("not_membership")
	if (membership != "" && !memberships[membership]) || (notMembership != "" && !memberships[notMembership]) {
		return httpapi.InvalidParam("Unknown membership")
	}
	var at int64
	hasAt := false
	if s := q.Get("at"); s != "" {
		if at, hasAt = parsePaginationToken(s); !hasAt {
			return httpapi.InvalidParam("Invalid at token")
		}
	}
	ctx := r.Context()
	rr, err := a.roomReader(ctx, pathParam(r, "roomId"), d.UserID)
	if err != nil {
		return err
	}
	var state map[spec.StateTuple]*rooms.Event
	switch {
	case hasAt && at < rr.upper:
		state, err = a.rooms.StateAtPosition(ctx, rr.roomNID, at)
	case rr.membership == "leave" || rr.membership == "ban":
		state, err = a.rooms.StateAfter(ctx, rr.memberEvent)
	default:
		state, _, err = a.rooms.CurrentState(ctx, rr.roomID)
	}
	if err != nil {
		return err
	}
	var events []*rooms.Event
	for tuple, e := range state {
		if tuple.Type != "m.room.member" {
			continue
		}
		m, _ := e.Membership()
		// "When specified alongside not_membership, the two parameters create an 'or'
		// condition: either the membership is the same as membership or is not the same as
		// not_membership."
		var keep bool
		switch {
		case membership != "" && notMembership != "":
			keep = m == membership || m != notMembership
		case membership != "":
			keep = m == membership
		case notMembership != "":
			keep = m != notMembership
		default:
			keep = true
		}
		if keep {
			events = append(events, e)
		}
	}
	sortByStream(events)
	out, err := a.formatter(d, true).formatAll(ctx, events)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string][]ClientEvent{"chunk": out})
	return nil
}

type roomMember struct {
	DisplayName *string `json:"display_name,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

// GET /rooms/{roomId}/joined_members (rooms.yaml): "The current user must be in the room
// for it to work".
func (a *API) joinedMembers(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	membership, _, err := a.rooms.Membership(ctx, roomID, d.UserID)
	if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
		return err
	}
	if membership != "join" {
		return httpapi.Forbidden("You aren't a member of the room")
	}
	state, _, err := a.rooms.CurrentState(ctx, roomID)
	if err != nil {
		return err
	}
	joined := map[string]roomMember{}
	for tuple, e := range state {
		if tuple.Type != "m.room.member" {
			continue
		}
		if m, _ := e.Membership(); m != "join" {
			continue
		}
		var member roomMember
		member.DisplayName, member.AvatarURL = memberProfile(e)
		joined[tuple.StateKey] = member
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"joined": joined})
	return nil
}

// memberProfile reads the display name and avatar URL of a member event; each is nil unless
// the content has it as a string.
func memberProfile(e *rooms.Event) (displayName, avatarURL *string) {
	var c struct {
		DisplayName any `json:"displayname"`
		AvatarURL   any `json:"avatar_url"`
	}
	_ = json.Unmarshal(e.Content(), &c)
	if s, ok := c.DisplayName.(string); ok {
		displayName = &s
	}
	if s, ok := c.AvatarURL.(string); ok {
		avatarURL = &s
	}
	return displayName, avatarURL
}
