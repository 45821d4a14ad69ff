package rooms

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/scrambledeggs/eggs/streams"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Receiving events from other servers (server-server API "Checks performed on receipt of a
// PDU"). Every event that did not originate here passes through ReceiveEvent:
//
//  1. signatures of every server that must have signed it (else dropped);
//  2. content hash (else redacted before going on);
//  3. auth rules against its own auth events (else rejected);
//  4. auth rules against the state before it, resolved over its prev_events (else rejected);
//  5. auth rules against the room's current state (else soft-failed: kept, not relayed,
//     not built upon);
//  6. the signature of the room's Policy Server, if it uses one (else soft-failed);
//
// then it is stored, becomes a forward extremity, and the room's current state is resolved
// again over the extremities when the DAG has forked.

// MissingEventsError says which events must be fetched (and received) before an event can be
// processed: its auth events, or its prev_events (for /get_missing_events).
type MissingEventsError struct {
	Prev     bool // prev_events are missing (else auth events)
	EventIDs []string
}

func (e *MissingEventsError) Error() string {
	kind := "auth events"
	if e.Prev {
		kind = "prev events"
	}
	return fmt.Sprintf("missing %s: %s", kind, strings.Join(e.EventIDs, ", "))
}

// RejectedError says an event failed the auth rules and was stored as rejected.
type RejectedError struct {
	EventID string
	Reason  error
}

func (e *RejectedError) Error() string {
	return fmt.Sprintf("event %s rejected: %v", e.EventID, e.Reason)
}
func (e *RejectedError) Unwrap() error { return e.Reason }

// ErrBadSignature is returned for events whose signatures do not verify; they are dropped.
var ErrBadSignature = errors.New("signature check failed")

// ReceiveCheck decides whether an event received from another server may enter its room at
// all, before any other check; an error refuses it without storing it. The federation API
// installs the server ACLs (m.room.server_acl) this way.
type ReceiveCheck func(ctx context.Context, ev *spec.Event) error

// SetReceiveCheck installs the check of received events. Call it before the server takes
// requests.
func (s *Server) SetReceiveCheck(check ReceiveCheck) { s.receiveCheck = check }

