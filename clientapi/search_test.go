package clientapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// indexSearch runs search indexing batches until the index has caught up with the events
// stored, as IndexSearch does in the background.
func (s *testServer) indexSearch() {
	s.t.Helper()
	for {
		n, err := storage.IndexSearchBatch(context.Background(), s.db, searchIndexBatch)
		if err != nil {
			s.t.Fatal(err)
		}
		if n < searchIndexBatch {
			return
		}
	}
}

// searchEvents indexes what was sent, runs a room_events search and returns its results
// category.
func (s *testServer) searchEvents(token string, criteria map[string]any, nextBatch string) map[string]any {
	s.t.Helper()
	s.indexSearch()
	return s.searchUnindexed(token, criteria, nextBatch)
}

// searchUnindexed is searchEvents without indexing first.
func (s *testServer) searchUnindexed(token string, criteria map[string]any, nextBatch string) map[string]any {
	s.t.Helper()
	path := "/_matrix/client/v3/search"
	if nextBatch != "" {
		path += "?next_batch=" + url.QueryEscape(nextBatch)
	}
	out := s.do("POST", path, token, map[string]any{"search_categories": map[string]any{"room_events": criteria}}, http.StatusOK)
	return out["search_categories"].(map[string]any)["room_events"].(map[string]any)
}

// searchTexts is the body (or name, or topic) of each result, in order.
func searchTexts(results map[string]any) []string {
	var out []string
	for _, raw := range results["results"].([]any) {
		content := raw.(map[string]any)["result"].(map[string]any)["content"].(map[string]any)
		for _, key := range []string{"body", "name", "topic"} {
			if text, ok := content[key].(string); ok {
				out = append(out, text)
				break
			}
		}
	}
	return out
}

// searchAll follows next_batch from the first page to the last and returns every result's
// text, failing on a result seen twice.
func (s *testServer) searchAll(token string, criteria map[string]any) (texts []string, pages int) {
	s.t.Helper()
	seen := map[string]bool{}
	next := ""
	for pages = 1; ; pages++ {
		if pages > 50 {
			s.t.Fatal("search pagination does not end")
		}
		out := s.searchEvents(token, criteria, next)
		for _, raw := range out["results"].([]any) {
			id := raw.(map[string]any)["result"].(map[string]any)["event_id"].(string)
			if seen[id] {
				s.t.Fatalf("event %s returned twice", id)
			}
			seen[id] = true
		}
		texts = append(texts, searchTexts(out)...)
		n, ok := out["next_batch"].(string)
		if !ok {
			return texts, pages
		}
		next = n
	}
}

func expectTexts(t *testing.T, what string, got []string, want ...string) {
	t.Helper()
	if !slices.Equal(got, want) {
		t.Fatalf("%s: %q, want %q", what, got, want)
	}
}

