package clientapi

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestRoomSummary: a public room is summarised to anyone, by ID or alias, without an access
// token too; a private room only to its members and invitees, with their membership, and as
// "not found" to everyone else; a bad token is refused.
func TestRoomSummary(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		public := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "Lobby", "topic": "hello", "room_alias_name": "lobby"})
		private := s.createRoom(alice, map[string]any{"preset": "private_chat", "name": "Secret"})
		path := func(target string) string { return "/_matrix/client/v1/room_summary/" + url.PathEscape(target) }

		for _, target := range []string{public, "#lobby:" + testServerName} {
			got := s.do("GET", path(target), "", nil, http.StatusOK)
			if got["room_id"] != public || got["name"] != "Lobby" || got["topic"] != "hello" || got["join_rule"] != "public" ||
				got["num_joined_members"] != float64(1) || got["room_version"] == nil || got["membership"] != nil {
				t.Fatalf("anonymous summary of %s: %v", target, got)
			}
		}
		if got := s.do("GET", path(public), alice, nil, http.StatusOK); got["membership"] != "join" {
			t.Fatalf("alice's summary: %v", got)
		}

		s.expectErr("GET", path(private), "", nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", path(private), bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.do("POST", "/_matrix/client/v3/rooms/"+private+"/invite", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		if got := s.do("GET", path(private), bob, nil, http.StatusOK); got["membership"] != "invite" || got["name"] != "Secret" {
			t.Fatalf("invitee's summary: %v", got)
		}

		s.expectErr("GET", path("!nowhere:"+testServerName), alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", path("#nowhere:"+testServerName), alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", path("not-a-room"), alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path(public), "not-a-token", nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}
