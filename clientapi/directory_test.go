package clientapi

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

func TestRoomAliases(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		alias := "#coffee:" + testServerName
		path := "/_matrix/client/v3/directory/room/" + url.PathEscape(alias)

		s.expectErr("PUT", path, bob, map[string]any{"room_id": roomID}, http.StatusForbidden, "M_FORBIDDEN")
		s.do("PUT", path, alice, map[string]any{"room_id": roomID}, http.StatusOK)
		s.expectErr("PUT", path, alice, map[string]any{"room_id": roomID}, http.StatusConflict, "M_UNKNOWN")
		s.expectErr("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#coffee:elsewhere.example"), alice,
			map[string]any{"room_id": roomID}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", "/_matrix/client/v3/directory/room/nope", alice, map[string]any{"room_id": roomID}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape("#other:"+testServerName), alice, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")

		// Resolving needs no access token; ":" may arrive percent-encoded.
		got := s.do("GET", "/_matrix/client/v3/directory/room/%23coffee%3A"+url.PathEscape(testServerName), "", nil, http.StatusOK)
		if got["room_id"] != roomID || got["servers"].([]any)[0] != testServerName {
			t.Fatalf("alias resolves to %v", got)
		}
		s.expectErr("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#tea:"+testServerName), "", nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape("#tea:remote.example"), "", nil, http.StatusNotFound, "M_NOT_FOUND")

		aliasesPath := "/_matrix/client/v3/rooms/" + roomID + "/aliases"
		s.expectErr("GET", aliasesPath, bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.joinRoom(bob, roomID)
		if aliases := s.do("GET", aliasesPath, bob, nil, http.StatusOK)["aliases"].([]any); len(aliases) != 1 || aliases[0] != alias {
			t.Fatalf("aliases: %v", aliases)
		}

		// Only the creator, room admins and server admins may delete; deleting drops the
		// alias from the canonical alias event.
		s.setState(alice, roomID, "m.room.canonical_alias", map[string]any{"alias": alias})
		s.expectErr("DELETE", path, bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.do("DELETE", path, alice, nil, http.StatusOK)
		s.expectErr("DELETE", path, alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", path, "", nil, http.StatusNotFound, "M_NOT_FOUND")
		canonical := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/state/m.room.canonical_alias", alice, nil, http.StatusOK)
		if _, ok := canonical["alias"]; ok {
			t.Fatalf("canonical alias still names the deleted alias: %v", canonical)
		}

		// Bob's own alias is his to delete even without power in the room.
		s.do("PUT", path, bob, map[string]any{"room_id": roomID}, http.StatusOK)
		s.do("DELETE", path, bob, nil, http.StatusOK)
	})
}

