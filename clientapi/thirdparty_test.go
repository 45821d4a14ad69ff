package clientapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestThirdPartyInviteForm: /invite with a third-party identifier is told apart from the
// user_id form; missing fields, inviters outside the room and inviters without the power
// to invite are refused before any identity server would be asked, and the rest get the
// answer to an unreachable identity server. The user_id form still works through it.
func TestThirdPartyInviteForm(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		router := chi.NewRouter()
		router.Method(http.MethodPost, "/_matrix/client/v3/rooms/{roomId}/invite", s.api.requireAuth(s.api.inviteEitherForm))
		srv := httptest.NewServer(router)
		t.Cleanup(srv.Close)
		inviteSrv := *s
		inviteSrv.srv = srv
		c := &inviteSrv

		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		carolID, carol, _ := s.register("carol", "password-carol")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		path := "/_matrix/client/v3/rooms/" + roomID + "/invite"
		full := map[string]any{"id_server": "id.example", "id_access_token": "abc", "medium": "email", "address": "x@example.org"}

		for _, field := range []string{"id_server", "id_access_token"} {
			body := map[string]any{}
			for k, v := range full {
				if k != field {
					body[k] = v
				}
			}
			c.expectErr("POST", path, alice, body, http.StatusBadRequest, "M_MISSING_PARAM")
		}
		c.expectErr("POST", "/_matrix/client/v3/rooms/!nowhere:test.example/invite", alice, full, http.StatusForbidden, "M_FORBIDDEN")
		c.expectErr("POST", path, bob, full, http.StatusForbidden, "M_FORBIDDEN")
		s.joinRoom(bob, roomID)
		// Bob may invite (invite level 0) but not send m.room.third_party_invite, a state
		// event at state_default (50).
		c.expectErr("POST", path, bob, full, http.StatusForbidden, "M_FORBIDDEN")
		c.expectErr("POST", path, alice, full, http.StatusInternalServerError, "M_UNKNOWN")

		// The user_id form passes through.
		c.do("POST", path, alice, map[string]any{"user_id": carolID}, http.StatusOK)
		s.joinRoom(carol, roomID)
		c.expectErr("POST", path, alice, map[string]any{"user_id": "not-a-user"}, http.StatusBadRequest, "M_INVALID_PARAM")
	})
}
