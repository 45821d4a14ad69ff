package rooms

import (
	"context"
	"errors"
	"fmt"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Memberships that cross servers without this server being part of the room, or before it
// stores them (server-server API "Inviting to a room", "Leaving Rooms (Rejecting Invites)",
// "Knocking upon a room"):
//
//   - an invite of a remote user is built here, co-signed by the invitee's server, and only
//     then stored (PrepareEvent, SendPrepared);
//   - an invite of a local user to a room we do not have, a knock sent through a resident
//     server, and the leave that rejects or retracts either are kept "outside" the room: the
//     member event is stored as an outlier with a stream position and becomes the user's row
//     of the current state, so that /sync lists the room under "invite", "knock" or "leave"
//     (with the stripped state carried in the event's unsigned) until a join through a
//     resident server brings the room's real state (RecordOutsideMembership).

// PrepareEvent builds, signs and authorises an event of a local user against the room's
// current state without storing it: an invite that the invitee's server must co-sign first.
func (s *Server) PrepareEvent(ctx context.Context, roomID string, req EventRequest) (*spec.Event, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	state := stateView{base: r.state, overlay: map[spec.StateTuple]*spec.Event{}}
	prev := make([]*spec.Event, 0, len(r.extremities))
	for _, e := range r.extremities {
		prev = append(prev, e.Event)
	}
	return s.build(r, req, state, prev)
}

// SendPrepared stores an event that PrepareEvent built, as another server returned it with
// its signature added, through the path of every local event: it becomes the room's newest
// event and is queued for the room's other servers. The room may have moved on while the
// other server signed, so the event must still pass the auth rules against the current
// state. Storing an event that is already stored returns it.
func (s *Server) SendPrepared(ctx context.Context, ev *spec.Event) (*Event, error) {
	r, err := s.loadRoom(ctx, ev.RoomID())
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if existing, err := s.EventByID(ctx, ev.EventID()); err == nil {
		return existing, nil
	} else if !errors.Is(err, ErrEventNotFound) {
		return nil, err
	}
	if ev.Version().ID != r.version.ID {
		return nil, fmt.Errorf("event of room version %s for a room of version %s", ev.Version().ID, r.version.ID)
	}
	if err := checkAgainst(ev, r.state, false); err != nil {
		return nil, err
	}
	ev, err = s.policySign(ctx, r, stateView{base: r.state}, ev)
	if err != nil {
		return nil, err
	}
	stored, err := s.persistLocked(ctx, r, []pending{{event: ev}})
	if err != nil {
		return nil, err
	}
	return stored[0], nil
}

// strippedStateTypes are the state events that describe a room to an invitee or knocker
// (client-server API "Stripped state"; m.room.create is required since v1.16).
var strippedStateTypes = []string{
	"m.room.create", "m.room.join_rules", "m.room.canonical_alias", "m.room.avatar",
	"m.room.name", "m.room.encryption", "m.room.topic",
}

// StrippedState is the current state that describes a room to a server whose user is invited
// or knocks (invite_room_state, knock_room_state), as full events: the stripped-state types,
// then the member events of members (the inviter, so that the invitee sees who invited them).
func (s *Server) StrippedState(ctx context.Context, roomID string, members ...string) ([]*Event, error) {
	r, err := s.loadRoom(ctx, roomID)
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]*Event, 0, len(strippedStateTypes)+len(members))
	for _, t := range strippedStateTypes {
		if e, ok := r.state[spec.StateTuple{Type: t}]; ok {
			out = append(out, e)
		}
	}
	for _, m := range members {
		if e, ok := r.state[spec.StateTuple{Type: "m.room.member", StateKey: m}]; ok {
			out = append(out, e)
		}
	}
	return out, nil
}

// ReceiveInvite stores an invite of a local user that another server sent to the invite
// endpoint and that we co-signed. When a local user is joined to the room, the invite is a
// room event like any other: it goes through ReceiveEvent (if its prev events are missing,
// the inviting server's transaction brings it later, and nil is returned). Otherwise the
// room's DAG is not here and the invite is recorded outside the room.
func (s *Server) ReceiveInvite(ctx context.Context, ev *spec.Event, keys spec.KeyLookup) (*Event, error) {
	r, err := s.loadRoom(ctx, ev.RoomID())
	if err != nil && !errors.Is(err, ErrRoomNotFound) {
		return nil, err
	}
	if err == nil && s.hasLocalMember(r) {
		e, err := s.ReceiveEvent(ctx, ev, keys)
		var missing *MissingEventsError
		if errors.As(err, &missing) {
			return nil, nil
		}
		return e, err
	}
	return s.RecordOutsideMembership(ctx, ev)
}

