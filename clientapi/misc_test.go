package clientapi

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// getRaw sends a GET and returns the raw body; it fails the test on a status
// other than want. do cannot decode the JSON arrays some endpoints answer with.
func (s *testServer) getRaw(path, token string, want int) []byte {
	s.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, s.srv.URL+path, nil)
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
		s.t.Fatalf("GET %s: status %d, want %d: %s", path, resp.StatusCode, want, raw)
	}
	return raw
}

// TestThirdPartyLookup: without application services there are no protocols, lookups in a
// protocol are 404, and the reverse lookups find nothing once their parameter is checked.
func TestThirdPartyLookup(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		const v3 = "/_matrix/client/v3/thirdparty"

		if out := s.do("GET", v3+"/protocols", alice, nil, http.StatusOK); len(out) != 0 {
			t.Fatalf("protocols: %v", out)
		}
		for _, path := range []string{"/protocol/irc", "/location/irc", "/user/irc", "/location/irc?channel=%23x"} {
			s.expectErr("GET", v3+path, alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		}
		for _, path := range []string{"/location?alias=" + url.QueryEscape("#room:test.example"), "/user?userid=" + url.QueryEscape("@bob:remote.example")} {
			if raw := string(s.getRaw(v3+path, alice, http.StatusOK)); raw != "[]" {
				t.Fatalf("%s: %s", path, raw)
			}
		}
		s.expectErr("GET", v3+"/location", alice, nil, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("GET", v3+"/location?alias=room", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", v3+"/user", alice, nil, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("GET", v3+"/user?userid=bob", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", v3+"/protocols", "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

// TestTurnServer: no TURN server is configured, which is answered {} as Synapse does.
func TestTurnServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		if out := s.do("GET", "/_matrix/client/v3/voip/turnServer", alice, nil, http.StatusOK); len(out) != 0 {
			t.Fatalf("turnServer: %v", out)
		}
		s.expectErr("GET", "/_matrix/client/v3/voip/turnServer", "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

// TestGetEventByID: GET /events/{eventId} gives what GET /rooms/{roomId}/event/{eventId}
// gives, to those who may see the event, and 404 to everyone else.
func TestGetEventByID(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		eventID := s.sendText(alice, roomID, "hello")

		got := s.do("GET", "/_matrix/client/v3/events/"+url.PathEscape(eventID), alice, nil, http.StatusOK)
		want := s.do("GET", "/_matrix/client/v3/rooms/"+roomID+"/event/"+url.PathEscape(eventID), alice, nil, http.StatusOK)
		// unsigned.age moves on between the two requests.
		delete(got["unsigned"].(map[string]any), "age")
		delete(want["unsigned"].(map[string]any), "age")
		if !reflect.DeepEqual(got, want) || got["room_id"] != roomID || got["content"].(map[string]any)["body"] != "hello" {
			t.Fatalf("event %v, want %v", got, want)
		}
		s.expectErr("GET", "/_matrix/client/v3/events/"+url.PathEscape(eventID), bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", "/_matrix/client/v3/events/$unknown", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", "/_matrix/client/v3/events/"+url.PathEscape(eventID), "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
		// Joining a room with shared history shows its earlier events.
		s.joinRoom(bob, roomID)
		s.do("GET", "/_matrix/client/v3/events/"+url.PathEscape(eventID), bob, nil, http.StatusOK)
	})
}

// TestMutualRooms: the rooms both users are joined to, paged with next_batch, counted in
// full; the parameters are checked as mutual_rooms.yaml says.
func TestMutualRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		defer func(page int) { mutualRoomsPage = page }(mutualRoomsPage)
		mutualRoomsPage = 2
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		var shared []string
		for range 3 {
			roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
			s.joinRoom(bob, roomID)
			shared = append(shared, roomID)
		}
		slices.Sort(shared)
		s.createRoom(alice, map[string]any{"preset": "public_chat"})
		s.createRoom(bob, map[string]any{"preset": "public_chat"})
		invited := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		s.do("POST", "/_matrix/client/v3/rooms/"+invited+"/invite", alice, map[string]any{"user_id": bobID}, http.StatusOK)

		const path = "/_matrix/client/v1/mutual_rooms?user_id="
		var all []string
		query := path + url.QueryEscape(bobID)
		for pages := 0; ; pages++ {
			out := s.do("GET", query, alice, nil, http.StatusOK)
			if out["count"] != 3.0 {
				t.Fatalf("count: %v", out)
			}
			for _, id := range out["joined"].([]any) {
				all = append(all, id.(string))
			}
			next, ok := out["next_batch"].(string)
			if !ok {
				if pages != 1 {
					t.Fatalf("%d pages, want 2", pages+1)
				}
				break
			}
			query = path + url.QueryEscape(bobID) + "&from=" + url.QueryEscape(next)
		}
		if !slices.Equal(all, shared) {
			t.Fatalf("mutual rooms %v, want %v", all, shared)
		}

		out := s.do("GET", path+url.QueryEscape("@stranger:remote.example"), alice, nil, http.StatusOK)
		if joined, ok := out["joined"].([]any); !ok || len(joined) != 0 || out["count"] != 0.0 || out["next_batch"] != nil {
			t.Fatalf("mutual rooms with a stranger: %v", out)
		}
		s.expectErr("GET", "/_matrix/client/v1/mutual_rooms", alice, nil, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("GET", path+"bob", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+url.QueryEscape("@bób:test.example"), alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+url.QueryEscape(aliceID), alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+url.QueryEscape(bobID)+"&from=nonsense!", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+url.QueryEscape(bobID)+"&user_id="+url.QueryEscape(bobID), alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+url.QueryEscape(bobID), "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

// TestWhois: users see their own devices and sessions, server admins anyone's; others get
// 403 before any lookup.
func TestWhois(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, aliceDevice := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		rootID, root, _ := s.register("root", "password-root")
		if _, err := db.Exec(context.Background(), `UPDATE users SET is_admin = $1 WHERE user_id = $2`, true, rootID); err != nil {
			t.Fatal(err)
		}
		path := "/_matrix/client/v3/admin/whois/" + aliceID

		for _, token := range []string{alice, root} {
			out := s.do("GET", path, token, nil, http.StatusOK)
			devices := out["devices"].(map[string]any)
			if out["user_id"] != aliceID || len(devices) != 1 {
				t.Fatalf("whois: %v", out)
			}
			sessions := devices[aliceDevice].(map[string]any)["sessions"].([]any)
			connections := sessions[0].(map[string]any)["connections"].([]any)
			if c := connections[0].(map[string]any); len(sessions) != 1 || len(connections) != 1 || c["ip"] != "127.0.0.1" || c["last_seen"].(float64) <= 0 {
				t.Fatalf("sessions: %v", sessions)
			}
		}
		s.expectErr("GET", path, bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		s.expectErr("GET", "/_matrix/client/v3/admin/whois/@ghost:test.example", bob, nil, http.StatusForbidden, "M_FORBIDDEN")
		out := s.do("GET", "/_matrix/client/v3/admin/whois/@ghost:test.example", root, nil, http.StatusOK)
		if devices, ok := out["devices"].(map[string]any); !ok || len(devices) != 0 {
			t.Fatalf("whois of an unknown user: %v", out)
		}
		s.expectErr("GET", "/_matrix/client/v3/admin/whois/ghost", root, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path, "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

// TestRefresh: no refresh token is ever issued, so a well-formed request is 401
// M_UNKNOWN_TOKEN; malformed ones are 400.
func TestRefresh(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		const path = "/_matrix/client/v3/refresh"
		out := s.expectErr("POST", path, "", map[string]any{"refresh_token": "some_token"}, http.StatusUnauthorized, "M_UNKNOWN_TOKEN")
		if out["soft_logout"] != false {
			t.Fatalf("refresh: %v", out)
		}
		s.expectErr("POST", path, "", map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", path, "", map[string]any{"refresh_token": 1}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("POST", path, "", "refresh", http.StatusBadRequest, "M_NOT_JSON")
	})
}

// TestRegistrationTokenValidityV1: the validity check is served under /v1, where
// registration_tokens.yaml puts it.
func TestRegistrationTokenValidityV1(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, config.RegistrationToken, "")
		if err := storage.InsertRegistrationToken(context.Background(), db, "once", 1, 0); err != nil {
			t.Fatal(err)
		}
		const path = "/_matrix/client/v1/register/m.login.registration_token/validity?token="
		var out struct {
			Valid bool `json:"valid"`
		}
		for token, want := range map[string]bool{"once": true, "nope": false} {
			if err := json.Unmarshal(s.getRaw(path+token, "", http.StatusOK), &out); err != nil || out.Valid != want {
				t.Fatalf("token %s: valid %v, %v", token, out.Valid, err)
			}
		}
		s.expectErr("GET", "/_matrix/client/v1/register/m.login.registration_token/validity", "", nil, http.StatusBadRequest, "M_MISSING_PARAM")
	})
}
