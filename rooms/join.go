package rooms

import (
	"context"
	"errors"
	"fmt"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Joining a room that lives on other servers (server-server API "Joining Rooms"): the
// resident server's send_join response carries the room's state before our join and the
// auth chain of that state. Every event of it is checked like any received event —
// signatures, hashes, auth against its own auth events — and stored as an outlier; the
// state becomes the state before our join, which is then accepted as the room's first
// timeline event here.
//
// A room of 10,000 members answers with 10,000 state events and more, so the response is
// never held whole: its events are staged in the database as they are read (signatures and
// hashes checked on the way), then checked against their auth events in auth order, one
// batch at a time — an event becomes checkable once every staged auth event of it has been
// checked, and it is checked against its auth events as stored — and stored as outliers.
// Events resting on events that failed, or on a cycle, are left out. Only the state's
// numeric IDs are gathered at the end, to store its snapshot; the room's in-memory head then
// holds the state like that of any room.

// maxJoinEvents bounds the state and auth chain taken from a send_join response. NOTSPEC:
// rooms with far more state exist in theory; this keeps a hostile response from filling the
// database (the partial-state join of MSC3706 is how such rooms are joined).
const maxJoinEvents = 500_000

// joinBatchSize is how many events a join stages, or checks, at a time: what it holds in
// memory besides the room's state.
const joinBatchSize = 500

// joinAuthCacheSize bounds the auth events a join keeps at hand while checking: the room's
// create, power levels and join rules serve nearly every member event.
const joinAuthCacheSize = 2048

// staleJoinStageMS is the age after which a join stage is taken for one left behind by a
// process that stopped during a join, and removed.
const staleJoinStageMS = 24 * 60 * 60 * 1000

// JoinFromState stores a room joined over federation from events already parsed: state is
// the room state before join and authChain its auth chain, as a resident server sent them.
// Events that fail their checks are left out (a state event that fails leaves its tuple out
// of the state). It returns our stored join event. JoinFromStream does the same from the
// send_join response body without holding it in memory.
func (s *Server) JoinFromState(ctx context.Context, join *spec.Event, state, authChain []*spec.Event, keys spec.KeyLookup) (*Event, error) {
	if len(state)+len(authChain) > maxJoinEvents {
		return nil, fmt.Errorf("send_join response with %d events", len(state)+len(authChain))
	}
	j, err := s.beginJoin(ctx, join, keys)
	if err != nil {
		return nil, err
	}
	defer j.discard(ctx)
	for _, list := range []struct {
		events  []*spec.Event
		inState bool
	}{{authChain, false}, {state, true}} {
		for _, e := range list.events {
			if err := j.offer(ctx, e, list.inState); err != nil {
				return nil, err
			}
		}
	}
	return j.finish(ctx)
}

// stagedJoin is one join over federation in progress.
type stagedJoin struct {
	s    *Server
	join *spec.Event
	keys spec.KeyLookup
	// live is set when the room is live here already (a rejoin): nothing is staged then,
	// the join goes through the ordinary receive path.
	live bool
	// stage is the numeric ID of the join's stage in the database.
	stage int64
	// offered counts the events offered (for maxJoinEvents); staged counts those staged.
	offered int
	staged  int64
	// createID is the ID of the room's create event as listed in the state.
	createID string
	// pending are offered events not staged yet.
	pending []offeredEvent
}

// offeredEvent is an event of the send_join response waiting to be staged.
type offeredEvent struct {
	event   *spec.Event
	inState bool
}

// beginJoin starts a join: it opens a stage for the response's events unless the room is
// live here already. Call discard when done.
func (s *Server) beginJoin(ctx context.Context, join *spec.Event, keys spec.KeyLookup) (*stagedJoin, error) {
	j := &stagedJoin{s: s, join: join, keys: keys}
	r, err := s.loadRoom(ctx, join.RoomID())
	switch {
	case err == nil:
		r.mu.Lock()
		j.live = len(r.extremities) > 0
		r.mu.Unlock()
	case !errors.Is(err, ErrRoomNotFound):
		return nil, err
	}
	if j.live {
		return j, nil
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.DeleteJoinStagesBefore(ctx, tx, s.now()-staleJoinStageMS); err != nil {
			return err
		}
		var err error
		j.stage, err = storage.NewJoinStage(ctx, tx, join.RoomID(), s.now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("open the staging of a join to %s: %w", join.RoomID(), err)
	}
	return j, nil
}

// discard removes the join's stage, whatever the outcome of the join.
func (j *stagedJoin) discard(ctx context.Context) {
	if j.stage == 0 {
		return
	}
	ctx = context.WithoutCancel(ctx)
	err := j.s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.DeleteJoinStage(ctx, tx, j.stage) })
	if err != nil {
		j.s.log.Warn("remove the staging of a join", "room_id", j.join.RoomID(), "err", err)
	}
}

