package streams

import (
	"context"
	"testing"
	"time"
)

// TestCurrentWaitsForLowerPositions: a position that finishes before a lower one is not
// readable until the lower one finishes (or is abandoned).
func TestCurrentWaitsForLowerPositions(t *testing.T) {
	tr := NewTracker(10)
	a, b, c := tr.Allocate(), tr.Allocate(), tr.Allocate()
	if a != 11 || b != 12 || c != 13 || tr.Allocated() != 13 {
		t.Fatalf("allocated %d %d %d (max %d)", a, b, c, tr.Allocated())
	}
	tr.Finish(c)
	tr.Finish(b)
	if got := tr.Current(); got != 10 {
		t.Fatalf("Current = %d with position 11 unfinished, want 10", got)
	}
	tr.Finish(a)
	if got := tr.Current(); got != 13 {
		t.Fatalf("Current = %d, want 13", got)
	}
}

// TestWaitWakesOnlyTheNamedUser checks that a long-poll returns when a position naming its
// user becomes readable, and not for other users' positions.
func TestWaitWakesOnlyTheNamedUser(t *testing.T) {
	tr := NewTracker(0)
	done := make(chan int64, 1)
	go func() { done <- tr.Wait(context.Background(), "@alice:x", 0) }()
	waitForWaiter(t, tr, "@alice:x")

	other := tr.Allocate()
	tr.Finish(other, "@bob:x")
	select {
	case pos := <-done:
		t.Fatalf("alice woken at %d by bob's position", pos)
	case <-time.After(50 * time.Millisecond):
	}
	mine := tr.Allocate()
	tr.Finish(mine, "@alice:x")
	select {
	case pos := <-done:
		if pos != mine {
			t.Fatalf("woken at %d, want %d", pos, mine)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("alice was not woken")
	}
}

// TestWaitReturnsAtOnceWhenBehind: a caller whose since is already behind the stream must
// not wait (it would miss what finished between its read and its Wait).
func TestWaitReturnsAtOnceWhenBehind(t *testing.T) {
	tr := NewTracker(5)
	pos := tr.Allocate()
	tr.Finish(pos)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if got := tr.Wait(ctx, "@alice:x", 5); got != pos {
		t.Fatalf("Wait = %d, want %d", got, pos)
	}
}

func TestChangedSince(t *testing.T) {
	tr := NewTracker(100)
	if !tr.ChangedSince(RoomKey(1), 50) {
		t.Fatal("a position from before the tracker started must count as maybe changed")
	}
	if tr.ChangedSince(RoomKey(1), 100) {
		t.Fatal("nothing changed after start, yet ChangedSince is true")
	}
	pos := tr.Allocate()
	tr.MarkChanged(pos, RoomKey(1), MembershipKey("@alice:x"))
	tr.Finish(pos)
	if !tr.ChangedSince(RoomKey(1), 100) || !tr.ChangedSince(MembershipKey("@alice:x"), 100) {
		t.Fatal("marked keys not reported as changed")
	}
	if tr.ChangedSince(RoomKey(1), pos) || tr.ChangedSince(RoomKey(2), 100) {
		t.Fatal("unmarked key or later since reported as changed")
	}
}

func waitForWaiter(t *testing.T, tr *Tracker, user string) {
	t.Helper()
	for i := 0; i < 1000; i++ {
		tr.mu.Lock()
		_, ok := tr.users[user]
		tr.mu.Unlock()
		if ok {
			return
		}
		time.Sleep(time.Millisecond)
	}
	t.Fatalf("%s never started waiting", user)
}
