// Package rooms is the room server: the single entry point through which every event is
// checked, persisted and given a stream position, and the reader of room state and
// timelines.
//
// Writes to one room are serialised (one writer per room at a time) by the room's lock;
// different rooms are written concurrently. Each room's current state, forward extremities
// and snapshot chain are kept in memory once loaded, so sending an event needs no reads.
package rooms

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Errors the room server returns; the API layers map them to Matrix errors.
var (
	ErrRoomNotFound  = errors.New("room not found")
	ErrEventNotFound = errors.New("event not found")
)

// Identity is the server's name and the key it signs events with.
type Identity struct {
	ServerName string
	KeyID      string
	Key        ed25519.PrivateKey
}

// Server is the room server.
type Server struct {
	db       *storage.DB
	identity Identity
	stream   *streams.Tracker
	log      *slog.Logger
	now      func() int64
	outbound Outbound
	// receiveCheck, when set, runs first on every received event (receive.go).
	receiveCheck ReceiveCheck
	// policySigner, when set, asks rooms' Policy Servers for signatures (policy.go).
	policySigner PolicySigner
	// joined, when set, hears of the users who became joined to a room (SetJoinObserver).
	joined func(roomID string, userIDs []string)

	mu       sync.Mutex
	rooms    map[string]*room
	byNID    map[int64]*room
	versions sync.Map // room NID → *spec.RoomVersion

	tuples    tupleCache
	events    *lru[int64, *Event]
	snapshots *lru[int64, snapshotEntry]
}

// snapshotEntry is a loaded snapshot: its chain and its events by tuple.
type snapshotEntry struct {
	chain *snapshotChain
	state map[spec.StateTuple]*Event
}

// Event is a stored event with its numeric ID and stream position.
type Event struct {
	*spec.Event
	NID       int64
	StreamPos int64
	// StateBefore and StateAfter are the snapshots of the room state before and after the
	// event (equal for message events).
	StateBefore int64
	StateAfter  int64
	Status      storage.EventStatus
	// ReplacesNID is, for a state event, the event it replaced in the state.
	ReplacesNID  int64
	RedactedBy   string
	SenderDevice string
	TxnID        string
}

// New makes a room server over db.
func New(db *storage.DB, identity Identity, stream *streams.Tracker, now func() int64, log *slog.Logger) *Server {
	return &Server{
		db: db, identity: identity, stream: stream, log: log, now: now,
		rooms:     map[string]*room{},
		byNID:     map[int64]*room{},
		tuples:    newTupleCache(),
		events:    newLRU[int64, *Event](50000),
		snapshots: newLRU[int64, snapshotEntry](256),
	}
}

// Stream is the server-wide stream tracker.
func (s *Server) Stream() *streams.Tracker { return s.stream }

// ServerName is the name of this homeserver.
func (s *Server) ServerName() string { return s.identity.ServerName }

// room is the in-memory head of one room. mu is held by the room's one writer, and by readers
// of the fields below while they copy them.
type room struct {
	mu      sync.Mutex
	nid     int64
	id      string
	version *spec.RoomVersion
	// chain is the snapshot of the current state; state holds its events by tuple.
	chain       *snapshotChain
	state       map[spec.StateTuple]*Event
	extremities []*Event
	// recent holds the room's newest timeline events.
	recent recentRing
	// joined lists the joined members, kept up to date as member events change the state
	// (joinedIndex nil: not computed yet).
	joined      []string
	joinedIndex map[string]int
}