// offer takes one event of the response, of the state (inState) or of the auth chain. It is
// staged with the next batch; events of another room or room version are ignored.
func (j *stagedJoin) offer(ctx context.Context, ev *spec.Event, inState bool) error {
	if err := j.count(); err != nil {
		return err
	}
	if j.live || ev.Version() != j.join.Version() || ev.RoomID() != j.join.RoomID() {
		return nil
	}
	if inState && ev.Type() == "m.room.create" && ev.StateKeyEquals("") {
		j.createID = ev.EventID()
	}
	j.pending = append(j.pending, offeredEvent{event: ev, inState: inState})
	if len(j.pending) >= joinBatchSize {
		return j.flush(ctx)
	}
	return nil
}

// count counts one more event of the response against maxJoinEvents.
func (j *stagedJoin) count() error {
	j.offered++
	if j.offered > maxJoinEvents {
		return fmt.Errorf("send_join response with more than %d events", maxJoinEvents)
	}
	return nil
}

// flush verifies the signatures and content hashes of the pending events and stages those
// that are kept: events whose signatures fail are dropped, events whose content hash fails
// are staged redacted. Events are verified one after the other: a key lookup fetches a
// server's keys on first use, and a concurrent lookup of the same server may fail instead
// of waiting for that fetch, which would drop good events.
func (j *stagedJoin) flush(ctx context.Context) error {
	if len(j.pending) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	rows := make([]storage.JoinStagedEvent, len(j.pending))
	kept := make([]bool, len(j.pending))
	for i, o := range j.pending {
		rows[i], kept[i] = j.verify(o)
	}
	batch := rows[:0]
	for i, row := range rows {
		if kept[i] {
			batch = append(batch, row)
		}
	}
	clear(j.pending)
	j.pending = j.pending[:0]
	err := j.s.db.WithTx(ctx, func(tx *storage.Tx) error {
		return storage.StageJoinEvents(ctx, tx, j.stage, j.staged, batch)
	})
	if err != nil {
		return fmt.Errorf("stage the events of a join: %w", err)
	}
	j.staged += int64(len(batch))
	return nil
}

// verify checks an offered event's signatures and content hash and returns the row that
// stages it, or false if it is dropped.
func (j *stagedJoin) verify(o offeredEvent) (storage.JoinStagedEvent, bool) {
	ev := o.event
	if spec.VerifyEventSignatures(ev, j.keys) != nil {
		return storage.JoinStagedEvent{}, false
	}
	if ev.CheckContentHash() != nil {
		redacted, err := ev.Redacted()
		if err != nil {
			return storage.JoinStagedEvent{}, false
		}
		ev = redacted
	}
	return storage.JoinStagedEvent{EventID: ev.EventID(), InState: o.inState, Type: ev.Type(), StateKey: ev.StateKey(),
		JSON: ev.JSON(), AuthIDs: ownAuthEventIDs(ev)}, true
}

