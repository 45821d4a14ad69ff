package clientapi

import (
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// Helpers shared by the history, directory and user directory tests.

// testTxnCounter makes transaction IDs unique within the test binary.
var testTxnCounter atomic.Int64

func (s *testServer) createRoom(token string, body map[string]any) string {
	s.t.Helper()
	return s.do("POST", "/_matrix/client/v3/createRoom", token, body, http.StatusOK)["room_id"].(string)
}

func (s *testServer) sendText(token, roomID, text string) string {
	s.t.Helper()
	txn := fmt.Sprintf("t%d", testTxnCounter.Add(1))
	path := "/_matrix/client/v3/rooms/" + roomID + "/send/m.room.message/" + txn
	return s.do("PUT", path, token, map[string]any{"msgtype": "m.text", "body": text}, http.StatusOK)["event_id"].(string)
}

func (s *testServer) setState(token, roomID, evType string, content map[string]any) {
	s.t.Helper()
	s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/"+evType, token, content, http.StatusOK)
}

func (s *testServer) joinRoom(token, roomID string) {
	s.t.Helper()
	s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/join", token, map[string]any{}, http.StatusOK)
}

// on is the server with failures reported to a subtest.
func (s *testServer) on(t *testing.T) *testServer {
	sub := *s
	sub.t = t
	return &sub
}

// page reads one page of /messages.
func (s *testServer) page(token, roomID string, params url.Values) map[string]any {
	s.t.Helper()
	return s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/messages?"+params.Encode(), token, nil, http.StatusOK)
}

// paginate follows end tokens from the start of dir until none is returned and lists the
// event IDs and bodies (or types, for events without a body) in the order received.
func (s *testServer) paginate(token, roomID, dir string, limit int) (ids, bodies []string) {
	s.t.Helper()
	params := url.Values{"dir": {dir}, "limit": {fmt.Sprint(limit)}}
	for round := 0; ; round++ {
		if round > 200 {
			s.t.Fatal("pagination does not end")
		}
		out := s.page(token, roomID, params)
		for _, raw := range out["chunk"].([]any) {
			e := raw.(map[string]any)
			ids = append(ids, e["event_id"].(string))
			content := e["content"].(map[string]any)
			if body, ok := content["body"].(string); ok {
				bodies = append(bodies, body)
			} else {
				bodies = append(bodies, e["type"].(string))
			}
		}
		end, ok := out["end"].(string)
		if !ok {
			return ids, bodies
		}
		params.Set("from", end)
	}
}

func TestMessagesPagination(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Pages"})
		for i := 0; i < 23; i++ {
			s.sendText(alice, roomID, fmt.Sprintf("m%02d", i))
		}

		backIDs, backBodies := s.paginate(alice, roomID, "b", 10)
		fwdIDs, fwdBodies := s.paginate(alice, roomID, "f", 7)
		if len(backIDs) != len(fwdIDs) {
			t.Fatalf("backwards saw %d events, forwards %d", len(backIDs), len(fwdIDs))
		}
		seen := map[string]bool{}
		for i, id := range backIDs {
			if seen[id] {
				t.Fatalf("event %s returned twice", id)
			}
			seen[id] = true
			if fwdIDs[len(fwdIDs)-1-i] != id {
				t.Fatalf("backwards and forwards orders differ at %d", i)
			}
		}
		if backBodies[0] != "m22" || fwdBodies[0] != "m.room.create" {
			t.Fatalf("newest %q, oldest %q", backBodies[0], fwdBodies[0])
		}
		if !strings.Contains(strings.Join(fwdBodies, ","), "m00,m01,m02") {
			t.Fatalf("forwards order wrong: %v", fwdBodies)
		}

		// A page that ends exactly at the start of the room has no end token.
		all := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {fmt.Sprint(len(backIDs))}})
		if _, ok := all["end"]; ok || len(all["chunk"].([]any)) != len(backIDs) {
			t.Fatalf("whole room in one page: end %v, %d events", all["end"], len(all["chunk"].([]any)))
		}

		// Sync's prev_batch continues where the timeline stopped.
		sync := s.do("GET", "/_matrix/client/v3/sync?filter="+url.QueryEscape(`{"room":{"timeline":{"limit":3}}}`), alice, nil, http.StatusOK)
		tl := sync["rooms"].(map[string]any)["join"].(map[string]any)[roomID].(map[string]any)["timeline"].(map[string]any)
		next := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {"1"}, "from": {tl["prev_batch"].(string)}})
		if body := next["chunk"].([]any)[0].(map[string]any)["content"].(map[string]any)["body"]; body != "m19" {
			t.Fatalf("after sync's prev_batch: %v, want m19", body)
		}

		// to stops the page; limit 0 returns nothing but can go on.
		start := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {"3"}})
		between := s.page(alice, roomID, url.Values{"dir": {"b"}, "to": {start["end"].(string)}})
		if n := len(between["chunk"].([]any)); n != 3 {
			t.Fatalf("with to: %d events, want 3", n)
		}
		if zero := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {"0"}}); len(zero["chunk"].([]any)) != 0 || zero["end"] == nil {
			t.Fatalf("limit 0: %v", zero)
		}

		// Filters: types, and lazy-loaded members of the senders.
		filtered := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {"5"},
			"filter": {`{"types":["m.room.message"],"lazy_load_members":true}`}})
		for _, raw := range filtered["chunk"].([]any) {
			if typ := raw.(map[string]any)["type"]; typ != "m.room.message" {
				t.Fatalf("filter let %v through", typ)
			}
		}
		state, _ := filtered["state"].([]any)
		if len(state) != 1 || state[0].(map[string]any)["state_key"] != "@alice:"+testServerName {
			t.Fatalf("lazy-loaded members: %v", state)
		}

		base := "/_matrix/client/v3/rooms/" + roomID + "/messages"
		s.expectErr("GET", base+"?dir=x", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", base, alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", base+"?dir=b&from=garbage", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", base+"?dir=b&limit=-1", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", base+"?dir=b&filter=%7Bnot", alice, nil, http.StatusBadRequest, "M_NOT_JSON")
		_, mallory, _ := s.register("mallory", "password-mallory")
		s.expectErr("GET", base+"?dir=b", mallory, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("GET", "/_matrix/client/v3/rooms/!nope:"+testServerName+"/messages?dir=b", alice, nil, http.StatusForbidden, "M_FORBIDDEN")
	})
}

func TestHistoryVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")

		for _, tc := range []struct {
			visibility  string
			seesEarlier bool
		}{
			{"joined", false},
			{"invited", false},
			{"shared", true},
		} {
			t.Run(tc.visibility, func(t *testing.T) {
				s := s.on(t)
				roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
				s.setState(alice, roomID, "m.room.history_visibility", map[string]any{"history_visibility": tc.visibility})
				earlier := s.sendText(alice, roomID, "earlier")
				s.joinRoom(bob, roomID)
				later := s.sendText(alice, roomID, "later")

				_, bodies := s.paginate(bob, roomID, "b", 4)
				joined := strings.Join(bodies, ",")
				if !strings.HasPrefix(joined, "later,m.room.member") {
					t.Fatalf("bob sees %s", joined)
				}
				if strings.Contains(joined, "earlier") != tc.seesEarlier {
					t.Fatalf("visibility %s: bob sees %s", tc.visibility, joined)
				}
				eventPath := "/_matrix/client/v3/rooms/" + roomID + "/event/"
				s.do("GET", eventPath+later, bob, nil, http.StatusOK)
				if tc.seesEarlier {
					s.do("GET", eventPath+earlier, bob, nil, http.StatusOK)
				} else {
					s.expectErr("GET", eventPath+earlier, bob, nil, http.StatusNotFound, "M_NOT_FOUND")
					s.expectErr("GET", "/_matrix/client/v3/rooms/"+roomID+"/context/"+earlier, bob, nil, http.StatusNotFound, "M_NOT_FOUND")
				}
				// Never members see nothing, not even whether the event exists.
				s.expectErr("GET", eventPath+later, carol, nil, http.StatusNotFound, "M_NOT_FOUND")

				// After leaving, bob still sees what he saw, and nothing newer.
				s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
				afterLeave := s.sendText(alice, roomID, "after-leave")
				_, bodies = s.paginate(bob, roomID, "b", 3)
				if strings.Contains(strings.Join(bodies, ","), "after-leave") || bodies[1] != "later" {
					t.Fatalf("bob after leaving sees %v", bodies)
				}
				_, bodies = s.paginate(bob, roomID, "f", 3)
				if bodies[len(bodies)-1] != "m.room.member" {
					t.Fatalf("forwards, bob's last event is %v", bodies[len(bodies)-1])
				}
				s.expectErr("GET", eventPath+afterLeave, bob, nil, http.StatusNotFound, "M_NOT_FOUND")
				members := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/members", bob, nil, http.StatusOK)
				for _, raw := range members["chunk"].([]any) {
					m := raw.(map[string]any)
					if m["state_key"] == bobID && m["content"].(map[string]any)["membership"] != "leave" {
						t.Fatalf("bob's membership at his departure: %v", m["content"])
					}
				}
				s.expectErr("GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", bob, nil, http.StatusForbidden, "M_FORBIDDEN")
			})
		}

		t.Run("invited since the invite", func(t *testing.T) {
			s := s.on(t)
			roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
			s.setState(alice, roomID, "m.room.history_visibility", map[string]any{"history_visibility": "invited"})
			s.sendText(alice, roomID, "before-invite")
			s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/invite", alice, map[string]any{"user_id": bobID}, http.StatusOK)
			s.sendText(alice, roomID, "while-invited")
			s.joinRoom(bob, roomID)
			_, bodies := s.paginate(bob, roomID, "b", 10)
			// Events from while the room was "shared" (from its creation) stay visible.
			got := strings.Join(bodies, ",")
			if !strings.HasPrefix(got, "m.room.member,while-invited,m.room.member,m.room.history_visibility,") ||
				strings.Contains(got, "before-invite") || !strings.HasSuffix(got, "m.room.create") {
				t.Fatalf("bob sees %s", got)
			}
		})

		t.Run("world_readable", func(t *testing.T) {
			s := s.on(t)
			roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
			s.setState(alice, roomID, "m.room.history_visibility", map[string]any{"history_visibility": "world_readable"})
			s.sendText(alice, roomID, "for everyone")
			_, bodies := s.paginate(carol, roomID, "b", 10)
			if bodies[0] != "for everyone" || bodies[1] != "m.room.history_visibility" {
				t.Fatalf("carol peeks and sees %v", bodies)
			}
			// Events from before the room became world-readable stay hidden.
			if strings.Contains(strings.Join(bodies, ","), "m.room.create") {
				t.Fatalf("carol sees the room's shared history: %v", bodies)
			}
		})
	})
}

