package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// sync calls /sync with query parameters and returns the response.
func (s *testServer) sync(token string, params url.Values) map[string]any {
	s.t.Helper()
	return s.do("GET", "/_matrix/client/v3/sync?"+params.Encode(), token, nil, http.StatusOK)
}

// syncRoom is one room of a /sync response's rooms.<section>, or nil.
func syncRoom(resp map[string]any, section, roomID string) map[string]any {
	rooms, _ := resp["rooms"].(map[string]any)
	sectionRooms, _ := rooms[section].(map[string]any)
	room, _ := sectionRooms[roomID].(map[string]any)
	return room
}

// eventsOf lists the events of a room's part ("timeline", "state", "account_data", ...).
func eventsOf(room map[string]any, part string) []map[string]any {
	p, _ := room[part].(map[string]any)
	list, _ := p["events"].([]any)
	out := make([]map[string]any, 0, len(list))
	for _, e := range list {
		out = append(out, e.(map[string]any))
	}
	return out
}

// bodiesOf lists content.body of events, or the type for events without a body.
func bodiesOf(events []map[string]any) []string {
	var out []string
	for _, e := range events {
		content, _ := e["content"].(map[string]any)
		if body, ok := content["body"].(string); ok {
			out = append(out, body)
		} else {
			out = append(out, e["type"].(string))
		}
	}
	return out
}

func hasEvent(events []map[string]any, evType, stateKey string) bool {
	return slices.ContainsFunc(events, func(e map[string]any) bool {
		return e["type"] == evType && (stateKey == "*" || e["state_key"] == stateKey)
	})
}

