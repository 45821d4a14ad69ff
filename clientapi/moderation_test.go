package clientapi

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// moderationSecret is the shared registration secret of the moderation tests, through which
// they create server admins.
const moderationSecret = "moderation-secret"

// newModerationAPI is a test server with open registration and shared-secret registration
// of admins.
func newModerationAPI(t *testing.T, db *storage.DB) *testServer {
	return newTestAPI(t, db, config.RegistrationOpen, moderationSecret)
}

// registerAdmin creates a server admin through shared-secret registration and returns its
// user ID and access token.
func (s *testServer) registerAdmin(username string) (userID, token string) {
	s.t.Helper()
	const path = "/_synapse/admin/v1/register"
	nonce := s.do("GET", path, "", nil, http.StatusOK)["nonce"].(string)
	out := s.do("POST", path, "", map[string]any{"nonce": nonce, "username": username, "password": "pw", "admin": true,
		"mac": auth.RegistrationMAC(moderationSecret, nonce, username, "pw", true, "")}, http.StatusOK)
	return out["user_id"].(string), out["access_token"].(string)
}

// lockPath and suspendPath are the moderation endpoints of userID.
func lockPath(userID string) string {
	return "/_matrix/client/v1/admin/lock/" + url.PathEscape(userID)
}

func suspendPath(userID string) string {
	return "/_matrix/client/v1/admin/suspend/" + url.PathEscape(userID)
}

// TestAdminModerationEndpoints: only server admins may use the endpoints, and they are
// told so before anything about the account is looked up; other servers' users and
// malformed IDs are 400 M_INVALID_PARAM, unknown and deactivated accounts 404, other admins
// and the admin's own account 403; bodies are checked; the capability is shown to admins
// only.
func TestAdminModerationEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newModerationAPI(t, db)
		adminID, admin := s.registerAdmin("root")
		otherAdminID, _ := s.registerAdmin("root2")
		bobID, bob, _ := s.register("bob", "password-bob")
		goneID, _, _ := s.register("gone", "password-gone")
		if err := storage.DeactivateUser(context.Background(), db, goneID, false); err != nil {
			t.Fatal(err)
		}

		for _, endpoint := range []struct {
			key  string
			path func(string) string
		}{{"locked", lockPath}, {"suspended", suspendPath}} {
			key, path := endpoint.key, endpoint.path
			on := map[string]any{key: true}
			// Non-admins learn nothing, whichever account they ask about.
			for _, target := range []string{bobID, "@nobody:" + testServerName, "@x:elsewhere.example"} {
				s.expectErr("GET", path(target), bob, nil, http.StatusForbidden, "M_FORBIDDEN")
				s.expectErr("PUT", path(target), bob, on, http.StatusForbidden, "M_FORBIDDEN")
			}
			s.expectErr("GET", path(bobID), "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")

			s.expectErr("GET", path("@x:elsewhere.example"), admin, nil, http.StatusBadRequest, "M_INVALID_PARAM")
			s.expectErr("PUT", path("@x:elsewhere.example"), admin, on, http.StatusBadRequest, "M_INVALID_PARAM")
			s.expectErr("GET", path("not-a-user-id"), admin, nil, http.StatusBadRequest, "M_INVALID_PARAM")
			for _, target := range []string{"@nobody:" + testServerName, goneID} {
				s.expectErr("GET", path(target), admin, nil, http.StatusNotFound, "M_NOT_FOUND")
				s.expectErr("PUT", path(target), admin, on, http.StatusNotFound, "M_NOT_FOUND")
			}
			s.expectErr("GET", path(otherAdminID), admin, nil, http.StatusForbidden, "M_FORBIDDEN")
			s.expectErr("PUT", path(otherAdminID), admin, on, http.StatusForbidden, "M_FORBIDDEN")
			s.expectErr("PUT", path(adminID), admin, on, http.StatusForbidden, "M_FORBIDDEN")
			if out := s.do("GET", path(adminID), admin, nil, http.StatusOK); out[key] != false {
				t.Fatalf("GET %s of oneself: %v", key, out)
			}

			s.expectErr("PUT", path(bobID), admin, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
			s.expectErr("PUT", path(bobID), admin, map[string]any{key: "yes"}, http.StatusBadRequest, "M_BAD_JSON")
			s.expectErr("PUT", path(bobID), admin, "{", http.StatusBadRequest, "M_NOT_JSON")
			if out := s.do("GET", path(bobID), admin, nil, http.StatusOK); out[key] != false {
				t.Fatalf("GET %s before: %v", key, out)
			}
			if out := s.do("PUT", path(bobID), admin, on, http.StatusOK); out[key] != true || len(out) != 1 {
				t.Fatalf("PUT %s answered %v", key, out)
			}
			if out := s.do("GET", path(bobID), admin, nil, http.StatusOK); out[key] != true {
				t.Fatalf("GET %s after: %v", key, out)
			}
			if out := s.do("PUT", path(bobID), admin, map[string]any{key: false}, http.StatusOK); out[key] != false {
				t.Fatalf("PUT %s false answered %v", key, out)
			}
		}

		capabilities := func(token string) map[string]any {
			out := s.do("GET", "/_matrix/client/v3/capabilities", token, nil, http.StatusOK)
			return out["capabilities"].(map[string]any)
		}
		if moderation, _ := capabilities(admin)["m.account_moderation"].(map[string]any); moderation["lock"] != true || moderation["suspend"] != true {
			t.Fatalf("admin's m.account_moderation: %v", moderation)
		}
		if moderation, ok := capabilities(bob)["m.account_moderation"]; ok {
			t.Fatalf("non-admin's m.account_moderation: %v", moderation)
		}
	})
}