// ReceiveEvent runs an event from another server through the checks above and stores it.
// It returns the stored event, whose Status says whether it was accepted or soft-failed; a
// rejected event is stored too and returned with a *RejectedError. Receiving an event that is
// already stored returns it unchanged.
func (s *Server) ReceiveEvent(ctx context.Context, ev *spec.Event, keys spec.KeyLookup) (*Event, error) {
	ev, existing, err := s.admit(ctx, ev, keys)
	if existing != nil || err != nil {
		return existing, err
	}
	r, err := s.loadRoom(ctx, ev.RoomID())
	if errors.Is(err, ErrRoomNotFound) && ev.Type() == "m.room.create" {
		r, err = s.newRoomFromCreate(ctx, ev)
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()

	// 3. Auth against the event's own auth events.
	authEvents, err := s.authEventsOf(ctx, r, ev)
	if err != nil {
		return nil, err
	}
	if reason := checkAgainst(ev, authEvents, true); reason != nil {
		return s.storeRejected(ctx, r, ev, reason)
	}

	// 4. Auth against the state before the event.
	prevs, err := s.prevEventsOf(ctx, ev)
	if err != nil {
		return nil, err
	}
	stateBefore, err := s.stateBefore(ctx, r, prevs)
	if err != nil {
		return nil, err
	}
	if reason := checkAgainst(ev, stateBefore, false); reason != nil {
		return s.storeRejected(ctx, r, ev, reason)
	}

	// 5. Soft-fail against the current state.
	status := storage.EventAccepted
	if ev.Type() != "m.room.create" {
		if reason := checkAgainst(ev, r.state, false); reason != nil {
			s.log.Info("soft-failing event", "event_id", ev.EventID(), "room_id", r.id, "reason", reason)
			status = storage.EventSoftFailed
		}
	}
	// 6. Soft-fail without the signature of the room's Policy Server.
	if status == storage.EventAccepted {
		ev, status = s.policyStatus(ctx, r, ev)
	}
	return s.persistReceived(ctx, r, ev, prevs, stateBefore, status)
}

// admit runs the checks every received event starts with: an event already stored is
// returned as it is (an outlier is not: it may take its place in the room now); then the
// receive check (server ACLs), signatures (a failure drops the event) and the content hash
// (a mismatch redacts it). It returns the event to go on with.
func (s *Server) admit(ctx context.Context, ev *spec.Event, keys spec.KeyLookup) (*spec.Event, *Event, error) {
	if existing, err := s.EventByID(ctx, ev.EventID()); err == nil && existing.Status == storage.EventRejected {
		return nil, existing, &RejectedError{EventID: ev.EventID(), Reason: errors.New("rejected before")}
	} else if err == nil && existing.Status != storage.EventOutlier {
		return nil, existing, nil
	} else if err != nil && !errors.Is(err, ErrEventNotFound) {
		return nil, nil, err
	}
	if s.receiveCheck != nil {
		if err := s.receiveCheck(ctx, ev); err != nil {
			return nil, nil, err
		}
	}
	if err := spec.VerifyEventSignatures(ev, keys); err != nil {
		return nil, nil, fmt.Errorf("%w: %v", ErrBadSignature, err)
	}
	if err := ev.CheckContentHash(); err != nil {
		redacted, rerr := ev.Redacted()
		if rerr != nil {
			return nil, nil, fmt.Errorf("redact event with a bad content hash: %w", rerr)
		}
		ev = redacted
	}
	return ev, nil, nil
}

// newRoomFromCreate stores the header of a room first seen through its create event.
func (s *Server) newRoomFromCreate(ctx context.Context, create *spec.Event) (*room, error) {
	var nid int64
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		var err error
		nid, err = storage.InsertRoom(ctx, tx, create.RoomID(), create.Version().ID)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store room %s: %w", create.RoomID(), err)
	}
	s.versions.Store(nid, create.Version())
	r := &room{nid: nid, id: create.RoomID(), version: create.Version(), chain: &snapshotChain{}, state: map[spec.StateTuple]*Event{}}
	s.mu.Lock()
	defer s.mu.Unlock()
	if existing, ok := s.rooms[create.RoomID()]; ok && existing.version != nil {
		return existing, nil
	}
	r.recent.floor = s.stream.Allocated()
	s.rooms[create.RoomID()] = r
	s.byNID[nid] = r
	return r, nil
}

