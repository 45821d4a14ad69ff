package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Serving events to other servers (server-server API "Retrieving events" and "Backfilling
// and retrieving missing events"): /state, /state_ids, /event, /event_auth, /backfill and
// /get_missing_events. A server sees an event when it was in the room at that point, when
// the room was world-readable then, or — when history was "shared" then — when it is in the
// room now; otherwise the answer is 403 M_FORBIDDEN (or, among several events, the event is
// left out).

func (a *API) eventRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_matrix/federation/v1/state/{roomId}", a.handler(a.roomState))
	r.Method(http.MethodGet, "/_matrix/federation/v1/state_ids/{roomId}", a.handler(a.roomStateIDs))
	r.Method(http.MethodGet, "/_matrix/federation/v1/event/{eventId}", a.handler(a.event))
	r.Method(http.MethodGet, "/_matrix/federation/v1/event_auth/{roomId}/{eventId}", a.handler(a.eventAuth))
	r.Method(http.MethodGet, "/_matrix/federation/v1/backfill/{roomId}", a.handler(a.backfill))
	r.Method(http.MethodPost, "/_matrix/federation/v1/get_missing_events/{roomId}", a.handler(a.getMissingEvents))
	// Received events whose prev or auth events are unknown are completed from their origin
	// through this API's client (missing.go).
	if a.Inbound != nil {
		a.Inbound.gapFiller = a
	}
}

const (
	// maxBackfillLimit caps the limit of /backfill. NOTSPEC: Synapse caps it at 100 too.
	maxBackfillLimit = 100
	// maxMissingEventsLimit caps the limit of /get_missing_events. NOTSPEC: as Synapse.
	maxMissingEventsLimit = 20
	// maxStartEvents bounds the event IDs a /backfill or /get_missing_events request starts
	// from (v, latest_events) or stops at (earliest_events).
	maxStartEvents = 200
	// maxGetMissingEventsBody bounds the body of /get_missing_events.
	maxGetMissingEventsBody = 256 << 10
)

// serverView decides which events of one room a server may see, caching the answer per
// state snapshot.
type serverView struct {
	a      *API
	origin string
	roomID string
	// bySnapshot caches the answer for events with state, current for outliers.
	bySnapshot map[int64]bool
	current    *bool
	joined     *bool
}

func (a *API) newServerView(roomID, origin string) *serverView {
	return &serverView{a: a, origin: origin, roomID: roomID, bySnapshot: map[int64]bool{}}
}

// roomVisibility reads a state's history visibility ("shared" when unset or unknown, per
// client-server API "Room History Visibility") and origin's best membership in it.
func roomVisibility(state map[spec.StateTuple]*rooms.Event, origin string) (visibility, membership string) {
	visibility = "shared"
	if e, ok := state[spec.StateTuple{Type: "m.room.history_visibility"}]; ok {
		var c struct {
			HistoryVisibility string `json:"history_visibility"`
		}
		if json.Unmarshal(e.Content(), &c) == nil {
			switch c.HistoryVisibility {
			case "world_readable", "shared", "invited", "joined":
				visibility = c.HistoryVisibility
			}
		}
	}
	for tuple, e := range state {
		if tuple.Type != "m.room.member" {
			continue
		}
		if _, server, ok := strings.Cut(tuple.StateKey, ":"); !ok || server != origin {
			continue
		}
		switch m, _ := e.Membership(); {
		case m == "join":
			return visibility, "join"
		case m == "invite":
			membership = "invite"
		}
	}
	return visibility, membership
}

// inRoomNow reports whether origin has a joined member in the room's current state, or
// the room is world-readable now.
func (v *serverView) inRoomNow(ctx context.Context) (bool, error) {
	if v.current != nil {
		return *v.current, nil
	}
	state, _, err := v.a.Rooms.CurrentState(ctx, v.roomID)
	if err != nil {
		return false, err
	}
	visibility, membership := roomVisibility(state, v.origin)
	joined := membership == "join"
	ok := joined || visibility == "world_readable"
	v.current, v.joined = &ok, &joined
	return ok, nil
}

// joinedNow reports whether origin has a joined member in the room's current state.
func (v *serverView) joinedNow(ctx context.Context) (bool, error) {
	if v.joined == nil {
		if _, err := v.inRoomNow(ctx); err != nil {
			return false, err
		}
	}
	return *v.joined, nil
}