// TestLockAccount: once locked, the account's tokens (cached ones too) get 401
// M_USER_LOCKED with soft_logout on everything but logout, and login gives it no new token;
// unlocking brings the same sessions back.
func TestLockAccount(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newModerationAPI(t, db)
		_, admin := s.registerAdmin("root")
		bobID, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")
		const whoami = "/_matrix/client/v3/account/whoami"
		login := map[string]any{"type": auth.StagePassword, "password": "password-bob",
			"identifier": map[string]string{"type": auth.IdentifierUser, "user": "bob"}}
		phone := s.do("POST", "/_matrix/client/v3/login", "", login, http.StatusOK)["access_token"].(string)
		s.do("GET", whoami, bob, nil, http.StatusOK) // the token is now cached

		s.do("PUT", lockPath(bobID), admin, map[string]any{"locked": true}, http.StatusOK)
		for _, path := range []string{whoami, "/_matrix/client/v3/sync?timeout=0", "/_matrix/client/v3/capabilities",
			"/_matrix/client/v1/room_summary/" + url.PathEscape("!nowhere:"+testServerName)} {
			out := s.expectErr("GET", path, bob, nil, http.StatusUnauthorized, "M_USER_LOCKED")
			if out["soft_logout"] != true {
				t.Fatalf("GET %s while locked: %v", path, out)
			}
		}
		s.expectErr("POST", "/_matrix/client/v3/createRoom", bob, map[string]any{}, http.StatusUnauthorized, "M_USER_LOCKED")
		if out := s.expectErr("POST", "/_matrix/client/v3/login", "", login, http.StatusUnauthorized, "M_USER_LOCKED"); out["soft_logout"] != true {
			t.Fatalf("login while locked: %v", out)
		}
		// A wrong password is told as such, not that the account is locked.
		wrong := map[string]any{"type": auth.StagePassword, "password": "nope",
			"identifier": map[string]string{"type": auth.IdentifierUser, "user": "bob"}}
		s.expectErr("POST", "/_matrix/client/v3/login", "", wrong, http.StatusForbidden, "M_FORBIDDEN")
		s.do("GET", whoami, carol, nil, http.StatusOK)

		// Logging out is allowed, and ends that session only.
		s.do("POST", "/_matrix/client/v3/logout", phone, map[string]any{}, http.StatusOK)
		s.expectErr("GET", whoami, phone, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

		s.do("PUT", lockPath(bobID), admin, map[string]any{"locked": false}, http.StatusOK)
		if out := s.do("GET", whoami, bob, nil, http.StatusOK); out["user_id"] != bobID {
			t.Fatalf("whoami after unlock: %v", out)
		}
		s.do("POST", "/_matrix/client/v3/login", "", login, http.StatusOK)

		// POST /logout/all works while locked too.
		s.do("PUT", lockPath(bobID), admin, map[string]any{"locked": true}, http.StatusOK)
		s.do("POST", "/_matrix/client/v3/logout/all", bob, map[string]any{}, http.StatusOK)
		s.expectErr("GET", whoami, bob, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
	})
}

