package clientapi

import (
	"net/http"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestNULRefused: U+0000 in a JSON body (which PostgreSQL cannot store in text) is 400
// M_BAD_JSON, not a server error, on both engines alike.
func TestNULRefused(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, device := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{})
		for path, body := range map[string]string{
			"/_matrix/client/v3/profile/" + aliceID + "/displayname":     `{"displayname":"a\u0000b"}`,
			"/_matrix/client/v3/devices/" + device:                       `{"display_name":"a\u0000b"}`,
			"/_matrix/client/v3/user/" + aliceID + "/account_data/x":     `{"a":"a\u0000b"}`,
			"/_matrix/client/v3/rooms/" + roomID + "/state/m.room.topic": `{"topic":"a\u0000b"}`,
		} {
			s.expectErr("PUT", path, alice, body, http.StatusBadRequest, "M_BAD_JSON")
		}
		// An escaped backslash before "u0000" is ordinary text.
		s.do("PUT", "/_matrix/client/v3/profile/"+aliceID+"/displayname", alice, `{"displayname":"a\\u0000b"}`, http.StatusOK)
	})
}
