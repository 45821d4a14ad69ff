package clientapi

import (
	"context"
	"net/http"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestTokenLogin: a signed-in user gets a login token only after confirming their password,
// every time; the token logs a new device in as them once; a spent, unknown or expired token
// is refused with 403 M_FORBIDDEN. GET /login and the capabilities advertise it.
func TestTokenLogin(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, aliceDevice := s.register("alice", "password-alice")
		const getToken = "/_matrix/client/v1/login/get_token"

		flows := s.do("GET", "/_matrix/client/v3/login", "", nil, http.StatusOK)["flows"].([]any)
		found := false
		for _, f := range flows {
			if f.(map[string]any)["type"] == "m.login.token" && f.(map[string]any)["get_login_token"] == true {
				found = true
			}
		}
		if !found {
			t.Fatalf("GET /login flows %v", flows)
		}
		capabilities := s.do("GET", "/_matrix/client/v3/capabilities", alice, nil, http.StatusOK)["capabilities"].(map[string]any)
		if capabilities["m.get_login_token"].(map[string]any)["enabled"] != true {
			t.Fatalf("capabilities %v", capabilities)
		}

		challenge := s.do("POST", getToken, alice, map[string]any{}, http.StatusUnauthorized)
		session, _ := challenge["session"].(string)
		if session == "" {
			t.Fatalf("UIA challenge %v", challenge)
		}
		s.do("POST", getToken, alice, map[string]any{"auth": passwordAuth(session, "alice", "wrong")}, http.StatusUnauthorized)
		got := s.do("POST", getToken, alice, map[string]any{"auth": passwordAuth(session, "alice", "password-alice")}, http.StatusOK)
		token, _ := got["login_token"].(string)
		if token == "" || got["expires_in_ms"] != float64(loginTokenLifetime.Milliseconds()) {
			t.Fatalf("get_token %v", got)
		}
		// The session that passed is gone: the next token needs the password again.
		s.expectErr("POST", getToken, alice, map[string]any{"auth": passwordAuth(session, "alice", "password-alice")}, http.StatusBadRequest, "M_UNKNOWN")
		s.do("POST", getToken, alice, map[string]any{}, http.StatusUnauthorized)

		login := map[string]any{"type": "m.login.token", "token": token, "initial_device_display_name": "second"}
		out := s.do("POST", "/_matrix/client/v3/login", "", login, http.StatusOK)
		if out["user_id"] != aliceID || out["device_id"] == aliceDevice || out["access_token"] == "" {
			t.Fatalf("token login %v", out)
		}
		s.do("GET", "/_matrix/client/v3/account/whoami", out["access_token"].(string), nil, http.StatusOK)
		s.expectErr("POST", "/_matrix/client/v3/login", "", login, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token", "token": "eggs_login_nope"}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("POST", "/_matrix/client/v3/login", "", map[string]any{"type": "m.login.token"}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", getToken, "", map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

// TestLoginTokenStorage: a token is spent once, and not at all after it expired.
func TestLoginTokenStorage(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if err := storage.PutLoginToken(ctx, db, []byte("h1"), "@a:x", 1000, 0); err != nil {
			t.Fatal(err)
		}
		if err := storage.PutLoginToken(ctx, db, []byte("h2"), "@a:x", 1000, 0); err != nil {
			t.Fatal(err)
		}
		if user, err := storage.SpendLoginToken(ctx, db, []byte("h1"), 999); err != nil || user != "@a:x" {
			t.Fatalf("spend: %q, %v", user, err)
		}
		if _, err := storage.SpendLoginToken(ctx, db, []byte("h1"), 999); err != storage.ErrNotFound {
			t.Fatalf("spent twice: %v", err)
		}
		if _, err := storage.SpendLoginToken(ctx, db, []byte("h2"), 1000); err != storage.ErrNotFound {
			t.Fatalf("expired: %v", err)
		}
	})
}
