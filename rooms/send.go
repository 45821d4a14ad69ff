package rooms

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/scrambledeggs/eggs/streams"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// EventRequest is a new event that a local user asks to send.
type EventRequest struct {
	Sender   string
	Type     string
	StateKey *string
	Content  json.RawMessage
	// Redacts is the target of an m.room.redaction (placed per the room version's rules).
	Redacts string
	// DeviceID and TxnID make the send idempotent: a repeat returns the first event.
	DeviceID string
	TxnID    string
}

// maxPrevEvents caps how many forward extremities a new event references.
// NOTSPEC: the spec sets no number; Synapse uses 10.
const maxPrevEvents = 10

// maxDepth is the largest depth the spec allows (2^53 - 1).
const maxDepth = 1<<53 - 1

// Send builds, signs, authorises and persists events of local users into an existing room, in
// order and atomically: either all are stored or none. It returns them with their stream
// positions. A request whose transaction ID was seen before returns the event sent then.
func (s *Server) Send(ctx context.Context, roomID string, reqs ...EventRequest) ([]*Event, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(reqs) == 1 && reqs[0].TxnID != "" {
		eventID, err := storage.LookupTxn(ctx, s.db, reqs[0].Sender, reqs[0].DeviceID, txnKey(roomID, reqs[0].TxnID))
		if err != nil {
			return nil, err
		}
		if eventID != "" {
			e, err := s.EventByID(ctx, eventID)
			if err != nil {
				return nil, err
			}
			return []*Event{e}, nil
		}
	}
	return s.appendLocked(ctx, r, reqs, nil)
}

// txnKey scopes a client transaction ID to the room it was used in (room IDs never contain
// spaces).
func txnKey(roomID, txnID string) string { return roomID + " " + txnID }

// CreateRoom creates a room of the given version with a create event from creator and then
// the events of reqs, all in one transaction. It returns the new room's ID.
func (s *Server) CreateRoom(ctx context.Context, version *spec.RoomVersion, creator string, createContent json.RawMessage, reqs []EventRequest) (string, []*Event, error) {
	emptyKey := ""
	create := spec.ProtoEvent{
		Type: "m.room.create", StateKey: &emptyKey, Sender: creator, Content: createContent,
		Depth: 1, OriginServerTS: s.now(), PrevEvents: []string{}, AuthEvents: []string{},
	}
	var createEvent *spec.Event
	var roomNID int64
	// In room version 12 the room ID is the create event's hash, so two identical create
	// requests in the same millisecond would name the same room: move the timestamp on.
	for attempt := 0; ; attempt++ {
		if !version.RoomIDIsCreateEventHash {
			create.RoomID = "!" + randomString(18) + ":" + s.identity.ServerName
		}
		var err error
		createEvent, err = create.Build(version, s.identity.ServerName, s.identity.KeyID, s.identity.Key)
		if err != nil {
			return "", nil, fmt.Errorf("build create event: %w", err)
		}
		if err := spec.CheckAuth(createEvent, map[spec.StateTuple]*spec.Event{}); err != nil {
			return "", nil, err
		}
		err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
			roomNID, err = storage.InsertRoom(ctx, tx, createEvent.RoomID(), version.ID)
			return err
		})
		if err == nil {
			break
		}
		if _, lookupErr := storage.LoadRoom(ctx, s.db, createEvent.RoomID()); lookupErr != nil || attempt == 10 {
			return "", nil, fmt.Errorf("store room: %w", err)
		}
		create.OriginServerTS++
	}
	roomID := createEvent.RoomID()
	s.versions.Store(roomNID, version)
	r := &room{nid: roomNID, id: roomID, version: version, chain: &snapshotChain{}, state: map[spec.StateTuple]*Event{}}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.recent.floor = s.stream.Allocated()
	s.mu.Lock()
	s.rooms[roomID] = r
	s.byNID[roomNID] = r
	s.mu.Unlock()
	events, err := s.appendLocked(ctx, r, reqs, createEvent)
	if err != nil {
		s.mu.Lock()
		delete(s.rooms, roomID)
		delete(s.byNID, roomNID)
		s.mu.Unlock()
		return "", nil, err
	}
	return roomID, events, nil
}

// pending is an event built and authorised but not yet stored.
type pending struct {
	req   EventRequest
	event *spec.Event
}

