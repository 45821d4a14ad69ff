package clientapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

const testServerName = "test.example"

// testServer is the client API over a fresh database, with rate limits off.
type testServer struct {
	t   *testing.T
	api *API
	db  *storage.DB
	srv *httptest.Server
}

func newTestAPI(t *testing.T, db *storage.DB, registration, secret string) *testServer {
	t.Helper()
	// Push gateways of the tests listen on loopback.
	cfg := &config.Config{ServerName: testServerName, Registration: registration, RegistrationSharedSecret: secret, RateLimit: "off",
		PushPrivateGateways: "allow"}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	_, key, _ := ed25519.GenerateKey(nil)
	maxPos, err := storage.MaxStreamPos(context.Background(), db)
	if err != nil {
		t.Fatal(err)
	}
	roomServer := rooms.New(db, rooms.Identity{ServerName: testServerName, KeyID: "ed25519:k", Key: key},
		streams.NewTracker(maxPos), func() int64 { return time.Now().UnixMilli() }, log)
	api, err := New(cfg, db, roomServer, log, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	router := chi.NewRouter()
	api.Routes(router)
	srv := httptest.NewServer(router)
	t.Cleanup(srv.Close)
	return &testServer{t: t, api: api, db: db, srv: srv}
}

// do sends a request and decodes the JSON answer; it fails the test on a status other
// than want.
func (s *testServer) do(method, path, token string, body any, want int) map[string]any {
	s.t.Helper()
	var reader io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		reader = strings.NewReader(b)
	default:
		encoded, _ := json.Marshal(b)
		reader = bytes.NewReader(encoded)
	}
	req, _ := http.NewRequest(method, s.srv.URL+path, reader)
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != want {
		s.t.Fatalf("%s %s: status %d, want %d: %s", method, path, resp.StatusCode, want, raw)
	}
	out := map[string]any{}
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			s.t.Fatalf("%s %s: bad JSON %s", method, path, raw)
		}
	}
	return out
}

// expectErr sends a request and checks the status and errcode of the error.
func (s *testServer) expectErr(method, path, token string, body any, status int, errcode string) map[string]any {
	s.t.Helper()
	out := s.do(method, path, token, body, status)
	if out["errcode"] != errcode {
		s.t.Fatalf("%s %s: errcode %v, want %s", method, path, out["errcode"], errcode)
	}
	return out
}

// register creates an account through open registration and returns its access token.
func (s *testServer) register(username, password string) (userID, token, deviceID string) {
	s.t.Helper()
	out := s.do("POST", "/_matrix/client/v3/register", "", map[string]any{
		"username": username, "password": password, "auth": map[string]string{"type": auth.StageDummy},
	}, http.StatusOK)
	return out["user_id"].(string), out["access_token"].(string), out["device_id"].(string)
}

func passwordAuth(session, user, password string) map[string]any {
	return map[string]any{
		"type": auth.StagePassword, "session": session, "password": password,
		"identifier": map[string]string{"type": auth.IdentifierUser, "user": user},
	}
}

func TestRegistrationOpen(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, config.RegistrationOpen, "")
		const path = "/_matrix/client/v3/register"

		challenge := s.do("POST", path, "", map[string]any{"username": "alice", "password": "pw"}, http.StatusUnauthorized)
		if challenge["session"] == "" || !strings.Contains(mustString(t, challenge["flows"]), auth.StageDummy) {
			t.Fatalf("challenge %v", challenge)
		}
		out := s.do("POST", path, "", map[string]any{"username": "Alice", "password": "pw",
			"auth": map[string]any{"type": auth.StageDummy, "session": challenge["session"]}}, http.StatusOK)
		if out["user_id"] != "@alice:"+testServerName || out["access_token"] == nil || out["device_id"] == nil {
			t.Fatalf("register answered %v", out)
		}
		// A retried request of the finished session logs the same account in again.
		again := s.do("POST", path, "", map[string]any{"username": "alice", "password": "pw",
			"auth": map[string]any{"type": auth.StageDummy, "session": challenge["session"]}}, http.StatusOK)
		if again["user_id"] != out["user_id"] {
			t.Fatalf("retry answered %v", again)
		}

		s.expectErr("POST", path, "", map[string]any{"username": "alice"}, http.StatusBadRequest, "M_USER_IN_USE")
		s.expectErr("POST", path, "", map[string]any{"username": "bad name!"}, http.StatusBadRequest, "M_INVALID_USERNAME")
		s.expectErr("POST", path+"?kind=guest", "", map[string]any{}, http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN")
		s.expectErr("POST", path, "", "[1]", http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("POST", path, "", "{", http.StatusBadRequest, "M_NOT_JSON")
		s.expectErr("POST", path, "", map[string]any{"username": 5}, http.StatusBadRequest, "M_BAD_JSON")

		generated := s.do("POST", path, "", map[string]any{"inhibit_login": true,
			"auth": map[string]any{"type": auth.StageDummy}}, http.StatusOK)
		if _, ok := generated["access_token"]; ok || !strings.HasSuffix(mustString(t, generated["user_id"]), ":"+testServerName) {
			t.Fatalf("inhibit_login registration answered %v", generated)
		}

		s.expectErr("GET", "/_matrix/client/v3/register/available?username=alice", "", nil, http.StatusBadRequest, "M_USER_IN_USE")
		s.expectErr("GET", "/_matrix/client/v3/register/available?username=%40x", "", nil, http.StatusBadRequest, "M_INVALID_USERNAME")
		if avail := s.do("GET", "/_matrix/client/v3/register/available?username=bob", "", nil, http.StatusOK); avail["available"] != true {
			t.Fatalf("available answered %v", avail)
		}
	})
}

