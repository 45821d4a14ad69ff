package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// remoteServer signs events as another homeserver would.
type remoteServer struct {
	name  string
	keyID string
	key   ed25519.PrivateKey
	ts    int64
}

func newRemote(name string) *remoteServer {
	_, key, _ := ed25519.GenerateKey(nil)
	return &remoteServer{name: name, keyID: "ed25519:r", key: key, ts: 1_800_000_000_000}
}

func (rs *remoteServer) keys(s *Server) spec.KeyLookup {
	return func(server, keyID string, _ int64) (ed25519.PublicKey, error) {
		switch server {
		case rs.name:
			return rs.key.Public().(ed25519.PublicKey), nil
		case s.identity.ServerName:
			return s.identity.Key.Public().(ed25519.PublicKey), nil
		}
		return nil, fmt.Errorf("no key for %s", server)
	}
}

// event builds an event of roomID whose auth events are chosen from state and whose only
// prev event is prev.
func (rs *remoteServer) event(t *testing.T, s *Server, roomID string, state map[spec.StateTuple]*Event, prev *Event, sender, evType string, stateKey *string, content any) *spec.Event {
	t.Helper()
	rv, err := s.RoomVersion(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(content)
	rs.ts++
	proto := spec.ProtoEvent{Type: evType, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: raw,
		PrevEvents: []string{prev.EventID()}, AuthEvents: []string{}, Depth: prev.Depth() + 1, OriginServerTS: rs.ts}
	for _, tuple := range spec.AuthEventSelection(rv, evType, stateKey, sender, raw) {
		if e, ok := state[tuple]; ok {
			proto.AuthEvents = append(proto.AuthEvents, e.EventID())
		}
	}
	ev, err := proto.Build(rv, rs.name, rs.keyID, rs.key)
	if err != nil {
		t.Fatalf("build %s: %v", evType, err)
	}
	return ev
}

func head(t *testing.T, s *Server, roomID string) (map[spec.StateTuple]*Event, *Event) {
	t.Helper()
	r, err := s.loadRoom(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return copyState(r.state), r.extremities[len(r.extremities)-1]
}

func ptr(s string) *string { return &s }

// TestReceiveEvents takes remote events through every check of "Checks performed on receipt
// of a PDU": accepted joins and messages, dropped forgeries, redacted bad hashes, rejected
// auth failures, soft-failed events, and a fork resolved by state resolution.
func TestReceiveEvents(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, version := range []string{"10", "12"} {
			t.Run("v"+version, func(t *testing.T) { testReceive(t, db, version) })
		}
	})
}