// loadRoom returns the in-memory head of roomID, reading it from the database on first use.
func (s *Server) loadRoom(ctx context.Context, roomID string) (*room, error) {
	s.mu.Lock()
	r, ok := s.rooms[roomID]
	if !ok {
		r = &room{id: roomID}
		s.rooms[roomID] = r
	}
	s.mu.Unlock()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.version != nil {
		return r, nil
	}
	row, err := storage.LoadRoom(ctx, s.db, roomID)
	if errors.Is(err, storage.ErrNotFound) {
		s.mu.Lock()
		delete(s.rooms, roomID)
		s.mu.Unlock()
		return nil, ErrRoomNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("load room %s: %w", roomID, err)
	}
	version, ok := spec.LookupRoomVersion(row.Version)
	if !ok {
		return nil, fmt.Errorf("room %s has unknown version %q", roomID, row.Version)
	}
	s.versions.Store(row.NID, version)
	chain, state, err := s.loadState(ctx, row.CurrentSnapshot)
	if err != nil {
		return nil, fmt.Errorf("load state of %s: %w", roomID, err)
	}
	extremityNIDs, err := storage.Extremities(ctx, s.db, row.NID)
	if err != nil {
		return nil, err
	}
	extremities, err := s.eventsByNID(ctx, extremityNIDs)
	if err != nil {
		return nil, err
	}
	r.nid, r.chain, r.state, r.extremities = row.NID, chain, copyState(state), extremities
	// No write to this room is in flight (they hold r.mu), so every event of the room
	// stored so far has a position at or below the highest one handed out.
	r.recent.floor = s.stream.Allocated()
	s.mu.Lock()
	s.byNID[row.NID] = r
	s.mu.Unlock()
	r.version = version
	s.versions.Store(row.NID, version)
	return r, nil
}

// loadState reads a snapshot: its chain and its events by tuple. Snapshots never change, so
// the result is cached and shared: callers must not modify the map.
func (s *Server) loadState(ctx context.Context, snapshotNID int64) (*snapshotChain, map[spec.StateTuple]*Event, error) {
	if cached, ok := s.snapshots.get(snapshotNID); ok {
		return cached.chain, cached.state, nil
	}
	links, err := storage.LoadSnapshotChain(ctx, s.db, snapshotNID)
	if err != nil {
		return nil, nil, err
	}
	chain := &snapshotChain{}
	for _, l := range links {
		chain.links = append(chain.links, chainLink{nid: l.NID, depth: l.Depth, delta: l.Delta})
	}
	state, err := s.stateEvents(ctx, chain.full(nil))
	if err != nil {
		return nil, nil, err
	}
	s.snapshots.put(snapshotNID, snapshotEntry{chain: chain, state: state})
	return chain, state, nil
}

// stateEvents turns tuple NID → event NID into the events by tuple.
func (s *Server) stateEvents(ctx context.Context, full stateDelta) (map[spec.StateTuple]*Event, error) {
	nids := make([]int64, 0, len(full))
	for _, eventNID := range full {
		nids = append(nids, eventNID)
	}
	events, err := s.eventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	state := make(map[spec.StateTuple]*Event, len(events))
	for _, e := range events {
		if tuple, ok := e.Tuple(); ok {
			state[tuple] = e
		}
	}
	return state, nil
}

// StateAt returns the state of a snapshot by tuple. The map is shared: do not modify it.
func (s *Server) StateAt(ctx context.Context, snapshotNID int64) (map[spec.StateTuple]*Event, error) {
	_, state, err := s.loadState(ctx, snapshotNID)
	return state, err
}

// StateAfter returns the room state after event e.
func (s *Server) StateAfter(ctx context.Context, e *Event) (map[spec.StateTuple]*Event, error) {
	return s.StateAt(ctx, e.StateAfter)
}

// CurrentState returns a copy of the room's current state by tuple, and the room's version.
func (s *Server) CurrentState(ctx context.Context, roomID string) (map[spec.StateTuple]*Event, *spec.RoomVersion, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	state := make(map[spec.StateTuple]*Event, len(r.state))
	for k, v := range r.state {
		state[k] = v
	}
	return state, r.version, nil
}

// CurrentStateEvent returns one piece of the room's current state, or nil.
func (s *Server) CurrentStateEvent(ctx context.Context, roomID, evType, stateKey string) (*Event, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.state[spec.StateTuple{Type: evType, StateKey: stateKey}], nil
}

// Membership is user's current membership of roomID ("" if none) and the member event.
func (s *Server) Membership(ctx context.Context, roomID, userID string) (string, *Event, error) {
	e, err := s.CurrentStateEvent(ctx, roomID, "m.room.member", userID)
	if err != nil || e == nil {
		return "", nil, err
	}
	m, err := e.Membership()
	return m, e, err
}

