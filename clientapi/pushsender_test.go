package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// fakeGateway is a push gateway that records the notifications it is sent and answers as
// the test tells it.
type fakeGateway struct {
	t        *testing.T
	srv      *httptest.Server
	received chan map[string]any
	mu       sync.Mutex
	// answer decides the status and body of the answer to a notification; nil accepts.
	answer func(notification map[string]any) (int, string)
}

func newFakeGateway(t *testing.T) *fakeGateway {
	g := &fakeGateway{t: t, received: make(chan map[string]any, 100)}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != pushGatewayPath || r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "not the notify endpoint", http.StatusNotFound)
			return
		}
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		if err := json.Unmarshal(raw, &body); err != nil || body.Notification == nil {
			t.Errorf("gateway got %s", raw)
			http.Error(w, "bad body", http.StatusBadRequest)
			return
		}
		g.received <- body.Notification
		status, answer := http.StatusOK, `{"rejected":[]}`
		g.mu.Lock()
		if g.answer != nil {
			status, answer = g.answer(body.Notification)
		}
		g.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, answer)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *fakeGateway) url() string { return g.srv.URL + pushGatewayPath }

func (g *fakeGateway) setAnswer(answer func(map[string]any) (int, string)) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.answer = answer
}

// next waits for the next notification.
func (g *fakeGateway) next() map[string]any {
	g.t.Helper()
	select {
	case n := <-g.received:
		return n
	case <-time.After(15 * time.Second):
		g.t.Fatal("no notification reached the gateway")
		return nil
	}
}

// nextEvent waits for the next notification and returns its event ID ("" for a badge
// update).
func (g *fakeGateway) nextEvent() string {
	g.t.Helper()
	id, _ := g.next()["event_id"].(string)
	return id
}

// startPushSender runs a push sender with test timings until the returned stop is called
// (or the test ends).
func (s *testServer) startPushSender() (stop func()) {
	sender := s.api.newPushSender()
	sender.initialBackoff, sender.maxBackoff = 10*time.Millisecond, 50*time.Millisecond
	sender.errorDelay, sender.positionFlush = 50*time.Millisecond, 20*time.Millisecond
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		sender.run(ctx)
		close(done)
	}()
	// On its first start the sender begins at the current position: what is sent before
	// it has stored that is not pushed.
	waitFor(s.t, func() bool {
		_, found, err := storage.PushPosition(context.Background(), s.db)
		return found && err == nil
	})
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			<-done
		})
	}
	s.t.Cleanup(stop)
	return stop
}

// pushRoomPair makes alice and bob and a room with both; bob has a pusher to gateway g.
func (s *testServer) pushRoomPair(g *fakeGateway, data map[string]any) (alice, bob, roomID string) {
	s.t.Helper()
	_, alice, _ = s.register("alice", "password-alice")
	bobID, bob, _ := s.register("bob", "password-bob")
	roomID = s.createRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{bobID}, "name": "Tea room"})
	s.joinRoom(bob, roomID)
	body := httpPusher("com.example.app", "bob-key", g.url())
	if data != nil {
		data["url"] = g.url()
		body["data"] = data
	}
	s.do("POST", setPusherPath, bob, body, http.StatusOK)
	return alice, bob, roomID
}

