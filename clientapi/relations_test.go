package clientapi

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// sendEvent sends a message event of any type and content and returns its event ID.
func (s *testServer) sendEvent(token, roomID, evType string, content map[string]any) string {
	s.t.Helper()
	txn := fmt.Sprintf("t%d", testTxnCounter.Add(1))
	path := "/_matrix/client/v3/rooms/" + roomID + "/send/" + evType + "/" + txn
	return s.do("PUT", path, token, content, http.StatusOK)["event_id"].(string)
}

// sendRelated sends an m.room.message relating to parent with relType.
func (s *testServer) sendRelated(token, roomID, relType, parent, body string) string {
	s.t.Helper()
	return s.sendEvent(token, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": body,
		"m.relates_to": map[string]any{"rel_type": relType, "event_id": parent}})
}

// sendEdit sends an edit of parent.
func (s *testServer) sendEdit(token, roomID, parent, body string) string {
	s.t.Helper()
	return s.sendEvent(token, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "* " + body,
		"m.new_content": map[string]any{"msgtype": "m.text", "body": body},
		"m.relates_to":  map[string]any{"rel_type": "m.replace", "event_id": parent}})
}

// react sends an m.reaction annotating parent.
func (s *testServer) react(token, roomID, parent, key string) string {
	s.t.Helper()
	return s.sendEvent(token, roomID, "m.reaction", map[string]any{
		"m.relates_to": map[string]any{"rel_type": "m.annotation", "event_id": parent, "key": key}})
}

func (s *testServer) redactEvent(token, roomID, eventID string) {
	s.t.Helper()
	txn := fmt.Sprintf("r%d", testTxnCounter.Add(1))
	s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+eventID+"/"+txn, token, map[string]any{}, http.StatusOK)
}

// relationsPath is the /relations path of a parent, with relType and eventType when set.
func relationsPath(roomID, parent string, filters ...string) string {
	p := "/_matrix/client/v1/rooms/" + roomID + "/relations/" + url.PathEscape(parent)
	for _, f := range filters {
		p += "/" + url.PathEscape(f)
	}
	return p
}

// chunkIDs lists the event IDs of a response's chunk.
func chunkIDs(resp map[string]any) []string {
	var ids []string
	for _, raw := range resp["chunk"].([]any) {
		ids = append(ids, raw.(map[string]any)["event_id"].(string))
	}
	return ids
}

// pageAll follows next_batch tokens from path (which has query parameters) and returns every
// event ID in the order received, failing on a duplicate.
func (s *testServer) pageAll(token, path string, params url.Values) []string {
	s.t.Helper()
	var ids []string
	seen := map[string]bool{}
	for round := 0; ; round++ {
		if round > 100 {
			s.t.Fatal("pagination does not end")
		}
		resp := s.do("GET", path+"?"+params.Encode(), token, nil, http.StatusOK)
		for _, id := range chunkIDs(resp) {
			if seen[id] {
				s.t.Fatalf("%s returned %s twice", path, id)
			}
			seen[id] = true
			ids = append(ids, id)
		}
		next, ok := resp["next_batch"].(string)
		if !ok {
			return ids
		}
		params.Set("from", next)
	}
}