// JoinedMembers lists the users joined to a room now, from the room's joined list (not by
// going through its state).
func (s *Server) JoinedMembers(ctx context.Context, roomID string) ([]string, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.joinedMembers()), nil
}

// ResidentServers lists the servers with users joined to a room, this one first whether it
// has any or not, the others sorted: the servers through which the room can be joined
// ("servers" of a room alias). A room this server does not know has only this one.
func (s *Server) ResidentServers(ctx context.Context, roomID string) ([]string, error) {
	self := s.identity.ServerName
	r, err := s.loadRoom(ctx, roomID)
	if errors.Is(err, ErrRoomNotFound) {
		return []string{self}, nil
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string{self}, serversOf(r.joinedMembers(), self)...), nil
}

// JoinedCount is the number of users joined to a room now.
func (s *Server) JoinedCount(ctx context.Context, roomID string) (int, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.joinedMembers()), nil
}

// RoomVersion is the version of a room.
func (s *Server) RoomVersion(ctx context.Context, roomID string) (*spec.RoomVersion, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	return r.version, nil
}

// RoomNID is the numeric ID of a room.
func (s *Server) RoomNID(ctx context.Context, roomID string) (int64, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return 0, err
	}
	return r.nid, nil
}

// TimelineEventByID reads one event that is part of a room's timeline: not an outlier, nor
// soft-failed or rejected. Client APIs use this one.
func (s *Server) TimelineEventByID(ctx context.Context, eventID string) (*Event, error) {
	e, err := s.EventByID(ctx, eventID)
	if err != nil {
		return nil, err
	}
	if e.StreamPos == 0 {
		return nil, ErrEventNotFound
	}
	return e, nil
}

// EventByID reads one event, whatever its status.
func (s *Server) EventByID(ctx context.Context, eventID string) (*Event, error) {
	row, err := storage.LoadEventByID(ctx, s.db, eventID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, ErrEventNotFound
	}
	if err != nil {
		return nil, err
	}
	return s.fromRow(row)
}