// allows reports whether origin may see e.
func (v *serverView) allows(ctx context.Context, e *rooms.Event) (bool, error) {
	if e.Status == storage.EventOutlier || e.Status == storage.EventRejected {
		// No state is known at the event: the room as it is now decides.
		return v.inRoomNow(ctx)
	}
	for _, snapshot := range []int64{e.StateBefore, e.StateAfter} {
		ok, cached := v.bySnapshot[snapshot]
		if !cached {
			state, err := v.a.Rooms.StateAt(ctx, snapshot)
			if err != nil {
				return false, err
			}
			visibility, membership := roomVisibility(state, v.origin)
			switch {
			case visibility == "world_readable", membership == "join":
				ok = true
			case visibility == "invited" && membership == "invite":
				ok = true
			case visibility == "shared":
				// NOTSPEC: like Synapse, shared history is open to the servers in the
				// room now, so that a server that joined later can backfill it.
				if ok, err = v.joinedNow(ctx); err != nil {
					return false, err
				}
			}
			v.bySnapshot[snapshot] = ok
		}
		if ok {
			return true, nil
		}
	}
	return false, nil
}

// roomEvent reads an event of roomID that origin may see (404 if unknown or in another
// room, 403 if hidden from origin).
func (a *API) roomEvent(ctx context.Context, roomID, eventID, origin string) (*rooms.Event, error) {
	if _, err := a.Rooms.RoomVersion(ctx, roomID); err != nil {
		return nil, roomError(err, roomID)
	}
	e, err := a.Rooms.EventByID(ctx, eventID)
	if errors.Is(err, rooms.ErrEventNotFound) || (err == nil && (e.RoomID() != roomID || e.Status == storage.EventRejected)) {
		return nil, httpapi.NotFound("Unknown event %s in room %s", eventID, roomID)
	}
	if err != nil {
		return nil, err
	}
	ok, err := a.newServerView(roomID, origin).allows(ctx, e)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, httpapi.Forbidden("You do not have permission to access event %s", eventID)
	}
	return e, nil
}

// stateAt is the state before event_id (the query parameter) and its auth chain.
func (a *API) stateAt(r *http.Request, origin string) ([]*rooms.Event, []*rooms.Event, error) {
	ctx := r.Context()
	roomID, eventID := pathParam(r, "roomId"), r.URL.Query().Get("event_id")
	if eventID == "" {
		return nil, nil, httpapi.MissingParam("Missing event_id")
	}
	e, err := a.roomEvent(ctx, roomID, eventID, origin)
	if err != nil {
		return nil, nil, err
	}
	if e.Status == storage.EventOutlier {
		return nil, nil, httpapi.NotFound("The state at event %s is not known here", eventID)
	}
	// "The fully resolved state for the room, prior to considering any state changes
	// induced by the requested event."
	state, err := a.Rooms.StateBefore(ctx, e)
	if err != nil {
		return nil, nil, err
	}
	chain, err := a.Rooms.AuthChain(ctx, state)
	if err != nil {
		return nil, nil, err
	}
	return state, chain, nil
}

// GET /_matrix/federation/v1/state/{roomId}?event_id=…
func (a *API) roomState(w http.ResponseWriter, r *http.Request, origin string) error {
	state, chain, err := a.stateAt(r, origin)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pdus": pduList(state), "auth_chain": pduList(chain)})
	return nil
}

// GET /_matrix/federation/v1/state_ids/{roomId}?event_id=…
func (a *API) roomStateIDs(w http.ResponseWriter, r *http.Request, origin string) error {
	state, chain, err := a.stateAt(r, origin)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pdu_ids": eventIDs(state), "auth_chain_ids": eventIDs(chain)})
	return nil
}

// eventIDs is the IDs of events.
func eventIDs(events []*rooms.Event) []string {
	out := make([]string, 0, len(events))
	for _, e := range events {
		out = append(out, e.EventID())
	}
	return out
}

// GET /_matrix/federation/v1/event/{eventId}: a transaction of the one event.
func (a *API) event(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	eventID := pathParam(r, "eventId")
	e, err := a.Rooms.EventByID(ctx, eventID)
	if errors.Is(err, rooms.ErrEventNotFound) || (err == nil && e.Status == storage.EventRejected) {
		return httpapi.NotFound("Unknown event %s", eventID)
	}
	if err != nil {
		return err
	}
	if _, err := a.roomEvent(ctx, e.RoomID(), eventID, origin); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, a.transaction([]*rooms.Event{e}))
	return nil
}

// transaction is a transaction of events from this server (the answer of /event and
// /backfill).
func (a *API) transaction(events []*rooms.Event) map[string]any {
	return map[string]any{"origin": a.ServerName, "origin_server_ts": a.Clock().UnixMilli(), "pdus": pduList(events)}
}