func TestSplitPropertyPath(t *testing.T) {
	// Appendices, "Dot-separated property paths".
	for _, tc := range []struct {
		path string
		want []string
	}{
		{"content.body", []string{"content", "body"}},
		{`content.m\.relates_to`, []string{"content", "m.relates_to"}},
		{`content.m\\foo`, []string{"content", `m\foo`}},
		{`content.a\xb`, []string{"content", `a\xb`}},
		{`type`, []string{"type"}},
		{`trailing\`, []string{`trailing\`}},
	} {
		if got := splitPropertyPath(tc.path); !reflect.DeepEqual(got, tc.want) {
			t.Errorf("splitPropertyPath(%q) = %q, want %q", tc.path, got, tc.want)
		}
	}
}

func TestPickFields(t *testing.T) {
	event := json.RawMessage(`{"type":"m.room.message","sender":"@a:x","content":{"body":"hi","m.relates_to":{"rel_type":"r"},"n":5}}`)
	for _, tc := range []struct {
		name   string
		fields []string
		want   string
	}{
		{"nested", []string{"content.body", "type"}, `{"content":{"body":"hi"},"type":"m.room.message"}`},
		{"escaped dot", []string{`content.m\.relates_to.rel_type`}, `{"content":{"m.relates_to":{"rel_type":"r"}}}`},
		{"missing and through a non-object", []string{"nothing", "content.body.x", "sender"}, `{"sender":"@a:x"}`},
		{"whole object wins over a part of it", []string{"content.body", "content"}, `{"content":{"body":"hi","m.relates_to":{"rel_type":"r"},"n":5}}`},
		{"empty list", []string{}, `{}`},
	} {
		paths := [][]string{}
		for _, f := range tc.fields {
			paths = append(paths, splitPropertyPath(f))
		}
		picked, err := pickFields(event, paths)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := json.Marshal(picked)
		var gotValue, wantValue any
		_ = json.Unmarshal(got, &gotValue)
		_ = json.Unmarshal([]byte(tc.want), &wantValue)
		if !reflect.DeepEqual(gotValue, wantValue) {
			t.Errorf("%s: got %s, want %s", tc.name, got, tc.want)
		}
	}
}

// TestSyncEventFieldsAndFormat: a sync filter's event_fields and event_format shape the
// timeline and state events (definitions/sync_filter.yaml), not account data.
func TestSyncEventFieldsAndFormat(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Shapes"})
		s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.message/shape1", alice, map[string]any{
			"msgtype": "m.text", "body": "shaped", "m.relates_to": map[string]any{"rel_type": "m.thread", "event_id": "$x"},
		}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/user/"+aliceID+"/account_data/m.custom", alice, map[string]any{"k": "v"}, http.StatusOK)

		filter := `{"event_fields":["type","content.body","content.m\\.relates_to.rel_type"],"room":{"timeline":{"limit":50}}}`
		resp := s.sync(alice, url.Values{"filter": {filter}})
		room := syncRoom(resp, "join", roomID)
		timeline := eventsOf(room, "timeline")
		if len(timeline) == 0 {
			t.Fatal("no timeline")
		}
		for _, e := range append(timeline, eventsOf(room, "state")...) {
			for key := range e {
				if key != "type" && key != "content" {
					t.Fatalf("event has %q beyond event_fields: %v", key, e)
				}
			}
		}
		last := timeline[len(timeline)-1]
		want := map[string]any{"type": "m.room.message", "content": map[string]any{"body": "shaped", "m.relates_to": map[string]any{"rel_type": "m.thread"}}}
		if !reflect.DeepEqual(last, want) {
			t.Fatalf("shaped message %v, want %v", last, want)
		}
		// Account data keeps its form (next to the m.push_rules of an initial sync).
		global := resp["account_data"].(map[string]any)["events"].([]any)
		if len(global) != 2 || global[0].(map[string]any)["type"] != "m.custom" || global[1].(map[string]any)["type"] != "m.push_rules" {
			t.Fatalf("account data %v", global)
		}

		// Stored filters carry the same fields.
		stored := s.do("POST", "/_matrix/client/v3/user/"+aliceID+"/filter", alice,
			map[string]any{"event_fields": []string{"event_id"}}, http.StatusOK)["filter_id"].(string)
		for _, e := range eventsOf(syncRoom(s.sync(alice, url.Values{"filter": {stored}}), "join", roomID), "timeline") {
			if len(e) != 1 || e["event_id"] == nil {
				t.Fatalf("event_fields [event_id] gave %v", e)
			}
		}

		// The federation format: the PDU as stored with its event ID, no client additions.
		resp = s.sync(alice, url.Values{"filter": {`{"event_format":"federation","room":{"timeline":{"limit":1}}}`}})
		room = syncRoom(resp, "join", roomID)
		timeline = eventsOf(room, "timeline")
		last = timeline[len(timeline)-1]
		for _, key := range []string{"event_id", "auth_events", "prev_events", "depth", "hashes", "signatures", "room_id", "origin_server_ts"} {
			if _, ok := last[key]; !ok {
				t.Fatalf("federation event lacks %s: %v", key, last)
			}
		}
		if _, ok := last["unsigned"]; ok {
			t.Fatalf("federation event has client unsigned data: %v", last)
		}
		if !hasEvent(eventsOf(room, "state"), "m.room.create", "") {
			t.Fatalf("federation state lacks the create event")
		}
		// Both together.
		resp = s.sync(alice, url.Values{"filter": {`{"event_format":"federation","event_fields":["depth"]}`}})
		for _, e := range eventsOf(syncRoom(resp, "join", roomID), "timeline") {
			if len(e) != 1 || e["depth"] == nil {
				t.Fatalf("federation event with event_fields [depth]: %v", e)
			}
		}
		s.expectErr("GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"event_format":"raw"}`), alice, nil, http.StatusBadRequest, "M_BAD_JSON")
	})
}

// TestSyncIncludeLeaveAndForget: include_leave brings rooms the user left into an initial
// sync, each up to the leave; a forgotten room never appears again.
func TestSyncIncludeLeaveAndForget(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Left"})
		s.joinRoom(bob, roomID)
		s.sendText(bob, roomID, "before leaving")
		beforeLeave := s.sync(bob, nil)["next_batch"].(string)
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		s.sendText(alice, roomID, "after bob left")
		s.setState(alice, roomID, "m.room.topic", map[string]any{"topic": "later"})

		if syncRoom(s.sync(bob, nil), "leave", roomID) != nil {
			t.Fatal("left room in an initial sync without include_leave")
		}
		includeLeave := url.Values{"filter": {`{"room":{"include_leave":true,"timeline":{"limit":2}}}`}}
		left := syncRoom(s.sync(bob, includeLeave), "leave", roomID)
		if left == nil {
			t.Fatal("include_leave: left room missing")
		}
		timeline := eventsOf(left, "timeline")
		bodies := bodiesOf(timeline)
		if slices.Contains(bodies, "after bob left") || !slices.Contains(bodies, "before leaving") {
			t.Fatalf("left room timeline %v", bodies)
		}
		if end := timeline[len(timeline)-1]; end["type"] != "m.room.member" || end["content"].(map[string]any)["membership"] != "leave" {
			t.Fatalf("timeline ends with %v, want bob's leave", end)
		}
		state := eventsOf(left, "state")
		if !hasEvent(state, "m.room.create", "") || !hasEvent(state, "m.room.name", "") || hasEvent(state, "m.room.topic", "") {
			t.Fatalf("left room state %v: want the state at the leave", state)
		}

		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/forget", bob, map[string]any{}, http.StatusOK)
		if syncRoom(s.sync(bob, includeLeave), "leave", roomID) != nil {
			t.Fatal("forgotten room in an initial sync with include_leave")
		}
		if syncRoom(s.sync(bob, url.Values{"since": {beforeLeave}}), "leave", roomID) != nil {
			t.Fatal("forgotten room in an incremental sync")
		}

		// Coming back undoes the forget: after rejoining and leaving again, the room shows.
		s.joinRoom(bob, roomID)
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		if syncRoom(s.sync(bob, includeLeave), "leave", roomID) == nil {
			t.Fatal("a room left again after rejoining is still hidden as forgotten")
		}
	})
}

