package clientapi

import (
	"context"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/presence"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// withPresenceClock gives the test API a presence tracker running on clock.
func (s *testServer) withPresenceClock(clock *fakeClock) *presence.Tracker {
	s.api.presence = presence.New(presence.Config{DB: s.db, Stream: s.api.rooms.Stream(), ServerName: testServerName,
		Clock: clock.Now, Log: s.api.log})
	return s.api.presence
}

// presenceEvents syncs from since and returns the m.presence contents by sender, and the
// next token.
func (s *testServer) presenceEvents(token, since string, extra url.Values) (map[string]map[string]any, string) {
	s.t.Helper()
	params := url.Values{"since": {since}, "set_presence": {"offline"}}
	for k, v := range extra {
		params[k] = v
	}
	if since == "" {
		params.Del("since")
	}
	resp := s.sync(token, params)
	out := map[string]map[string]any{}
	for _, raw := range resp["presence"].(map[string]any)["events"].([]any) {
		ev := raw.(map[string]any)
		if ev["type"] != "m.presence" {
			s.t.Fatalf("presence event of type %v", ev["type"])
		}
		out[ev["sender"].(string)] = ev["content"].(map[string]any)
	}
	return out, resp["next_batch"].(string)
}

// TestPresenceLifecycle follows one user's presence as another user sharing a room sees it
// through /sync and GET /presence: online while syncing, a status message set by PUT that a
// plain /sync leaves alone, activity bringing them back online, currently_active ending a
// minute after activity, unavailable after five idle minutes, offline once no device has
// synced for 30 seconds; and nothing for a user sharing no room.
func TestPresenceLifecycle(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		clock := &fakeClock{now: time.Now()}
		tracker := s.withPresenceClock(clock)
		ctx := context.Background()

		aliceID, alice, aliceDevice := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)

		// Bob's syncs below say set_presence=offline, so only Alice's presence moves.
		seen, since := s.presenceEvents(bob, "", nil)
		if seen[aliceID] != nil {
			t.Fatalf("initial sync before Alice was online: %v", seen)
		}
		// Alice's client connects: a sync with the default set_presence.
		s.sync(alice, url.Values{})
		seen, since = s.presenceEvents(bob, since, nil)
		got := seen[aliceID]
		if got == nil || got["presence"] != "online" || got["currently_active"] != true || got["last_active_ago"] == nil {
			t.Fatalf("after Alice's sync Bob sees %v", seen)
		}

		// An explicit state and message; a later /sync without set_presence keeps it.
		s.do("PUT", "/_matrix/client/v3/presence/"+aliceID+"/status", alice,
			map[string]any{"presence": "unavailable", "status_msg": "at lunch"}, http.StatusOK)
		s.sync(alice, url.Values{})
		seen, since = s.presenceEvents(bob, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "unavailable" || got["status_msg"] != "at lunch" {
			t.Fatalf("after PUT Bob sees %v", seen)
		}
		status := s.do("GET", "/_matrix/client/v3/presence/"+aliceID+"/status", bob, nil, http.StatusOK)
		if status["presence"] != "unavailable" || status["status_msg"] != "at lunch" {
			t.Fatalf("GET presence: %v", status)
		}
		s.expectErr("GET", "/_matrix/client/v3/presence/"+aliceID+"/status", carol, nil, http.StatusForbidden, "M_FORBIDDEN")
		if seen, _ := s.presenceEvents(carol, "", nil); seen[aliceID] != nil {
			t.Fatalf("Carol shares no room with Alice but sees %v", seen)
		}

		// Bob's initial sync lists who is not offline.
		if seen, _ := s.presenceEvents(bob, "", nil); seen[aliceID] == nil || seen[aliceID]["presence"] != "unavailable" {
			t.Fatalf("Bob's initial sync: %v", seen)
		}

		// Sending a message is activity: online again, the message stays.
		s.sendText(alice, roomID, "back")
		seen, since = s.presenceEvents(bob, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "online" || got["currently_active"] != true || got["status_msg"] != "at lunch" {
			t.Fatalf("after Alice's message Bob sees %v", seen)
		}

		// Alice keeps a sync open and does nothing else.
		done, err := tracker.Syncing(ctx, aliceID, aliceDevice, "")
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(61 * time.Second)
		tracker.Sweep(ctx)
		seen, since = s.presenceEvents(bob, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "online" || got["currently_active"] != false {
			t.Fatalf("a minute after activity Bob sees %v", seen)
		}
		if ago := seen[aliceID]["last_active_ago"].(float64); ago < 61000 {
			t.Fatalf("last_active_ago %v after 61 s", ago)
		}
		clock.Advance(3 * time.Minute)
		tracker.Sweep(ctx)
		if seen, _ := s.presenceEvents(bob, since, nil); seen[aliceID] != nil {
			t.Fatalf("nothing to tell before the idle timeout, got %v", seen)
		}
		clock.Advance(time.Minute)
		tracker.Sweep(ctx)
		seen, since = s.presenceEvents(bob, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "unavailable" {
			t.Fatalf("after 5 idle minutes Bob sees %v", seen)
		}

		// The connection ends; 30 seconds later Alice is offline.
		done()
		clock.Advance(20 * time.Second)
		tracker.Sweep(ctx)
		if seen, _ := s.presenceEvents(bob, since, nil); seen[aliceID] != nil {
			t.Fatalf("offline too early: %v", seen)
		}
		clock.Advance(20 * time.Second)
		tracker.Sweep(ctx)
		seen, _ = s.presenceEvents(bob, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "offline" {
			t.Fatalf("after the connection ended Bob sees %v", seen)
		}
		if seen, _ := s.presenceEvents(bob, "", nil); seen[aliceID] != nil {
			t.Fatalf("an initial sync lists offline users: %v", seen)
		}
		status = s.do("GET", "/_matrix/client/v3/presence/"+aliceID+"/status", bob, nil, http.StatusOK)
		if status["presence"] != "offline" || status["status_msg"] != "at lunch" {
			t.Fatalf("GET presence when offline: %v", status)
		}
	})
}

// TestPresenceSetPresenceAndFilter: set_presence=unavailable marks the device idle, a
// filter without m.presence leaves the section empty, and a long-polling /sync returns
// when presence changes.
func TestPresenceSetPresenceAndFilter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		_, since := s.presenceEvents(bob, "", nil)

		s.sync(alice, url.Values{"set_presence": {"unavailable"}})
		seen, next := s.presenceEvents(bob, since, url.Values{"filter": {`{"presence":{"not_types":["m.presence"]}}`}})
		if len(seen) != 0 {
			t.Fatalf("filtered out, yet %v", seen)
		}
		seen, _ = s.presenceEvents(bob, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "unavailable" {
			t.Fatalf("set_presence=unavailable: Bob sees %v", seen)
		}

		// A long poll wakes up for presence.
		result := make(chan map[string]map[string]any, 1)
		go func() {
			seen, _ := s.presenceEvents(bob, next, url.Values{"timeout": {"10000"}})
			result <- seen
		}()
		time.Sleep(100 * time.Millisecond)
		s.do("PUT", "/_matrix/client/v3/presence/"+aliceID+"/status", alice, map[string]any{"presence": "online"}, http.StatusOK)
		select {
		case seen := <-result:
			if got := seen[aliceID]; got == nil || got["presence"] != "online" {
				t.Fatalf("long poll got %v", seen)
			}
		case <-time.After(8 * time.Second):
			t.Fatal("a long-polling /sync did not wake up for presence")
		}
	})
}

// TestPresenceErrors: bad requests get Matrix errors.
func TestPresenceErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, _, _ := s.register("bob", "password-bob")
		path := "/_matrix/client/v3/presence/" + aliceID + "/status"
		s.expectErr("PUT", "/_matrix/client/v3/presence/"+bobID+"/status", alice, map[string]any{"presence": "online"}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("PUT", path, alice, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("PUT", path, alice, map[string]any{"presence": "busy"}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", path, alice, map[string]any{"presence": "online", "status_msg": 7}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", path, alice, "{", http.StatusBadRequest, "M_NOT_JSON")
		long := make([]byte, presence.MaxStatusMsg+1)
		for i := range long {
			long[i] = 'a'
		}
		s.expectErr("PUT", path, alice, map[string]any{"presence": "online", "status_msg": string(long)}, http.StatusBadRequest, "M_TOO_LARGE")
		s.expectErr("GET", "/_matrix/client/v3/presence/not-a-user/status", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", "/_matrix/client/v3/sync?set_presence=busy", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		// Her own presence, before she ever connected: offline.
		if got := s.do("GET", path, alice, nil, http.StatusOK); got["presence"] != "offline" {
			t.Fatalf("own presence: %v", got)
		}
	})
}

// TestPresenceRemote: what another server says of its users is kept only for users of that
// server, and times out to offline after 30 minutes without news.
func TestPresenceRemote(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		clock := &fakeClock{now: time.Now()}
		tracker := s.withPresenceClock(clock)
		ctx := context.Background()
		_, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		_, since := s.presenceEvents(alice, "", nil)

		// A remote user in Alice's room, as if they had joined over federation.
		const remote = "@zoe:remote.example"
		if err := storage.PutPresence(ctx, db, storage.PresenceRow{UserID: "@stranger:remote.example", Presence: "online",
			UpdatedTS: clock.Now().UnixMilli(), StreamPos: 1}); err != nil {
			t.Fatal(err)
		}
		joinRemoteMember(t, s, roomID, remote)

		msg := "remote status"
		updates := []presence.Update{
			{UserID: remote, Presence: "online", LastActiveAgo: 5000, CurrentlyActive: true, StatusMsg: &msg},
			{UserID: "@mallory:other.example", Presence: "online"}, // not the sender's user
			{UserID: "@zed:remote.example", Presence: "dancing"},   // no such state
		}
		if err := tracker.ApplyRemote(ctx, "remote.example", updates); err != nil {
			t.Fatal(err)
		}
		for _, user := range []string{"@mallory:other.example", "@zed:remote.example"} {
			if _, err := storage.LoadPresence(ctx, db, user); err != storage.ErrNotFound {
				t.Errorf("%s: stored (%v)", user, err)
			}
		}
		seen, since := s.presenceEvents(alice, since, nil)
		got := seen[remote]
		if got == nil || got["presence"] != "online" || got["status_msg"] != msg || got["last_active_ago"].(float64) < 5000 {
			t.Fatalf("Alice sees %v", seen)
		}

		// 31 minutes without news: offline.
		clock.Advance(31 * time.Minute)
		tracker.Sweep(ctx)
		seen, _ = s.presenceEvents(alice, since, nil)
		if got := seen[remote]; got == nil || got["presence"] != "offline" {
			t.Fatalf("after the timeout Alice sees %v", seen)
		}
		if row, err := storage.LoadPresence(ctx, db, "@stranger:remote.example"); err != nil || row.Presence != "offline" {
			t.Fatalf("stale stranger: %+v, %v", row, err)
		}
	})
}

