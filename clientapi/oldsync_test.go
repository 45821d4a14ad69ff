package clientapi

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// chunkBodies lists content.body (or the type) of a list of client events.
func chunkBodies(list any) []string {
	raw, _ := list.([]any)
	return bodiesOf(toEvents(raw))
}

// messagesOf is the "messages" chunk of a RoomInfo.
func messagesOf(t *testing.T, info map[string]any) map[string]any {
	t.Helper()
	messages, ok := info["messages"].(map[string]any)
	if !ok {
		t.Fatalf("no messages in %v", info)
	}
	return messages
}

// eventsAnswer is the outcome of a GET /events run in the background.
type eventsAnswer struct {
	status int
	body   map[string]any
	err    error
}

// getInBackground sends a GET without touching t, so that it can run beside the test.
func (s *testServer) getInBackground(path, token string) <-chan eventsAnswer {
	out := make(chan eventsAnswer, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, s.srv.URL+path, nil)
		req.Header.Set("Authorization", "Bearer "+token)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			out <- eventsAnswer{err: err}
			return
		}
		defer resp.Body.Close()
		raw, _ := io.ReadAll(resp.Body)
		answer := eventsAnswer{status: resp.StatusCode, body: map[string]any{}}
		answer.err = json.Unmarshal(raw, &answer.body)
		out <- answer
	}()
	return out
}

// awaitEvents waits for a background GET /events and checks it succeeded.
func awaitEvents(t *testing.T, answers <-chan eventsAnswer) map[string]any {
	t.Helper()
	select {
	case a := <-answers:
		if a.err != nil || a.status != http.StatusOK {
			t.Fatalf("GET /events: status %d, err %v, body %v", a.status, a.err, a.body)
		}
		return a.body
	case <-time.After(20 * time.Second):
		t.Fatal("GET /events did not return")
	}
	return nil
}

