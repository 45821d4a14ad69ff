package clientapi

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// fakeClock is a clock that tests move by hand.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// TestTypingTracker follows one room's typing set through starts, refreshes, stops and
// expiry, and checks which stream windows see each change.
func TestTypingTracker(t *testing.T) {
	db := storagetest.NewDB(t, storage.SQLite)
	stream := streams.NewTracker(0)
	clock := &fakeClock{now: time.Unix(1700000000, 0)}
	members := func(context.Context, string) ([]string, error) { return []string{"@a:x", "@b:x"}, nil }
	tracker := newTypingTracker(db, stream, members, slog.New(slog.NewTextHandler(io.Discard, nil)), clock.Now)
	const room = "!r:x"

	tracker.set(room, "@a:x", true, time.Hour)
	first := stream.Current()
	if users, changed := tracker.changed(room, 0, first); !changed || !slices.Equal(users, []string{"@a:x"}) {
		t.Fatalf("after start: %v %v", users, changed)
	}
	tracker.set(room, "@a:x", true, time.Hour) // a refresh changes nothing
	if stream.Current() != first {
		t.Fatalf("a refresh took a stream position")
	}
	if _, changed := tracker.changed(room, first, stream.Current()); changed {
		t.Fatalf("a refresh shows as a change")
	}
	tracker.set(room, "@b:x", true, time.Hour)
	if users := tracker.current(room); !slices.Equal(users, []string{"@a:x", "@b:x"}) {
		t.Fatalf("current = %v", users)
	}
	tracker.set(room, "@a:x", false, 0)
	if users, changed := tracker.changed(room, first, stream.Current()); !changed || !slices.Equal(users, []string{"@b:x"}) {
		t.Fatalf("after stop: %v %v", users, changed)
	}

	// Expiry: the timer's callback removes b and takes a position.
	beforeExpiry := stream.Current()
	clock.Advance(2 * time.Hour)
	tracker.expire(room)
	if users, changed := tracker.changed(room, beforeExpiry, stream.Current()); !changed || len(users) != 0 {
		t.Fatalf("after expiry: %v %v", users, changed)
	}
	if tracker.rooms[room].timer != nil {
		t.Fatalf("timer still set with nobody typing")
	}

	// Positions handed out are reserved in the database before they are readable.
	maxPos, err := storage.MaxStreamPos(context.Background(), db)
	if err != nil || maxPos < stream.Current() {
		t.Fatalf("MaxStreamPos = %d, %v; below the stream's %d", maxPos, err, stream.Current())
	}
}

// TestTypingTrackerForgets drops idle rooms beyond maxTypingRooms and reports them as
// changed to a /sync from before they were dropped.
func TestTypingTrackerForgets(t *testing.T) {
	db := storagetest.NewDB(t, storage.SQLite)
	stream := streams.NewTracker(0)
	clock := &fakeClock{now: time.Unix(1700000000, 0)}
	tracker := newTypingTracker(db, stream, func(context.Context, string) ([]string, error) { return nil, nil },
		slog.New(slog.NewTextHandler(io.Discard, nil)), clock.Now)
	tracker.pruneAt = 3
	for _, room := range []string{"!1:x", "!2:x", "!3:x"} {
		tracker.set(room, "@a:x", true, time.Minute)
		tracker.set(room, "@a:x", false, 0)
	}
	dropped := stream.Current()
	tracker.set("!4:x", "@a:x", true, time.Minute)
	if len(tracker.rooms) != 1 {
		t.Fatalf("rooms after pruning = %d, want 1", len(tracker.rooms))
	}
	if _, changed := tracker.changed("!1:x", 0, stream.Current()); !changed {
		t.Fatalf("a forgotten room is not reported to an old sync")
	}
	if _, changed := tracker.changed("!1:x", dropped, stream.Current()); changed {
		t.Fatalf("a forgotten room is reported to a sync after it was dropped")
	}
	tracker.set("!4:x", "@a:x", false, 0)
}

// TestUnreadCountsFollowPushRules: unread counts are what the user's push rules make of the
// unread events. With the predefined rules a message notifies, a mention (m.mentions)
// highlights, a notice does not notify; a room rule without actions leaves only what the
// override rules let through (mentions); a
// keyword content rule with a highlight tweak highlights. The initial /sync carries the
// rules as m.push_rules account data.
func TestUnreadCountsFollowPushRules(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)

		counts := func() (notifications, highlights float64) {
			t.Helper()
			c, ok := syncRoom(s.sync(bob, nil), "join", roomID)["unread_notifications"].(map[string]any)
			if !ok {
				t.Fatal("no unread_notifications")
			}
			return c["notification_count"].(float64), c["highlight_count"].(float64)
		}
		send := func(content map[string]any) {
			t.Helper()
			s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/"+fmt.Sprintf("t%d", testTxnCounter.Add(1)), alice, content, http.StatusOK)
		}

		resp := s.sync(bob, nil)
		found := false
		for _, ev := range resp["account_data"].(map[string]any)["events"].([]any) {
			if ev.(map[string]any)["type"] == "m.push_rules" {
				global := ev.(map[string]any)["content"].(map[string]any)["global"].(map[string]any)
				found = len(global["override"].([]any)) > 0 && len(global["underride"].([]any)) > 0
			}
		}
		if !found {
			t.Fatalf("initial sync without the predefined m.push_rules: %v", resp["account_data"])
		}

		send(map[string]any{"msgtype": "m.text", "body": "hello"})
		send(map[string]any{"msgtype": "m.notice", "body": "a bot speaks"})
		send(map[string]any{"msgtype": "m.text", "body": "hey you", "m.mentions": map[string]any{"user_ids": []string{bobID}}})
		if n, h := counts(); n != 2 || h != 1 {
			t.Fatalf("predefined rules: %v notifications, %v highlights; want 2, 1", n, h)
		}

		// Bob sets the room to "mentions only": a room rule without actions silences the
		// message; the mention still notifies through the override rules, which come first.
		s.do("PUT", "/_matrix/client/v3/pushrules/global/room/"+roomID, bob, map[string]any{"actions": []any{}}, http.StatusOK)
		if n, h := counts(); n != 1 || h != 1 {
			t.Fatalf("mentions only: %v notifications, %v highlights; want 1, 1", n, h)
		}
		s.do("DELETE", "/_matrix/client/v3/pushrules/global/room/"+roomID, bob, nil, http.StatusOK)

		// A keyword that highlights.
		s.do("PUT", "/_matrix/client/v3/pushrules/global/content/cake", bob, map[string]any{
			"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "highlight"}},
		}, http.StatusOK)
		send(map[string]any{"msgtype": "m.text", "body": "there is cake"})
		if n, h := counts(); n != 3 || h != 2 {
			t.Fatalf("with a keyword rule: %v notifications, %v highlights; want 3, 2", n, h)
		}
	})
}
