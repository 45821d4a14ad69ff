package rooms

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// What the federation API needs of the room server beyond receiving events: templates for
// other servers' membership events (make_join, make_leave, make_knock) and the state and
// auth chains that go with them (send_join, /state, /event_auth).

// Template is the unsigned event that another server completes and signs (server-server
// API "Joining Rooms": the response of make_join).
func (s *Server) Template(ctx context.Context, roomID, sender, evType string, stateKey *string, content json.RawMessage) (map[string]any, *spec.RoomVersion, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	prev := r.extremities
	if len(prev) > maxPrevEvents {
		prev = prev[len(prev)-maxPrevEvents:]
	}
	prevIDs := make([]string, 0, len(prev))
	var depth int64
	for _, p := range prev {
		prevIDs = append(prevIDs, p.EventID())
		depth = max(depth, p.Depth())
	}
	authIDs := []string{}
	for _, tuple := range spec.AuthEventSelection(r.version, evType, stateKey, sender, content) {
		if e, ok := r.state[tuple]; ok {
			authIDs = append(authIDs, e.EventID())
		}
	}
	template := map[string]any{
		"type": evType, "sender": sender, "room_id": roomID, "content": content,
		"origin": serverOf(sender), "origin_server_ts": s.now(), "depth": min(depth+1, maxDepth),
		"prev_events": prevIDs, "auth_events": authIDs,
	}
	if stateKey != nil {
		template["state_key"] = *stateKey
	}
	if r.version.PrevEventsAreHashPairs {
		// Room versions 1 and 2 name events as [event_id, {"sha256": hash}] pairs.
		template["prev_events"] = hashPairs(prev)
		authEvents := make([]*Event, 0, len(authIDs))
		for _, tuple := range spec.AuthEventSelection(r.version, evType, stateKey, sender, content) {
			if e, ok := r.state[tuple]; ok {
				authEvents = append(authEvents, e)
			}
		}
		template["auth_events"] = hashPairs(authEvents)
	}
	return template, r.version, nil
}

// hashPairs are [event_id, {"sha256": reference hash}] pairs of events (room versions 1, 2).
func hashPairs(events []*Event) [][]any {
	out := make([][]any, 0, len(events))
	for _, e := range events {
		hashes := map[string]string{}
		if sum, err := e.ReferenceHash(); err == nil {
			hashes["sha256"] = spec.EncodeBase64(sum[:])
		}
		out = append(out, []any{e.EventID(), hashes})
	}
	return out
}

// StateBefore is the room state before event e, as a list.
func (s *Server) StateBefore(ctx context.Context, e *Event) ([]*Event, error) {
	state, err := s.StateAt(ctx, e.StateBefore)
	if err != nil {
		return nil, err
	}
	out := make([]*Event, 0, len(state))
	for _, se := range state {
		out = append(out, se)
	}
	return out, nil
}

// maxAuthChain bounds an auth chain walk. NOTSPEC: auth chains of real rooms are far
// shorter (they follow power levels, join rules and the members of one room); the bound
// keeps a hostile DAG from exhausting memory.
const maxAuthChain = 200_000

// AuthChain is every event reachable from events through auth_events (not including
// events themselves unless reachable), loaded in batches.
func (s *Server) AuthChain(ctx context.Context, events []*Event) ([]*Event, error) {
	seen := map[string]bool{}
	var frontier []string
	for _, e := range events {
		if e.Version().CreateEventNotInAuthEvents && e.Type() != "m.room.create" {
			// Room version 12 events do not list the create event, which every auth
			// chain still rests on: it is named by the room ID.
			if id := "$" + e.RoomID()[1:]; !seen[id] {
				seen[id] = true
				frontier = append(frontier, id)
			}
		}
		for _, id := range e.AuthEventIDs() {
			if !seen[id] {
				seen[id] = true
				frontier = append(frontier, id)
			}
		}
	}
	var chain []*Event
	for len(frontier) > 0 {
		if len(seen) > maxAuthChain {
			return nil, fmt.Errorf("auth chain longer than %d events", maxAuthChain)
		}
		loaded, err := s.EventsByID(ctx, frontier)
		if err != nil {
			return nil, err
		}
		frontier = frontier[:0]
		for _, e := range loaded {
			chain = append(chain, e)
			for _, id := range e.AuthEventIDs() {
				if !seen[id] {
					seen[id] = true
					frontier = append(frontier, id)
				}
			}
		}
	}
	return chain, nil
}

// CheckWouldPass reports whether an event of sender would pass the auth rules against the
// room's current state now (make_join and make_leave refuse early when it would not).
func (s *Server) CheckWouldPass(ctx context.Context, roomID, sender, evType string, stateKey *string, content json.RawMessage) error {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	state := stateView{base: r.state, overlay: map[spec.StateTuple]*spec.Event{}}
	prev := make([]*spec.Event, 0, len(r.extremities))
	for _, e := range r.extremities {
		prev = append(prev, e.Event)
	}
	// Built and signed by us, never stored: the auth rules look at its fields only.
	_, err = s.build(r, EventRequest{Sender: sender, Type: evType, StateKey: stateKey, Content: content}, state, prev)
	return err
}

// Forward queues an event that reached us from one server for the other servers of its room
// (a join accepted through send_join, say, which only its resident server received), leaving
// out the servers in except.
func (s *Server) Forward(ctx context.Context, e *Event, except ...string) error {
	if s.outbound == nil {
		return nil
	}
	r, err := s.loadRoom(ctx, e.RoomID())
	if err != nil {
		return err
	}
	r.mu.Lock()
	dests := s.destinations(r, e)
	r.mu.Unlock()
	dests = slices.DeleteFunc(dests, func(d string) bool { return slices.Contains(except, d) })
	if len(dests) == 0 {
		return nil
	}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		return s.outbound.QueuePDU(ctx, tx, dests, e.NID)
	})
	if err != nil {
		return fmt.Errorf("queue %s for federation: %w", e.EventID(), err)
	}
	s.outbound.Notify(dests...)
	return nil
}