// authEventsOf loads the event's auth events by tuple, plus the room's create event (which
// v12 events do not list). Rejected auth events make the event fail auth: they are left out.
func (s *Server) authEventsOf(ctx context.Context, r *room, ev *spec.Event) (map[spec.StateTuple]*Event, error) {
	ids := ev.AuthEventIDs()
	if r.version.CreateEventNotInAuthEvents && ev.Type() != "m.room.create" {
		// The create event of a v12 room is named by the room ID itself.
		ids = append(append([]string(nil), ids...), "$"+strings.TrimPrefix(r.id, "!"))
	}
	events, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	out := make(map[spec.StateTuple]*Event, len(events))
	for _, e := range events {
		found[e.EventID()] = true
		if e.Status == storage.EventRejected {
			continue
		}
		if tuple, ok := e.Tuple(); ok {
			out[tuple] = e
		}
	}
	var missing []string
	for _, id := range ids {
		if !found[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingEventsError{EventIDs: missing}
	}
	return out, nil
}

// prevEventsOf loads the event's prev_events; all must be known.
func (s *Server) prevEventsOf(ctx context.Context, ev *spec.Event) ([]*Event, error) {
	ids := ev.PrevEventIDs()
	if len(ids) == 0 {
		return nil, nil
	}
	prevs, err := s.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	found := map[string]bool{}
	var usable []*Event
	for _, p := range prevs {
		found[p.EventID()] = true
		if p.Status == storage.EventAccepted || p.Status == storage.EventSoftFailed {
			usable = append(usable, p)
		}
	}
	var missing []string
	for _, id := range ids {
		if !found[id] {
			missing = append(missing, id)
		}
	}
	if len(missing) > 0 {
		return nil, &MissingEventsError{Prev: true, EventIDs: missing}
	}
	return usable, nil
}

// stateBefore is the room state before an event with these prev_events: the state after the
// one prev event, or the resolution of the states after each of them.
func (s *Server) stateBefore(ctx context.Context, r *room, prevs []*Event) (map[spec.StateTuple]*Event, error) {
	switch len(prevs) {
	case 0:
		return map[spec.StateTuple]*Event{}, nil
	case 1:
		return s.StateAt(ctx, prevs[0].StateAfter)
	}
	states := make([]map[spec.StateTuple]*Event, 0, len(prevs))
	for _, p := range prevs {
		state, err := s.StateAt(ctx, p.StateAfter)
		if err != nil {
			return nil, err
		}
		states = append(states, state)
	}
	return s.resolve(ctx, r, states)
}

// resolve runs state resolution over several states of a room.
func (s *Server) resolve(ctx context.Context, r *room, states []map[spec.StateTuple]*Event) (map[spec.StateTuple]*Event, error) {
	known := map[string]*Event{}
	sets := make([]spec.StateMap, 0, len(states))
	for _, state := range states {
		set := make(spec.StateMap, len(state))
		for tuple, e := range state {
			set[tuple] = e.EventID()
			known[e.EventID()] = e
		}
		sets = append(sets, set)
	}
	load := func(ids []string) (map[string]*spec.Event, error) {
		out := make(map[string]*spec.Event, len(ids))
		var missing []string
		for _, id := range ids {
			if e, ok := known[id]; ok {
				out[id] = e.Event
			} else {
				missing = append(missing, id)
			}
		}
		if len(missing) == 0 {
			return out, nil
		}
		events, err := s.EventsByID(ctx, missing)
		if err != nil {
			return nil, err
		}
		for _, e := range events {
			if e.Status != storage.EventRejected {
				out[e.EventID()] = e.Event
				known[e.EventID()] = e
			}
		}
		return out, nil
	}
	resolved, err := spec.ResolveState(r.version, sets, load)
	if err != nil {
		return nil, fmt.Errorf("resolve state of %s: %w", r.id, err)
	}
	out := make(map[spec.StateTuple]*Event, len(resolved))
	for tuple, id := range resolved {
		if e, ok := known[id]; ok {
			out[tuple] = e
		}
	}
	return out, nil
}

// checkAgainst checks ev against the auth rules with the auth events chosen from state (its
// own auth events when ownAuthEvents, which must also be a valid selection).
func checkAgainst(ev *spec.Event, state map[spec.StateTuple]*Event, ownAuthEvents bool) error {
	authState := map[spec.StateTuple]*spec.Event{}
	createTuple := spec.StateTuple{Type: "m.room.create"}
	if create, ok := state[createTuple]; ok {
		authState[createTuple] = create.Event
	}
	if ownAuthEvents {
		listed := make([]*spec.Event, 0, len(state))
		for tuple, e := range state {
			if tuple == createTuple && ev.Version().CreateEventNotInAuthEvents {
				continue
			}
			listed = append(listed, e.Event)
			authState[tuple] = e.Event
		}
		if err := spec.CheckAuthEventsValid(ev, listed); err != nil {
			return err
		}
	} else {
		for _, tuple := range spec.AuthEventSelection(ev.Version(), ev.Type(), ev.StateKey(), ev.Sender(), ev.Content()) {
			if e, ok := state[tuple]; ok {
				authState[tuple] = e.Event
			}
		}
	}
	return spec.CheckAuth(ev, authState)
}

// storeRejected stores an event that failed auth, so that it is never processed again.
func (s *Server) storeRejected(ctx context.Context, r *room, ev *spec.Event, reason error) (*Event, error) {
	e := &Event{Event: ev, Status: storage.EventRejected}
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		nid, err := storage.StoreReceivedEvent(ctx, tx, s.rowOf(r, e))
		e.NID = nid
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("store rejected event: %w", err)
	}
	s.events.put(e.NID, e)
	return e, &RejectedError{EventID: ev.EventID(), Reason: reason}
}

