package clientapi

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

func TestContainsWord(t *testing.T) {
	for _, tc := range []struct {
		text, word string
		want       bool
	}{
		{"hello bob", "bob", true},
		{"Bob: hi", "bob", true},
		{"BOB!", "bob", true},
		{"bobby", "bob", false},
		{"kebob", "bob", false},
		{"bob_2", "bob", false},
		{"bobby and bob", "bob", true},
		{"@room please", "@room", true},
		{"a@room", "@room", false}, // a word character right before, as in Synapse's (^|\W) guard
		{"@rooms", "@room", false},
		{"Zoë Élan here", "zoë élan", true},
		{"zoëx", "zoë", false},
		{"anything", "", false},
	} {
		if got := containsWord(tc.text, tc.word); got != tc.want {
			t.Errorf("containsWord(%q, %q) = %v, want %v", tc.text, tc.word, got, tc.want)
		}
	}
}

func TestHighlights(t *testing.T) {
	mayNotify := func(sender string) bool { return sender == "@mod:x" }
	for _, tc := range []struct {
		name, event string
		want        bool
	}{
		{"user mention", `{"type":"m.room.message","sender":"@a:x","content":{"body":"hi","m.mentions":{"user_ids":["@bob:x"]}}}`, true},
		{"mention of someone else", `{"type":"m.room.message","sender":"@a:x","content":{"body":"bob","m.mentions":{"user_ids":["@carol:x"]}}}`, false},
		{"m.mentions turns off body matching", `{"type":"m.room.message","sender":"@a:x","content":{"body":"bob","m.mentions":{}}}`, false},
		{"room mention by a moderator", `{"type":"m.room.message","sender":"@mod:x","content":{"body":"all","m.mentions":{"room":true}}}`, true},
		{"room mention without permission", `{"type":"m.room.message","sender":"@a:x","content":{"body":"all","m.mentions":{"room":true}}}`, false},
		{"malformed mentions", `{"type":"m.room.message","sender":"@a:x","content":{"body":"bob","m.mentions":{"user_ids":"@bob:x"}}}`, false},
		{"legacy localpart", `{"type":"m.room.message","sender":"@a:x","content":{"body":"hey Bob"}}`, true},
		{"legacy display name", `{"type":"m.room.message","sender":"@a:x","content":{"body":"ask Robert Tables"}}`, true},
		{"legacy @room by a moderator", `{"type":"m.room.message","sender":"@mod:x","content":{"body":"@room hello"}}`, true},
		{"legacy @room without permission", `{"type":"m.room.message","sender":"@a:x","content":{"body":"@room hello"}}`, false},
		{"tombstone", `{"type":"m.room.tombstone","state_key":"","sender":"@a:x","content":{"replacement_room":"!r:x"}}`, true},
		{"encrypted", `{"type":"m.room.encrypted","sender":"@a:x","content":{"ciphertext":"bob"}}`, false},
		{"not JSON", `{`, false},
	} {
		if got := highlights([]byte(tc.event), "@bob:x", "bob", "Robert Tables", mayNotify); got != tc.want {
			t.Errorf("%s: highlights = %v, want %v", tc.name, got, tc.want)
		}
	}
}

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