// TestSearchMatching: every word must match, the last one as a prefix; keys choose the
// event types; the filter narrows rooms, senders and types; results carry rank, count
// and highlights; only the user's rooms are searched.
func TestSearchMatching(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")
		kitchen := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Kitchen recipes", "topic": "Baking bread together"})
		garden := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Garden"})
		s.joinRoom(bob, kitchen)
		s.sendText(alice, kitchen, "A recipe for sourdough bread")
		s.sendText(bob, kitchen, "Bread, bread and more BREAD!")
		s.sendText(alice, garden, "Tomatoes need bread crumbs? No.")
		s.sendText(alice, kitchen, "unrelated chatter")

		all := s.searchEvents(alice, map[string]any{"search_term": "bread", "order_by": "recent"}, "")
		expectTexts(t, "bread", searchTexts(all),
			"Tomatoes need bread crumbs? No.", "Bread, bread and more BREAD!", "A recipe for sourdough bread", "Baking bread together")
		if all["count"] != float64(4) || fmt.Sprint(all["highlights"]) != "[bread]" {
			t.Fatalf("count %v, highlights %v", all["count"], all["highlights"])
		}
		first := all["results"].([]any)[0].(map[string]any)
		if first["rank"] != float64(1) || first["result"].(map[string]any)["room_id"] != garden {
			t.Fatalf("first result %v", first)
		}
		if _, ok := all["next_batch"]; ok {
			t.Fatal("next_batch on the only page")
		}

		// Default order is rank: the message with bread three times first.
		ranked := s.searchEvents(alice, map[string]any{"search_term": "bread"}, "")
		if texts := searchTexts(ranked); texts[0] != "Bread, bread and more BREAD!" || len(texts) != 4 {
			t.Fatalf("by rank: %q", texts)
		}

		recent := func(term string, extra map[string]any) []string {
			c := map[string]any{"search_term": term, "order_by": "recent"}
			for k, v := range extra {
				c[k] = v
			}
			return searchTexts(s.searchEvents(alice, c, ""))
		}
		expectTexts(t, "prefix", recent("sourdough bre", nil), "A recipe for sourdough bread")
		expectTexts(t, "whole word only", recent("sourdough bre ", nil))
		expectTexts(t, "prefix of a name", recent("recip", nil), "A recipe for sourdough bread", "Kitchen recipes")
		expectTexts(t, "keys", recent("recip", map[string]any{"keys": []string{"content.name"}}), "Kitchen recipes")
		expectTexts(t, "topic key", recent("bread", map[string]any{"keys": []string{"content.topic"}}), "Baking bread together")
		expectTexts(t, "filter rooms", recent("bread", map[string]any{"filter": map[string]any{"rooms": []string{garden}}}),
			"Tomatoes need bread crumbs? No.")
		expectTexts(t, "filter not_rooms", recent("bread", map[string]any{"filter": map[string]any{"not_rooms": []string{kitchen}}}),
			"Tomatoes need bread crumbs? No.")
		expectTexts(t, "filter senders", recent("bread", map[string]any{"filter": map[string]any{"not_senders": []string{aliceID}}}),
			"Bread, bread and more BREAD!")
		expectTexts(t, "filter types", recent("bread", map[string]any{"filter": map[string]any{"types": []string{"m.room.t*"}}}),
			"Baking bread together")
		expectTexts(t, "filter limit", recent("bread", map[string]any{"filter": map[string]any{"limit": 1}}),
			"Tomatoes need bread crumbs? No.")
		expectTexts(t, "punctuation only", recent("?!", nil))

		// Bob shares only the kitchen; carol shares nothing.
		expectTexts(t, "bob", searchTexts(s.searchEvents(bob, map[string]any{"search_term": "bread", "order_by": "recent"}, "")),
			"Bread, bread and more BREAD!", "A recipe for sourdough bread", "Baking bread together")
		expectTexts(t, "carol", searchTexts(s.searchEvents(carol, map[string]any{"search_term": "bread"}, "")))

		// The r0 prefix, include_state and groups.
		out := s.do("POST", "/_matrix/client/r0/search", alice, map[string]any{"search_categories": map[string]any{"room_events": map[string]any{
			"search_term": "bread", "include_state": true, "groupings": map[string]any{"group_by": []any{map[string]any{"key": "room_id"}, map[string]any{"key": "sender"}}},
		}}}, http.StatusOK)["search_categories"].(map[string]any)["room_events"].(map[string]any)
		state := out["state"].(map[string]any)
		if len(state) != 2 || len(state[kitchen].([]any)) < 5 {
			t.Fatalf("state of %d rooms: %v", len(state), state)
		}
		groups := out["groups"].(map[string]any)
		if byRoom := groups["room_id"].(map[string]any); len(byRoom) != 2 || len(byRoom[kitchen].(map[string]any)["results"].([]any)) != 3 {
			t.Fatalf("room groups %v", byRoom)
		}
		if bySender := groups["sender"].(map[string]any); len(bySender) != 2 || len(bySender[aliceID].(map[string]any)["results"].([]any)) != 3 {
			t.Fatalf("sender groups %v", bySender)
		}
	})
}