// joinRemoteMember records userID as joined to roomID in the current-state table only, as a
// stand-in for a member who joined over federation (the federated path has its own tests).
func joinRemoteMember(t *testing.T, s *testServer, roomID, userID string) {
	t.Helper()
	ctx := context.Background()
	roomNID, err := s.api.rooms.RoomNID(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.db.Exec(ctx, `INSERT INTO current_state (room_nid, type, state_key, event_nid, membership)
		VALUES ($1, 'm.room.member', $2, 0, 'join')`, roomNID, userID); err != nil {
		t.Fatal(err)
	}
}

// TestPresenceNewlyShared: a user who joins a room hears, in the next incremental /sync, the
// presence of its members who are not offline, though it did not change in the window.
func TestPresenceNewlyShared(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		_, carol, _ := s.register("carol", "password-carol")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.do("PUT", "/_matrix/client/v3/presence/"+aliceID+"/status", alice,
			map[string]any{"presence": "online", "status_msg": "here"}, http.StatusOK)
		_, since := s.presenceEvents(carol, "", nil)
		s.joinRoom(carol, roomID)
		seen, _ := s.presenceEvents(carol, since, nil)
		if got := seen[aliceID]; got == nil || got["presence"] != "online" || got["status_msg"] != "here" {
			t.Fatalf("after joining Carol sees %v", seen)
		}
	})
}

// TestPresenceOff: with EGGS_PRESENCE=off nobody's presence is tracked: a PUT is accepted
// and has no effect, everyone reads as offline, /sync carries no presence.
func TestPresenceOff(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		s.api.presence = presence.New(presence.Config{DB: db, Stream: s.api.rooms.Stream(), ServerName: testServerName,
			Clock: time.Now, Log: s.api.log, Disabled: true})
		aliceID, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		s.sync(alice, url.Values{})
		s.do("PUT", "/_matrix/client/v3/presence/"+aliceID+"/status", alice,
			map[string]any{"presence": "online", "status_msg": "here"}, http.StatusOK)
		if seen, _ := s.presenceEvents(bob, "", nil); len(seen) != 0 {
			t.Fatalf("presence off, yet /sync has %v", seen)
		}
		if got := s.do("GET", "/_matrix/client/v3/presence/"+aliceID+"/status", bob, nil, http.StatusOK); got["presence"] != "offline" {
			t.Fatalf("presence off, GET: %v", got)
		}
	})
}