// appendLocked builds and stores events at the head of r; r.mu is held. first, if not nil,
// is an already built event (the create event) stored before the others.
func (s *Server) appendLocked(ctx context.Context, r *room, reqs []EventRequest, first *spec.Event) ([]*Event, error) {
	// Build and authorise every event against the current state plus the events built so far
	// (an overlay, so that a failure part-way leaves the room untouched and a send into a
	// large room copies nothing).
	state := stateView{base: r.state, overlay: map[spec.StateTuple]*spec.Event{}}
	prev := make([]*spec.Event, 0, len(r.extremities))
	for _, e := range r.extremities {
		prev = append(prev, e.Event)
	}
	var built []pending
	if first != nil {
		built = append(built, pending{event: first})
		tuple, _ := first.Tuple()
		state.overlay[tuple] = first
		prev = []*spec.Event{first}
	}
	for _, req := range reqs {
		e, err := s.build(r, req, state, prev)
		if err != nil {
			return nil, err
		}
		if e, err = s.policySign(ctx, r, state, e); err != nil {
			return nil, err
		}
		built = append(built, pending{req: req, event: e})
		if tuple, ok := e.Tuple(); ok {
			state.overlay[tuple] = e
		}
		prev = []*spec.Event{e}
	}
	return s.persistLocked(ctx, r, built)
}

// stateView is a room's current state with events not yet stored laid over it.
type stateView struct {
	base    map[spec.StateTuple]*Event
	overlay map[spec.StateTuple]*spec.Event
}

func (v stateView) get(tuple spec.StateTuple) *spec.Event {
	if e, ok := v.overlay[tuple]; ok {
		return e
	}
	if e, ok := v.base[tuple]; ok {
		return e.Event
	}
	return nil
}

// build makes one signed event from req at the head described by state and prev, and checks
// it against the auth rules.
func (s *Server) build(r *room, req EventRequest, state stateView, prev []*spec.Event) (*spec.Event, error) {
	if len(prev) > maxPrevEvents {
		prev = prev[len(prev)-maxPrevEvents:]
	}
	proto := spec.ProtoEvent{
		Type: req.Type, StateKey: req.StateKey, Sender: req.Sender, RoomID: r.id, Content: req.Content,
		OriginServerTS: s.now(), PrevEvents: make([]string, 0, len(prev)), Redacts: req.Redacts,
	}
	if proto.Content == nil {
		proto.Content = json.RawMessage("{}")
	}
	var depth int64
	for _, p := range prev {
		proto.PrevEvents = append(proto.PrevEvents, p.EventID())
		if p.Depth() > depth {
			depth = p.Depth()
		}
	}
	proto.Depth = min(depth+1, maxDepth)
	authState := map[spec.StateTuple]*spec.Event{}
	createTuple := spec.StateTuple{Type: "m.room.create"}
	if create := state.get(createTuple); create != nil {
		authState[createTuple] = create
	}
	proto.AuthEvents = []string{}
	for _, tuple := range spec.AuthEventSelection(r.version, req.Type, req.StateKey, req.Sender, proto.Content) {
		if e := state.get(tuple); e != nil {
			proto.AuthEvents = append(proto.AuthEvents, e.EventID())
			authState[tuple] = e
		}
	}
	e, err := proto.Build(r.version, s.identity.ServerName, s.identity.KeyID, s.identity.Key)
	if err != nil {
		return nil, fmt.Errorf("build %s event: %w", req.Type, err)
	}
	if err := spec.CheckAuth(e, authState); err != nil {
		return nil, err
	}
	return e, nil
}