// TestSearchPagination: next_batch pages through every result once, newest first by
// recency, in both orders and within a group.
func TestSearchPagination(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		one := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		two := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		var want []string
		for i := range 23 {
			room := one
			if i%3 == 0 {
				room = two
			}
			text := fmt.Sprintf("apple %02d %s", i, strings.Repeat("pie ", i%4))
			s.sendText(alice, room, text)
			want = append(want, text)
		}
		slices.Reverse(want)
		filter := map[string]any{"limit": 5}

		got, pages := s.searchAll(alice, map[string]any{"search_term": "apple", "order_by": "recent", "filter": filter})
		expectTexts(t, "recent pages", got, want...)
		if pages != 5 {
			t.Fatalf("%d pages of 5 for 23 results", pages)
		}
		got, _ = s.searchAll(alice, map[string]any{"search_term": "apple", "filter": filter})
		slices.Sort(got)
		sorted := slices.Sorted(slices.Values(want))
		expectTexts(t, "rank pages", got, sorted...)

		// A group's token continues within its room.
		criteria := map[string]any{"search_term": "apple", "order_by": "recent", "filter": filter,
			"groupings": map[string]any{"group_by": []any{map[string]any{"key": "room_id"}}}}
		page := s.searchEvents(alice, criteria, "")
		group := page["groups"].(map[string]any)["room_id"].(map[string]any)[two].(map[string]any)
		inTwo := len(group["results"].([]any))
		next := group["next_batch"].(string)
		for next != "" {
			out := s.searchEvents(alice, criteria, next)
			for _, raw := range out["results"].([]any) {
				if raw.(map[string]any)["result"].(map[string]any)["room_id"] != two {
					t.Fatalf("room group page left the room: %v", raw)
				}
			}
			inTwo += len(out["results"].([]any))
			next, _ = out["next_batch"].(string)
		}
		if inTwo != 8 {
			t.Fatalf("room group found %d events, want 8", inTwo)
		}

		// A token of the other order, or no token at all, is refused.
		recentToken := page["next_batch"].(string)
		s.expectErr("POST", "/_matrix/client/v3/search?next_batch="+url.QueryEscape(recentToken), alice,
			map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "apple", "order_by": "rank"}}},
			http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("POST", "/_matrix/client/v3/search?next_batch=bogus", alice,
			map[string]any{"search_categories": map[string]any{"room_events": map[string]any{"search_term": "apple"}}},
			http.StatusBadRequest, "M_INVALID_PARAM")
	})
}

// TestSearchContext: results carry the events around them and their senders' profiles.
func TestSearchContext(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		for _, text := range []string{"one", "two", "needle", "three", "four", "five"} {
			token := alice
			if text == "three" {
				token = bob
			}
			s.sendText(token, roomID, text)
		}
		out := s.searchEvents(alice, map[string]any{"search_term": "needle",
			"event_context": map[string]any{"before_limit": 2, "after_limit": 3, "include_profile": true}}, "")
		c := out["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
		texts := func(key string) []string {
			return searchTexts(map[string]any{"results": func() []any {
				var wrapped []any
				for _, e := range c[key].([]any) {
					wrapped = append(wrapped, map[string]any{"result": e})
				}
				return wrapped
			}()})
		}
		expectTexts(t, "events_before", texts("events_before"), "two", "one")
		expectTexts(t, "events_after", texts("events_after"), "three", "four", "five")
		if !strings.HasPrefix(c["start"].(string), "s") || !strings.HasPrefix(c["end"].(string), "s") {
			t.Fatalf("context tokens %v %v", c["start"], c["end"])
		}
		profiles := c["profile_info"].(map[string]any)
		if len(profiles) != 2 || profiles[aliceID].(map[string]any)["displayname"] != "alice" || profiles[bobID] == nil {
			t.Fatalf("profile_info %v", profiles)
		}

		// Without event_context there is no context; the default limits are 5.
		plain := s.searchEvents(alice, map[string]any{"search_term": "needle"}, "")
		if _, ok := plain["results"].([]any)[0].(map[string]any)["context"]; ok {
			t.Fatal("context without event_context")
		}
		defaults := s.searchEvents(alice, map[string]any{"search_term": "needle", "event_context": map[string]any{}}, "")
		dc := defaults["results"].([]any)[0].(map[string]any)["context"].(map[string]any)
		if len(dc["events_before"].([]any)) != 5 || len(dc["events_after"].([]any)) != 3 || dc["profile_info"] != nil {
			t.Fatalf("default context: %d before, %d after, profiles %v", len(dc["events_before"].([]any)), len(dc["events_after"].([]any)), dc["profile_info"])
		}
	})
}

// TestSearchVisibility: a user who joined a room whose history is visible to joined members
// only cannot find what was said before; after leaving, they still find what they saw but
// nothing said since. Redacted events are not found.
func TestSearchVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.setState(alice, roomID, "m.room.history_visibility", map[string]any{"history_visibility": "joined"})
		s.sendText(alice, roomID, "secret before bob")
		s.joinRoom(bob, roomID)
		s.sendText(alice, roomID, "secret with bob")
		search := func(token string) []string {
			return searchTexts(s.searchEvents(token, map[string]any{"search_term": "secret", "order_by": "recent"}, ""))
		}
		expectTexts(t, "bob joined", search(bob), "secret with bob")
		expectTexts(t, "alice", search(alice), "secret with bob", "secret before bob")

		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		s.sendText(alice, roomID, "secret after bob")
		expectTexts(t, "bob left", search(bob), "secret with bob")

		// Redaction.
		doomed := s.sendText(alice, roomID, "secret soon redacted")
		expectTexts(t, "before redaction", search(alice), "secret soon redacted", "secret after bob", "secret with bob", "secret before bob")
		s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+doomed+"/r1", alice, map[string]any{}, http.StatusOK)
		expectTexts(t, "after redaction", search(alice), "secret after bob", "secret with bob", "secret before bob")

		// Encrypted rooms' events never match.
		s.setState(alice, roomID, "m.room.encryption", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
		s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/send/m.room.encrypted/e1", alice,
			map[string]any{"algorithm": "m.megolm.v1.aes-sha2", "ciphertext": "secret", "body": "secret"}, http.StatusOK)
		expectTexts(t, "encrypted", search(alice), "secret after bob", "secret with bob", "secret before bob")
	})
}