// GET /_matrix/federation/v1/event_auth/{roomId}/{eventId}
func (a *API) eventAuth(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	e, err := a.roomEvent(ctx, pathParam(r, "roomId"), pathParam(r, "eventId"), origin)
	if err != nil {
		return err
	}
	chain, err := a.Rooms.AuthChain(ctx, []*rooms.Event{e})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"auth_chain": pduList(chain)})
	return nil
}

// visibleEvents checks that origin may read the room now and keeps the events it may see.
func (a *API) visibleEvents(ctx context.Context, roomID, origin string, events []*rooms.Event) ([]*rooms.Event, error) {
	view := a.newServerView(roomID, origin)
	var kept []*rooms.Event
	for _, e := range events {
		ok, err := view.allows(ctx, e)
		if err != nil {
			return nil, err
		}
		if ok {
			kept = append(kept, e)
		}
	}
	return kept, nil
}

// checkRoomAccess answers 404 for an unknown room and 403 when origin is neither in the
// room now nor reading a world-readable room.
func (a *API) checkRoomAccess(ctx context.Context, roomID, origin string) error {
	if _, err := a.Rooms.RoomVersion(ctx, roomID); err != nil {
		return roomError(err, roomID)
	}
	ok, err := a.newServerView(roomID, origin).inRoomNow(ctx)
	if err != nil {
		return err
	}
	if !ok {
		return httpapi.Forbidden("%s is not in room %s", origin, roomID)
	}
	return nil
}

// GET /_matrix/federation/v1/backfill/{roomId}?v=…&limit=…: the events of v and those
// before them, greatest depth first, up to limit in all.
func (a *API) backfill(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	q := r.URL.Query()
	from := q["v"]
	if len(from) == 0 {
		return httpapi.MissingParam("Missing v")
	}
	if len(from) > maxStartEvents {
		return httpapi.InvalidParam("At most %d events to backfill from", maxStartEvents)
	}
	if q.Get("limit") == "" {
		return httpapi.MissingParam("Missing limit")
	}
	limit, err := strconv.Atoi(q.Get("limit"))
	if err != nil || limit < 0 {
		return httpapi.InvalidParam("Invalid limit")
	}
	limit = min(limit, maxBackfillLimit)
	if err := a.checkRoomAccess(ctx, roomID, origin); err != nil {
		return err
	}
	events, err := a.Rooms.WalkPrevEvents(ctx, roomID, from, true, nil, 0, limit)
	if err != nil {
		return err
	}
	if events, err = a.visibleEvents(ctx, roomID, origin, events); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, a.transaction(events))
	return nil
}

// getMissingEventsRequest is the body of /get_missing_events.
type getMissingEventsRequest struct {
	Limit          *int     `json:"limit"`
	MinDepth       int64    `json:"min_depth"`
	EarliestEvents []string `json:"earliest_events"`
	LatestEvents   []string `json:"latest_events"`
}

// POST /_matrix/federation/v1/get_missing_events/{roomId}: the events before
// latest_events, walking prev_events back and stopping at earliest_events, oldest first.
func (a *API) getMissingEvents(w http.ResponseWriter, r *http.Request, origin string) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	body, err := httpapi.ReadBody(r, maxGetMissingEventsBody)
	if err != nil {
		return err
	}
	var req getMissingEventsRequest
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	if req.LatestEvents == nil || req.EarliestEvents == nil {
		return httpapi.BadJSON("earliest_events and latest_events are required")
	}
	if len(req.LatestEvents) > maxStartEvents || len(req.EarliestEvents) > maxStartEvents {
		return httpapi.BadJSON("At most %d events in earliest_events and latest_events", maxStartEvents)
	}
	limit := 10 // the spec's default
	if req.Limit != nil {
		limit = *req.Limit
	}
	limit = max(0, min(limit, maxMissingEventsLimit))
	if err := a.checkRoomAccess(ctx, roomID, origin); err != nil {
		return err
	}
	stop := make(map[string]bool, len(req.EarliestEvents))
	for _, id := range req.EarliestEvents {
		stop[id] = true
	}
	events, err := a.Rooms.WalkPrevEvents(ctx, roomID, req.LatestEvents, false, stop, req.MinDepth, limit)
	if err != nil {
		return err
	}
	if events, err = a.visibleEvents(ctx, roomID, origin, events); err != nil {
		return err
	}
	slices.SortFunc(events, func(x, y *rooms.Event) int {
		return cmp.Or(cmp.Compare(x.Depth(), y.Depth()), cmp.Compare(x.EventID(), y.EventID()))
	})
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"events": pduList(events)})
	return nil
}