// ownAuthEventIDs are the events ev is checked against: its auth events, plus the room's
// create event, which events of room version 12 do not list.
func ownAuthEventIDs(ev *spec.Event) []string {
	ids := ev.AuthEventIDs()
	if ev.Version().CreateEventNotInAuthEvents && ev.Type() != "m.room.create" {
		ids = append(append([]string(nil), ids...), "$"+ev.RoomID()[1:])
	}
	return ids
}

// finish checks the staged events, stores the state and accepts our join.
func (j *stagedJoin) finish(ctx context.Context) (*Event, error) {
	s := j.s
	if j.live {
		return s.ReceiveEvent(ctx, j.join, j.keys)
	}
	if err := j.flush(ctx); err != nil {
		return nil, err
	}
	if j.createID == "" {
		return nil, errors.New("send_join response without the room's create event")
	}
	err := storage.AnalyzeJoinStaging(ctx, s.db)
	if err == nil {
		err = s.db.WithTx(ctx, func(tx *storage.Tx) error { return storage.CountJoinStageDependencies(ctx, tx, j.stage) })
	}
	if err != nil {
		return nil, fmt.Errorf("order the events of a join: %w", err)
	}

	// The room's create event first: the room is stored from it.
	raw, err := storage.JoinStagedEventJSON(ctx, s.db, j.stage, j.createID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errors.New("the room's create event in the send_join response does not pass its checks")
	}
	if err != nil {
		return nil, err
	}
	create, err := spec.EventFromTrusted(raw, j.createID, j.join.Version())
	if err != nil || checkAgainst(create, map[spec.StateTuple]*Event{}, true) != nil {
		return nil, errors.New("the room's create event in the send_join response does not pass its checks")
	}
	r, err := s.loadRoom(ctx, j.join.RoomID())
	if errors.Is(err, ErrRoomNotFound) {
		r, err = s.newRoomFromCreate(ctx, create)
	}
	if err != nil {
		return nil, err
	}
	if r.version.ID != j.join.Version().ID {
		return nil, fmt.Errorf("join of room version %s to a room of version %s", j.join.Version().ID, r.version.ID)
	}
	if err := j.checkStaged(ctx, r); err != nil {
		return nil, err
	}
	return j.accept(ctx, r)
}

// checkStaged checks the staged events in auth order, a batch at a time, against their
// auth events as stored (earlier batches stored theirs), and stores those that pass as
// outliers. Events still waiting when no event is checkable rest on a cycle: left out.
func (j *stagedJoin) checkStaged(ctx context.Context, r *room) error {
	s := j.s
	authEvents := newLRU[string, *Event](joinAuthCacheSize)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		ready, err := storage.ReadyJoinStagedEvents(ctx, s.db, j.stage, joinBatchSize)
		if err != nil {
			return fmt.Errorf("read staged events of a join: %w", err)
		}
		if len(ready) == 0 {
			return nil
		}
		events := make([]*spec.Event, 0, len(ready))
		var failed []string
		for _, staged := range ready {
			ev, err := spec.EventFromTrusted(staged.JSON, staged.EventID, r.version)
			if err != nil {
				failed = append(failed, staged.EventID)
				continue
			}
			events = append(events, ev)
		}
		if err := j.loadAuthEvents(ctx, r, events, authEvents); err != nil {
			return err
		}
		var passed []*Event
		for _, ev := range events {
			if j.passesAuth(ev, authEvents) {
				passed = append(passed, &Event{Event: ev, Status: storage.EventOutlier})
			} else {
				failed = append(failed, ev.EventID())
			}
		}

		rows := make([]*storage.EventRow, len(passed))
		for i, e := range passed {
			rows[i] = s.rowOf(r, e)
		}
		var stored map[string]storage.StoredEventRef
		err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
			var err error
			if stored, err = storage.InsertEventsIfAbsent(ctx, tx, rows); err != nil {
				return fmt.Errorf("store outliers: %w", err)
			}
			passedIDs, failedIDs := make([]string, 0, len(passed)), append([]string(nil), failed...)
			for _, e := range passed {
				if usableRef(stored, e.EventID()) {
					passedIDs = append(passedIDs, e.EventID())
				} else {
					failedIDs = append(failedIDs, e.EventID())
				}
			}
			return storage.FinishJoinStageBatch(ctx, tx, j.stage, passedIDs, failedIDs)
		})
		if err != nil {
			return fmt.Errorf("check staged events of a join: %w", err)
		}
		for _, e := range passed {
			if usableRef(stored, e.EventID()) {
				ref := stored[e.EventID()]
				e.NID, e.Status = ref.NID, ref.Status
				authEvents.put(e.EventID(), e)
				if ref.Status == storage.EventOutlier {
					// Into the bounded event cache, as every stored event: the state's
					// events are read from there when the join is accepted.
					s.events.put(e.NID, e)
				}
			}
		}
	}
}

