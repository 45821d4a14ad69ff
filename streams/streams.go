// Package streams hands out the server-wide stream positions that order everything /sync
// delivers (room events, account data, receipts, to-device messages, …) and wakes the
// long-polling /sync requests that wait for them.
//
// One counter serves every stream, so a sync token is a single number. Positions are given
// out before the write that uses them commits, and writes to different rooms commit
// concurrently, so they can become visible out of order; readers therefore only ever read up
// to Current(), the highest position below which every write has finished (committed or
// abandoned). This is what keeps a /sync from skipping an event that commits late.
package streams

import (
	"context"
	"strconv"
	"sync"
)

// Tracker allocates positions and tracks which have finished.
type Tracker struct {
	mu      sync.Mutex
	next    int64          // next position to hand out
	current int64          // every position ≤ current has finished
	pending map[int64]bool // allocated and not yet finished
	done    map[int64]bool // finished but above current (waiting for a lower one)
	wake    chan struct{}  // closed and replaced whenever current advances
	users   map[string]*userWaiters

	// changes remembers, per key, the last position at which that key changed, for
	// positions above changesFloor; below it nothing is known.
	changes      map[string]int64
	changesFloor int64
}

// maxChangeKeys bounds the change index; past it, it forgets everything and answers
// "maybe changed" for positions before that moment.
const maxChangeKeys = 200_000

type userWaiters struct {
	ch    chan struct{} // closed and replaced when the user is woken
	pos   int64         // highest position the user was woken for
	count int           // /sync requests of this user waiting now
}

// NewTracker starts after the highest position already stored.
func NewTracker(maxStored int64) *Tracker {
	return &Tracker{
		next: maxStored + 1, current: maxStored,
		pending: map[int64]bool{}, done: map[int64]bool{},
		wake: make(chan struct{}), users: map[string]*userWaiters{},
		changes: map[string]int64{}, changesFloor: maxStored,
	}
}

// MarkChanged records that the things named by keys (a room's timeline, a user's account
// data, …) change at position pos. Call it before Finish(pos) so that a reader who can see
// pos also sees the mark.
func (t *Tracker) MarkChanged(pos int64, keys ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.changes)+len(keys) > maxChangeKeys {
		clear(t.changes)
		t.changesFloor = t.next - 1
	}
	for _, k := range keys {
		if pos > t.changes[k] {
			t.changes[k] = pos
		}
	}
}

// ChangedSince reports whether key may have changed at a position above since. It is
// exact for positions since the server started (or the index last overflowed) and says
// "maybe" for older ones, so a reader that gets false can skip looking.
func (t *Tracker) ChangedSince(key string, since int64) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if since < t.changesFloor {
		return true
	}
	return t.changes[key] > since
}

// Allocate reserves the next position. The caller must call Finish with it exactly once,
// whether its write committed or not.
func (t *Tracker) Allocate() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	pos := t.next
	t.next++
	t.pending[pos] = true
	return pos
}

// Finish marks pos as finished and wakes the given users (those whose /sync may now have
// something new) once the position becomes readable. A nil list wakes nobody in particular.
func (t *Tracker) Finish(pos int64, wakeUsers ...string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.pending, pos)
	t.done[pos] = true
	advanced := false
	for t.done[t.current+1] {
		delete(t.done, t.current+1)
		t.current++
		advanced = true
	}
	for _, u := range wakeUsers {
		if w, ok := t.users[u]; ok {
			if pos > w.pos {
				w.pos = pos
			}
			close(w.ch)
			w.ch = make(chan struct{})
		}
	}
	if advanced {
		close(t.wake)
		t.wake = make(chan struct{})
	}
}

// Allocated is the highest position handed out so far.
func (t *Tracker) Allocated() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.next - 1
}

// Current is the highest position at or below which every write has finished.
func (t *Tracker) Current() int64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.current
}

// Wait blocks until something for user at a position above since has become readable, or
// ctx ends, and returns Current(). If the stream has already moved past since it returns at
// once, so a caller that read up to since and then calls Wait cannot miss a wake-up: it just
// reads again.
func (t *Tracker) Wait(ctx context.Context, user string, since int64) int64 {
	t.mu.Lock()
	if t.current > since {
		cur := t.current
		t.mu.Unlock()
		return cur
	}
	w, ok := t.users[user]
	if !ok {
		w = &userWaiters{ch: make(chan struct{})}
		t.users[user] = w
	}
	w.count++
	t.mu.Unlock()
	defer func() {
		t.mu.Lock()
		w.count--
		if w.count == 0 {
			delete(t.users, user)
		}
		t.mu.Unlock()
	}()

	for {
		t.mu.Lock()
		cur, wake, userCh, wanted := t.current, t.wake, w.ch, w.pos
		t.mu.Unlock()
		if wanted > since && cur >= wanted {
			return cur
		}
		select {
		case <-ctx.Done():
			return cur
		case <-userCh:
		case <-wake:
		}
	}
}

// Keys of the change index, one family per kind of change.

// RoomKey names a room's timeline (by room numeric ID).
func RoomKey(roomNID int64) string { return "room " + strconv.FormatInt(roomNID, 10) }

// RoomMembersKey names the membership of a room (by room numeric ID): someone joined, left,
// was invited, … — what device-list tracking watches.
func RoomMembersKey(roomNID int64) string { return "members " + strconv.FormatInt(roomNID, 10) }

// MembershipKey names a user's memberships.
func MembershipKey(userID string) string { return "member " + userID }

// AccountDataKey names a user's account data.
func AccountDataKey(userID string) string { return "account_data " + userID }

// ReceiptKey names a room's receipts (by room numeric ID).
func ReceiptKey(roomNID int64) string { return "receipt " + strconv.FormatInt(roomNID, 10) }

// ReadKey names a user's own read positions.
func ReadKey(userID string) string { return "read " + userID }

// DeviceListKey names the device lists a user hears about: those of the user and of
// everyone sharing a room with them (end-to-end encryption, device_lists in /sync).
func DeviceListKey(userID string) string { return "device_lists " + userID }

// ToDeviceKey names the to-device inbox of one device.
func ToDeviceKey(userID, deviceID string) string { return "to_device " + userID + " " + deviceID }

// OneTimeKeysKey names the one-time and fallback keys of one device.
func OneTimeKeysKey(userID, deviceID string) string { return "otk " + userID + " " + deviceID }

// PresenceKey names the presence a user hears about: their own and that of everyone sharing
// a room with them.
func PresenceKey(userID string) string { return "presence " + userID }