// TestPushSenderDelivers: each message that bob's rules make notify reaches his gateway
// once, with the fields of push_notifier.yaml; his own messages and those of a room he muted
// do not; what was sent before the sender first started is not pushed; a read receipt sends
// the new unread count.
func TestPushSenderDelivers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		g := newFakeGateway(t)
		alice, bob, roomID := s.pushRoomPair(g, map[string]any{"custom": "kept"})
		s.sendText(alice, roomID, "before the sender ever ran")
		s.startPushSender()

		hello := s.sendText(alice, roomID, "hello bob")
		n := g.next()
		devices := n["devices"].([]any)
		device := devices[0].(map[string]any)
		content, _ := n["content"].(map[string]any)
		counts, _ := n["counts"].(map[string]any)
		if n["event_id"] != hello || n["room_id"] != roomID || n["type"] != "m.room.message" || n["sender"] != "@alice:"+testServerName ||
			n["sender_display_name"] != "alice" || n["room_name"] != "Tea room" || n["prio"] != "high" ||
			content["body"] != "hello bob" || counts["unread"] != float64(2) || len(devices) != 1 {
			t.Fatalf("notification = %v", n)
		}
		data := device["data"].(map[string]any)
		ts, _ := device["pushkey_ts"].(float64)
		if device["app_id"] != "com.example.app" || device["pushkey"] != "bob-key" || data["custom"] != "kept" || data["url"] != nil ||
			time.Since(time.Unix(int64(ts), 0)) > time.Minute || device["tweaks"].(map[string]any)["sound"] != "default" {
			t.Fatalf("device = %v", device)
		}

		// Bob's own message pushes nothing: the next notification is alice's next message.
		s.sendText(bob, roomID, "my own words")
		second := s.sendText(alice, roomID, "second")
		if got := g.nextEvent(); got != second {
			t.Fatalf("next notification is for %s, want %s (bob's own message or a duplicate came first)", got, second)
		}

		// An invite notifies its target (.m.rule.invite_for_me).
		muted := s.createRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{"@bob:" + testServerName}})
		invite := g.next()
		if invite["type"] != "m.room.member" || invite["room_id"] != muted || invite["user_is_target"] != true ||
			invite["membership"] != "invite" || invite["content"].(map[string]any)["membership"] != "invite" {
			t.Fatalf("invite notification = %v", invite)
		}

		// A room bob muted (a room rule without actions) pushes nothing.
		s.joinRoom(bob, muted)
		s.do("PUT", "/_matrix/client/v3/pushrules/global/room/"+muted, bob, map[string]any{"actions": []any{}}, http.StatusOK)
		s.sendText(alice, muted, "you will not hear of this")
		third := s.sendText(alice, roomID, "third")
		if got := g.nextEvent(); got != third {
			t.Fatalf("next notification is for %s, want %s (the muted room pushed)", got, third)
		}

		// Bob reads up to the last message: a badge update with no unread left.
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+third, bob, map[string]any{}, http.StatusOK)
		badge := g.next()
		if badge["event_id"] != nil || badge["counts"].(map[string]any)["unread"] != float64(0) || len(badge["devices"].([]any)) != 1 {
			t.Fatalf("badge update = %v", badge)
		}
	})
}

// TestPushSenderEventIDOnly: a pusher with format event_id_only gets the event ID, room,
// priority and counts, and nothing of the event.
func TestPushSenderEventIDOnly(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		g := newFakeGateway(t)
		alice, _, roomID := s.pushRoomPair(g, map[string]any{"format": "event_id_only"})
		s.startPushSender()
		hello := s.sendText(alice, roomID, "secret")
		n := g.next()
		keys := make([]string, 0, len(n))
		for k := range n {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		if n["event_id"] != hello || !slices.Equal(keys, []string{"counts", "devices", "event_id", "prio", "room_id"}) {
			t.Fatalf("event_id_only notification = %v", n)
		}
		device := n["devices"].([]any)[0].(map[string]any)
		if device["data"].(map[string]any)["format"] != "event_id_only" || device["tweaks"] != nil {
			t.Fatalf("device = %v", device)
		}
	})
}