// usableRef reports whether an event that passed its checks is stored and usable: one we
// held already counts as it was stored, and one we had rejected stays rejected.
func usableRef(stored map[string]storage.StoredEventRef, eventID string) bool {
	ref, ok := stored[eventID]
	return ok && ref.Status != storage.EventRejected
}

// loadAuthEvents puts into cache the stored auth events of events that it lacks. Rejected
// events, and events of other rooms, are not usable auth events: they stay out.
func (j *stagedJoin) loadAuthEvents(ctx context.Context, r *room, events []*spec.Event, cache *lru[string, *Event]) error {
	var missing []string
	seen := map[string]bool{}
	for _, ev := range events {
		for _, id := range ownAuthEventIDs(ev) {
			if _, ok := cache.get(id); !ok && !seen[id] {
				seen[id] = true
				missing = append(missing, id)
			}
		}
	}
	if len(missing) == 0 {
		return nil
	}
	loaded, err := j.s.EventsByID(ctx, missing)
	if err != nil {
		return err
	}
	for _, e := range loaded {
		if e.Status != storage.EventRejected && e.RoomID() == r.id {
			cache.put(e.EventID(), e)
		}
	}
	return nil
}

// passesAuth checks ev against the auth rules with its own auth events, which must all be
// at hand in authEvents.
func (j *stagedJoin) passesAuth(ev *spec.Event, authEvents *lru[string, *Event]) bool {
	authState := map[spec.StateTuple]*Event{}
	for _, id := range ownAuthEventIDs(ev) {
		e, ok := authEvents.get(id)
		if !ok {
			return false
		}
		if tuple, isState := e.Tuple(); isState {
			authState[tuple] = e
		}
	}
	return checkAgainst(ev, authState, true) == nil
}

// stateNIDs reads the state of the join, the events that passed, by tuple; of two events
// listed for one tuple, the later one counts.
func (j *stagedJoin) stateNIDs(ctx context.Context) (map[spec.StateTuple]int64, error) {
	entries, err := storage.JoinStageState(ctx, j.s.db, j.stage)
	if err != nil {
		return nil, fmt.Errorf("read the state of a join: %w", err)
	}
	out := make(map[spec.StateTuple]int64, len(entries))
	for _, e := range entries {
		out[spec.StateTuple{Type: e.Type, StateKey: e.StateKey}] = e.EventNID
	}
	return out, nil
}