func TestRegistrationClosedAndToken(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		closed := newTestAPI(t, db, config.RegistrationClosed, "")
		closed.expectErr("POST", "/_matrix/client/v3/register", "", map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		closed.expectErr("GET", "/_matrix/client/v3/register/m.login.registration_token/validity?token=abc", "", nil, http.StatusForbidden, "M_FORBIDDEN")

		s := newTestAPI(t, db, config.RegistrationToken, "")
		if err := storage.InsertRegistrationToken(context.Background(), db, "once", 1, 0); err != nil {
			t.Fatal(err)
		}
		const validity = "/_matrix/client/v3/register/m.login.registration_token/validity?token="
		if out := s.do("GET", validity+"once", "", nil, http.StatusOK); out["valid"] != true {
			t.Fatalf("validity %v", out)
		}
		if out := s.do("GET", validity+"nope", "", nil, http.StatusOK); out["valid"] != false {
			t.Fatalf("validity %v", out)
		}
		s.expectErr("GET", validity+"bad%20token", "", nil, http.StatusBadRequest, "M_INVALID_PARAM")

		wrong := s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "carol",
			"auth": map[string]any{"type": auth.StageRegistrationToken, "token": "nope"}}, http.StatusUnauthorized)
		if wrong["errcode"] != "M_UNAUTHORIZED" {
			t.Fatalf("wrong token answered %v", wrong)
		}
		s.do("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "carol",
			"auth": map[string]any{"type": auth.StageRegistrationToken, "token": "once"}}, http.StatusOK)
		if out := s.do("GET", validity+"once", "", nil, http.StatusOK); out["valid"] != false {
			t.Fatalf("used-up token still valid: %v", out)
		}
	})
}

func TestSharedSecretRegistration(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		const path = "/_synapse/admin/v1/register"
		off := newTestAPI(t, db, config.RegistrationClosed, "")
		off.expectErr("POST", path, "", map[string]any{}, http.StatusBadRequest, "M_UNKNOWN")

		s := newTestAPI(t, db, config.RegistrationClosed, "s3cret")
		nonce := mustString(t, s.do("GET", path, "", nil, http.StatusOK)["nonce"])
		bad := map[string]any{"nonce": nonce, "username": "root", "password": "pw", "admin": true, "mac": "00"}
		s.expectErr("POST", path, "", bad, http.StatusForbidden, "M_FORBIDDEN")
		// The nonce was burnt by the failed attempt.
		bad["mac"] = auth.RegistrationMAC("s3cret", nonce, "root", "pw", true, "")
		s.expectErr("POST", path, "", bad, http.StatusBadRequest, "M_UNKNOWN")

		nonce = mustString(t, s.do("GET", path, "", nil, http.StatusOK)["nonce"])
		out := s.do("POST", path, "", map[string]any{"nonce": nonce, "username": "root", "password": "pw", "admin": true,
			"mac": auth.RegistrationMAC("s3cret", nonce, "root", "pw", true, "")}, http.StatusOK)
		if out["user_id"] != "@root:"+testServerName || out["home_server"] != testServerName || out["access_token"] == nil {
			t.Fatalf("shared-secret registration answered %v", out)
		}
		u, err := storage.LoadUser(context.Background(), db, "@root:"+testServerName)
		if err != nil || !u.IsAdmin {
			t.Fatalf("admin not created: %v %v", u, err)
		}
	})
}