// EventsFromRows turns stored rows into events (through the cache).
func (s *Server) EventsFromRows(rows []*storage.EventRow) ([]*Event, error) {
	out := make([]*Event, 0, len(rows))
	for _, row := range rows {
		e, err := s.fromRow(row)
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, nil
}

// eventsByNID reads events by numeric ID, from the cache where possible.
func (s *Server) eventsByNID(ctx context.Context, nids []int64) ([]*Event, error) {
	out := make([]*Event, 0, len(nids))
	var missing []int64
	for _, nid := range nids {
		if e, ok := s.events.get(nid); ok {
			out = append(out, e)
		} else {
			missing = append(missing, nid)
		}
	}
	if len(missing) == 0 {
		return out, nil
	}
	rows, err := storage.LoadEventsByNID(ctx, s.db, missing)
	if err != nil {
		return nil, err
	}
	loaded, err := s.EventsFromRows(rows)
	if err != nil {
		return nil, err
	}
	return append(out, loaded...), nil
}

func (s *Server) fromRow(row *storage.EventRow) (*Event, error) {
	if e, ok := s.events.get(row.NID); ok {
		if e.RedactedBy == row.RedactedBy {
			return e, nil
		}
	}
	rv, err := s.versionOfRoomNID(row.RoomNID)
	if err != nil {
		return nil, err
	}
	parsed, err := spec.EventFromTrusted(row.JSON, row.EventID, rv)
	if err != nil {
		return nil, fmt.Errorf("stored event %s: %w", row.EventID, err)
	}
	if row.RedactedBy != "" {
		if parsed, err = parsed.Redacted(); err != nil {
			return nil, fmt.Errorf("redact stored event %s: %w", row.EventID, err)
		}
	}
	e := &Event{Event: parsed, NID: row.NID, StreamPos: row.StreamPos, StateBefore: row.StateBefore,
		StateAfter: row.StateAfter, Status: row.Status, ReplacesNID: row.ReplacesNID, RedactedBy: row.RedactedBy, SenderDevice: row.SenderDevice, TxnID: row.TxnID}
	s.events.put(e.NID, e)
	return e, nil
}

// versionOfRoomNID is the version of a room by numeric ID.
func (s *Server) versionOfRoomNID(roomNID int64) (*spec.RoomVersion, error) {
	if rv, ok := s.versions.Load(roomNID); ok {
		return rv.(*spec.RoomVersion), nil
	}
	var version string
	if err := s.db.QueryRow(context.Background(), `SELECT room_version FROM rooms WHERE room_nid = $1`, roomNID).Scan(&version); err != nil {
		return nil, fmt.Errorf("version of room %d: %w", roomNID, err)
	}
	rv, ok := spec.LookupRoomVersion(version)
	if !ok {
		return nil, fmt.Errorf("room %d has unknown version %q", roomNID, version)
	}
	s.versions.Store(roomNID, rv)
	return rv, nil
}

// EventsByID loads stored events by event ID, in no particular order; IDs not stored are
// left out.
func (s *Server) EventsByID(ctx context.Context, ids []string) ([]*Event, error) {
	rows, err := storage.LoadEventsByID(ctx, s.db, ids)
	if err != nil {
		return nil, err
	}
	return s.EventsFromRows(rows)
}

// EventsByNID reads events by numeric ID (in no particular order).
func (s *Server) EventsByNID(ctx context.Context, nids []int64) ([]*Event, error) {
	return s.eventsByNID(ctx, nids)
}

// copyState copies a state map (the cached ones are shared and must not change).
func copyState(state map[spec.StateTuple]*Event) map[spec.StateTuple]*Event {
	out := make(map[spec.StateTuple]*Event, len(state))
	for k, v := range state {
		out[k] = v
	}
	return out
}

// SetJoinObserver makes f hear of the users, ours or other servers', who become joined to a
// room's current state, once that is committed: one call per change of the state, which
// names every user it joined (all the members at once when this server joins a room). f runs
// in its own goroutine: it must not hold up the room. Call it before the server takes
// requests.
func (s *Server) SetJoinObserver(f func(roomID string, userIDs []string)) { s.joined = f }

// newlyJoined lists the users whom the member events among changes make joined while the
// room's current state does not have them joined yet. Call it before applying changes.
func (r *room) newlyJoined(changes []*Event) []string {
	var users []string
	for _, e := range changes {
		if e.Type() != "m.room.member" || e.StateKey() == nil {
			continue
		}
		if m, _ := e.Membership(); m != "join" {
			continue
		}
		userID := *e.StateKey()
		if old, ok := r.state[spec.StateTuple{Type: "m.room.member", StateKey: userID}]; ok {
			if m, _ := old.Membership(); m == "join" {
				continue
			}
		}
		users = append(users, userID)
	}
	return users
}

// announceJoins tells the join observer of users newly joined to r.
func (s *Server) announceJoins(r *room, users []string) {
	if s.joined == nil || len(users) == 0 {
		return
	}
	go s.joined(r.id, users)
}

// setState changes one entry of the room's current state, keeping the joined list in step.
func (r *room) setState(tuple spec.StateTuple, e *Event) {
	r.state[tuple] = e
	if tuple.Type != "m.room.member" || r.joinedIndex == nil {
		return
	}
	m, _ := e.Membership()
	i, was := r.joinedIndex[tuple.StateKey]
	switch {
	case m == "join" && !was:
		r.joinedIndex[tuple.StateKey] = len(r.joined)
		r.joined = append(r.joined, tuple.StateKey)
	case m != "join" && was:
		last := len(r.joined) - 1
		r.joined[i] = r.joined[last]
		r.joinedIndex[r.joined[i]] = i
		r.joined = r.joined[:last]
		delete(r.joinedIndex, tuple.StateKey)
	}
}

// joinedMembers lists the room's joined members. The slice is the room's own: callers use
// it while holding r.mu and do not keep or modify it.
func (r *room) joinedMembers() []string {
	if r.joinedIndex != nil {
		return r.joined
	}
	r.joined, r.joinedIndex = nil, map[string]int{}
	for tuple, e := range r.state {
		if tuple.Type != "m.room.member" {
			continue
		}
		if m, _ := e.Membership(); m == "join" {
			r.joinedIndex[tuple.StateKey] = len(r.joined)
			r.joined = append(r.joined, tuple.StateKey)
		}
	}
	return r.joined
}