func TestPublicRoomDirectory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		big := s.createRoom(alice, map[string]any{"visibility": "public", "name": "Big Room", "topic": "Lots of people"})
		s.joinRoom(bob, big)
		s.createRoom(alice, map[string]any{"visibility": "public", "name": "Small", "room_alias_name": "small"})
		space := s.createRoom(alice, map[string]any{"visibility": "public", "name": "A space", "creation_content": map[string]any{"type": "m.space"}})
		private := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Unlisted"})

		visibility := func(roomID string) string {
			return s.do("GET", "/_matrix/client/v3/directory/list/room/"+roomID, "", nil, http.StatusOK)["visibility"].(string)
		}
		if visibility(big) != "public" || visibility(private) != "private" {
			t.Fatal("wrong directory visibility")
		}
		s.expectErr("GET", "/_matrix/client/v3/directory/list/room/!unknown:"+testServerName, "", nil, http.StatusNotFound, "M_NOT_FOUND")
		listPath := "/_matrix/client/v3/directory/list/room/" + private
		s.expectErr("PUT", listPath, bob, map[string]any{"visibility": "public"}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("PUT", listPath, alice, map[string]any{"visibility": "secret"}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.do("PUT", listPath, alice, map[string]any{"visibility": "public"}, http.StatusOK)
		s.do("PUT", listPath, alice, map[string]any{"visibility": "private"}, http.StatusOK)
		if visibility(private) != "private" {
			t.Fatal("room not unpublished")
		}

		all := s.do("GET", "/_matrix/client/v3/publicRooms", "", nil, http.StatusOK)
		chunk := all["chunk"].([]any)
		if len(chunk) != 3 || all["total_room_count_estimate"].(float64) != 3 {
			t.Fatalf("publicRooms: %v", all)
		}
		first := chunk[0].(map[string]any)
		if first["room_id"] != big || first["num_joined_members"].(float64) != 2 || first["name"] != "Big Room" ||
			first["topic"] != "Lots of people" || first["join_rule"] != "public" || first["world_readable"] != false {
			t.Fatalf("first room: %v", first)
		}

		// Pages of one, forwards and back.
		var seen []string
		since := ""
		for i := 0; i < 5; i++ {
			q := url.Values{"limit": {"1"}}
			if since != "" {
				q.Set("since", since)
			}
			page := s.do("GET", "/_matrix/client/v3/publicRooms?"+q.Encode(), "", nil, http.StatusOK)
			seen = append(seen, page["chunk"].([]any)[0].(map[string]any)["room_id"].(string))
			next, ok := page["next_batch"].(string)
			if !ok {
				if prev := page["prev_batch"].(string); prev == "" {
					t.Fatal("last page without prev_batch")
				}
				break
			}
			since = next
		}
		if len(seen) != 3 || seen[0] != big {
			t.Fatalf("paged through %v", seen)
		}

		search := func(body map[string]any) []any {
			return s.do("POST", "/_matrix/client/v3/publicRooms", alice, body, http.StatusOK)["chunk"].([]any)
		}
		if got := search(map[string]any{"filter": map[string]any{"generic_search_term": "SMALL"}}); len(got) != 1 ||
			got[0].(map[string]any)["canonical_alias"] != "#small:"+testServerName {
			t.Fatalf("search small: %v", got)
		}
		if got := search(map[string]any{"filter": map[string]any{"generic_search_term": "people"}}); len(got) != 1 {
			t.Fatalf("search topic: %v", got)
		}
		if got := search(map[string]any{"filter": map[string]any{"room_types": []any{"m.space"}}}); len(got) != 1 ||
			got[0].(map[string]any)["room_id"] != space || got[0].(map[string]any)["room_type"] != "m.space" {
			t.Fatalf("spaces: %v", got)
		}
		if got := search(map[string]any{"filter": map[string]any{"room_types": []any{nil}}}); len(got) != 2 {
			t.Fatalf("rooms without type: %v", got)
		}
		if got := search(map[string]any{"third_party_instance_id": "irc"}); len(got) != 0 {
			t.Fatalf("third-party network: %v", got)
		}
		s.expectErr("GET", "/_matrix/client/v3/publicRooms?since=zz", "", nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", "/_matrix/client/v3/publicRooms?limit=x", "", nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("POST", "/_matrix/client/v3/publicRooms", "", map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

func TestUserDirectory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		carolID, carol, _ := s.register("carol", "password-carol")
		_, dave, _ := s.register("dave", "password-dave")
		s.do("PUT", "/_matrix/client/v3/profile/"+bobID+"/displayname", bob, map[string]any{"displayname": "Bobby Tables"}, http.StatusOK)

		shared := s.createRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{bobID}})
		s.joinRoom(bob, shared)
		s.createRoom(carol, map[string]any{"preset": "public_chat"})
		s.createRoom(dave, map[string]any{"preset": "private_chat"})

		search := func(term string, limit int) ([]string, map[string]any) {
			out := s.do("POST", "/_matrix/client/v3/user_directory/search", alice,
				map[string]any{"search_term": term, "limit": limit}, http.StatusOK)
			var ids []string
			for _, raw := range out["results"].([]any) {
				ids = append(ids, raw.(map[string]any)["user_id"].(string))
			}
			return ids, out
		}
		if ids, out := search("TABLES", 10); len(ids) != 1 || ids[0] != bobID ||
			out["results"].([]any)[0].(map[string]any)["display_name"] != "Bobby Tables" {
			t.Fatalf("search by display name: %v", out)
		}
		if ids, _ := search("carol", 10); len(ids) != 1 || ids[0] != carolID {
			t.Fatalf("user in a public room: %v", ids)
		}
		if ids, _ := search("dave", 10); len(ids) != 0 {
			t.Fatalf("user sharing no room found: %v", ids)
		}
		if ids, out := search(testServerName, 2); len(ids) != 2 || out["limited"] != true {
			t.Fatalf("limited search: %v", out)
		}
		if ids, _ := search("%", 10); len(ids) != 0 {
			t.Fatalf("LIKE wildcard matched: %v", ids)
		}
		s.expectErr("POST", "/_matrix/client/v3/user_directory/search", alice, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", "/_matrix/client/v3/user_directory/search", alice, map[string]any{"search_term": "a", "limit": -1}, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