func TestLoginLogout(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, config.RegistrationOpen, "")
		userID, _, _ := s.register("dave", "hunter2")
		const path = "/_matrix/client/v3/login"

		flows := s.do("GET", path, "", nil, http.StatusOK)
		if !strings.Contains(mustString(t, flows["flows"]), auth.StagePassword) {
			t.Fatalf("flows %v", flows)
		}
		for _, user := range []string{"dave", userID, "DAVE"} {
			out := s.do("POST", path, "", map[string]any{"type": auth.StagePassword, "password": "hunter2",
				"identifier": map[string]string{"type": auth.IdentifierUser, "user": user}}, http.StatusOK)
			if out["user_id"] != userID {
				t.Fatalf("login as %s answered %v", user, out)
			}
		}
		deprecated := s.do("POST", path, "", map[string]any{"type": auth.StagePassword, "user": "dave", "password": "hunter2",
			"device_id": "PHONE", "initial_device_display_name": "Phone"}, http.StatusOK)
		if deprecated["device_id"] != "PHONE" {
			t.Fatalf("login with device_id answered %v", deprecated)
		}
		// A second login naming the device replaces its token.
		relogin := s.do("POST", path, "", map[string]any{"type": auth.StagePassword, "user": "dave", "password": "hunter2",
			"device_id": "PHONE"}, http.StatusOK)
		s.expectErr("GET", "/_matrix/client/v3/account/whoami", mustString(t, deprecated["access_token"]), nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		who := s.do("GET", "/_matrix/client/v3/account/whoami", mustString(t, relogin["access_token"]), nil, http.StatusOK)
		if who["user_id"] != userID || who["device_id"] != "PHONE" || who["is_guest"] != false {
			t.Fatalf("whoami %v", who)
		}

		s.expectErr("POST", path, "", map[string]any{"type": auth.StagePassword, "user": "dave", "password": "wrong"}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("POST", path, "", map[string]any{"type": auth.StagePassword, "user": "nobody", "password": "x"}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("POST", path, "", map[string]any{"type": auth.StagePassword, "password": "x",
			"identifier": map[string]string{"type": auth.IdentifierThirdParty, "medium": "email", "address": "a@b.c"}}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("POST", path, "", map[string]any{"type": "m.login.sso", "token": "x"}, http.StatusBadRequest, "M_UNKNOWN")
		s.expectErr("POST", path, "", map[string]any{"type": auth.StagePassword, "user": "dave"}, http.StatusBadRequest, "M_MISSING_PARAM")

		token := mustString(t, relogin["access_token"])
		s.do("POST", "/_matrix/client/v3/logout", token, map[string]any{}, http.StatusOK)
		s.expectErr("GET", "/_matrix/client/v3/account/whoami", token, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")

		devices, err := storage.ListDevices(context.Background(), db, userID)
		if err != nil || len(devices) == 0 {
			t.Fatalf("devices %v %v", devices, err)
		}
		other := s.do("POST", path, "", map[string]any{"type": auth.StagePassword, "user": "dave", "password": "hunter2"}, http.StatusOK)
		s.do("POST", "/_matrix/client/v3/logout/all", mustString(t, other["access_token"]), nil, http.StatusOK)
		if devices, _ := storage.ListDevices(context.Background(), db, userID); len(devices) != 0 {
			t.Fatalf("devices left after logout/all: %v", devices)
		}
	})
}

func TestPasswordChangeAndDevices(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, config.RegistrationOpen, "")
		userID, token, deviceID := s.register("erin", "old")
		_, otherToken, _ := s.register("frank", "pw")
		second := s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword, "user": "erin", "password": "old"}, http.StatusOK)
		secondDevice := mustString(t, second["device_id"])

		list := s.do("GET", "/_matrix/client/v3/devices", token, nil, http.StatusOK)
		if n := len(list["devices"].([]any)); n != 2 {
			t.Fatalf("devices %v", list)
		}
		s.do("PUT", "/_matrix/client/v3/devices/"+deviceID, token, map[string]string{"display_name": "Laptop"}, http.StatusOK)
		if got := s.do("GET", "/_matrix/client/v3/devices/"+deviceID, token, nil, http.StatusOK); got["display_name"] != "Laptop" {
			t.Fatalf("device %v", got)
		}
		s.expectErr("GET", "/_matrix/client/v3/devices/NOPE", token, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("PUT", "/_matrix/client/v3/devices/NOPE", token, map[string]string{"display_name": "x"}, http.StatusNotFound, "M_NOT_FOUND")

		// Deleting a device needs the password; another user's password does not do.
		challenge := s.do("DELETE", "/_matrix/client/v3/devices/"+secondDevice, token, nil, http.StatusUnauthorized)
		session := mustString(t, challenge["session"])
		wrong := s.do("DELETE", "/_matrix/client/v3/devices/"+secondDevice, token,
			map[string]any{"auth": passwordAuth(session, "frank", "pw")}, http.StatusUnauthorized)
		if wrong["errcode"] != "M_FORBIDDEN" {
			t.Fatalf("wrong user answered %v", wrong)
		}
		s.do("DELETE", "/_matrix/client/v3/devices/"+secondDevice, token,
			map[string]any{"auth": passwordAuth(session, userID, "old")}, http.StatusOK)
		s.expectErr("GET", "/_matrix/client/v3/account/whoami", mustString(t, second["access_token"]), nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		s.expectErr("POST", "/_matrix/client/v3/delete_devices", token, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")

		// Changing the password logs out the other devices but not this one.
		third := s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword, "user": "erin", "password": "old"}, http.StatusOK)
		challenge = s.do("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "new"}, http.StatusUnauthorized)
		s.do("POST", "/_matrix/client/v3/account/password", token, map[string]any{"new_password": "new",
			"auth": passwordAuth(mustString(t, challenge["session"]), "erin", "old")}, http.StatusOK)
		s.expectErr("GET", "/_matrix/client/v3/account/whoami", mustString(t, third["access_token"]), nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		s.do("GET", "/_matrix/client/v3/account/whoami", token, nil, http.StatusOK)
		s.expectErr("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword, "user": "erin", "password": "old"}, http.StatusForbidden, "M_FORBIDDEN")
		s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword, "user": "erin", "password": "new"}, http.StatusOK)
		s.do("GET", "/_matrix/client/v3/account/whoami", otherToken, nil, http.StatusOK)
	})
}