// TestRelationsPagination: /relations pages through a parent's children newest first or
// oldest first without repeating one, filters by relation type and event type, recurses
// through children of children only along matching relationships, and refuses bad input
// with 400 and unknown or foreign parents with 404.
func TestRelationsPagination(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		root := s.sendText(alice, roomID, "root")
		other := s.sendText(alice, roomID, "unrelated")
		var threaded, reactions, all []string
		for i := 0; i < 7; i++ {
			id := s.sendRelated(bob, roomID, "m.thread", root, fmt.Sprint("reply ", i))
			threaded = append(threaded, id)
			all = append(all, id)
			if i%3 == 0 {
				r := s.react(alice, roomID, root, fmt.Sprint(i))
				reactions = append(reactions, r)
				all = append(all, r)
			}
		}
		s.sendRelated(bob, roomID, "m.thread", other, "elsewhere")
		nested := s.react(alice, roomID, threaded[0], "nested")
		edit := s.sendEdit(alice, roomID, root, "root, edited")
		all = append(all, edit)

		newestFirst := slices.Clone(all)
		slices.Reverse(newestFirst)
		if got := s.pageAll(alice, relationsPath(roomID, root), url.Values{"limit": {"3"}}); !slices.Equal(got, newestFirst) {
			t.Errorf("dir=b pages = %v, want %v", got, newestFirst)
		}
		if got := s.pageAll(alice, relationsPath(roomID, root), url.Values{"limit": {"4"}, "dir": {"f"}}); !slices.Equal(got, all) {
			t.Errorf("dir=f pages = %v, want %v", got, all)
		}
		first := s.do("GET", relationsPath(roomID, root)+"?limit=2", alice, nil, http.StatusOK)
		if _, ok := first["prev_batch"]; ok || first["recursion_depth"] != nil {
			t.Errorf("first page has prev_batch or recursion_depth: %v", first)
		}
		second := s.do("GET", relationsPath(roomID, root)+"?limit=2&from="+first["next_batch"].(string), alice, nil, http.StatusOK)
		if second["prev_batch"] != first["next_batch"] {
			t.Errorf("prev_batch = %v, want the from token", second["prev_batch"])
		}
		// from and to bound a range: from page 1's start to page 2's end.
		between := s.do("GET", relationsPath(roomID, root)+"?from="+first["next_batch"].(string)+"&to="+second["next_batch"].(string), alice, nil, http.StatusOK)
		if got := chunkIDs(between); !slices.Equal(got, newestFirst[2:4]) {
			t.Errorf("from page 2 to page 3 = %v, want %v", got, newestFirst[2:4])
		}

		threadNewestFirst := slices.Clone(threaded)
		slices.Reverse(threadNewestFirst)
		if got := s.pageAll(alice, relationsPath(roomID, root, "m.thread"), url.Values{"limit": {"2"}}); !slices.Equal(got, threadNewestFirst) {
			t.Errorf("m.thread = %v, want %v", got, threadNewestFirst)
		}
		if got := s.pageAll(alice, relationsPath(roomID, root, "m.annotation", "m.reaction"), url.Values{"dir": {"f"}}); !slices.Equal(got, reactions) {
			t.Errorf("m.annotation/m.reaction = %v, want %v", got, reactions)
		}
		if got := s.pageAll(alice, relationsPath(roomID, root, "m.thread", "m.reaction"), url.Values{}); len(got) != 0 {
			t.Errorf("m.thread/m.reaction = %v", got)
		}

		// recurse: the reaction to a thread reply relates to the root through it.
		resp := s.do("GET", relationsPath(roomID, root)+"?recurse=true&limit=1", alice, nil, http.StatusOK)
		if got := chunkIDs(resp); resp["recursion_depth"] != float64(3) || !slices.Equal(got, []string{edit}) {
			t.Errorf("recurse=true: depth %v, chunk %v", resp["recursion_depth"], got)
		}
		if got := s.pageAll(alice, relationsPath(roomID, root), url.Values{"recurse": {"true"}, "limit": {"5"}}); len(got) != len(all)+1 || !slices.Contains(got, nested) {
			t.Errorf("recurse=true found %d events (want %d), nested included: %v", len(got), len(all)+1, slices.Contains(got, nested))
		}
		if resp := s.do("GET", relationsPath(roomID, root)+"?recurse=false", alice, nil, http.StatusOK); resp["recursion_depth"] != float64(1) {
			t.Errorf("recurse=false: recursion_depth %v", resp["recursion_depth"])
		}
		// Through the m.thread reply the annotation is not reached with rel_type m.annotation.
		if got := s.pageAll(alice, relationsPath(roomID, root, "m.annotation"), url.Values{"recurse": {"true"}}); slices.Contains(got, nested) || len(got) != len(reactions) {
			t.Errorf("m.annotation with recurse = %v", got)
		}

		for _, query := range []string{"dir=x", "recurse=maybe", "limit=-1", "limit=abc", "from=garbage", "to=s"} {
			s.expectErr("GET", relationsPath(roomID, root)+"?"+query, alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		}
		s.expectErr("GET", relationsPath(roomID, "$nowhere"), alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		otherRoom := s.createRoom(alice, map[string]any{})
		s.expectErr("GET", relationsPath(otherRoom, root), alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", relationsPath(otherRoom, root), bob, nil, http.StatusNotFound, "M_NOT_FOUND")
	})
}

// TestRelationsVisibility: with history visibility "joined", a user who joined afterwards
// cannot read the relations of earlier events (404), does not see earlier threads, and sees
// only the children sent while joined of a parent they can see.
func TestRelationsVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.setState(alice, roomID, "m.room.history_visibility", map[string]any{"history_visibility": "joined"})
		early := s.sendText(alice, roomID, "before bob")
		s.sendRelated(alice, roomID, "m.thread", early, "early reply")
		s.joinRoom(bob, roomID)

		s.expectErr("GET", relationsPath(roomID, early), bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		threads := s.do("GET", "/_matrix/client/v1/rooms/"+roomID+"/threads", bob, nil, http.StatusOK)
		if got := chunkIDs(threads); len(got) != 0 {
			t.Errorf("bob sees threads %v", got)
		}
		late := s.sendText(alice, roomID, "after bob")
		reply := s.sendRelated(alice, roomID, "m.thread", late, "late reply")
		if got := chunkIDs(s.do("GET", relationsPath(roomID, late), bob, nil, http.StatusOK)); !slices.Equal(got, []string{reply}) {
			t.Errorf("bob reads relations %v", got)
		}
		threads = s.do("GET", "/_matrix/client/v1/rooms/"+roomID+"/threads", bob, nil, http.StatusOK)
		if got := chunkIDs(threads); !slices.Equal(got, []string{late}) {
			t.Errorf("bob sees threads %v, want %v", got, []string{late})
		}

		// After leaving, children sent later are neither listed nor aggregated.
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		s.sendRelated(alice, roomID, "m.thread", late, "after bob left")
		if got := chunkIDs(s.do("GET", relationsPath(roomID, late), bob, nil, http.StatusOK)); !slices.Equal(got, []string{reply}) {
			t.Errorf("bob, gone, reads relations %v", got)
		}
		event := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+late, bob, nil, http.StatusOK)
		thread := relationOf(event, "m.thread")
		if thread == nil || thread["count"] != float64(1) || thread["latest_event"].(map[string]any)["event_id"] != reply {
			t.Errorf("bob, gone, sees the thread as %v", thread)
		}
		// Someone who may read nothing of the room gets 403 from /threads.
		_, carol, _ := s.register("carol", "password-carol")
		s.expectErr("GET", "/_matrix/client/v1/rooms/"+roomID+"/threads", carol, nil, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// relationOf is unsigned["m.relations"][relType] of a client event, or nil.
func relationOf(event map[string]any, relType string) map[string]any {
	unsigned, _ := event["unsigned"].(map[string]any)
	relations, _ := unsigned["m.relations"].(map[string]any)
	rel, _ := relations[relType].(map[string]any)
	return rel
}

// TestThreadsList: /threads lists thread roots by latest activity, pages without
// repeating one, filters by participation, bundles each root's m.thread aggregation, and
// forgets a thread whose only reply is redacted.
func TestThreadsList(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		s.joinRoom(carol, roomID)
		a := s.sendText(alice, roomID, "thread a")
		b := s.sendText(alice, roomID, "thread b")
		c := s.sendText(carol, roomID, "thread c")
		s.sendText(alice, roomID, "no thread")
		s.sendRelated(alice, roomID, "m.thread", a, "a1")
		s.sendRelated(alice, roomID, "m.thread", c, "c1")
		bobReply := s.sendRelated(bob, roomID, "m.thread", b, "b1")
		s.sendRelated(alice, roomID, "m.thread", a, "a2")
		path := "/_matrix/client/v1/rooms/" + roomID + "/threads"

		if got := s.pageAll(alice, path, url.Values{"limit": {"1"}}); !slices.Equal(got, []string{a, b, c}) {
			t.Errorf("threads = %v, want %v", got, []string{a, b, c})
		}
		if got := s.pageAll(bob, path, url.Values{"include": {"participated"}}); !slices.Equal(got, []string{b}) {
			t.Errorf("bob's threads = %v, want %v", got, []string{b})
		}
		// Carol started thread c; alice replied in a and c.
		if got := s.pageAll(carol, path, url.Values{"include": {"participated"}}); !slices.Equal(got, []string{c}) {
			t.Errorf("carol's threads = %v", got)
		}
		if got := s.pageAll(alice, path, url.Values{"include": {"participated"}, "limit": {"2"}}); !slices.Equal(got, []string{a, b, c}) {
			t.Errorf("alice's threads = %v", got)
		}
		resp := s.do("GET", path+"?limit=1", bob, nil, http.StatusOK)
		thread := relationOf(resp["chunk"].([]any)[0].(map[string]any), "m.thread")
		if thread == nil || thread["count"] != float64(2) || thread["current_user_participated"] != false {
			t.Errorf("bundled thread of a for bob = %v", thread)
		}

		s.redactEvent(bob, roomID, bobReply)
		if got := s.pageAll(alice, path, url.Values{}); !slices.Equal(got, []string{a, c}) {
			t.Errorf("threads after the redaction = %v", got)
		}
		if got := chunkIDs(s.do("GET", relationsPath(roomID, b), alice, nil, http.StatusOK)); len(got) != 0 {
			t.Errorf("relations of b after the redaction = %v", got)
		}
		for _, query := range []string{"include=mine", "limit=0", "limit=x", "from=nope"} {
			s.expectErr("GET", path+"?"+query, alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		}
	})
}

// TestRelationsBundledAggregations: events served by /event, /messages, /context, /sync and
// /relations carry unsigned["m.relations"] with the m.thread summary (its latest event
// bundled in turn), the most recent valid edit and the references; edits by another sender
// do not count, and a redacted original loses its edit but keeps its thread.
func TestRelationsBundledAggregations(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		root := s.sendText(alice, roomID, "root")
		plain := s.sendText(alice, roomID, "no children")
		s.sendRelated(bob, roomID, "m.thread", root, "reply 1")
		s.react(bob, roomID, root, "👍")
		ref := s.sendRelated(bob, roomID, "m.reference", root, "see above")
		edit1 := s.sendEdit(alice, roomID, root, "root v2")
		edit2 := s.sendEdit(alice, roomID, root, "root v3")
		s.sendEdit(bob, roomID, root, "not bob's to edit")
		last := s.sendRelated(alice, roomID, "m.thread", root, "reply 2")
		lastEdit := s.sendEdit(alice, roomID, last, "reply 2, edited")

		eventPath := "/_matrix/client/v3/rooms/" + roomID + "/event/"
		// The most recent edit: origin_server_ts, then the larger event ID.
		wantEdit := edit2
		e1, e2 := s.do("GET", eventPath+edit1, alice, nil, http.StatusOK), s.do("GET", eventPath+edit2, alice, nil, http.StatusOK)
		if e1["origin_server_ts"].(float64) == e2["origin_server_ts"].(float64) && edit1 > edit2 {
			wantEdit = edit1
		}
		check := func(where string, event map[string]any) {
			t.Helper()
			thread := relationOf(event, "m.thread")
			if thread == nil || thread["count"] != float64(2) || thread["current_user_participated"] != true {
				t.Errorf("%s: m.thread = %v", where, thread)
				return
			}
			latest := thread["latest_event"].(map[string]any)
			if latest["event_id"] != last || relationOf(latest, "m.replace")["event_id"] != lastEdit {
				t.Errorf("%s: latest_event = %v", where, latest)
			}
			if replace := relationOf(event, "m.replace"); replace["event_id"] != wantEdit || replace["sender"] == nil {
				t.Errorf("%s: m.replace = %v", where, replace)
			}
			if refs := relationOf(event, "m.reference"); fmt.Sprint(refs["chunk"]) != fmt.Sprint([]any{map[string]any{"event_id": ref}}) {
				t.Errorf("%s: m.reference = %v", where, refs)
			}
			if _, ok := event["unsigned"].(map[string]any)["m.relations"].(map[string]any)["m.annotation"]; ok {
				t.Errorf("%s: m.annotation aggregated", where)
			}
		}
		check("/event", s.do("GET", eventPath+root, alice, nil, http.StatusOK))
		check("/event for bob", s.do("GET", eventPath+root, bob, nil, http.StatusOK))
		if p := s.do("GET", eventPath+plain, alice, nil, http.StatusOK); p["unsigned"].(map[string]any)["m.relations"] != nil {
			t.Errorf("event without children has m.relations: %v", p["unsigned"])
		}
		ctxResp := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/context/"+root+"?limit=2", alice, nil, http.StatusOK)
		check("/context", ctxResp["event"].(map[string]any))
		findRoot := func(events []any) map[string]any {
			for _, raw := range events {
				if e := raw.(map[string]any); e["event_id"] == root {
					return e
				}
			}
			t.Fatalf("root not among %d events", len(events))
			return nil
		}
		messages := s.page(alice, roomID, url.Values{"dir": {"b"}, "limit": {"50"}})
		check("/messages", findRoot(messages["chunk"].([]any)))
		sync := s.sync(alice, url.Values{"filter": {`{"room":{"timeline":{"limit":50}}}`}})
		timeline := syncRoom(sync, "join", roomID)["timeline"].(map[string]any)["events"].([]any)
		check("/sync", findRoot(timeline))
		threadReply := s.do("GET", relationsPath(roomID, root, "m.thread")+"?limit=1", alice, nil, http.StatusOK)
		if got := relationOf(threadReply["chunk"].([]any)[0].(map[string]any), "m.replace"); got["event_id"] != lastEdit {
			t.Errorf("/relations chunk: m.replace = %v", got)
		}

		// Redacting the original drops the edit from its bundle, not the thread.
		s.redactEvent(alice, roomID, root)
		redacted := s.do("GET", eventPath+root, alice, nil, http.StatusOK)
		if relationOf(redacted, "m.replace") != nil || relationOf(redacted, "m.thread") == nil {
			t.Errorf("redacted root: m.relations = %v", redacted["unsigned"])
		}
		// Redacting a thread reply breaks its relationship.
		s.redactEvent(alice, roomID, last)
		thread := relationOf(s.do("GET", eventPath+root, alice, nil, http.StatusOK), "m.thread")
		if thread == nil || thread["count"] != float64(1) || thread["latest_event"].(map[string]any)["event_id"] == last {
			t.Errorf("thread after redacting the latest reply = %v", thread)
		}
	})
}