func TestContextAndMembers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		s.do("PUT", "/_matrix/client/v3/profile/"+aliceID+"/displayname", alice, map[string]any{"displayname": "Alice"}, http.StatusOK)
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		var ids []string
		for i := 0; i < 9; i++ {
			ids = append(ids, s.sendText(alice, roomID, fmt.Sprintf("c%d", i)))
		}

		// The path may come with ":" percent-encoded, as encodeURIComponent sends it.
		escaped := strings.ReplaceAll(roomID, ":", "%3A")
		ctx := s.do("GET", "/_matrix/client/v3/rooms/"+escaped+"/context/"+url.PathEscape(ids[4])+"?limit=4", bob, nil, http.StatusOK)
		if ctx["event"].(map[string]any)["event_id"] != ids[4] {
			t.Fatalf("context event: %v", ctx["event"])
		}
		before, after := ctx["events_before"].([]any), ctx["events_after"].([]any)
		if len(before) != 2 || len(after) != 2 ||
			before[0].(map[string]any)["event_id"] != ids[3] || after[0].(map[string]any)["event_id"] != ids[5] {
			t.Fatalf("context: %d before, %d after", len(before), len(after))
		}
		// The tokens continue where the context stopped.
		older := s.page(bob, roomID, url.Values{"dir": {"b"}, "limit": {"1"}, "from": {ctx["start"].(string)}})
		newer := s.page(bob, roomID, url.Values{"dir": {"f"}, "limit": {"1"}, "from": {ctx["end"].(string)}})
		if older["chunk"].([]any)[0].(map[string]any)["event_id"] != ids[1] || newer["chunk"].([]any)[0].(map[string]any)["event_id"] != ids[7] {
			t.Fatal("context tokens do not continue the context")
		}
		if len(ctx["state"].([]any)) < 5 {
			t.Fatalf("context state has %d events", len(ctx["state"].([]any)))
		}
		lazy := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/context/"+ids[4]+"?filter="+url.QueryEscape(`{"lazy_load_members":true,"types":["m.room.member"]}`), bob, nil, http.StatusOK)
		if state := lazy["state"].([]any); len(state) != 2 {
			t.Fatalf("lazy context state: %v", state)
		}
		s.expectErr("GET", "/_matrix/client/v3/rooms/"+roomID+"/context/$nope", bob, nil, http.StatusNotFound, "M_NOT_FOUND")

		joined := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/joined_members", bob, nil, http.StatusOK)["joined"].(map[string]any)
		if len(joined) != 2 || joined[aliceID].(map[string]any)["display_name"] != "Alice" {
			t.Fatalf("joined_members: %v", joined)
		}
		if _, ok := joined[bobID]; !ok {
			t.Fatalf("joined_members lacks bob: %v", joined)
		}

		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		membersPath := "/_matrix/client/v3/rooms/" + roomID + "/members"
		count := func(query string) int {
			return len(s.do("GET", membersPath+query, alice, nil, http.StatusOK)["chunk"].([]any))
		}
		if all, join, notLeave, either := count(""), count("?membership=join"), count("?not_membership=leave"), count("?membership=leave&not_membership=join"); all != 2 || join != 1 || notLeave != 1 || either != 1 {
			t.Fatalf("members: all %d, join %d, not leave %d, leave-or-not-join %d", all, join, notLeave, either)
		}
		// at: the members before bob left.
		atBob := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {"1"}})["end"].(string)
		if n := count("?membership=join&at=" + atBob); n != 2 {
			t.Fatalf("members at %s: %d joined, want 2", atBob, n)
		}
		s.expectErr("GET", membersPath+"?membership=nope", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", membersPath+"?at=x", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		_, mallory, _ := s.register("mallory", "password-mallory")
		s.expectErr("GET", membersPath, mallory, nil, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestUnsignedMembership: events carry unsigned.membership (v1.11), the requesting user's
// membership at each event, counting the event itself, and "leave" before they had one:
// in /messages, /event and /sync.
func TestUnsignedMembership(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		before := s.sendText(alice, roomID, "before bob")
		s.joinRoom(bob, roomID)
		s.sendText(alice, roomID, "during")
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		s.joinRoom(bob, roomID)
		since := s.sync(bob, nil)["next_batch"].(string)
		s.sendText(alice, roomID, "back")

		membershipOf := func(e map[string]any) any {
			unsigned, _ := e["unsigned"].(map[string]any)
			return unsigned["membership"]
		}
		var got []string
		out := s.page(bob, roomID, url.Values{"dir": {"b"}, "limit": {"6"}})
		for _, raw := range out["chunk"].([]any) {
			e := raw.(map[string]any)
			label := e["type"].(string)
			if body, ok := e["content"].(map[string]any)["body"].(string); ok {
				label = body
			} else if e["type"] == "m.room.member" {
				label = e["content"].(map[string]any)["membership"].(string)
			}
			got = append(got, fmt.Sprintf("%s:%v", label, membershipOf(e)))
		}
		want := "back:join,join:join,leave:leave,during:join,join:join,before bob:leave"
		if strings.Join(got, ",") != want {
			t.Fatalf("/messages memberships %v, want %s", got, want)
		}
		if m := membershipOf(s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+before, alice, nil, http.StatusOK)); m != "join" {
			t.Fatalf("alice's membership at her message: %v", m)
		}
		timeline := eventsOf(syncRoom(s.sync(bob, url.Values{"since": {since}}), "join", roomID), "timeline")
		if len(timeline) != 1 || membershipOf(timeline[0]) != "join" {
			t.Fatalf("incremental sync timeline %v", timeline)
		}
		for _, e := range eventsOf(syncRoom(s.sync(bob, nil), "join", roomID), "state") {
			if e["type"] == "m.room.create" && membershipOf(e) != "leave" {
				t.Fatalf("bob's membership at the create event: %v", membershipOf(e))
			}
		}
	})
}