// TestSyncLeftRoomIncremental: a room left in the window has its timeline (filtered) up to
// the leave, the state between since and the start of a limited timeline, and its account
// data.
func TestSyncLeftRoomIncremental(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Kicked"})
		s.joinRoom(bob, roomID)
		since := s.sync(bob, nil)["next_batch"].(string)

		s.do("PUT", "/_matrix/client/v3/user/"+bobID+"/rooms/"+roomID+"/account_data/m.tag.note", bob, map[string]any{"n": 1}, http.StatusOK)
		s.setState(alice, roomID, "m.room.topic", map[string]any{"topic": "in the gap"})
		for _, body := range []string{"one", "two", "three"} {
			s.sendText(alice, roomID, body)
		}
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/kick", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		s.sendText(alice, roomID, "after the kick")

		filter := `{"room":{"timeline":{"limit":2,"types":["m.room.message","m.room.member"]}}}`
		resp := s.sync(bob, url.Values{"since": {since}, "filter": {filter}})
		if syncRoom(resp, "join", roomID) != nil {
			t.Fatal("kicked room still joined")
		}
		left := syncRoom(resp, "leave", roomID)
		if left == nil {
			t.Fatalf("kicked room not in leave: %v", resp["rooms"])
		}
		tl := left["timeline"].(map[string]any)
		if bodies := bodiesOf(eventsOf(left, "timeline")); !reflect.DeepEqual(bodies, []string{"three", "m.room.member"}) || tl["limited"] != true {
			t.Fatalf("timeline %v limited %v, want [three, kick] limited", bodies, tl["limited"])
		}
		state := eventsOf(left, "state")
		if !hasEvent(state, "m.room.topic", "") || hasEvent(state, "m.room.create", "") {
			t.Fatalf("state %v: want only what changed since, with the topic", state)
		}
		if data := eventsOf(left, "account_data"); len(data) != 1 || data[0]["type"] != "m.tag.note" {
			t.Fatalf("left room account data %v", data)
		}
		next := resp["next_batch"].(string)
		if again := s.sync(bob, url.Values{"since": {next}}); syncRoom(again, "leave", roomID) != nil {
			t.Fatal("left room repeated in the next sync")
		}
	})
}

// TestSyncFullState: full_state with since returns every joined room with all its state and
// the timeline since since.
func TestSyncFullState(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		busy := s.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Busy"})
		quiet := s.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Quiet"})
		since := s.sync(alice, nil)["next_batch"].(string)
		s.sendText(alice, busy, "new")

		incremental := s.sync(alice, url.Values{"since": {since}})
		if syncRoom(incremental, "join", quiet) != nil {
			t.Fatal("unchanged room in a plain incremental sync")
		}
		resp := s.sync(alice, url.Values{"since": {since}, "full_state": {"true"}, "timeout": {"10000"}})
		for _, roomID := range []string{busy, quiet} {
			room := syncRoom(resp, "join", roomID)
			if room == nil {
				t.Fatalf("full_state: room %s missing", roomID)
			}
			state := eventsOf(room, "state")
			for _, evType := range []string{"m.room.create", "m.room.power_levels", "m.room.join_rules", "m.room.name"} {
				if !hasEvent(state, evType, "") {
					t.Fatalf("full_state: %s missing from state of %s", evType, roomID)
				}
			}
			if room["unread_notifications"] == nil {
				t.Fatalf("full_state: no unread_notifications in %s", roomID)
			}
		}
		if bodies := bodiesOf(eventsOf(syncRoom(resp, "join", busy), "timeline")); !reflect.DeepEqual(bodies, []string{"new"}) {
			t.Fatalf("full_state timeline %v, want only the event since since", bodies)
		}
		if tl := eventsOf(syncRoom(resp, "join", quiet), "timeline"); len(tl) != 0 {
			t.Fatalf("full_state timeline of a quiet room: %v", tl)
		}
	})
}