func TestProfileAndAccountData(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, config.RegistrationOpen, "")
		userID, token, _ := s.register("gina", "pw")
		otherID, otherToken, _ := s.register("hank", "pw")

		if p := s.do("GET", "/_matrix/client/v3/profile/"+userID, "", nil, http.StatusOK); p["displayname"] != "gina" {
			t.Fatalf("default profile %v", p)
		}
		s.do("PUT", "/_matrix/client/v3/profile/"+userID+"/displayname", token, map[string]string{"displayname": "Gina G"}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/profile/"+userID+"/avatar_url", token, map[string]string{"avatar_url": "mxc://test.example/abc_DEF-1"}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/profile/"+userID+"/m.tz", token, map[string]string{"m.tz": "Europe/Paris"}, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/profile/"+userID+"/org.example.pets", token, map[string]any{"org.example.pets": []string{"cat"}}, http.StatusOK)
		p := s.do("GET", "/_matrix/client/v3/profile/"+userID, "", nil, http.StatusOK)
		if p["displayname"] != "Gina G" || p["avatar_url"] != "mxc://test.example/abc_DEF-1" || p["m.tz"] != "Europe/Paris" || p["org.example.pets"] == nil {
			t.Fatalf("profile %v", p)
		}
		s.do("DELETE", "/_matrix/client/v3/profile/"+userID+"/org.example.pets", token, nil, http.StatusOK)
		s.expectErr("GET", "/_matrix/client/v3/profile/"+userID+"/org.example.pets", "", nil, http.StatusNotFound, "M_NOT_FOUND")

		s.expectErr("PUT", "/_matrix/client/v3/profile/"+otherID+"/displayname", token, map[string]string{"displayname": "x"}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("PUT", "/_matrix/client/v3/profile/"+userID+"/avatar_url", token, map[string]string{"avatar_url": "https://x"}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", "/_matrix/client/v3/profile/"+userID+"/displayname", token, map[string]string{"displayname": strings.Repeat("x", 257)}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", "/_matrix/client/v3/profile/"+userID+"/displayname", token, map[string]string{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("PUT", "/_matrix/client/v3/profile/"+userID+"/Bad", token, map[string]string{"Bad": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", "/_matrix/client/v3/profile/@nobody:"+testServerName, "", nil, http.StatusNotFound, "M_NOT_FOUND")

		const global = "/_matrix/client/v3/user/"
		s.do("PUT", global+userID+"/account_data/org.example.x", token, map[string]int{"a": 1}, http.StatusOK)
		if got := s.do("GET", global+userID+"/account_data/org.example.x", token, nil, http.StatusOK); got["a"] != float64(1) {
			t.Fatalf("account data %v", got)
		}
		s.expectErr("GET", global+userID+"/account_data/org.example.y", token, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("PUT", global+userID+"/account_data/m.push_rules", token, map[string]int{}, http.StatusMethodNotAllowed, "M_BAD_JSON")
		s.expectErr("PUT", global+userID+"/account_data/org.example.x", otherToken, map[string]int{}, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("PUT", global+userID+"/account_data/org.example.x", token, "[]", http.StatusBadRequest, "M_BAD_JSON")
		room := global + userID + "/rooms/!room:" + testServerName + "/account_data/"
		s.do("PUT", room+"m.tag", token, map[string]any{"tags": map[string]any{}}, http.StatusOK)
		s.do("GET", room+"m.tag", token, nil, http.StatusOK)
		s.expectErr("PUT", room+"m.fully_read", token, map[string]string{"event_id": "$x"}, http.StatusMethodNotAllowed, "M_BAD_JSON")
		s.expectErr("GET", global+userID+"/rooms/notaroom/account_data/m.tag", token, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		rows, err := storage.AccountDataSince(context.Background(), db, userID, 0, s.api.rooms.Stream().Current())
		if err != nil || len(rows) != 2 {
			t.Fatalf("account data visible to sync: %v %v", rows, err)
		}

		caps := s.do("GET", "/_matrix/client/v3/capabilities", token, nil, http.StatusOK)["capabilities"].(map[string]any)
		versions := caps["m.room_versions"].(map[string]any)
		if versions["default"] != "12" || caps["m.change_password"].(map[string]any)["enabled"] != true {
			t.Fatalf("capabilities %v", caps)
		}
	})
}

func mustString(t *testing.T, v any) string {
	t.Helper()
	switch v := v.(type) {
	case string:
		return v
	default:
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
}

func TestProfilePropagationAndDeactivation(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, config.RegistrationOpen, "")
		userID, token, _ := s.register("ivy", "pw")
		roomID := mustString(t, s.do("POST", "/_matrix/client/v3/createRoom", token, map[string]any{}, http.StatusOK)["room_id"])
		memberPath := "/_matrix/client/v3/rooms/" + roomID + "/state/m.room.member/" + userID

		s.do("PUT", "/_matrix/client/v3/profile/"+userID+"/displayname", token, map[string]string{"displayname": "Ivy I"}, http.StatusOK)
		if member := s.do("GET", memberPath, token, nil, http.StatusOK); member["displayname"] != "Ivy I" || member["membership"] != "join" {
			t.Fatalf("member event after rename: %v", member)
		}
		s.do("DELETE", "/_matrix/client/v3/profile/"+userID+"/displayname", token, nil, http.StatusOK)
		if member := s.do("GET", memberPath, token, nil, http.StatusOK); member["displayname"] != nil {
			t.Fatalf("member event after removing the name: %v", member)
		}

		challenge := s.do("POST", "/_matrix/client/v3/account/deactivate", token, map[string]any{}, http.StatusUnauthorized)
		out := s.do("POST", "/_matrix/client/v3/account/deactivate", token, map[string]any{
			"auth": passwordAuth(mustString(t, challenge["session"]), "ivy", "pw")}, http.StatusOK)
		if out["id_server_unbind_result"] != "success" {
			t.Fatalf("deactivate answered %v", out)
		}
		s.expectErr("GET", "/_matrix/client/v3/account/whoami", token, nil, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		s.expectErr("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword, "user": "ivy", "password": "pw"},
			http.StatusForbidden, "M_USER_DEACTIVATED")
		membership, _, err := s.api.rooms.Membership(context.Background(), roomID, userID)
		if err != nil || membership != "leave" {
			t.Fatalf("membership after deactivation %q, %v", membership, err)
		}
		s.expectErr("GET", "/_matrix/client/v3/profile/"+userID, "", nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("POST", "/_matrix/client/v3/register", "", map[string]any{"username": "ivy"}, http.StatusBadRequest, "M_USER_IN_USE")
	})
}
