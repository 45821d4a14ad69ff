package rooms

import (
	"cmp"
	"container/heap"
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Filling gaps in a room's DAG (server-server API "Backfilling and retrieving missing
// events", "Retrieving events"):
//
//   - serving: WalkPrevEvents walks prev_events backwards for /backfill and
//     /get_missing_events;
//   - an event whose prev_events stay unknown after /get_missing_events is accepted with
//     the state before it as another server resolved it (ReceiveWithState): the state and
//     its auth chain are checked and stored as outliers first, like the state of a join;
//   - auth events fetched on their own (/event_auth) are stored as outliers (StoreOutliers);
//   - history older than the room's earliest event here (/backfill) is stored as outliers
//     with negative stream positions (StoreBackfilled), so that client pagination, which
//     walks stream positions, reaches it after the room's earliest local event.

// maxGapEvents bounds the events of one gap-filling call (state plus auth chain of
// ReceiveWithState, or a batch of outliers). NOTSPEC: the state of real rooms is far
// smaller; the bound keeps a hostile answer from exhausting memory.
const maxGapEvents = 200_000

// maxWalk bounds the events one WalkPrevEvents or BackwardExtremities call reads.
const maxWalk = 1000

// ForwardExtremities is the IDs of the room's forward extremities and the lowest depth among
// them: the earliest_events and min_depth of a /get_missing_events request.
func (s *Server) ForwardExtremities(ctx context.Context, roomID string) ([]string, int64, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	ids := make([]string, 0, len(r.extremities))
	var minDepth int64
	for i, e := range r.extremities {
		ids = append(ids, e.EventID())
		if i == 0 || e.Depth() < minDepth {
			minDepth = e.Depth()
		}
	}
	return ids, minDepth, nil
}

// depthHeap orders events newest (greatest depth) first; ties by event ID, so that walks
// are deterministic.
type depthHeap []*Event

func (h depthHeap) Len() int { return len(h) }
func (h depthHeap) Less(i, j int) bool {
	if h[i].Depth() != h[j].Depth() {
		return h[i].Depth() > h[j].Depth()
	}
	return h[i].EventID() > h[j].EventID()
}
func (h depthHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *depthHeap) Push(x any)   { *h = append(*h, x.(*Event)) }
func (h *depthHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}

// WalkPrevEvents walks the room's DAG backwards through prev_events from the events from,
// greatest depth first, and returns at most limit events it reaches: the events of from
// themselves when includeFrom (/backfill), their ancestors only otherwise
// (/get_missing_events). Events in stop are neither returned nor walked through, events
// below minDepth are left out, and so are rejected events and events of other rooms. Events
// of from that are not stored here are ignored.
func (s *Server) WalkPrevEvents(ctx context.Context, roomID string, from []string, includeFrom bool, stop map[string]bool, minDepth int64, limit int) ([]*Event, error) {
	if limit <= 0 {
		return nil, nil
	}
	seen := map[string]bool{}
	frontier := &depthHeap{}
	push := func(ids []string) error {
		var want []string
		for _, id := range ids {
			if !seen[id] && !stop[id] {
				seen[id] = true
				want = append(want, id)
			}
		}
		if len(want) == 0 {
			return nil
		}
		events, err := s.EventsByID(ctx, want)
		if err != nil {
			return err
		}
		for _, e := range events {
			if e.RoomID() == roomID && e.Status != storage.EventRejected && e.Depth() >= minDepth {
				heap.Push(frontier, e)
			}
		}
		return nil
	}
	start := slices.Clone(from)
	if !includeFrom {
		events, err := s.EventsByID(ctx, from)
		if err != nil {
			return nil, err
		}
		start = start[:0]
		for _, e := range events {
			seen[e.EventID()] = true
			if e.RoomID() == roomID {
				start = append(start, e.PrevEventIDs()...)
			}
		}
	}
	if err := push(start); err != nil {
		return nil, err
	}
	var out []*Event
	for frontier.Len() > 0 && len(out) < limit && len(seen) < maxWalk*10 {
		e := heap.Pop(frontier).(*Event)
		out = append(out, e)
		if err := push(e.PrevEventIDs()); err != nil {
			return nil, err
		}
	}
	return out, ctx.Err()
}

// BackwardExtremities is up to limit IDs of events where /backfill starts: the prev_events
// of the room's oldest events here (the lowest stream positions, and no deeper in the DAG
// than the oldest) that are either not stored here or held without a stream position (the
// outliers of a join's state), which /backfill then returns and StoreBackfilled places.
// Gaps further on in the timeline (an event accepted with fetched state) are not history
// before the earliest event, and are left alone.
func (s *Server) BackwardExtremities(ctx context.Context, roomID string, limit int) ([]string, error) {
	nid, err := s.RoomNID(ctx, roomID)
	if err != nil {
		return nil, err
	}
	rows, err := storage.EarliestRoomEvents(ctx, s.db, nid, 20)
	if err != nil {
		return nil, err
	}
	earliest, err := s.EventsFromRows(rows)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var frontier []string
	for _, e := range earliest {
		seen[e.EventID()] = true
	}
	for _, e := range earliest {
		if e.Depth() > earliest[0].Depth() {
			continue
		}
		for _, id := range e.PrevEventIDs() {
			if !seen[id] {
				seen[id] = true
				frontier = append(frontier, id)
			}
		}
	}
	if len(frontier) == 0 {
		return nil, nil
	}
	known, err := s.EventsByID(ctx, frontier)
	if err != nil {
		return nil, err
	}
	byID := make(map[string]*Event, len(known))
	for _, e := range known {
		byID[e.EventID()] = e
	}
	var out []string
	for _, id := range frontier {
		// Events already placed in the history were reached through the earliest events.
		if e, ok := byID[id]; !ok || (e.Status == storage.EventOutlier && e.StreamPos == 0) {
			out = append(out, id)
		}
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}

// StoreOutliers checks events of a room received without their surroundings (auth events
// fetched with /event_auth or /event) and stores those that pass as outliers: signatures,
// content hashes (redacted on mismatch) and auth against their own auth events, which must
// be among events or stored already. It returns how many events were newly stored.
func (s *Server) StoreOutliers(ctx context.Context, roomID string, events []*spec.Event, keys spec.KeyLookup) (int, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	_, added, err := s.storeOutliers(ctx, r, events, keys, false)
	return len(added), err
}

// StoreBackfilled stores history fetched with /backfill: each event is checked like an
// outlier (StoreOutliers) and given a negative stream position below every one handed out
// before, the deepest event the highest, so that the batch reads in DAG order after the
// room's earliest events. Events already held without a position (the outliers of a join's
// state, say) get one too. It returns the events that were given a position, newest first.
func (s *Server) StoreBackfilled(ctx context.Context, roomID string, events []*spec.Event, keys spec.KeyLookup) ([]*Event, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	positioned, _, err := s.storeOutliers(ctx, r, events, keys, true)
	return positioned, err
}

// storeOutliers checks and stores events of room r as outliers. It returns, with
// positioned, the events given backfill positions (newest first), else every event of the
// input that is now held and not rejected, and the events newly stored.
func (s *Server) storeOutliers(ctx context.Context, r *room, events []*spec.Event, keys spec.KeyLookup, positioned bool) ([]*Event, []*Event, error) {
	if len(events) > maxGapEvents {
		return nil, nil, fmt.Errorf("%d events to store as outliers", len(events))
	}
	byID := map[string]*spec.Event{}
	var ids []string
	for _, e := range events {
		if e.Version() != r.version || e.RoomID() != r.id {
			continue
		}
		if _, dup := byID[e.EventID()]; !dup {
			ids = append(ids, e.EventID())
		}
		byID[e.EventID()] = e
	}
	stored, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, nil, err
	}
	held := map[string]*Event{}
	for _, e := range stored {
		delete(byID, e.EventID())
		if e.Status != storage.EventRejected {
			held[e.EventID()] = e
		}
	}
	checked, err := s.checkOutliers(ctx, byID, keys)
	if err != nil {
		return nil, nil, err
	}
	var fresh []*Event
	for id, e := range checked {
		if _, ok := byID[id]; ok {
			e.Status = storage.EventOutlier
			fresh = append(fresh, e)
		}
	}
	// Without a position, held events keep theirs (0 for outliers); with one, the fresh
	// events and the held ones still at 0 are numbered together, in DAG order.
	var numbered []*Event
	if positioned {
		numbered = append(numbered, fresh...)
		for _, e := range held {
			if e.Status == storage.EventOutlier && e.StreamPos == 0 {
				numbered = append(numbered, e)
			}
		}
		slices.SortFunc(numbered, func(a, b *Event) int {
			return cmp.Or(cmp.Compare(b.Depth(), a.Depth()), cmp.Compare(b.OriginServerTS(), a.OriginServerTS()),
				cmp.Compare(b.EventID(), a.EventID()))
		})
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	var inserted []*Event
	var renumbered []*Event
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		inserted, renumbered = inserted[:0], renumbered[:0]
		var lowest int64
		if len(numbered) > 0 {
			var err error
			if lowest, err = storage.AllocateBackfillPositions(ctx, tx, len(numbered)); err != nil {
				return fmt.Errorf("allocate backfill positions: %w", err)
			}
		}
		position := map[string]int64{}
		for i, e := range numbered {
			// numbered is newest first: the newest takes the highest position.
			position[e.EventID()] = lowest + int64(len(numbered)-1-i)
		}
		for _, e := range fresh {
			existing, err := storage.LoadEventByID(ctx, tx, e.EventID())
			if err == nil {
				// Stored meanwhile (by a concurrent receive): that copy stands.
				e.NID = existing.NID
				continue
			}
			if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			row := s.rowOf(r, e)
			row.StreamPos = position[e.EventID()]
			if _, err := storage.InsertEvent(ctx, tx, row); err != nil {
				return fmt.Errorf("store outlier %s: %w", e.EventID(), err)
			}
			e.NID, e.StreamPos = row.NID, row.StreamPos
			inserted = append(inserted, e)
		}
		for _, e := range held {
			pos, ok := position[e.EventID()]
			if !ok {
				continue
			}
			if err := storage.SetBackfillPosition(ctx, tx, e.NID, pos); err != nil {
				return err
			}
			copied := *e
			copied.StreamPos = pos
			renumbered = append(renumbered, &copied)
		}
		return nil
	})
	if err != nil {
		return nil, nil, err
	}
	for _, e := range inserted {
		s.events.put(e.NID, e)
	}
	for _, e := range renumbered {
		s.events.put(e.NID, e)
	}
	if positioned {
		out := append(slices.Clone(inserted), renumbered...)
		slices.SortFunc(out, func(a, b *Event) int { return cmp.Compare(b.StreamPos, a.StreamPos) })
		return out, inserted, nil
	}
	all := make([]*Event, 0, len(held)+len(inserted))
	for _, e := range held {
		all = append(all, e)
	}
	return append(all, inserted...), inserted, nil
}