// TestSyncInvites: invite_state holds the stripped state, the inviter's and the invitee's
// member events; a rescinded invite moves the room to leave without revealing the room's
// messages.
func TestSyncInvites(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		since := s.sync(bob, nil)["next_batch"].(string)
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Invite", "invite": []string{bobID}})

		resp := s.sync(bob, url.Values{"since": {since}})
		invite := syncRoom(resp, "invite", roomID)
		if invite == nil {
			t.Fatalf("no invite: %v", resp["rooms"])
		}
		state := eventsOf(invite, "invite_state")
		for _, want := range [][2]string{{"m.room.create", ""}, {"m.room.name", ""}, {"m.room.join_rules", ""}, {"m.room.member", aliceID}, {"m.room.member", bobID}} {
			if !hasEvent(state, want[0], want[1]) {
				t.Fatalf("invite_state lacks %v: %v", want, state)
			}
		}
		for _, e := range state {
			for key := range e {
				if key != "type" && key != "state_key" && key != "sender" && key != "content" {
					t.Fatalf("stripped event has %q: %v", key, e)
				}
			}
		}
		since = resp["next_batch"].(string)

		s.sendText(alice, roomID, "secret")
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/kick", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		resp = s.sync(bob, url.Values{"since": {since}})
		if syncRoom(resp, "invite", roomID) != nil {
			t.Fatal("rescinded invite still listed")
		}
		left := syncRoom(resp, "leave", roomID)
		if left == nil {
			t.Fatalf("rescinded invite not in leave: %v", resp["rooms"])
		}
		timeline := eventsOf(left, "timeline")
		if len(timeline) != 1 || timeline[0]["type"] != "m.room.member" || timeline[0]["state_key"] != bobID {
			t.Fatalf("rescinded invite timeline %v, want only the revocation", timeline)
		}
	})
}

// TestSyncUnreadNotificationsEverywhere: every joined room of a response has
// unread_notifications, also one whose only news is room account data.
func TestSyncUnreadNotificationsEverywhere(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		resp := s.sync(alice, nil)
		counts, ok := syncRoom(resp, "join", roomID)["unread_notifications"].(map[string]any)
		if !ok || counts["notification_count"] != float64(0) || counts["highlight_count"] != float64(0) {
			t.Fatalf("initial sync unread_notifications %v", counts)
		}
		since := resp["next_batch"].(string)
		s.do("PUT", "/_matrix/client/v3/user/"+aliceID+"/rooms/"+roomID+"/account_data/m.fully_read_note", alice, map[string]any{"x": 1}, http.StatusOK)
		room := syncRoom(s.sync(alice, url.Values{"since": {since}}), "join", roomID)
		if room == nil || len(eventsOf(room, "account_data")) != 1 {
			t.Fatalf("room account data not synced: %v", room)
		}
		if _, ok := room["unread_notifications"].(map[string]any); !ok {
			t.Fatalf("account-data-only room without unread_notifications: %v", room)
		}
		// A room filter leaves the room's account data out.
		filtered := s.sync(alice, url.Values{"since": {since}, "filter": {`{"room":{"account_data":{"not_types":["m.fully_read_note"]}}}`}})
		if syncRoom(filtered, "join", roomID) != nil {
			t.Fatal("filtered-out account data still brings the room")
		}
	})
}

// TestSyncBadParameters: tokens the server never issued, bad timeouts and unknown filter IDs
// are 400 M_INVALID_PARAM.
func TestSyncBadParameters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		for _, query := range []string{
			"since=abc", "since=s-5", "since=5", "since=s", "since=s1.5",
			"timeout=abc", "timeout=-1", "timeout=1.5",
			"filter=12345", "filter=abc",
		} {
			s.expectErr("GET", "/_matrix/client/v3/sync?"+query, alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		}
		s.expectErr("GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape("{"), alice, nil, http.StatusBadRequest, "M_NOT_JSON")
	})
}