func testReceive(t *testing.T, db *storage.DB, version string) {
	ctx := context.Background()
	s := newTestServer(t, db)
	remote := newRemote("remote.example")
	keys := remote.keys(s)
	alice, rita, mallory := "@alice:test.example", "@rita:remote.example", "@mallory:remote.example"
	roomID := createTestRoom(t, s, version, alice)

	// Rita joins: accepted, in the state and the timeline.
	state, prev := head(t, s, roomID)
	join := remote.event(t, s, roomID, state, prev, rita, "m.room.member", ptr(rita), map[string]string{"membership": "join"})
	got, err := s.ReceiveEvent(ctx, join, keys)
	if err != nil || got.Status != storage.EventAccepted || got.StreamPos == 0 {
		t.Fatalf("remote join: %+v, %v", got, err)
	}
	if m, _, _ := s.Membership(ctx, roomID, rita); m != "join" {
		t.Fatalf("rita's membership after her join = %q", m)
	}
	again, err := s.ReceiveEvent(ctx, join, keys)
	if err != nil || again.NID != got.NID {
		t.Fatalf("receiving the join twice: %v, %v", again, err)
	}

	// A message with a forged signature is dropped: nothing stored.
	state, prev = head(t, s, roomID)
	forger := newRemote("remote.example")
	forged := forger.event(t, s, roomID, state, prev, rita, "m.room.message", nil, map[string]string{"body": "forged"})
	if _, err := s.ReceiveEvent(ctx, forged, keys); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("forged event: %v, want ErrBadSignature", err)
	}
	if _, err := s.EventByID(ctx, forged.EventID()); !errors.Is(err, ErrEventNotFound) {
		t.Fatalf("forged event was stored: %v", err)
	}

	// A message whose content was changed after signing is stored redacted.
	msg := remote.event(t, s, roomID, state, prev, rita, "m.room.message", nil, map[string]string{"body": "original"})
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(msg.JSON(), &obj)
	obj["content"] = json.RawMessage(`{"body":"tampered"}`)
	tamperedJSON, _ := json.Marshal(obj)
	tampered, err := spec.ParseEvent(tamperedJSON, msg.Version())
	if err != nil {
		t.Fatal(err)
	}
	if tampered.EventID() != msg.EventID() {
		t.Fatalf("tampering with content changed the event ID")
	}
	got, err = s.ReceiveEvent(ctx, tampered, keys)
	if err != nil || got.Status != storage.EventAccepted {
		t.Fatalf("tampered message: %v, %v", got, err)
	}
	if string(got.Content()) != "{}" {
		t.Fatalf("tampered message stored with content %s, want it redacted", got.Content())
	}

	// Mallory never joined: her message is rejected, stored as such, and not in the timeline.
	state, prev = head(t, s, roomID)
	intruder := remote.event(t, s, roomID, state, prev, mallory, "m.room.message", nil, map[string]string{"body": "let me in"})
	_, err = s.ReceiveEvent(ctx, intruder, keys)
	var rejected *RejectedError
	if !errors.As(err, &rejected) {
		t.Fatalf("message from a non-member: %v, want rejection", err)
	}
	stored, err := s.EventByID(ctx, intruder.EventID())
	if err != nil || stored.Status != storage.EventRejected || stored.StreamPos != 0 {
		t.Fatalf("rejected event stored as %+v, %v", stored, err)
	}

	// Unknown prev events are reported so the caller can fetch them.
	orphanPrev := remote.event(t, s, roomID, state, prev, rita, "m.room.message", nil, map[string]string{"body": "never sent"})
	orphan := remote.event(t, s, roomID, state, &Event{Event: orphanPrev}, rita, "m.room.message", nil, map[string]string{"body": "orphan"})
	var missing *MissingEventsError
	if _, err := s.ReceiveEvent(ctx, orphan, keys); !errors.As(err, &missing) || !missing.Prev || missing.EventIDs[0] != orphanPrev.EventID() {
		t.Fatalf("event with an unknown prev event: %v", err)
	}

	// Soft-fail: Alice bans Rita; a message Rita sent from before the ban (its prev event is
	// her join) passes against its own state but not against the current state.
	joinEvent, err := s.EventByID(ctx, join.EventID())
	if err != nil {
		t.Fatal(err)
	}
	joinState, err := s.StateAfter(ctx, joinEvent)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.member", rita, map[string]string{"membership": "ban"})); err != nil {
		t.Fatalf("ban: %v", err)
	}
	late := remote.event(t, s, roomID, joinState, joinEvent, rita, "m.room.message", nil, map[string]string{"body": "sent before the ban"})
	got, err = s.ReceiveEvent(ctx, late, keys)
	if err != nil || got.Status != storage.EventSoftFailed || got.StreamPos != 0 {
		t.Fatalf("late message from a banned user: %+v, %v; want soft-failed", got, err)
	}
	_, extremity := head(t, s, roomID)
	if extremity.EventID() == late.EventID() {
		t.Fatalf("a soft-failed event became a forward extremity")
	}

	// A fork: Rita's server saw the room before the ban and changes nothing she may not; but
	// Alice and a remote admin change the topic concurrently. The current state is the
	// resolution of both branches, and the next local event joins them.
	state, prev = head(t, s, roomID)
	if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.topic", "", map[string]string{"topic": "local"})); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.power_levels", "", powerLevelsFor(version, alice, map[string]int{"@admin:remote.example": 100}))); err != nil {
		t.Fatal(err)
	}
	adminJoinState, adminPrev := head(t, s, roomID)
	adminJoin := remote.event(t, s, roomID, adminJoinState, adminPrev, "@admin:remote.example", "m.room.member", ptr("@admin:remote.example"), map[string]string{"membership": "join"})
	if _, err := s.ReceiveEvent(ctx, adminJoin, keys); err != nil {
		t.Fatalf("admin joins: %v", err)
	}
	forkState, forkPrev := head(t, s, roomID)
	if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.topic", "", map[string]string{"topic": "alice's"})); err != nil {
		t.Fatal(err)
	}
	remoteTopic := remote.event(t, s, roomID, forkState, forkPrev, "@admin:remote.example", "m.room.topic", ptr(""), map[string]string{"topic": "remote's"})
	got, err = s.ReceiveEvent(ctx, remoteTopic, keys)
	if err != nil || got.Status != storage.EventAccepted {
		t.Fatalf("concurrent remote topic: %+v, %v", got, err)
	}
	r, _ := s.loadRoom(ctx, roomID)
	if len(r.extremities) != 2 {
		t.Fatalf("%d forward extremities after a fork, want 2", len(r.extremities))
	}
	topic, _ := s.CurrentStateEvent(ctx, roomID, "m.room.topic", "")
	merged, err := s.Send(ctx, roomID, EventRequest{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"merge"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if len(merged[0].PrevEventIDs()) != 2 {
		t.Fatalf("the next local event has prev_events %v, want both branches", merged[0].PrevEventIDs())
	}
	// A restarted server reads the same current state back.
	fresh := newTestServer(t, db)
	freshTopic, err := fresh.CurrentStateEvent(ctx, roomID, "m.room.topic", "")
	if err != nil || freshTopic.EventID() != topic.EventID() {
		t.Fatalf("topic after reload = %v, %v; want %s", freshTopic, err, topic.EventID())
	}
	if m, _, _ := fresh.Membership(ctx, roomID, rita); m != "ban" {
		t.Fatalf("rita after reload: %q, want ban", m)
	}
}

// powerLevelsFor is a power-levels content giving the creator 100 (before v12, where creators
// are not listed) and users their levels.
func powerLevelsFor(version, creator string, users map[string]int) map[string]any {
	rv, _ := spec.LookupRoomVersion(version)
	all := map[string]int{}
	for u, l := range users {
		all[u] = l
	}
	if !rv.CreatorsHaveInfinitePower {
		all[creator] = 100
	}
	return map[string]any{"users": all}
}