func TestInitialSyncRoom(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		alice, aliceToken, _ := s.register("alice", "password-alice")
		_, bobToken, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(aliceToken, map[string]any{"preset": "private_chat", "name": "Snapshot"})
		var last string
		for i := 1; i <= 5; i++ {
			last = s.sendText(aliceToken, roomID, fmt.Sprintf("m%d", i))
		}
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+last, aliceToken, map[string]any{}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/user/"+alice+"/rooms/"+roomID+"/account_data/org.example.room", aliceToken,
			map[string]any{"k": "v"}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/user/"+alice+"/account_data/org.example.global", aliceToken,
			map[string]any{"g": 1}, http.StatusOK)
		path := "/_matrix/client/v3/rooms/" + roomID + "/initialSync"

		info := s.do("GET", path+"?limit=3", aliceToken, nil, http.StatusOK)
		if info["room_id"] != roomID || info["membership"] != "join" || info["visibility"] != "private" {
			t.Fatalf("room info %v", info)
		}
		messages := messagesOf(t, info)
		if got := chunkBodies(messages["chunk"]); !reflect.DeepEqual(got, []string{"m3", "m4", "m5"}) {
			t.Fatalf("messages %v, want the newest three, newest last", got)
		}
		if first := messages["chunk"].([]any)[0].(map[string]any); first["room_id"] != roomID {
			t.Fatalf("message without room_id: %v", first)
		}
		state := info["state"].([]any)
		if !hasEvent(toEvents(state), "m.room.create", "") || !hasEvent(toEvents(state), "m.room.member", alice) ||
			!hasEvent(toEvents(state), "m.room.name", "") {
			t.Fatalf("state %v", state)
		}
		data := info["account_data"].([]any)
		if len(data) != 1 || data[0].(map[string]any)["type"] != "org.example.room" {
			t.Fatalf("account_data %v, want the room's only", data)
		}
		presence := info["presence"].([]any)
		if len(presence) != 1 || presence[0].(map[string]any)["sender"] != alice {
			t.Fatalf("presence %v, want alice's", presence)
		}
		receipts, _ := info["receipts"].([]any)
		if len(receipts) != 1 || receipts[0].(map[string]any)["type"] != "m.receipt" ||
			receipts[0].(map[string]any)["content"].(map[string]any)[last] == nil {
			t.Fatalf("receipts %v, want alice's on %s", receipts, last)
		}

		// start and end are /messages tokens: before start are the older messages, after end
		// what comes next.
		older := s.page(aliceToken, roomID, url.Values{"dir": {"b"}, "from": {messages["start"].(string)}, "limit": {"2"}})
		if got := chunkBodies(older["chunk"]); !reflect.DeepEqual(got, []string{"m2", "m1"}) {
			t.Fatalf("before start: %v", got)
		}
		end := messages["end"].(string)
		if later := s.page(aliceToken, roomID, url.Values{"dir": {"f"}, "from": {end}}); len(later["chunk"].([]any)) != 0 {
			t.Fatalf("after end before anything was sent: %v", later["chunk"])
		}
		s.sendText(aliceToken, roomID, "m6")
		later := s.page(aliceToken, roomID, url.Values{"dir": {"f"}, "from": {end}})
		if got := chunkBodies(later["chunk"]); !reflect.DeepEqual(got, []string{"m6"}) {
			t.Fatalf("after end: %v", got)
		}

		// Default limit 10; limit 0 gives no messages but the tokens.
		if n := len(messagesOf(t, s.do("GET", path, aliceToken, nil, http.StatusOK))["chunk"].([]any)); n != 10 {
			t.Fatalf("default limit gave %d messages", n)
		}
		empty := messagesOf(t, s.do("GET", path+"?limit=0", aliceToken, nil, http.StatusOK))
		if len(empty["chunk"].([]any)) != 0 || empty["end"] == nil {
			t.Fatalf("limit 0: %v", empty)
		}

		// Not a member of a private room: 403, as for an unknown room.
		s.expectErr("GET", path, bobToken, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("GET", "/_matrix/client/v3/rooms/!nowhere:"+testServerName+"/initialSync", bobToken, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("GET", "/_matrix/client/v3/rooms/not-a-room/initialSync", bobToken, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+"?limit=-1", aliceToken, nil, http.StatusBadRequest, "M_INVALID_PARAM")

		// A former member sees the room as it was when they left.
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", aliceToken, map[string]any{"user_id": "@bob:" + testServerName}, http.StatusOK)
		s.joinRoom(bobToken, roomID)
		s.sendText(aliceToken, roomID, "while bob is here")
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bobToken, map[string]any{}, http.StatusOK)
		s.sendText(aliceToken, roomID, "after bob left")
		left := s.do("GET", path, bobToken, nil, http.StatusOK)
		bodies := chunkBodies(messagesOf(t, left)["chunk"])
		if left["membership"] != "leave" || bodies[len(bodies)-1] != "m.room.member" || bodies[len(bodies)-2] != "while bob is here" {
			t.Fatalf("left room: membership %v, messages %v", left["membership"], bodies)
		}
		if len(left["presence"].([]any)) != 0 {
			t.Fatalf("former member got presence %v", left["presence"])
		}
	})
}

func TestInitialSyncRoomPeek(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, aliceToken, _ := s.register("alice", "password-alice")
		_, bobToken, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(aliceToken, map[string]any{"preset": "public_chat", "visibility": "public"})
		s.setState(aliceToken, roomID, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
		s.sendText(aliceToken, roomID, "hello world")

		info := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/initialSync", bobToken, nil, http.StatusOK)
		if _, ok := info["membership"]; ok || info["visibility"] != "public" {
			t.Fatalf("peek: %v", info)
		}
		if bodies := chunkBodies(messagesOf(t, info)["chunk"]); bodies[len(bodies)-1] != "hello world" {
			t.Fatalf("peek messages %v", bodies)
		}
		if len(info["presence"].([]any)) != 0 || len(info["account_data"].([]any)) != 0 {
			t.Fatalf("peeker got presence or account data: %v", info)
		}
	})
}

// toEvents turns a decoded JSON list of events into maps.
func toEvents(list []any) []map[string]any {
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		out = append(out, e.(map[string]any))
	}
	return out
}

// roomInfoOf finds a room in /initialSync's rooms.
func roomInfoOf(resp map[string]any, roomID string) map[string]any {
	for _, r := range resp["rooms"].([]any) {
		if info := r.(map[string]any); info["room_id"] == roomID {
			return info
		}
	}
	return nil
}

func TestInitialSyncAllRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		alice, aliceToken, _ := s.register("alice", "password-alice")
		_, bobToken, _ := s.register("bob", "password-bob")
		joined := s.createRoom(aliceToken, map[string]any{"preset": "private_chat", "visibility": "public"})
		s.sendText(aliceToken, joined, "one")
		s.sendText(aliceToken, joined, "two")
		invited := s.createRoom(bobToken, map[string]any{"preset": "private_chat"})
		s.do("POST", "/_matrix/client/v3/rooms/"+invited+"/invite", bobToken, map[string]any{"user_id": alice}, http.StatusOK)
		left := s.createRoom(aliceToken, map[string]any{"preset": "private_chat"})
		s.sendText(aliceToken, left, "before leaving")
		s.do("POST", "/_matrix/client/v3/rooms/"+left+"/leave", aliceToken, map[string]any{}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/user/"+alice+"/account_data/org.example.global", aliceToken,
			map[string]any{"g": 1}, http.StatusOK)

		resp := s.do("GET", "/_matrix/client/v3/initialSync?limit=1", aliceToken, nil, http.StatusOK)
		if _, ok := resp["end"].(string); !ok || resp["presence"] == nil {
			t.Fatalf("initialSync %v", resp)
		}
		data := resp["account_data"].([]any)
		if len(data) != 2 || data[0].(map[string]any)["type"] != "org.example.global" || data[1].(map[string]any)["type"] != "m.push_rules" {
			t.Fatalf("account_data %v", data)
		}
		room := roomInfoOf(resp, joined)
		if room == nil || room["membership"] != "join" || room["visibility"] != "public" {
			t.Fatalf("joined room %v", room)
		}
		if got := chunkBodies(messagesOf(t, room)["chunk"]); !reflect.DeepEqual(got, []string{"two"}) {
			t.Fatalf("joined room messages %v", got)
		}
		if !hasEvent(toEvents(room["state"].([]any)), "m.room.create", "") {
			t.Fatalf("joined room state %v", room["state"])
		}
		invite := roomInfoOf(resp, invited)
		if invite == nil || invite["membership"] != "invite" || invite["invite"].(map[string]any)["state_key"] != alice {
			t.Fatalf("invited room %v", invite)
		}
		if _, ok := invite["messages"]; ok {
			t.Fatalf("invited room shows messages: %v", invite)
		}
		if roomInfoOf(resp, left) != nil {
			t.Fatal("left room listed without archived=true")
		}

		archived := s.do("GET", "/_matrix/client/v3/initialSync?archived=true&limit=2", aliceToken, nil, http.StatusOK)
		room = roomInfoOf(archived, left)
		if room == nil || room["membership"] != "leave" {
			t.Fatalf("archived room %v", room)
		}
		if got := chunkBodies(messagesOf(t, room)["chunk"]); !reflect.DeepEqual(got, []string{"before leaving", "m.room.member"}) {
			t.Fatalf("archived room messages %v", got)
		}
		s.expectErr("GET", "/_matrix/client/v3/initialSync?archived=maybe", aliceToken, nil, http.StatusBadRequest, "M_INVALID_PARAM")

		// end is where /events carries on: a new message arrives while it waits.
		answer := s.getInBackground("/_matrix/client/v3/events?timeout=15000&from="+resp["end"].(string), aliceToken)
		time.Sleep(300 * time.Millisecond)
		s.sendText(aliceToken, joined, "three")
		events := awaitEvents(t, answer)
		if got := chunkBodies(events["chunk"]); !reflect.DeepEqual(got, []string{"three"}) {
			t.Fatalf("/events after initialSync: %v", got)
		}
	})
}