// TestSuspendAccount: a suspended account keeps reading (/sync, /messages), leaving and
// redacting its own events, and gets 403 M_USER_SUSPENDED for sending, state, creating
// rooms, joining, knocking, inviting, kicking, profile changes and redacting others' events;
// unsuspending lifts it.
func TestSuspendAccount(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newModerationAPI(t, db)
		_, admin := s.registerAdmin("root")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		carolID, _, _ := s.register("carol", "password-carol")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat",
			"power_level_content_override": map[string]any{"users": map[string]any{bobID: 100}}})
		otherRoom := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.joinRoom(bob, roomID)
		own := s.sendText(bob, roomID, "before")
		theirs := s.sendText(alice, roomID, "hello")
		s.do("GET", "/_matrix/client/v3/sync?timeout=0", bob, nil, http.StatusOK) // the token is now cached

		s.do("PUT", suspendPath(bobID), admin, map[string]any{"suspended": true}, http.StatusOK)
		txn := func() string { return fmt.Sprintf("s%d", testTxnCounter.Add(1)) }
		room := "/_matrix/client/v3/rooms/" + roomID
		denied := []struct {
			method, path string
			body         any
		}{
			{"PUT", room + "/send/m.room.message/" + txn(), map[string]any{"msgtype": "m.text", "body": "no"}},
			{"PUT", room + "/send/m.room.redaction/" + txn(), map[string]any{"redacts": theirs}},
			{"PUT", room + "/state/m.room.topic", map[string]any{"topic": "no"}},
			{"PUT", room + "/redact/" + theirs + "/" + txn(), map[string]any{}},
			{"POST", room + "/invite", map[string]any{"user_id": carolID}},
			{"POST", room + "/kick", map[string]any{"user_id": carolID}},
			{"POST", room + "/ban", map[string]any{"user_id": carolID}},
			{"POST", room + "/upgrade", map[string]any{"new_version": "11"}},
			{"POST", "/_matrix/client/v3/createRoom", map[string]any{}},
			{"POST", "/_matrix/client/v3/rooms/" + otherRoom + "/join", map[string]any{}},
			{"POST", "/_matrix/client/v3/join/" + otherRoom, map[string]any{}},
			{"POST", "/_matrix/client/v3/knock/" + otherRoom, map[string]any{}},
			{"PUT", "/_matrix/client/v3/profile/" + bobID + "/displayname", map[string]any{"displayname": "no"}},
			{"DELETE", "/_matrix/client/v3/profile/" + bobID + "/displayname", nil},
		}
		for _, req := range denied {
			s.expectErr(req.method, req.path, bob, req.body, http.StatusForbidden, "M_USER_SUSPENDED")
		}

		// Reading goes on, and so do the allowed actions.
		s.do("GET", "/_matrix/client/v3/sync?timeout=0", bob, nil, http.StatusOK)
		if ids, _ := s.paginate(bob, roomID, "b", 50); len(ids) == 0 {
			t.Fatal("/messages while suspended: no events")
		}
		s.do("GET", "/_matrix/client/v3/account/whoami", bob, nil, http.StatusOK)
		s.redactEvent(bob, roomID, own)
		s.do("PUT", room+"/send/m.room.redaction/"+txn(), bob, map[string]any{"redacts": own}, http.StatusOK)
		s.do("POST", room+"/leave", bob, map[string]any{}, http.StatusOK)
		s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword, "password": "password-bob",
			"identifier": map[string]string{"type": auth.IdentifierUser, "user": "bob"}}, http.StatusOK)

		s.do("PUT", suspendPath(bobID), admin, map[string]any{"suspended": false}, http.StatusOK)
		s.joinRoom(bob, otherRoom)
		s.sendText(bob, otherRoom, "after")
	})
}

// TestLockByAnotherProcess: a lock set in the database by someone else than this API (the
// eggs CLI, another process on the same PostgreSQL) reaches cached tokens once their cache
// entry is maxTokenCacheAge old.
func TestLockByAnotherProcess(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newModerationAPI(t, db)
		clock := &fakeClock{now: time.Now()}
		s.api.clock = clock.Now
		bobID, bob, _ := s.register("bob", "password-bob")
		const whoami = "/_matrix/client/v3/account/whoami"
		s.do("GET", whoami, bob, nil, http.StatusOK)
		if err := storage.SetAccountLocked(context.Background(), db, bobID, true); err != nil {
			t.Fatal(err)
		}
		s.do("GET", whoami, bob, nil, http.StatusOK)
		clock.Advance(maxTokenCacheAge)
		s.expectErr("GET", whoami, bob, nil, http.StatusUnauthorized, "M_USER_LOCKED")
	})
}