// rowOf is the database row of an event of room r.
func (s *Server) rowOf(r *room, e *Event) *storage.EventRow {
	return &storage.EventRow{
		EventID: e.EventID(), RoomNID: r.nid, StreamPos: e.StreamPos, Status: e.Status, Depth: e.Depth(),
		Type: e.Type(), StateKey: e.StateKey(), Sender: e.Sender(), OriginTS: e.OriginServerTS(),
		StateBefore: e.StateBefore, StateAfter: e.StateAfter, ReplacesNID: e.ReplacesNID,
		SenderDevice: e.SenderDevice, TxnID: e.TxnID, JSON: e.JSON(),
	}
}

// persistReceived stores an accepted or soft-failed event with its state snapshots and, when
// accepted, moves the room's head: forward extremities and current state.
func (s *Server) persistReceived(ctx context.Context, r *room, ev *spec.Event, prevs []*Event, stateBefore map[spec.StateTuple]*Event, status storage.EventStatus) (*Event, error) {
	e := &Event{Event: ev, Status: status}
	var pos int64
	if status == storage.EventAccepted {
		pos = s.stream.Allocate()
		e.StreamPos = pos
	}
	var tuples *tupleBatch
	var newHead *roomHead
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		tuples = s.tupleBatch(ctx, tx)
		intern := tuples.intern

		// The snapshot before: the one prev event's, or a new one for a resolved state.
		var beforeChain *snapshotChain
		var err error
		if len(prevs) == 1 {
			e.StateBefore = prevs[0].StateAfter
			beforeChain, _, err = s.loadState(ctx, e.StateBefore)
		} else if len(prevs) > 1 {
			beforeChain, err = s.storeState(ctx, tx, r, prevs[0].StateAfter, stateBefore, intern)
			e.StateBefore = beforeChain.nid()
		} else {
			beforeChain = &snapshotChain{}
		}
		if err != nil {
			return err
		}
		e.StateAfter = e.StateBefore
		tuple, isState := ev.Tuple()
		if isState {
			if replaced, ok := stateBefore[tuple]; ok {
				e.ReplacesNID = replaced.NID
			}
		}
		// An event held as an outlier until now joins the room in place of that row.
		nid, err := storage.StoreReceivedEvent(ctx, tx, s.rowOf(r, e))
		if err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
		e.NID = nid
		afterChain := beforeChain
		if isState {
			tupleNID, err := intern(tuple)
			if err != nil {
				return err
			}
			depth, baseNID, delta, keep := beforeChain.extend(stateDelta{tupleNID: nid})
			snapshotNID, err := storage.InsertSnapshot(ctx, tx, r.nid, baseNID, depth, delta)
			if err != nil {
				return err
			}
			afterChain = beforeChain.withLink(keep, chainLink{nid: snapshotNID, depth: depth, delta: delta})
			e.StateAfter = snapshotNID
			if err := storage.SetStateAfter(ctx, tx, nid, snapshotNID); err != nil {
				return err
			}
		}
		if status != storage.EventAccepted {
			return nil
		}
		if target := e.Redacts(); target != "" {
			if err := storage.SetRedactedBy(ctx, tx, target, e.EventID()); err != nil {
				return err
			}
		}
		newHead, err = s.advanceHead(ctx, tx, r, e, afterChain, intern)
		return err
	})
	if err != nil {
		if pos != 0 {
			s.stream.Finish(pos)
		}
		return nil, err
	}
	tuples.commit()
	s.events.put(e.NID, e)
	if status != storage.EventAccepted {
		return e, nil
	}
	changed := newHead.changedEvents(r)
	joins := r.newlyJoined(changed)
	newHead.apply(r)
	r.recent.add(e)
	if target := e.Redacts(); target != "" {
		s.applyRedaction(ctx, r, target)
	}
	wake := r.wakeList([]*Event{e})
	for _, c := range changed {
		if c.Type() == "m.room.member" {
			wake = append(wake, *c.StateKey())
		}
	}
	keys := changeKeys(r, e)
	for _, c := range changed {
		if c.Type() == "m.room.member" && c != e {
			keys = append(keys, streams.MembershipKey(*c.StateKey()), streams.RoomMembersKey(r.nid))
		}
	}
	s.stream.MarkChanged(pos, keys...)
	s.stream.Finish(pos, wake...)
	s.announceJoins(r, joins)
	return e, nil
}