// hasLocalMember reports whether a user of this server is joined to r.
func (s *Server) hasLocalMember(r *room) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.extremities) == 0 {
		return false
	}
	for _, user := range r.joinedMembers() {
		if serverOf(user) == s.identity.ServerName {
			return true
		}
	}
	return false
}

// RecordOutsideMembership stores the member event of a local user for a room this server is
// not part of — an invite from another server, our knock or the leave that rejects an invite
// or retracts a knock — as an outlier with a stream position, and makes it the user's
// current membership, waking their /sync. The room gets a header (its ID and version) if it
// had none. Recording an event already stored returns it.
func (s *Server) RecordOutsideMembership(ctx context.Context, ev *spec.Event) (*Event, error) {
	tuple, isState := ev.Tuple()
	if ev.Type() != "m.room.member" || !isState {
		return nil, fmt.Errorf("%s is not a member event", ev.EventID())
	}
	if _, err := ev.Membership(); err != nil {
		return nil, err
	}
	r, err := s.loadRoom(ctx, ev.RoomID())
	if errors.Is(err, ErrRoomNotFound) {
		r, err = s.newRoomHeader(ctx, ev.RoomID(), ev.Version())
	}
	if err != nil {
		return nil, err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.version.ID != ev.Version().ID {
		return nil, fmt.Errorf("event of room version %s for a room of version %s", ev.Version().ID, r.version.ID)
	}
	if existing, err := s.EventByID(ctx, ev.EventID()); err == nil {
		return existing, nil
	} else if !errors.Is(err, ErrEventNotFound) {
		return nil, err
	}
	pos := s.stream.Allocate()
	e := &Event{Event: ev, Status: storage.EventOutlier, StreamPos: pos}
	err = s.db.WithTx(ctx, func(tx *storage.Tx) error {
		nid, err := storage.InsertEvent(ctx, tx, s.rowOf(r, e))
		if err != nil {
			return fmt.Errorf("insert event: %w", err)
		}
		e.NID = nid
		return setCurrentState(ctx, tx, r, tuple, e)
	})
	if err != nil {
		s.stream.Finish(pos)
		return nil, fmt.Errorf("record membership %s: %w", ev.EventID(), err)
	}
	s.events.put(e.NID, e)
	// The ring holds every event of the room above its floor, this one included.
	r.recent.add(e)
	s.stream.MarkChanged(pos, streams.RoomKey(r.nid), streams.MembershipKey(tuple.StateKey), streams.RoomMembersKey(r.nid))
	s.stream.Finish(pos, tuple.StateKey)
	return e, nil
}

// newRoomHeader stores the header of a room known only through a membership recorded
// outside it: no state, no forward extremities.
func (s *Server) newRoomHeader(ctx context.Context, roomID string, version *spec.RoomVersion) (*room, error) {
	err := s.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.InsertRoom(ctx, tx, roomID, version.ID)
		return err
	})
	if err != nil {
		// Another writer may have stored it first.
		if r, loadErr := s.loadRoom(ctx, roomID); loadErr == nil {
			return r, nil
		}
		return nil, fmt.Errorf("store room %s: %w", roomID, err)
	}
	return s.loadRoom(ctx, roomID)
}

// OutsideMembership is a local user's membership of a room as last recorded by
// RecordOutsideMembership, if that is still their current membership there: the member
// event (invite, knock or leave), or nil.
func (s *Server) OutsideMembership(ctx context.Context, roomID, userID string) (*Event, error) {
	memberships, err := storage.UserMemberships(ctx, s.db, userID, "invite", "knock", "leave")
	if err != nil {
		return nil, err
	}
	for _, m := range memberships {
		if m.RoomID != roomID {
			continue
		}
		events, err := s.eventsByNID(ctx, []int64{m.EventNID})
		if err != nil {
			return nil, err
		}
		if len(events) == 1 && events[0].Status == storage.EventOutlier {
			return events[0], nil
		}
	}
	return nil, nil
}