// TestPushSenderRetriesAndRejects: a gateway that fails gets the notification again after
// a backoff; one that keeps failing past giveUpAfter loses that notification and gets the
// next; a rejected pushkey loses its pusher.
func TestPushSenderRetriesAndRejects(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		g := newFakeGateway(t)
		alice, bob, roomID := s.pushRoomPair(g, nil)
		s.startPushSender()

		// One 500, then success: the same event twice.
		failures := 1
		g.setAnswer(func(map[string]any) (int, string) {
			if failures > 0 {
				failures--
				return http.StatusInternalServerError, `{}`
			}
			return http.StatusOK, `{"rejected":[]}`
		})
		first := s.sendText(alice, roomID, "first")
		if a, b := g.nextEvent(), g.nextEvent(); a != first || b != first {
			t.Fatalf("attempts = %s, %s; want %s twice", a, b, first)
		}
		second := s.sendText(alice, roomID, "second")
		if got := g.nextEvent(); got != second {
			t.Fatalf("after the retry: %s, want %s", got, second)
		}

		// A notification that fails for longer than giveUpAfter is dropped; the next one
		// goes through. (The sender's give-up time is its default of a day; the test moves
		// the pusher's failing_since back instead of waiting.)
		g.setAnswer(func(n map[string]any) (int, string) {
			if content, _ := n["content"].(map[string]any); content["body"] == "doomed" {
				return http.StatusServiceUnavailable, ``
			}
			return http.StatusOK, `{}`
		})
		doomed := s.sendText(alice, roomID, "doomed")
		if got := g.nextEvent(); got != doomed {
			t.Fatalf("got %s, want the doomed %s", got, doomed)
		}
		pushers, err := storage.UserPushers(context.Background(), db, "@bob:"+testServerName)
		if err != nil || len(pushers) != 1 {
			t.Fatalf("pushers %v %v", pushers, err)
		}
		waitFor(t, func() bool {
			p, _ := storage.UserPushers(context.Background(), db, "@bob:"+testServerName)
			return len(p) == 1 && p[0].FailingSince != 0
		})
		if err := storage.SetPusherFailures(context.Background(), db, pushers[0].ID, time.Now().Add(-25*time.Hour).UnixMilli(), 3, 0); err != nil {
			t.Fatal(err)
		}
		after := s.sendText(alice, roomID, "after")
		for got := g.nextEvent(); got != after; got = g.nextEvent() {
			if got != doomed {
				t.Fatalf("got %s, want retries of %s then %s", got, doomed, after)
			}
		}

		// A rejected pushkey: the pusher goes.
		g.setAnswer(func(map[string]any) (int, string) { return http.StatusOK, `{"rejected":["bob-key"]}` })
		rejected := s.sendText(alice, roomID, "rejected")
		if got := g.nextEvent(); got != rejected {
			t.Fatalf("got %s, want %s", got, rejected)
		}
		waitFor(t, func() bool { return len(s.pushers(bob)) == 0 })
	})
}

// queuedPushes counts the notifications waiting for a gateway.
func queuedPushes(t *testing.T, db *storage.DB) int {
	t.Helper()
	var n int
	if err := db.QueryRow(context.Background(), `SELECT COUNT(*) FROM push_queue`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

// waitFor polls cond until it holds, failing the test after a while.
func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not reached")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPushSenderRefusesPrivateGateways: unless EGGS_PUSH_PRIVATE_GATEWAYS allows it, a
// gateway on a loopback address gets nothing, and the notification is dropped rather than
// retried.
func TestPushSenderRefusesPrivateGateways(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		s.api.cfg.PushPrivateGateways = "deny"
		g := newFakeGateway(t)
		alice, _, roomID := s.pushRoomPair(g, nil)
		s.startPushSender()
		s.sendText(alice, roomID, "hello")
		sent := s.api.rooms.Stream().Current()
		// Past the message, with nothing left queued: it was queued and dropped (or would
		// still be in the queue, being retried).
		waitFor(t, func() bool {
			pos, _, err := storage.PushPosition(context.Background(), db)
			return err == nil && pos >= sent && queuedPushes(t, db) == 0
		})
		select {
		case n := <-g.received:
			t.Fatalf("a loopback gateway got %v", n)
		case <-time.After(200 * time.Millisecond):
		}
	})
}

// TestPushSenderResumes: a sender stopped and started again pushes what was sent while it
// was stopped, once, and nothing it had pushed before.
func TestPushSenderResumes(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		g := newFakeGateway(t)
		alice, _, roomID := s.pushRoomPair(g, nil)
		stop := s.startPushSender()
		var sent, got []string
		sent = append(sent, s.sendText(alice, roomID, "m1"))
		got = append(got, g.nextEvent())
		// Stopped once the gateway's answer is recorded: a request cut short by the stop
		// would be sent again, as it should.
		waitFor(t, func() bool { return queuedPushes(t, db) == 0 })
		stop()

		sent = append(sent, s.sendText(alice, roomID, "m2"), s.sendText(alice, roomID, "m3"))
		// A new API over the same database: a restarted server.
		restarted := newTestAPI(t, db, "open", "")
		restarted.startPushSender()
		got = append(got, g.nextEvent(), g.nextEvent())
		sent = append(sent, restarted.sendText(alice, roomID, "m4"))
		got = append(got, g.nextEvent())
		// The gateway's queue is FIFO per pusher: a duplicate of m1..m3 would have come
		// before m4.
		if !slices.Equal(got, sent) {
			t.Fatalf("pushed %v, sent %v", got, sent)
		}
	})
}
