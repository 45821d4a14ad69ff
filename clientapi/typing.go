package clientapi

import (
	"context"
	"log/slog"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Typing notifications (client-server API "Typing Notifications"; typing.yaml).
//
// Who is typing lives in memory only: per room, each typing user's expiry. Every change of a
// room's typing set takes a stream position, so /sync can tell which rooms changed in a
// window; a timer per room expires users and takes a position too, so that listeners see
// them stop. Positions handed out here are not stored anywhere, so the tracker reserves them
// in the database in blocks before it lets them be read: a restarted server starts above
// every position a client may hold.

// maxTypingTimeout caps how long one request marks a user as typing. NOTSPEC: the spec sets
// no limit; Synapse caps at 120 s too, and clients repeat the request every 20-30 s.
const maxTypingTimeout = 120 * time.Second

// defaultTypingTimeout applies when a typing request leaves out the timeout. NOTSPEC.
const defaultTypingTimeout = 30 * time.Second

// maxTypingBody bounds a typing request body.
const maxTypingBody = 4 * 1024

// maxTypingRooms is how many rooms the tracker remembers before it forgets those where
// nobody types any more. Rooms with typing users are never forgotten; they are bounded by
// the joined members of the server's rooms.
const maxTypingRooms = 10000

// typingReserveBlock is how many stream positions one database write reserves.
const typingReserveBlock = 1000

// typingStreamName names the tracker's reservation in storage.ReserveStreamPos.
const typingStreamName = "typing"

// PUT /rooms/{roomId}/typing/{userId} (typing.yaml setTyping).
func (a *API) putTyping(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	if pathParam(r, "userId") != d.UserID {
		return httpapi.Forbidden("Cannot set the typing state of another user")
	}
	var req struct {
		Typing  *bool  `json:"typing"`
		Timeout *int64 `json:"timeout"`
	}
	if err := httpapi.ReadJSON(r, maxTypingBody, &req); err != nil {
		return err
	}
	if req.Typing == nil {
		return httpapi.MissingParam("Missing typing")
	}
	timeout := defaultTypingTimeout
	if req.Timeout != nil {
		if *req.Timeout < 0 {
			return httpapi.InvalidParam("timeout must not be negative")
		}
		timeout = time.Duration(min(*req.Timeout, maxTypingTimeout.Milliseconds())) * time.Millisecond
	}
	if err := a.requireJoined(r.Context(), d, roomID); err != nil {
		return err
	}
	typing := *req.Typing && timeout > 0
	a.typing.set(roomID, d.UserID, typing, timeout)
	if typing {
		a.active(r.Context(), d)
	}
	// Every request is passed on, not only changes: other servers time typing users out
	// on their own (remoteTypingTimeout), and the client's repeats keep them typing there.
	if a.remote != nil {
		if err := a.remote.SendTyping(r.Context(), roomID, d.UserID, typing); err != nil {
			a.log.Warn("typing: notify other servers", "room", roomID, "err", err)
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// remoteTypingTimeout is how long a user of another server counts as typing after an
// m.typing EDU says so. NOTSPEC: the EDU carries no timeout; this is Synapse's
// (FEDERATION_TIMEOUT), longer than the 20-30 s at which clients repeat typing requests.
const remoteTypingTimeout = 60 * time.Second

// RemoteTyping applies an m.typing EDU that the federation API checked
// (federation.EphemeralSink).
func (a *API) RemoteTyping(roomID, userID string, typing bool) {
	a.typing.set(roomID, userID, typing, remoteTypingTimeout)
}

// federateTypingExpiry tells the other servers of a room that our users whose typing timed
// out stopped typing.
func (a *API) federateTypingExpiry(roomID string, users []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, user := range users {
		if parsed, err := spec.ParseUserID(user); err != nil || parsed.Server() != a.cfg.ServerName {
			continue
		}
		if err := a.remote.SendTyping(ctx, roomID, user, false); err != nil {
			a.log.Warn("typing: notify other servers", "room", roomID, "err", err)
		}
	}
}

// typingTracker holds who is typing in each room.
type typingTracker struct {
	db      *storage.DB
	stream  *streams.Tracker
	members func(ctx context.Context, roomID string) ([]string, error)
	log     *slog.Logger
	clock   func() time.Time
	// expired, when set, hears of the users whose typing timed out (not of those who stopped
	// by request).
	expired func(roomID string, users []string)

	mu    sync.Mutex
	rooms map[string]*roomTyping
	// forgotten is the highest position of a room entry dropped to bound memory: a /sync
	// from before it cannot tell whether those rooms changed, so it gets their (empty) set.
	forgotten int64
	// pruneAt is the number of rooms at which the next pruning runs.
	pruneAt int

	reserveMu sync.Mutex
	reserved  int64 // highest position reserved in the database
}

// roomTyping is one room's typing set.
type roomTyping struct {
	users map[string]time.Time // user → expiry
	pos   int64                // stream position of the last change
	timer *time.Timer          // fires at the earliest expiry; nil when nobody types
}

func newTypingTracker(db *storage.DB, stream *streams.Tracker, members func(context.Context, string) ([]string, error), log *slog.Logger, clock func() time.Time) *typingTracker {
	return &typingTracker{
		db: db, stream: stream, members: members, log: log, clock: clock,
		rooms: map[string]*roomTyping{}, pruneAt: maxTypingRooms,
	}
}

// set marks the user as typing in the room for timeout, or as not typing.
func (t *typingTracker) set(roomID, userID string, typing bool, timeout time.Duration) {
	now := t.clock()
	t.mu.Lock()
	rt, ok := t.rooms[roomID]
	if !ok {
		if !typing {
			t.mu.Unlock()
			return
		}
		t.pruneLocked()
		rt = &roomTyping{}
		t.rooms[roomID] = rt
	}
	_, wasTyping := rt.users[userID]
	if typing {
		if rt.users == nil {
			rt.users = map[string]time.Time{}
		}
		rt.users[userID] = now.Add(timeout)
	} else {
		delete(rt.users, userID)
	}
	t.scheduleLocked(roomID, rt, now)
	if wasTyping == typing {
		// Only the expiry moved: the set is the same, so nobody needs to hear about it.
		t.mu.Unlock()
		return
	}
	pos := t.stream.Allocate()
	rt.pos = pos
	t.mu.Unlock()
	t.publish(roomID, pos)
}

// expire removes the room's users whose time is up; the room's timer calls it.
func (t *typingTracker) expire(roomID string) {
	now := t.clock()
	t.mu.Lock()
	rt, ok := t.rooms[roomID]
	if !ok {
		t.mu.Unlock()
		return
	}
	var stopped []string
	for user, expiry := range rt.users {
		if !expiry.After(now) {
			delete(rt.users, user)
			stopped = append(stopped, user)
		}
	}
	t.scheduleLocked(roomID, rt, now)
	if len(stopped) == 0 {
		t.mu.Unlock()
		return
	}
	pos := t.stream.Allocate()
	rt.pos = pos
	t.mu.Unlock()
	t.publish(roomID, pos)
	if t.expired != nil {
		t.expired(roomID, stopped)
	}
}

// scheduleLocked sets the room's timer to its earliest expiry, or stops it.
func (t *typingTracker) scheduleLocked(roomID string, rt *roomTyping, now time.Time) {
	var earliest time.Time
	for _, expiry := range rt.users {
		if earliest.IsZero() || expiry.Before(earliest) {
			earliest = expiry
		}
	}
	if earliest.IsZero() {
		if rt.timer != nil {
			rt.timer.Stop()
			rt.timer = nil
		}
		return
	}
	wait := max(earliest.Sub(now), 0)
	if rt.timer == nil {
		rt.timer = time.AfterFunc(wait, func() { t.expire(roomID) })
		return
	}
	rt.timer.Reset(wait)
}

// pruneLocked forgets the rooms where nobody types once there are too many entries.
func (t *typingTracker) pruneLocked() {
	if len(t.rooms) < t.pruneAt {
		return
	}
	for roomID, rt := range t.rooms {
		if len(rt.users) == 0 {
			t.forgotten = max(t.forgotten, rt.pos)
			delete(t.rooms, roomID)
		}
	}
	t.pruneAt = max(maxTypingRooms, 2*len(t.rooms))
}

// publish makes a change at pos readable: it reserves pos in the database, then finishes it
// and wakes the room's joined members.
func (t *typingTracker) publish(roomID string, pos int64) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	t.reserve(ctx, pos)
	members, err := t.members(ctx, roomID)
	if err != nil {
		t.log.Warn("typing: list joined members", "room", roomID, "err", err)
	}
	t.stream.Finish(pos, members...)
}

// reserve makes sure the database holds a reservation at or above pos.
func (t *typingTracker) reserve(ctx context.Context, pos int64) {
	t.reserveMu.Lock()
	defer t.reserveMu.Unlock()
	if pos <= t.reserved {
		return
	}
	next := pos + typingReserveBlock
	if err := storage.ReserveStreamPos(ctx, t.db, typingStreamName, next); err != nil {
		t.log.Error("typing: reserve stream positions", "pos", next, "err", err)
		return
	}
	t.reserved = next
}

// current lists who is typing in the room now, sorted.
func (t *typingTracker) current(roomID string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt, ok := t.rooms[roomID]
	if !ok {
		return nil
	}
	return typingUsers(rt)
}

// changed reports whether the room's typing set changed in (since, to], and the set now.
func (t *typingTracker) changed(roomID string, since, to int64) ([]string, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	rt, ok := t.rooms[roomID]
	if !ok {
		return nil, since < t.forgotten && t.forgotten <= to
	}
	if rt.pos <= since || rt.pos > to {
		return nil, false
	}
	return typingUsers(rt), true
}

func typingUsers(rt *roomTyping) []string {
	users := make([]string, 0, len(rt.users))
	for user := range rt.users {
		users = append(users, user)
	}
	slices.Sort(users)
	return users
}