// roomHead is a room's new forward extremities and current state, applied to the in-memory
// room once the transaction that stored them has committed. The state is either a whole new
// state (after a resolution) or, in the common linear case, changes to the current one.
type roomHead struct {
	extremities []*Event
	chain       *snapshotChain
	state       map[spec.StateTuple]*Event
	changes     map[spec.StateTuple]*Event
}

// apply installs the head in r and returns the state events that changed.
// changedEvents lists the state events that apply would change in r's current state.
func (h *roomHead) changedEvents(r *room) []*Event {
	var changed []*Event
	if h.state == nil {
		for _, e := range h.changes {
			changed = append(changed, e)
		}
		return changed
	}
	for tuple, e := range h.state {
		if old, ok := r.state[tuple]; !ok || old.NID != e.NID {
			changed = append(changed, e)
		}
	}
	return changed
}

// apply makes h the room's head.
func (h *roomHead) apply(r *room) {
	if h.state == nil {
		for tuple, e := range h.changes {
			r.setState(tuple, e)
		}
	} else {
		r.state, r.joined, r.joinedIndex = h.state, nil, nil
	}
	r.extremities, r.chain = h.extremities, h.chain
}

// advanceHead makes e a forward extremity (replacing its prev events) and computes the room's
// new current state: the state after e when e extends the current state, else the resolution
// of the states after each extremity.
func (s *Server) advanceHead(ctx context.Context, tx *storage.Tx, r *room, e *Event, afterChain *snapshotChain, intern func(spec.StateTuple) (int64, error)) (*roomHead, error) {
	prevIDs := map[string]bool{}
	for _, id := range e.PrevEventIDs() {
		prevIDs[id] = true
	}
	var removed []int64
	extremities := []*Event{}
	for _, x := range r.extremities {
		if prevIDs[x.EventID()] {
			removed = append(removed, x.NID)
		} else {
			extremities = append(extremities, x)
		}
	}
	extremities = append(extremities, e)
	if err := storage.ReplaceExtremities(ctx, tx, r.nid, removed, e.NID); err != nil {
		return nil, err
	}

	head := &roomHead{extremities: extremities}
	if len(extremities) == 1 && e.StateBefore == r.chain.nid() {
		// The common case: e follows the current state directly.
		head.chain, head.changes = afterChain, map[spec.StateTuple]*Event{}
		if tuple, ok := e.Tuple(); ok {
			head.changes[tuple] = e
			if err := setCurrentState(ctx, tx, r, tuple, e); err != nil {
				return nil, err
			}
		}
	} else {
		states := make([]map[spec.StateTuple]*Event, 0, len(extremities))
		for _, x := range extremities {
			var state map[spec.StateTuple]*Event
			var err error
			if x == e {
				_, state, err = s.loadStateWithin(ctx, tx, afterChain)
			} else {
				state, err = s.StateAt(ctx, x.StateAfter)
			}
			if err != nil {
				return nil, err
			}
			states = append(states, state)
		}
		resolved := states[0]
		if len(states) > 1 {
			var err error
			if resolved, err = s.resolve(ctx, r, states); err != nil {
				return nil, err
			}
		}
		chain, err := s.storeState(ctx, tx, r, r.chain.nid(), resolved, intern)
		if err != nil {
			return nil, err
		}
		head.chain, head.state = chain, copyState(resolved)
		// Bring the current_state table to the new state.
		for tuple, ev := range resolved {
			if old, ok := r.state[tuple]; ok && old.NID == ev.NID {
				continue
			}
			if err := setCurrentState(ctx, tx, r, tuple, ev); err != nil {
				return nil, err
			}
		}
		for tuple := range r.state {
			if _, ok := resolved[tuple]; !ok {
				if err := storage.DeleteCurrentState(ctx, tx, r.nid, tuple.Type, tuple.StateKey); err != nil {
					return nil, err
				}
			}
		}
	}
	if head.chain.nid() != r.chain.nid() {
		if err := storage.SetCurrentSnapshot(ctx, tx, r.nid, head.chain.nid()); err != nil {
			return nil, err
		}
	}
	return head, nil
}