// TestSyncStateAfter: with use_state_after (v1.16), rooms give state_after, the state at the
// end of the timeline (what changed since since, the timeline's state events included), and
// no state; without it, state as before. An empty state_after is still there, also in a
// room whose only news is account data, and a left room's stops at the leave.
func TestSyncStateAfter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Before"})
		s.joinRoom(bob, roomID)
		withStateAfter := func(since string) url.Values {
			v := url.Values{"use_state_after": {"true"}}
			if since != "" {
				v.Set("since", since)
			}
			return v
		}
		stateAfterOf := func(room map[string]any) []map[string]any {
			t.Helper()
			if room == nil {
				t.Fatal("room missing from the response")
			}
			if _, ok := room["state"]; ok {
				t.Fatalf("state given with use_state_after: %v", room)
			}
			if _, ok := room["state_after"]; !ok {
				t.Fatalf("no state_after: %v", room)
			}
			return eventsOf(room, "state_after")
		}

		initial := s.sync(bob, withStateAfter(""))
		state := stateAfterOf(syncRoom(initial, "join", roomID))
		if !hasEvent(state, "m.room.create", "") || !hasEvent(state, "m.room.name", "") || !hasEvent(state, "m.room.member", bobID) {
			t.Fatalf("initial state_after %v", state)
		}
		since := initial["next_batch"].(string)
		s.setState(alice, roomID, "m.room.topic", map[string]any{"topic": "in the timeline"})
		s.sendText(alice, roomID, "after the topic")
		room := syncRoom(s.sync(bob, withStateAfter(since)), "join", roomID)
		if state := stateAfterOf(room); len(state) != 1 || !hasEvent(state, "m.room.topic", "") {
			t.Fatalf("state_after %v, want the topic set in the timeline", state)
		}
		if tl := bodiesOf(eventsOf(room, "timeline")); !reflect.DeepEqual(tl, []string{"m.room.topic", "after the topic"}) {
			t.Fatalf("timeline %v", tl)
		}
		plain := syncRoom(s.sync(bob, url.Values{"since": {since}}), "join", roomID)
		if _, ok := plain["state_after"]; ok || len(eventsOf(plain, "state")) != 0 {
			t.Fatalf("without use_state_after: %v", plain)
		}

		since = s.sync(bob, withStateAfter(since))["next_batch"].(string)
		s.sendText(alice, roomID, "only a message")
		if state := stateAfterOf(syncRoom(s.sync(bob, withStateAfter(since)), "join", roomID)); len(state) != 0 {
			t.Fatalf("state_after %v, want it empty", state)
		}
		since = s.sync(bob, withStateAfter(since))["next_batch"].(string)
		s.do("PUT", "/_matrix/client/v3/user/"+bobID+"/rooms/"+roomID+"/account_data/m.tag.note", bob, map[string]any{"n": 1}, http.StatusOK)
		if state := stateAfterOf(syncRoom(s.sync(bob, withStateAfter(since)), "join", roomID)); len(state) != 0 {
			t.Fatalf("account data only: state_after %v", state)
		}

		// Lazy-loaded members come with state_after even when no state changed.
		carolID, carol, _ := s.register("carol", "password-carol")
		s.joinRoom(carol, roomID)
		since = s.sync(bob, withStateAfter(since))["next_batch"].(string)
		s.sendText(carol, roomID, "carol speaks")
		lazy := withStateAfter(since)
		lazy.Set("filter", `{"room":{"state":{"lazy_load_members":true}}}`)
		state = stateAfterOf(syncRoom(s.sync(bob, lazy), "join", roomID))
		if len(state) != 2 || !hasEvent(state, "m.room.member", carolID) || !hasEvent(state, "m.room.member", bobID) {
			t.Fatalf("lazy-loaded state_after %v, want carol's and bob's member events", state)
		}

		since = s.sync(bob, withStateAfter(since))["next_batch"].(string)
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/kick", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		s.setState(alice, roomID, "m.room.name", map[string]any{"name": "After"})
		state = stateAfterOf(syncRoom(s.sync(bob, withStateAfter(since)), "leave", roomID))
		if len(state) != 1 || !hasEvent(state, "m.room.member", bobID) {
			t.Fatalf("left room state_after %v, want bob's kick only", state)
		}
	})
}
