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

// maxJoinEvents bounds the state and auth chain taken from a send_join response. NOTSPEC:
// rooms with far more state exist in theory; this keeps a hostile response from exhausting
// memory (the partial-state join of MSC3706 is how large rooms are joined).
const maxJoinEvents = 500_000

// JoinFromState stores a room joined over federation: state is the room state before join
// and authChain its auth chain, as a resident server sent them. Events that fail their
// checks are left out (a state event that fails leaves its tuple out of the state). It
// returns our stored join event.
func (s *Server) JoinFromState(ctx context.Context, join *spec.Event, state, authChain []*spec.Event, keys spec.KeyLookup) (*Event, error) {
	if len(state)+len(authChain) > maxJoinEvents {
		return nil, fmt.Errorf("send_join response with %d events", len(state)+len(authChain))
	}
	rv := join.Version()
	byID := map[string]*spec.Event{}
	for _, list := range [][]*spec.Event{authChain, state} {
		for _, e := range list {
			if e.Version() != rv || e.RoomID() != join.RoomID() {
				continue
			}
			byID[e.EventID()] = e
		}
	}
	var create *spec.Event
	for _, e := range state {
		if e.Type() == "m.room.create" && e.StateKeyEquals("") {
			create = byID[e.EventID()]
		}
	}
	if create == nil {
		return nil, errors.New("send_join response without the room's create event")
	}

	checked, err := s.checkOutliers(ctx, byID, keys)
	if err != nil {
		return nil, err
	}
	if _, ok := checked[create.EventID()]; !ok {
		return nil, errors.New("the room's create event in the send_join response does not pass its checks")
	}
	r, err := s.loadRoom(ctx, join.RoomID())
	if errors.Is(err, ErrRoomNotFound) {
		r, err = s.newRoomFromCreate(ctx, checked[create.EventID()].Event)
	}
	if err != nil {
		return nil, err
	}

	r.mu.Lock()
	locked := true
	defer func() {
		if locked {
			r.mu.Unlock()
		}
	}()
	if len(r.extremities) > 0 {
		// NOTSPEC: rejoining a room we still have goes through the ordinary receive path.
		r.mu.Unlock()
		locked = false
		return s.ReceiveEvent(ctx, join, keys)
	}

	// Store the outliers and the state as the snapshot before the join.
	stateBefore := map[spec.StateTuple]*Event{}
	newTuples := map[spec.StateTuple]int64{}
	var chain *snapshotChain
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		clear(stateBefore)
		clear(newTuples)
		for _, e := range checked {
			if existing, err := storage.LoadEventByID(ctx, tx, e.EventID()); err == nil {
				e.NID = existing.NID
				continue
			} else if !errors.Is(err, storage.ErrNotFound) {
				return err
			}
			e.Status = storage.EventOutlier
			nid, err := storage.InsertEvent(ctx, tx, s.rowOf(r, e))
			if err != nil {
				return fmt.Errorf("store outlier %s: %w", e.EventID(), err)
			}
			e.NID = nid
		}
		for _, se := range state {
			if e, ok := checked[se.EventID()]; ok {
				if tuple, isState := e.Tuple(); isState {
					stateBefore[tuple] = e
				}
			}
		}
		intern := func(tuple spec.StateTuple) (int64, error) {
			if nid, ok := newTuples[tuple]; ok {
				return nid, nil
			}
			nid, err := s.internTuple(ctx, tx, tuple)
			if err == nil {
				newTuples[tuple] = nid
			}
			return nid, err
		}
		var err error
		if chain, err = s.storeState(ctx, tx, r, 0, stateBefore, intern); err != nil {
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
	for tuple, nid := range newTuples {
		s.tuples.add(tuple, nid)
	}
	r.chain, r.state, r.joined, r.joinedIndex = chain, copyState(stateBefore), nil, nil

	// Our join follows that state directly: its prev events are the resident server's
	// extremities, which we know only through the state they produced.
	if err := checkAgainst(join, stateBefore, false); err != nil {
		return nil, fmt.Errorf("our join does not pass the auth rules against the room's state: %w", err)
	}
	before := &Event{StateAfter: chain.nid()}
	return s.persistReceived(ctx, r, join, []*Event{before}, stateBefore, storage.EventAccepted)
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