// setCurrentState records one entry of a room's current state. A user who joins, is
// invited to or knocks on a room they had forgotten gets it back.
func setCurrentState(ctx context.Context, tx *storage.Tx, r *room, tuple spec.StateTuple, e *Event) error {
	membership := ""
	if e.Type() == "m.room.member" {
		membership, _ = e.Membership()
		switch membership {
		case "join", "invite", "knock":
			if err := storage.UnforgetRoom(ctx, tx, tuple.StateKey, r.id); err != nil {
				return err
			}
		}
	}
	return storage.SetCurrentState(ctx, tx, r.nid, tuple.Type, tuple.StateKey, e.NID, membership)
}

// loadStateWithin reads the state of a chain whose last links may have been written by tx
// and so are not yet visible to other connections: the deltas are in the chain already, only
// the events are read.
func (s *Server) loadStateWithin(ctx context.Context, tx *storage.Tx, chain *snapshotChain) (*snapshotChain, map[spec.StateTuple]*Event, error) {
	full := chain.full(nil)
	nids := make([]int64, 0, len(full))
	for _, eventNID := range full {
		nids = append(nids, eventNID)
	}
	var events []*Event
	var missing []int64
	for _, nid := range nids {
		if e, ok := s.events.get(nid); ok {
			events = append(events, e)
		} else {
			missing = append(missing, nid)
		}
	}
	if len(missing) > 0 {
		rows, err := storage.LoadEventsByNID(ctx, tx, missing)
		if err != nil {
			return nil, nil, err
		}
		loaded, err := s.EventsFromRows(rows)
		if err != nil {
			return nil, nil, err
		}
		events = append(events, loaded...)
	}
	state := make(map[spec.StateTuple]*Event, len(events))
	for _, e := range events {
		if tuple, ok := e.Tuple(); ok {
			state[tuple] = e
		}
	}
	return chain, state, nil
}

// storeState stores target as a new snapshot derived from the snapshot baseNID (the delta
// is their difference) and returns its chain.
func (s *Server) storeState(ctx context.Context, tx *storage.Tx, r *room, baseNID int64, target map[spec.StateTuple]*Event, intern func(spec.StateTuple) (int64, error)) (*snapshotChain, error) {
	base, _, err := s.loadState(ctx, baseNID)
	if err != nil {
		return nil, err
	}
	baseFull := base.full(nil)
	targetFull := make(stateDelta, len(target))
	for tuple, e := range target {
		nid, err := intern(tuple)
		if err != nil {
			return nil, err
		}
		targetFull[nid] = e.NID
	}
	change := stateDelta{}
	for tuple, event := range targetFull {
		if baseFull[tuple] != event {
			change[tuple] = event
		}
	}
	for tuple := range baseFull {
		if _, ok := targetFull[tuple]; !ok {
			change[tuple] = 0
		}
	}
	if len(change) == 0 {
		return base, nil
	}
	depth, linkBase, delta, keep := base.extend(change)
	nid, err := storage.InsertSnapshot(ctx, tx, r.nid, linkBase, depth, delta)
	if err != nil {
		return nil, err
	}
	return base.withLink(keep, chainLink{nid: nid, depth: depth, delta: delta}), nil
}