// accept stores the checked state as the snapshot before our join and accepts the join.
func (j *stagedJoin) accept(ctx context.Context, r *room) (*Event, error) {
	s := j.s
	stateNIDs, err := j.stateNIDs(ctx)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, 0, len(stateNIDs))
	for _, nid := range stateNIDs {
		nids = append(nids, nid)
	}
	stateBefore := make(map[spec.StateTuple]*Event, len(stateNIDs))
	for start := 0; start < len(nids); start += joinBatchSize {
		events, err := s.eventsByNID(ctx, nids[start:min(start+joinBatchSize, len(nids))])
		if err != nil {
			return nil, err
		}
		for _, e := range events {
			if tuple, ok := e.Tuple(); ok {
				stateBefore[tuple] = e
			}
		}
	}
	// Our join follows that state directly: its prev events are the resident server's
	// extremities, which we know only through the state they produced.
	if err := checkAgainst(j.join, stateBefore, false); err != nil {
		return nil, fmt.Errorf("our join does not pass the auth rules against the room's state: %w", err)
	}

	r.mu.Lock()
	if len(r.extremities) > 0 {
		// The room became live here meanwhile (another join): ours is an ordinary event now.
		r.mu.Unlock()
		return s.ReceiveEvent(ctx, j.join, j.keys)
	}
	defer r.mu.Unlock()
	var tuples *tupleBatch
	var chain *snapshotChain
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		tuples = s.tupleBatch(ctx, tx)
		var err error
		if chain, err = s.storeState(ctx, tx, r, 0, stateBefore, tuples.intern); err != nil {
			return err
		}
		for tuple, e := range stateBefore {
			if err := setCurrentState(ctx, tx, r, tuple, e); err != nil {
				return err
			}
		}
		return storage.SetCurrentSnapshot(ctx, tx, r.nid, chain.nid())
	})
	if err != nil {
		return nil, fmt.Errorf("store the state of %s: %w", r.id, err)
	}
	tuples.commit()
	s.snapshots.put(chain.nid(), snapshotEntry{chain: chain, state: stateBefore})
	r.chain, r.state, r.joined, r.joinedIndex = chain, copyState(stateBefore), nil, nil
	before := &Event{StateAfter: chain.nid()}
	return s.persistReceived(ctx, r, j.join, []*Event{before}, stateBefore, storage.EventAccepted)
}

// checkOutliers checks events received without their surroundings: signatures (failures
// are dropped), content hashes (failures are redacted) and auth against their own auth
// events, taken in auth order; events failing auth, or resting on events that did, are left
// out. It returns the events that passed, by ID.
func (s *Server) checkOutliers(ctx context.Context, byID map[string]*spec.Event, keys spec.KeyLookup) (map[string]*Event, error) {
	passed := map[string]*Event{}
	failed := map[string]bool{}
	var visit func(id string, depth int) bool
	visit = func(id string, depth int) bool {
		if _, ok := passed[id]; ok {
			return true
		}
		if failed[id] || depth > 10_000 {
			return false
		}
		ev, ok := byID[id]
		if !ok {
			// An auth event we already hold (from an earlier join, say).
			stored, err := s.EventByID(ctx, id)
			if err != nil || stored.Status == storage.EventRejected {
				failed[id] = true
				return false
			}
			passed[id] = stored
			return true
		}
		failed[id] = true // until proven otherwise; also breaks cycles
		if spec.VerifyEventSignatures(ev, keys) != nil {
			return false
		}
		if ev.CheckContentHash() != nil {
			redacted, err := ev.Redacted()
			if err != nil {
				return false
			}
			ev = redacted
		}
		authState := map[spec.StateTuple]*Event{}
		authIDs := ev.AuthEventIDs()
		if ev.Version().CreateEventNotInAuthEvents && ev.Type() != "m.room.create" {
			authIDs = append(append([]string(nil), authIDs...), "$"+ev.RoomID()[1:])
		}
		for _, authID := range authIDs {
			if !visit(authID, depth+1) {
				return false
			}
			if tuple, ok := passed[authID].Tuple(); ok {
				authState[tuple] = passed[authID]
			}
		}
		if checkAgainst(ev, authState, true) != nil {
			return false
		}
		delete(failed, id)
		passed[id] = &Event{Event: ev}
		return true
	}
	for id := range byID {
		visit(id, 0)
	}
	return passed, ctx.Err()
}
