package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// listenerFilter is the inline filter of the listeners' /sync requests. The server's
// default timeline limit (10 per room) would make a listener that falls behind skip
// messages by design (a "limited" timeline); asking for up to 1000, as real clients with
// gap-filling do, makes every missing message a real delivery error.
const listenerFilter = `{"room":{"timeline":{"limit":1000}}}`

// syncTimeout is the long-poll timeout of the listeners, as clients use it.
const syncTimeout = 30 * time.Second

// requestTimeout bounds every request that is not a long-poll.
const requestTimeout = 30 * time.Second

// maxConsecutiveErrors stops a sender or listener that keeps failing, so that a broken
// server ends the run instead of spinning.
const maxConsecutiveErrors = 50

// world is what setup made: users (each with a token) and rooms they all joined.
type world struct {
	users []*user
	rooms []string
}

// setup registers users, creates rooms (round-robin creators) and joins every user to
// every room. Joins run on a few workers; joins to one room serialise in the server anyway.
func setup(ctx context.Context, c *client, runID string, users, rooms int) (*world, error) {
	w := &world{users: make([]*user, users), rooms: make([]string, rooms)}
	if err := parallel(ctx, 4, users, func(ctx context.Context, i int) error {
		u, err := c.register(ctx, fmt.Sprintf("load%s_u%d", runID, i), "load-password-"+runID)
		w.users[i] = u
		return err
	}); err != nil {
		return nil, err
	}
	if err := parallel(ctx, 4, rooms, func(ctx context.Context, r int) error {
		id, err := c.createRoom(ctx, w.users[r%users], fmt.Sprintf("load room %d", r))
		w.rooms[r] = id
		return err
	}); err != nil {
		return nil, fmt.Errorf("create room: %w", err)
	}
	if err := parallel(ctx, 4, users*rooms, func(ctx context.Context, k int) error {
		u, r := k%users, k/users
		if u == r%users {
			return nil // the creator is in already
		}
		if err := c.join(ctx, w.users[u], w.rooms[r]); err != nil {
			return fmt.Errorf("join %s to %s: %w", w.users[u].ID, w.rooms[r], err)
		}
		return nil
	}); err != nil {
		return nil, err
	}
	return w, nil
}

// parallel runs fn(0..n-1) on at most workers goroutines, each call with requestTimeout,
// and returns the first error.
func parallel(ctx context.Context, workers, n int, fn func(ctx context.Context, i int) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for range min(workers, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				callCtx, callCancel := context.WithTimeout(ctx, requestTimeout)
				err := fn(callCtx, i)
				callCancel()
				if err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		})
	}
	wg.Wait()
	if firstErr == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return firstErr
}

// messageKey identifies one load message by sender index and sequence number.
type messageKey uint64

func newMessageKey(sender, seq int) messageKey {
	return messageKey(uint64(sender)<<32 | uint64(uint32(seq)))
}

// messageBody is "<sender>:<seq>:<unix nanos at send>".
func messageBody(sender, seq int, sentAt time.Time) string {
	return strconv.Itoa(sender) + ":" + strconv.Itoa(seq) + ":" + strconv.FormatInt(sentAt.UnixNano(), 10)
}

// parseMessageBody reads a body made by messageBody.
func parseMessageBody(body string) (key messageKey, sentAt time.Time, ok bool) {
	parts := strings.Split(body, ":")
	if len(parts) != 3 {
		return 0, time.Time{}, false
	}
	sender, err1 := strconv.Atoi(parts[0])
	seq, err2 := strconv.Atoi(parts[1])
	nanos, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil || sender < 0 || seq < 0 {
		return 0, time.Time{}, false
	}
	return newMessageKey(sender, seq), time.Unix(0, nanos), true
}

// sendRecord is what one send attempt did.
type sendRecord struct {
	room  int
	acked bool
}

// sender sends messages round-robin over users and rooms.
type sender struct {
	index     int
	records   []sendRecord // by sequence number
	latencies []time.Duration
	errors    int
	lastErr   error
	// pace, when not nil, hands out one permission to send per tick of the -rate pacer.
	pace <-chan struct{}
}

// newPacer returns a channel that yields rate permissions per second in all, spread evenly,
// until ctx ends; nil when rate is 0 (no pacing).
func newPacer(ctx context.Context, rate int) <-chan struct{} {
	if rate <= 0 {
		return nil
	}
	pace := make(chan struct{})
	go func() {
		interval := time.Second / time.Duration(rate)
		next := time.Now()
		for {
			next = next.Add(interval)
			if wait := time.Until(next); wait > 0 {
				select {
				case <-ctx.Done():
					return
				case <-time.After(wait):
				}
			}
			select {
			case pace <- struct{}{}:
			case <-ctx.Done():
				return
			}
		}
	}()
	return pace
}