func TestEventsStream(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		alice, aliceToken, _ := s.register("alice", "password-alice")
		_, bobToken, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(aliceToken, map[string]any{"preset": "private_chat"})
		bobsRoom := s.createRoom(bobToken, map[string]any{"preset": "private_chat"})
		from := s.sync(aliceToken, nil)["next_batch"].(string)

		s.sendText(aliceToken, roomID, "a1")
		s.sendText(bobToken, bobsRoom, "not for alice")
		s.sendText(aliceToken, roomID, "a2")
		s.sendText(aliceToken, roomID, "a3")

		// Oldest first, a page at a time, only from alice's rooms.
		first := s.do("GET", "/_matrix/client/v3/events?timeout=0&limit=2&from="+from, aliceToken, nil, http.StatusOK)
		if got := chunkBodies(first["chunk"]); !reflect.DeepEqual(got, []string{"a1", "a2"}) || first["start"] != from {
			t.Fatalf("first page %v, start %v", got, first["start"])
		}
		if e := first["chunk"].([]any)[0].(map[string]any); e["room_id"] != roomID || e["sender"] != alice {
			t.Fatalf("event %v", e)
		}
		second := s.do("GET", "/_matrix/client/v3/events?timeout=0&from="+first["end"].(string), aliceToken, nil, http.StatusOK)
		if got := chunkBodies(second["chunk"]); !reflect.DeepEqual(got, []string{"a3"}) {
			t.Fatalf("second page %v", got)
		}
		end := second["end"].(string)
		if idle := s.do("GET", "/_matrix/client/v3/events?timeout=0&from="+end, aliceToken, nil, http.StatusOK); len(idle["chunk"].([]any)) != 0 || idle["end"] != end {
			t.Fatalf("nothing new: %v", idle)
		}

		// Long-polling returns with the next message.
		started := time.Now()
		answer := s.getInBackground("/_matrix/client/v3/events?timeout=15000&from="+end, aliceToken)
		time.Sleep(300 * time.Millisecond)
		s.sendText(aliceToken, roomID, "a4")
		polled := awaitEvents(t, answer)
		if got := chunkBodies(polled["chunk"]); !reflect.DeepEqual(got, []string{"a4"}) || time.Since(started) > 10*time.Second {
			t.Fatalf("long-poll gave %v after %v", got, time.Since(started))
		}

		// An invite reaches the invitee through the stream.
		s.do("POST", "/_matrix/client/v3/rooms/"+bobsRoom+"/invite", bobToken, map[string]any{"user_id": alice}, http.StatusOK)
		invite := s.do("GET", "/_matrix/client/v3/events?timeout=0&from="+polled["end"].(string), aliceToken, nil, http.StatusOK)
		events := toEvents(invite["chunk"].([]any))
		if len(events) != 1 || events[0]["type"] != "m.room.member" || events[0]["room_id"] != bobsRoom {
			t.Fatalf("invite in the stream: %v", events)
		}

		s.expectErr("GET", "/_matrix/client/v3/events?from=bogus", aliceToken, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", "/_matrix/client/v3/events?timeout=soon", aliceToken, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

func TestEventsPeek(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, aliceToken, _ := s.register("alice", "password-alice")
		_, bobToken, _ := s.register("bob", "password-bob")
		open := s.createRoom(aliceToken, map[string]any{"preset": "public_chat"})
		s.setState(aliceToken, open, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
		closed := s.createRoom(aliceToken, map[string]any{"preset": "private_chat"})
		s.sendText(aliceToken, closed, "secret")

		// bob peeks: a room's messages from the end of its snapshot.
		info := s.do("GET", "/_matrix/client/v3/rooms/"+open+"/initialSync", bobToken, nil, http.StatusOK)
		from := messagesOf(t, info)["end"].(string)
		s.sendText(aliceToken, open, "p1")
		peek := url.Values{"room_id": {open}, "timeout": {"0"}, "from": {from}}
		got := s.do("GET", "/_matrix/client/v3/events?"+peek.Encode(), bobToken, nil, http.StatusOK)
		if bodies := chunkBodies(got["chunk"]); !reflect.DeepEqual(bodies, []string{"p1"}) {
			t.Fatalf("peeked events %v", bodies)
		}

		// The stream wakes no peeker, but the poll finds the new message.
		peek.Set("from", got["end"].(string))
		peek.Set("timeout", "15000")
		answer := s.getInBackground("/_matrix/client/v3/events?"+peek.Encode(), bobToken)
		time.Sleep(300 * time.Millisecond)
		s.sendText(aliceToken, open, "p2")
		if bodies := chunkBodies(awaitEvents(t, answer)["chunk"]); !reflect.DeepEqual(bodies, []string{"p2"}) {
			t.Fatalf("long-polled peek %v", bodies)
		}

		s.expectErr("GET", "/_matrix/client/v3/events?"+url.Values{"room_id": {closed}, "timeout": {"0"}}.Encode(),
			bobToken, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("GET", "/_matrix/client/v3/events?"+url.Values{"room_id": {"nonsense"}, "timeout": {"0"}}.Encode(),
			bobToken, nil, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
