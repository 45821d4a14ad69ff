package rooms

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestOutlierJoinsTheRoomLater: an event first known as an outlier (fetched as someone's
// auth event, say) that then arrives as a PDU takes its place in the room: in the timeline,
// with a stream position, once. An event rejected once stays rejected.
func TestOutlierJoinsTheRoomLater(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		remote := newRemote("remote.example")
		alice, rita := "@alice:test.example", "@rita:remote.example"
		roomID := createTestRoom(t, s, "10", alice)

		state, prev := head(t, s, roomID)
		join := remote.event(t, s, roomID, state, prev, rita, "m.room.member", ptr(rita), map[string]string{"membership": "join"})
		if n, err := s.StoreOutliers(ctx, roomID, []*spec.Event{join}, remote.keys(s)); err != nil || n != 1 {
			t.Fatalf("store as outlier: %d, %v", n, err)
		}
		outlier, err := s.EventByID(ctx, join.EventID())
		if err != nil || outlier.Status != storage.EventOutlier || outlier.StreamPos != 0 {
			t.Fatalf("outlier stored as %+v, %v", outlier, err)
		}
		got, err := s.ReceiveEvent(ctx, join, remote.keys(s))
		if err != nil || got.Status != storage.EventAccepted || got.StreamPos == 0 || got.NID != outlier.NID {
			t.Fatalf("the outlier arriving as a PDU: %+v, %v", got, err)
		}
		if m, _, _ := s.Membership(ctx, roomID, rita); m != "join" {
			t.Fatalf("rita's membership %q", m)
		}
		nid, _ := s.RoomNID(ctx, roomID)
		events, _, err := s.Timeline(ctx, nid, 0, s.Stream().Current(), 100)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, e := range events {
			if e.EventID() == join.EventID() {
				count++
			}
		}
		if count != 1 {
			t.Fatalf("the join is %d times in the timeline", count)
		}

		// Rejected once, rejected again.
		state, prev = head(t, s, roomID)
		intruder := remote.event(t, s, roomID, state, prev, "@mallory:remote.example", "m.room.message", nil, json.RawMessage(`{"body":"x"}`))
		if _, err := s.ReceiveEvent(ctx, intruder, remote.keys(s)); err == nil {
			t.Fatal("intruder accepted")
		}
		if _, err := s.ReceiveEvent(ctx, intruder, remote.keys(s)); err == nil {
			t.Fatal("intruder accepted the second time")
		}
	})
}