// run sends until stopAt, until budget (shared by all senders; nil for none) is used up,
// or until ctx ends. A request in flight at stopAt is allowed to finish, so that every
// message counted as sent has a known outcome.
func (s *sender) run(ctx context.Context, c *client, w *world, stopAt time.Time, budget *atomic.Int64) {
	consecutive := 0
	for seq := 0; ctx.Err() == nil && time.Now().Before(stopAt); seq++ {
		if budget != nil && budget.Add(-1) < 0 {
			return
		}
		if s.pace != nil {
			select {
			case <-s.pace:
			case <-ctx.Done():
				return
			}
		}
		u := w.users[(s.index+seq)%len(w.users)]
		room := (s.index + seq) % len(w.rooms)
		start := time.Now()
		body := messageBody(s.index, seq, start)
		reqCtx, cancel := context.WithTimeout(ctx, requestTimeout)
		err := c.sendText(reqCtx, u, w.rooms[room], "load-"+strconv.Itoa(s.index)+"-"+strconv.Itoa(seq), body)
		cancel()
		elapsed := time.Since(start)
		s.records = append(s.records, sendRecord{room: room, acked: err == nil})
		if err != nil {
			s.errors++
			s.lastErr = err
			if consecutive++; consecutive >= maxConsecutiveErrors {
				return
			}
			continue
		}
		consecutive = 0
		s.latencies = append(s.latencies, elapsed)
	}
}

// delivery is what a listener saw of one message.
type delivery struct {
	count int32
	room  int32 // index of the room it arrived in
}

// listener long-polls /sync for one user and records every load message it receives.
type listener struct {
	user      *user
	roomIndex map[string]int

	mu        sync.Mutex
	seen      map[messageKey]delivery
	latencies []time.Duration // first delivery of each message: decoded − sent
	unique    atomic.Int64    // len(seen), readable without the lock
	syncs     int
	errors    int
	limited   int // timelines the server cut short
	foreign   int // m.room.message events whose body is not a load message
	lastErr   error
}

// initialSync gets the listener's first since token.
func (l *listener) initialSync(ctx context.Context, c *client) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	resp, err := c.sync(ctx, l.user, "", 0, listenerFilter)
	if err != nil {
		return "", err
	}
	if resp.NextBatch == "" {
		return "", errors.New("initial sync: no next_batch")
	}
	return resp.NextBatch, nil
}

// run long-polls from since until ctx ends.
func (l *listener) run(ctx context.Context, c *client, since string) {
	consecutive := 0
	for ctx.Err() == nil {
		reqCtx, cancel := context.WithTimeout(ctx, syncTimeout+requestTimeout)
		resp, err := c.sync(reqCtx, l.user, since, syncTimeout, listenerFilter)
		decoded := time.Now()
		cancel()
		if err != nil {
			if ctx.Err() != nil {
				return // stopped while waiting: not an error
			}
			l.mu.Lock()
			l.errors++
			l.lastErr = err
			l.mu.Unlock()
			if consecutive++; consecutive >= maxConsecutiveErrors {
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		consecutive = 0
		l.record(resp, decoded)
		if resp.NextBatch != "" {
			since = resp.NextBatch
		}
	}
}

// record counts the load messages of one response.
func (l *listener) record(resp *syncResponse, decoded time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.syncs++
	for roomID, room := range resp.Rooms.Join {
		if room.Timeline.Limited {
			l.limited++
		}
		roomIdx, known := l.roomIndex[roomID]
		for _, ev := range room.Timeline.Events {
			if ev.Type != "m.room.message" {
				continue
			}
			var content struct {
				Body string `json:"body"`
			}
			_ = json.Unmarshal(ev.Content, &content)
			key, sentAt, ok := parseMessageBody(content.Body)
			if !ok || !known {
				l.foreign++
				continue
			}
			d, dup := l.seen[key]
			if !dup {
				l.latencies = append(l.latencies, decoded.Sub(sentAt))
				d.room = int32(roomIdx)
				l.unique.Add(1)
			}
			d.count++
			l.seen[key] = d
		}
	}
}

// deliveryCheck is the outcome of comparing what listeners got with what was sent.
type deliveryCheck struct {
	expected   int // listeners × acknowledged messages
	delivered  int // expected deliveries that arrived (at least once)
	missing    int
	duplicates int // extra copies beyond the first
	wrongRoom  int
	unacked    int // deliveries of sends that failed (the server stored them nonetheless)
	unknown    int // deliveries of keys never sent
}

// checkDeliveries requires every listener (joined to every room) to have received every
// acknowledged message exactly once, in the room it was sent to.
func checkDeliveries(senders []*sender, listeners []*listener) deliveryCheck {
	var check deliveryCheck
	for _, l := range listeners {
		l.mu.Lock()
		matched := 0
		for _, s := range senders {
			for seq, rec := range s.records {
				d, ok := l.seen[newMessageKey(s.index, seq)]
				if !ok {
					if rec.acked {
						check.expected++
						check.missing++
					}
					continue
				}
				matched++
				if !rec.acked {
					check.unacked++
					continue
				}
				check.expected++
				check.delivered++
				check.duplicates += int(d.count) - 1
				if int(d.room) != rec.room {
					check.wrongRoom++
				}
			}
		}
		check.unknown += len(l.seen) - matched
		l.mu.Unlock()
	}
	return check
}
