package integration

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestFederatedConversation: two eggs servers on loopback with certificates from one test
// CA. Alice on the first creates a public room; Bob on the second joins it through the
// first (make_join/send_join), and the two talk: each message crosses in a federation
// transaction and arrives in the other's /sync.
func TestFederatedConversation(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		start := time.Now()
		step := func(what string) { t.Logf("%6.0f ms  %s", float64(time.Since(start).Microseconds())/1000, what) }
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob := hs2.Register(t, "bob")

		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Across"})
		step("servers up")
		bobSince := initialSync(t, bob)
		step("bob synced")
		if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.ServerName}}); err != nil {
			t.Fatalf("bob joins through %s: %v", hs1.ServerName, err)
		}
		step("bob joined")
		aliceSince := syncUntil(t, alice, "", func(resp *mautrix.RespSync) bool {
			return memberJoined(resp, room.RoomID, bob.UserID)
		})
		step("alice saw the join")

		if _, err := alice.SendText(ctx, room.RoomID, "hello from hs1"); err != nil {
			t.Fatal(err)
		}
		var got []string
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			got = append(got, timelineBodies(resp, room.RoomID)...)
			return len(got) > 0 && got[len(got)-1] == "hello from hs1"
		})

		step("bob got alice's message")
		if _, err := bob.SendText(ctx, room.RoomID, "hello from hs2"); err != nil {
			t.Fatal(err)
		}
		got = nil
		syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			got = append(got, timelineBodies(resp, room.RoomID)...)
			return len(got) > 0 && got[len(got)-1] == "hello from hs2"
		})
		step("alice got bob's message")
	})
}

// memberJoined reports whether a sync response shows user joined to room.
func memberJoined(resp *mautrix.RespSync, roomID id.RoomID, user id.UserID) bool {
	room, ok := resp.Rooms.Join[roomID]
	if !ok {
		return false
	}
	for _, list := range [][]*event.Event{room.State.Events, room.Timeline.Events} {
		for _, e := range list {
			if e.Type.Type == "m.room.member" && e.GetStateKey() == user.String() && e.Content.Raw["membership"] == "join" {
				return true
			}
		}
	}
	return false
}

// TestThreeServers: a room on hs1 joined from hs2 and then hs3. hs2 learns of hs3's join
// from hs1 (the only server that received it), and every message reaches every server.
func TestThreeServers(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		_, hs := federatedServers(t, engine, 3)
		hs1, hs2, hs3 := hs[0], hs[1], hs[2]
		alice, bob, carol := hs1.Register(t, "alice"), hs2.Register(t, "bob"), hs3.Register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		bobSince := initialSync(t, bob)
		joinVia(t, room.RoomID, hs1, bob, carol)
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			return memberJoined(resp, room.RoomID, carol.UserID)
		})
		if _, err := carol.SendText(ctx, room.RoomID, "hello from hs3"); err != nil {
			t.Fatal(err)
		}
		var got []string
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			got = append(got, timelineBodies(resp, room.RoomID)...)
			return len(got) > 0 && got[len(got)-1] == "hello from hs3"
		})
	})
}

// TestServerDownCatchesUp: hs2 is down while alice writes on hs1; her messages wait in hs1's
// queue (with backoff). Once hs2 is back and talks to hs1, hs1 sends everything it missed,
// in order, and bob reads all of it.
func TestServerDownCatchesUp(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		joinVia(t, room.RoomID, hs1, bob)
		bobSince := initialSync(t, bob)

		hs2.Stop()
		const missed = 30
		for i := 0; i < missed; i++ {
			if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("while you were out %d", i)); err != nil {
				t.Fatal(err)
			}
		}
		hs2.Restart()
		// Bob writes: hs2 reaches hs1, which learns hs2 is back and flushes its queue.
		if _, err := bob.SendText(ctx, room.RoomID, "back"); err != nil {
			t.Fatal(err)
		}
		// The newest missed message arriving means the queue was flushed; a sync may show
		// only the newest part of a burst (a limited timeline), so read them all back.
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			return slices.Contains(timelineBodies(resp, room.RoomID), fmt.Sprintf("while you were out %d", missed-1))
		})
		messages, err := bob.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 200)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, e := range messages.Chunk {
			if body, ok := e.Content.Raw["body"].(string); ok {
				seen[body] = true
			}
		}
		for i := 0; i < missed; i++ {
			if !seen[fmt.Sprintf("while you were out %d", i)] {
				t.Fatalf("bob never received message %d", i)
			}
		}
	})
}