// TestSearchIndexesInBackground: IndexSearch indexes what was stored before it started and
// what is sent while it runs, soon after it is sent, and stops with its context.
func TestSearchIndexesInBackground(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		s.sendText(alice, roomID, "heron stored before")
		ctx, cancel := context.WithCancel(context.Background())
		stopped := make(chan struct{})
		go func() {
			s.api.IndexSearch(ctx)
			close(stopped)
		}()
		defer func() {
			cancel()
			<-stopped
		}()
		s.sendText(alice, roomID, "heron sent after")
		for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			texts := searchTexts(s.searchUnindexed(alice, map[string]any{"search_term": "heron", "order_by": "recent"}, ""))
			if slices.Equal(texts, []string{"heron sent after", "heron stored before"}) {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("not indexed after 5 s: %q", texts)
			}
		}
	})
}

// TestSearchBadInput: what the spec does not allow is a 400 with the right errcode.
func TestSearchBadInput(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		const path = "/_matrix/client/v3/search"
		roomEvents := func(criteria map[string]any) map[string]any {
			return map[string]any{"search_categories": map[string]any{"room_events": criteria}}
		}
		for _, tc := range []struct {
			name    string
			body    any
			status  int
			errcode string
		}{
			{"no search_categories", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM"},
			{"null search_categories", map[string]any{"search_categories": nil}, http.StatusBadRequest, "M_MISSING_PARAM"},
			{"no search_term", roomEvents(map[string]any{"keys": []string{"content.body"}}), http.StatusBadRequest, "M_MISSING_PARAM"},
			{"search_term not a string", roomEvents(map[string]any{"search_term": 5}), http.StatusBadRequest, "M_BAD_JSON"},
			{"search_term too long", roomEvents(map[string]any{"search_term": strings.Repeat("a ", 600)}), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unknown key", roomEvents(map[string]any{"search_term": "x", "keys": []string{"content.url"}}), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unknown order", roomEvents(map[string]any{"search_term": "x", "order_by": "oldest"}), http.StatusBadRequest, "M_INVALID_PARAM"},
			{"unknown group", roomEvents(map[string]any{"search_term": "x", "groupings": map[string]any{"group_by": []any{map[string]any{"key": "type"}}}}),
				http.StatusBadRequest, "M_INVALID_PARAM"},
			{"negative context", roomEvents(map[string]any{"search_term": "x", "event_context": map[string]any{"before_limit": -1}}),
				http.StatusBadRequest, "M_INVALID_PARAM"},
			{"zero limit", roomEvents(map[string]any{"search_term": "x", "filter": map[string]any{"limit": 0}}), http.StatusBadRequest, "M_BAD_JSON"},
			{"filter not an object", roomEvents(map[string]any{"search_term": "x", "filter": "1"}), http.StatusBadRequest, "M_BAD_JSON"},
			{"not JSON", "{", http.StatusBadRequest, "M_NOT_JSON"},
			{"too large", roomEvents(map[string]any{"search_term": "x", "filter": map[string]any{"rooms": []string{strings.Repeat("!", 80000)}}}),
				http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s.on(t).expectErr("POST", path, alice, tc.body, tc.status, tc.errcode)
			})
		}
		s.expectErr("POST", path, "", roomEvents(map[string]any{"search_term": "x"}), http.StatusUnauthorized, "M_MISSING_TOKEN")

		// Without room_events there is nothing to search.
		out := s.do("POST", path, alice, map[string]any{"search_categories": map[string]any{}}, http.StatusOK)
		if fmt.Sprint(out) != "map[search_categories:map[]]" {
			t.Fatalf("empty categories answered %v", out)
		}
		// Huge limits are capped, not refused.
		s.searchEvents(alice, map[string]any{"search_term": "x", "filter": map[string]any{"limit": 1 << 40},
			"event_context": map[string]any{"before_limit": 1 << 40, "after_limit": 1 << 40}}, "")
	})
}
