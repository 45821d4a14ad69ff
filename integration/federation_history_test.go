package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestFederatedHistoryBackfill: alice writes 30 messages in a room on hs1 before bob on hs2
// joins. hs2 holds nothing of that history, so bob's /messages pages back past his join
// into history that hs2 backfills from hs1 (server-server API "Backfilling and retrieving
// missing events") at negative stream positions: he gets every message exactly once, in
// order, down to the room's create event, after which no end token is given. Paging
// forwards again from the oldest token walks the same history up to the present.
func TestFederatedHistoryBackfill(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob := hs2.Register(t, "bob")

		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Old history"})
		const messages = 30
		for i := range messages {
			if _, err := alice.SendText(ctx, room.RoomID, fmt.Sprintf("message %02d", i)); err != nil {
				t.Fatal(err)
			}
		}
		joinVia(t, room.RoomID, hs1, bob)

		// Backwards from the present, in small pages, to the end.
		var (
			bodies  []string
			seen    = map[id.EventID]bool{}
			from    string
			created bool
			deepest string
		)
		for pages := 1; ; pages++ {
			if pages > 100 {
				t.Fatalf("pagination does not end: %d pages, %d messages", pages, len(bodies))
			}
			resp, err := bob.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 7)
			if err != nil {
				t.Fatalf("page %d from %q: %v", pages, from, err)
			}
			if created && len(resp.Chunk) > 0 {
				t.Fatalf("events after the create event: %v", resp.Chunk[0].ID)
			}
			for _, e := range resp.Chunk {
				if seen[e.ID] {
					t.Fatalf("event %s returned twice", e.ID)
				}
				seen[e.ID] = true
				if e.Type == event.StateCreate {
					created = true
				}
				if e.Type == event.EventMessage {
					bodies = append(bodies, e.Content.Raw["body"].(string))
				}
			}
			if resp.End == "" {
				break
			}
			if resp.End == from {
				t.Fatalf("the end token %q does not move", from)
			}
			from = resp.End
			deepest = from
		}
		if !created {
			t.Fatal("pagination ended before the room's create event")
		}
		if len(bodies) != messages {
			t.Fatalf("got %d messages, want %d: %v", len(bodies), messages, bodies)
		}
		for i, body := range bodies {
			if want := fmt.Sprintf("message %02d", messages-1-i); body != want {
				t.Fatalf("message %d is %q, want %q", i, body, want)
			}
		}
		if !strings.HasPrefix(deepest, "s-") {
			t.Fatalf("the deepest token is %q, want one in backfilled history (negative)", deepest)
		}

		// Paging backwards again is served from what hs2 now holds: the same events.
		again := map[id.EventID]bool{}
		from = ""
		for range 100 {
			resp, err := bob.Messages(ctx, room.RoomID, from, "", mautrix.DirectionBackward, nil, 50)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range resp.Chunk {
				again[e.ID] = true
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if len(again) != len(seen) {
			t.Fatalf("second pass saw %d events, first %d", len(again), len(seen))
		}

		// Forwards from deep in the backfilled history: the later messages in order, each
		// once, through the join and up to the present.
		var forward []string
		forwardSeen := map[id.EventID]bool{}
		from = deepest
		for range 100 {
			resp, err := bob.Messages(ctx, room.RoomID, from, "", mautrix.DirectionForward, nil, 10)
			if err != nil {
				t.Fatalf("forwards from %q: %v", from, err)
			}
			for _, e := range resp.Chunk {
				if forwardSeen[e.ID] {
					t.Fatalf("event %s returned twice going forwards", e.ID)
				}
				forwardSeen[e.ID] = true
				if e.Type == event.EventMessage {
					forward = append(forward, e.Content.Raw["body"].(string))
				}
			}
			if resp.End == "" || len(resp.Chunk) == 0 {
				break
			}
			from = resp.End
		}
		if len(forward) == 0 || forward[len(forward)-1] != fmt.Sprintf("message %02d", messages-1) {
			t.Fatalf("forward pagination does not reach the present: %v", forward)
		}
		for i := 1; i < len(forward); i++ {
			if forward[i-1] >= forward[i] {
				t.Fatalf("forward pagination out of order: %v", forward)
			}
		}
		if !forwardSeen[id.EventID(ownMemberEventID(t, bob, room.RoomID))] {
			t.Fatal("forward pagination skipped bob's join")
		}
	})
}

// ownMemberEventID is the event ID of the client's user's current member event in the room.
func ownMemberEventID(t *testing.T, cli *mautrix.Client, roomID id.RoomID) string {
	t.Helper()
	members, err := cli.Members(context.Background(), roomID)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range members.Chunk {
		if e.GetStateKey() == cli.UserID.String() {
			return e.ID.String()
		}
	}
	t.Fatalf("no member event of %s", cli.UserID)
	return ""
}