// persistLocked stores built events in one transaction, then moves the room's head.
func (s *Server) persistLocked(ctx context.Context, r *room, built []pending) ([]*Event, error) {
	positions := make([]int64, len(built))
	for i := range built {
		positions[i] = s.stream.Allocate()
	}
	chain := r.chain
	stateChanges := map[spec.StateTuple]*Event{}
	var tuples *tupleBatch
	var stored []*Event
	// The first event names (up to maxPrevEvents of) the forward extremities as its
	// prev_events; those stop being extremities, any others stay.
	referenced := map[string]bool{}
	for _, id := range built[0].event.PrevEventIDs() {
		referenced[id] = true
	}
	var removeExtremities []int64
	var keptExtremities []*Event
	for _, e := range r.extremities {
		if referenced[e.EventID()] {
			removeExtremities = append(removeExtremities, e.NID)
		} else {
			keptExtremities = append(keptExtremities, e)
		}
	}
	var notify []string
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		chain = r.chain
		stored = stored[:0]
		notify = notify[:0]
		clear(stateChanges)
		tuples = s.tupleBatch(ctx, tx)
		for i, p := range built {
			e := &Event{Event: p.event, StreamPos: positions[i], StateBefore: chain.nid(), StateAfter: chain.nid(),
				SenderDevice: p.req.DeviceID, TxnID: p.req.TxnID}
			var tupleNID int64
			tuple, isState := e.Tuple()
			if isState {
				var err error
				if tupleNID, err = tuples.intern(tuple); err != nil {
					return err
				}
				if replaced, ok := stateChanges[tuple]; ok {
					e.ReplacesNID = replaced.NID
				} else if replaced, ok := r.state[tuple]; ok {
					e.ReplacesNID = replaced.NID
				}
			}
			row := &storage.EventRow{
				EventID: e.EventID(), RoomNID: r.nid, StreamPos: e.StreamPos, Depth: e.Depth(), Type: e.Type(),
				StateKey: e.StateKey(), Sender: e.Sender(), OriginTS: e.OriginServerTS(), StateBefore: e.StateBefore, StateAfter: e.StateAfter,
				ReplacesNID: e.ReplacesNID, SenderDevice: e.SenderDevice, TxnID: e.TxnID, JSON: e.JSON(),
			}
			nid, err := storage.InsertEvent(ctx, tx, row)
			if err != nil {
				return fmt.Errorf("insert event: %w", err)
			}
			e.NID = nid
			if isState {
				depth, baseNID, delta, keep := chain.extend(stateDelta{tupleNID: nid})
				snapshotNID, err := storage.InsertSnapshot(ctx, tx, r.nid, baseNID, depth, delta)
				if err != nil {
					return fmt.Errorf("insert snapshot: %w", err)
				}
				chain = chain.withLink(keep, chainLink{nid: snapshotNID, depth: depth, delta: delta})
				e.StateAfter = snapshotNID
				if err := storage.SetStateAfter(ctx, tx, nid, snapshotNID); err != nil {
					return err
				}
				if err := setCurrentState(ctx, tx, r, tuple, e); err != nil {
					return err
				}
				stateChanges[tuple] = e
			}
			if p.req.TxnID != "" {
				if err := storage.InsertTxn(ctx, tx, p.req.Sender, p.req.DeviceID, txnKey(r.id, p.req.TxnID), e.EventID(), s.now()); err != nil {
					return err
				}
			}
			if target := e.Redacts(); target != "" {
				if err := storage.SetRedactedBy(ctx, tx, target, e.EventID()); err != nil {
					return err
				}
			}
			stored = append(stored, e)
		}
		if chain != r.chain {
			if err := storage.SetCurrentSnapshot(ctx, tx, r.nid, chain.nid()); err != nil {
				return err
			}
		}
		last := stored[len(stored)-1]
		if s.outbound != nil {
			for _, e := range stored {
				if dests := s.destinations(r, e); len(dests) > 0 {
					if err := s.outbound.QueuePDU(ctx, tx, dests, e.NID); err != nil {
						return fmt.Errorf("queue for federation: %w", err)
					}
					notify = append(notify, dests...)
				}
			}
		}
		return storage.ReplaceExtremities(ctx, tx, r.nid, removeExtremities, last.NID)
	})
	if err != nil {
		for _, pos := range positions {
			s.stream.Finish(pos)
		}
		return nil, err
	}
	r.chain = chain
	tuples.commit()
	changes := make([]*Event, 0, len(stateChanges))
	for _, e := range stateChanges {
		changes = append(changes, e)
	}
	joins := r.newlyJoined(changes)
	for tuple, e := range stateChanges {
		r.setState(tuple, e)
	}
	r.extremities = append(keptExtremities, stored[len(stored)-1])
	for _, e := range stored {
		s.events.put(e.NID, e)
		r.recent.add(e)
		if target := e.Redacts(); target != "" {
			s.applyRedaction(ctx, r, target)
		}
	}
	wake := r.wakeList(stored)
	for i, pos := range positions {
		s.stream.MarkChanged(pos, changeKeys(r, stored[i])...)
	}
	for _, pos := range positions {
		s.stream.Finish(pos, wake...)
	}
	if len(notify) > 0 {
		s.outbound.Notify(notify...)
	}
	s.announceJoins(r, joins)
	return stored, nil
}

// wakeList is everyone whose /sync may change because of events: the room's joined members
// and the targets of membership events (invitees, the kicked, …).
func (r *room) wakeList(events []*Event) []string {
	users := r.joinedMembers()
	for _, e := range events {
		if e.Type() == "m.room.member" && e.StateKey() != nil {
			// Full slice expression: never append into the room's own joined list.
			users = append(users[:len(users):len(users)], *e.StateKey())
		}
	}
	return users
}

// tupleBatch interns state tuples inside one transaction. The numeric IDs it creates reach
// the shared cache only through commit, once the transaction committed: a rolled-back insert
// must not leave a numeric ID in the cache that no row has.
type tupleBatch struct {
	s     *Server
	ctx   context.Context
	tx    *storage.Tx
	fresh map[spec.StateTuple]int64
}

