package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

func newTestServer(t testing.TB, db *storage.DB) *Server {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(nil)
	maxPos, err := storage.MaxStreamPos(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(1_700_000_000_000)
	return New(db, Identity{ServerName: "test.example", KeyID: "ed25519:k", Key: key},
		streams.NewTracker(maxPos), func() int64 { return clock.Add(1) }, slog.New(slog.NewTextHandler(io.Discard, nil)))
}

func stateReq(sender, evType, stateKey string, content any) EventRequest {
	b, _ := json.Marshal(content)
	return EventRequest{Sender: sender, Type: evType, StateKey: &stateKey, Content: b}
}

func createTestRoom(t testing.TB, s *Server, version string, creator string) string {
	t.Helper()
	rv, _ := spec.LookupRoomVersion(version)
	createContent := map[string]any{"room_version": version}
	if !rv.CreatorInSender {
		createContent["creator"] = creator
	}
	cc, _ := json.Marshal(createContent)
	users := map[string]int{creator: 100}
	if rv.CreatorsHaveInfinitePower {
		users = map[string]int{} // v12: creators outrank everyone and may not be listed
	}
	roomID, _, err := s.CreateRoom(context.Background(), rv, creator, cc, []EventRequest{
		stateReq(creator, "m.room.member", creator, map[string]string{"membership": "join"}),
		stateReq(creator, "m.room.power_levels", "", map[string]any{"users": users}),
		stateReq(creator, "m.room.join_rules", "", map[string]string{"join_rule": "public"}),
	})
	if err != nil {
		t.Fatalf("create room v%s: %v", version, err)
	}
	return roomID
}

// TestSendAndReload sends events into rooms of every version, then reads the rooms back
// through a fresh room server (as after a restart) and checks state and timeline.
func TestSendAndReload(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		alice, bob := "@alice:test.example", "@bob:test.example"
		for id := range spec.RoomVersions() {
			roomID := createTestRoom(t, s, id, alice)
			if _, err := s.Send(ctx, roomID, stateReq(bob, "m.room.member", bob, map[string]string{"membership": "join"})); err != nil {
				t.Fatalf("v%s: bob joins: %v", id, err)
			}
			msg := EventRequest{Sender: bob, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi","msgtype":"m.text"}`), DeviceID: "DEV", TxnID: "t1"}
			first, err := s.Send(ctx, roomID, msg)
			if err != nil {
				t.Fatalf("v%s: send: %v", id, err)
			}
			again, err := s.Send(ctx, roomID, msg)
			if err != nil || again[0].EventID() != first[0].EventID() {
				t.Fatalf("v%s: resend with same txn gave %v, %v; want the first event", id, again, err)
			}
			// Bob may not change the power levels.
			_, err = s.Send(ctx, roomID, stateReq(bob, "m.room.power_levels", "", map[string]any{"users": map[string]int{bob: 100}}))
			var authErr *spec.AuthError
			if !errors.As(err, &authErr) {
				t.Fatalf("v%s: bob changing power levels: %v, want an auth error", id, err)
			}

			fresh := newTestServer(t, db)
			state, _, err := fresh.CurrentState(ctx, roomID)
			if err != nil {
				t.Fatalf("v%s: reload: %v", id, err)
			}
			if len(state) != 5 {
				t.Fatalf("v%s: %d state events after reload, want 5", id, len(state))
			}
			if m, _, err := fresh.Membership(ctx, roomID, bob); err != nil || m != "join" {
				t.Fatalf("v%s: bob's membership after reload = %q, %v", id, m, err)
			}
			nid, _ := fresh.RoomNID(ctx, roomID)
			events, limited, err := fresh.Timeline(ctx, nid, 0, fresh.Stream().Current(), 100)
			if err != nil || limited || len(events) != 6 {
				t.Fatalf("v%s: timeline = %d events (limited %v), %v; want 6", id, len(events), limited, err)
			}
			if events[5].EventID() != first[0].EventID() || events[5].TxnID != "t1" {
				t.Fatalf("v%s: last timeline event %s, want the message", id, events[5].EventID())
			}
		}
	})
}

// TestConcurrentSends sends from many goroutines into a few rooms and checks that every
// acknowledged event is stored once, with distinct stream positions, and that each room's
// events form one chain.
func TestConcurrentSends(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		alice := "@alice:test.example"
		var roomIDs []string
		for i := 0; i < 3; i++ {
			roomIDs = append(roomIDs, createTestRoom(t, s, spec.DefaultRoomVersion, alice))
		}
		const senders, perSender = 6, 20
		var wg sync.WaitGroup
		ids := make(chan string, senders*perSender)
		for g := 0; g < senders; g++ {
			wg.Add(1)
			go func(g int) {
				defer wg.Done()
				for i := 0; i < perSender; i++ {
					content, _ := json.Marshal(map[string]string{"body": fmt.Sprintf("%d-%d", g, i)})
					evs, err := s.Send(ctx, roomIDs[(g+i)%len(roomIDs)], EventRequest{Sender: alice, Type: "m.room.message", Content: content})
					if err != nil {
						t.Errorf("send: %v", err)
						return
					}
					ids <- evs[0].EventID()
				}
			}(g)
		}
		wg.Wait()
		close(ids)
		seen := map[string]bool{}
		for id := range ids {
			seen[id] = true
		}
		if len(seen) != senders*perSender {
			t.Fatalf("%d distinct events acknowledged, want %d", len(seen), senders*perSender)
		}
		positions := map[int64]bool{}
		total := 0
		for _, roomID := range roomIDs {
			nid, _ := s.RoomNID(ctx, roomID)
			events, _, err := s.Timeline(ctx, nid, 0, s.Stream().Current(), 1000)
			if err != nil {
				t.Fatal(err)
			}
			for i, e := range events {
				if positions[e.StreamPos] {
					t.Fatalf("stream position %d used twice", e.StreamPos)
				}
				positions[e.StreamPos] = true
				if i > 0 && (len(e.PrevEventIDs()) != 1 || e.PrevEventIDs()[0] != events[i-1].EventID()) {
					t.Fatalf("event %d of %s does not follow the one before it", i, roomID)
				}
				if seen[e.EventID()] {
					total++
				}
			}
		}
		if total != senders*perSender {
			t.Fatalf("%d acknowledged events in timelines, want %d", total, senders*perSender)
		}
	})
}
