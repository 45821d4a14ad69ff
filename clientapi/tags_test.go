package clientapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestRoomTags: tags are set, listed and removed through tags.yaml, only by their owner,
// only on rooms the user has a membership of; bad names, bodies and orders are refused; and
// each change reaches /sync as the room's m.tag account data.
func TestRoomTags(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		base := "/_matrix/client/v3/user/" + aliceID + "/rooms/" + roomID + "/tags"

		if tags := s.do("GET", base, alice, nil, http.StatusOK)["tags"].(map[string]any); len(tags) != 0 {
			t.Fatalf("tags of an untagged room: %v", tags)
		}
		since := s.sync(alice, nil)["next_batch"].(string)

		s.do("PUT", base+"/m.favourite", alice, map[string]any{"order": 0.25}, http.StatusOK)
		s.do("PUT", base+"/u.work", alice, map[string]any{}, http.StatusOK)
		s.do("PUT", base+"/u.edge", alice, map[string]any{"order": 1}, http.StatusOK)
		s.do("PUT", base+"/m.lowpriority", alice, "", http.StatusOK) // empty body: no fields
		tags := s.do("GET", base, alice, nil, http.StatusOK)["tags"].(map[string]any)
		if len(tags) != 4 || tags["m.favourite"].(map[string]any)["order"] != 0.25 || len(tags["u.work"].(map[string]any)) != 0 {
			t.Fatalf("tags: %v", tags)
		}
		// The same tags through the account data API, and in /sync.
		stored := s.do("GET", "/_matrix/client/v3/user/"+aliceID+"/rooms/"+roomID+"/account_data/m.tag", alice, nil, http.StatusOK)
		if len(stored["tags"].(map[string]any)) != 4 {
			t.Fatalf("m.tag account data: %v", stored)
		}
		synced := roomTagsInSync(t, s.sync(alice, url.Values{"since": {since}}), roomID)
		if len(synced) != 4 || synced["m.favourite"].(map[string]any)["order"] != 0.25 {
			t.Fatalf("m.tag in /sync: %v", synced)
		}

		s.do("DELETE", base+"/u.work", alice, nil, http.StatusOK)
		s.do("DELETE", base+"/u.never", alice, nil, http.StatusOK)
		tags = s.do("GET", base, alice, nil, http.StatusOK)["tags"].(map[string]any)
		if _, ok := tags["u.work"]; ok || len(tags) != 3 {
			t.Fatalf("tags after delete: %v", tags)
		}

		// Other users' tags, bad room IDs, names and bodies.
		s.expectErr("GET", base, bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("PUT", base+"/u.x", bob, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("DELETE", base+"/m.favourite", bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("GET", "/_matrix/client/v3/user/"+aliceID+"/rooms/not-a-room/tags", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", base+"/"+strings.Repeat("a", 256), alice, map[string]any{}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.do("PUT", base+"/"+strings.Repeat("a", 255), alice, map[string]any{}, http.StatusOK)
		s.expectErr("PUT", base+"/u.x", alice, "{not json", http.StatusBadRequest, "M_NOT_JSON")
		s.expectErr("PUT", base+"/u.x", alice, "[1]", http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", base+"/u.x", alice, map[string]any{"order": "0.5"}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", base+"/u.x", alice, map[string]any{"order": nil}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", base+"/u.x", alice, map[string]any{"order": 1.5}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", base+"/u.x", alice, map[string]any{"order": -0.1}, http.StatusBadRequest, "M_INVALID_PARAM")

		// Bob may only tag rooms he has a membership of; a former member still may.
		bobBase := "/_matrix/client/v3/user/" + bobID + "/rooms/" + roomID + "/tags"
		s.expectErr("PUT", bobBase+"/u.x", bob, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("PUT", "/_matrix/client/v3/user/"+bobID+"/rooms/!unknown:test.example/tags/u.x", bob, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		s.joinRoom(bob, roomID)
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/leave", bob, map[string]any{}, http.StatusOK)
		s.do("PUT", bobBase+"/u.x", bob, map[string]any{"order": 0, "com.example.colour": "red"}, http.StatusOK)
		tags = s.do("GET", bobBase, bob, nil, http.StatusOK)["tags"].(map[string]any)
		if tag := tags["u.x"].(map[string]any); tag["order"] != 0.0 || tag["com.example.colour"] != "red" {
			t.Fatalf("bob's tag: %v", tags)
		}
	})
}

// roomTagsInSync is the tags of roomID's m.tag in a /sync response, nil if absent.
func roomTagsInSync(t *testing.T, sync map[string]any, roomID string) map[string]any {
	t.Helper()
	join, _ := sync["rooms"].(map[string]any)["join"].(map[string]any)
	room, _ := join[roomID].(map[string]any)
	accountData, _ := room["account_data"].(map[string]any)
	events, _ := accountData["events"].([]any)
	for _, e := range events {
		if e := e.(map[string]any); e["type"] == tagAccountData {
			return e["content"].(map[string]any)["tags"].(map[string]any)
		}
	}
	return nil
}