// tuples starts a batch for tx; a transaction that is retried starts a new one.
func (s *Server) tupleBatch(ctx context.Context, tx *storage.Tx) *tupleBatch {
	return &tupleBatch{s: s, ctx: ctx, tx: tx, fresh: map[spec.StateTuple]int64{}}
}

// intern returns the numeric ID of a state tuple, creating it if needed.
func (b *tupleBatch) intern(tuple spec.StateTuple) (int64, error) {
	if nid, ok := b.s.tuples.nid(tuple); ok {
		return nid, nil
	}
	if nid, ok := b.fresh[tuple]; ok {
		return nid, nil
	}
	nid, err := storage.InternTuple(b.ctx, b.tx, tuple.Type, tuple.StateKey)
	if err != nil {
		return 0, fmt.Errorf("intern %s: %w", tuple, err)
	}
	b.fresh[tuple] = nid
	return nid, nil
}

// commit caches the batch's numeric IDs; call it after the transaction committed.
func (b *tupleBatch) commit() {
	if b == nil {
		return
	}
	for tuple, nid := range b.fresh {
		b.s.tuples.add(tuple, nid)
	}
}

// applyRedaction drops a redacted event from the cache and, if it is part of the current
// state, replaces it there by its redacted form (which later auth checks must see).
func (s *Server) applyRedaction(ctx context.Context, r *room, eventID string) {
	row, err := storage.LoadEventByID(ctx, s.db, eventID)
	if errors.Is(err, storage.ErrNotFound) {
		return
	}
	if err != nil {
		s.log.Warn("reload redacted event", "event_id", eventID, "err", err)
		return
	}
	s.events.forget(row.NID)
	if row.StateKey == nil {
		if redacted, err := s.fromRow(row); err == nil {
			r.recent.replace(redacted)
		}
		return
	}
	// Cached snapshots may hold the unredacted event; redactions of state are rare.
	s.snapshots.clear()
	tuple := spec.StateTuple{Type: row.Type, StateKey: *row.StateKey}
	if current, ok := r.state[tuple]; ok && current.NID == row.NID {
		redacted, err := s.fromRow(row)
		if err != nil {
			s.log.Warn("redact state event", "event_id", eventID, "err", err)
			return
		}
		r.setState(tuple, redacted)
		r.recent.replace(redacted)
	}
}

// randomString is n random letters, for opaque room IDs of old room versions.
func randomString(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	b := make([]byte, n)
	_, _ = rand.Read(b)
	for i := range b {
		b[i] = letters[int(b[i])%len(letters)]
	}
	return string(b)
}

// changeKeys names what an accepted event changes, for the stream's change index: the room's
// timeline and, for a member event, the member's memberships.
func changeKeys(r *room, e *Event) []string {
	keys := []string{streams.RoomKey(r.nid)}
	if e.Type() == "m.room.member" && e.StateKey() != nil {
		keys = append(keys, streams.MembershipKey(*e.StateKey()), streams.RoomMembersKey(r.nid))
	}
	return keys
}

// Outbound sends local events to the other servers of their rooms (the federation sender).
// QueuePDU runs inside the transaction that stores the event, so that what a client was told
// is sent is never lost; Notify follows once that transaction committed.
type Outbound interface {
	QueuePDU(ctx context.Context, tx *storage.Tx, destinations []string, eventNID int64) error
	Notify(destinations ...string)
}

// SetOutbound connects the federation sender. Call it before the server takes requests.
func (s *Server) SetOutbound(o Outbound) { s.outbound = o }

// destinations are the other servers that must receive a local event of room r: those of
// the members joined before it (r.state is still the state before the event while it is
// being stored), which includes a member being kicked or leaving. Invites to other servers
// travel through the invite endpoint instead, as the spec wants.
func (s *Server) destinations(r *room, _ *Event) []string {
	return serversOf(r.joinedMembers(), s.identity.ServerName)
}

// serversOf lists, sorted and once each, the servers of users, except except.
func serversOf(users []string, except string) []string {
	seen := map[string]bool{except: true, "": true}
	var out []string
	for _, user := range users {
		if server := serverOf(user); !seen[server] {
			seen[server] = true
			out = append(out, server)
		}
	}
	sort.Strings(out)
	return out
}

// serverOf is the server name of a user ID ("" if it has none).
func serverOf(userID string) string {
	if i := strings.IndexByte(userID, ':'); i >= 0 {
		return userID[i+1:]
	}
	return ""
}