// ReceiveWithState receives an event whose prev_events are not known here and could not be
// fetched, with state — the room state before it as another server resolved it (/state or
// /state_ids) — and that state's auth chain. The state and chain are checked and stored as
// outliers (those failing their checks are left out), the event is then checked like any
// received event, with state in place of the state resolved over its prev_events, and
// stored; it becomes a forward extremity beside the room's others, so that the next event
// merges the two.
func (s *Server) ReceiveWithState(ctx context.Context, ev *spec.Event, state, authChain []*spec.Event, keys spec.KeyLookup) (*Event, error) {
	if len(state)+len(authChain) > maxGapEvents {
		return nil, fmt.Errorf("state and auth chain of %d events", len(state)+len(authChain))
	}
	ev, existing, err := s.admit(ctx, ev, keys)
	if existing != nil || err != nil {
		return existing, err
	}
	r, err := s.loadRoom(ctx, ev.RoomID())
	if err != nil {
		return nil, err
	}
	held, _, err := s.storeOutliers(ctx, r, append(slices.Clone(authChain), state...), keys, false)
	if err != nil {
		return nil, err
	}
	heldByID := make(map[string]*Event, len(held))
	for _, e := range held {
		heldByID[e.EventID()] = e
	}
	stateBefore := map[spec.StateTuple]*Event{}
	for _, se := range state {
		if e, ok := heldByID[se.EventID()]; ok {
			if tuple, isState := e.Tuple(); isState {
				stateBefore[tuple] = e
			}
		}
	}
	if _, ok := stateBefore[spec.StateTuple{Type: "m.room.create"}]; !ok {
		return nil, errors.New("the state before the event lacks a valid create event")
	}

	r.mu.Lock()
	defer r.mu.Unlock()
	authEvents, err := s.authEventsOf(ctx, r, ev)
	if err != nil {
		return nil, err
	}
	if reason := checkAgainst(ev, authEvents, true); reason != nil {
		return s.storeRejected(ctx, r, ev, reason)
	}
	if reason := checkAgainst(ev, stateBefore, false); reason != nil {
		return s.storeRejected(ctx, r, ev, reason)
	}
	status := storage.EventAccepted
	if reason := checkAgainst(ev, r.state, false); reason != nil {
		s.log.Info("soft-failing event", "event_id", ev.EventID(), "room_id", r.id, "reason", reason)
		status = storage.EventSoftFailed
	}
	if status == storage.EventAccepted {
		ev, status = s.policyStatus(ctx, r, ev)
	}

	// The state before becomes a snapshot of its own, as a delta over the current state
	// (which it usually differs little from).
	var tuples *tupleBatch
	var chain *snapshotChain
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		tuples = s.tupleBatch(ctx, tx)
		var err error
		chain, err = s.storeState(ctx, tx, r, r.chain.nid(), stateBefore, tuples.intern)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store the state before %s: %w", ev.EventID(), err)
	}
	tuples.commit()
	before := &Event{StateAfter: chain.nid()}
	return s.persistReceived(ctx, r, ev, []*Event{before}, stateBefore, status)
}
