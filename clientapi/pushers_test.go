package clientapi

import (
	"fmt"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

const (
	pushersPath   = "/_matrix/client/v3/pushers"
	setPusherPath = "/_matrix/client/v3/pushers/set"
	testGateway   = "https://gw.example/_matrix/push/v1/notify"
)

// httpPusher is the body of a POST /pushers/set that sets an http pusher to gatewayURL.
func httpPusher(appID, pushKey, gatewayURL string) map[string]any {
	return map[string]any{
		"kind": "http", "app_id": appID, "pushkey": pushKey, "app_display_name": "Appy",
		"device_display_name": "Phone", "lang": "en", "data": map[string]any{"url": gatewayURL},
	}
}

// with is body with fields changed (a nil value deletes the field).
func with(body map[string]any, changes map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range body {
		out[k] = v
	}
	for k, v := range changes {
		if v == nil {
			delete(out, k)
		} else {
			out[k] = v
		}
	}
	return out
}

// pushers lists the user's pushers as "app_id/pushkey".
func (s *testServer) pushers(token string) []string {
	s.t.Helper()
	var out []string
	for _, raw := range s.do("GET", pushersPath, token, nil, http.StatusOK)["pushers"].([]any) {
		p := raw.(map[string]any)
		out = append(out, p["app_id"].(string)+"/"+p["pushkey"].(string))
	}
	return out
}

// TestPushersSetAndList: POST /pushers/set creates, updates and deletes pushers as
// pusher.yaml describes, with append deciding whether other users' pushers of the same key
// stay; GET /pushers lists them with their data.
func TestPushersSetAndList(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")

		if got := s.do("GET", pushersPath, alice, nil, http.StatusOK)["pushers"].([]any); len(got) != 0 {
			t.Fatalf("pushers of a new user: %v", got)
		}
		body := httpPusher("com.example.app", "key-1", testGateway)
		body["data"] = map[string]any{"url": testGateway, "format": "event_id_only", "custom": map[string]any{"x": 1}}
		body["profile_tag"] = "tag"
		s.do("POST", setPusherPath, alice, body, http.StatusOK)
		listed := s.do("GET", pushersPath, alice, nil, http.StatusOK)["pushers"].([]any)
		if len(listed) != 1 {
			t.Fatalf("pushers = %v", listed)
		}
		p := listed[0].(map[string]any)
		data := p["data"].(map[string]any)
		if p["kind"] != "http" || p["app_id"] != "com.example.app" || p["pushkey"] != "key-1" || p["app_display_name"] != "Appy" ||
			p["device_display_name"] != "Phone" || p["lang"] != "en" || p["profile_tag"] != "tag" ||
			data["url"] != testGateway || data["format"] != "event_id_only" || data["custom"].(map[string]any)["x"] != float64(1) {
			t.Fatalf("pusher = %v", p)
		}

		// Setting it again updates it in place.
		s.do("POST", setPusherPath, alice, with(body, map[string]any{"lang": "de"}), http.StatusOK)
		listed = s.do("GET", pushersPath, alice, nil, http.StatusOK)["pushers"].([]any)
		if len(listed) != 1 || listed[0].(map[string]any)["lang"] != "de" {
			t.Fatalf("pushers after an update: %v", listed)
		}

		// append true keeps alice's pusher of the same key; append false (the default)
		// removes everyone else's.
		s.do("POST", setPusherPath, bob, with(body, map[string]any{"append": true}), http.StatusOK)
		if got := s.pushers(alice); len(got) != 1 {
			t.Fatalf("alice lost her pusher to bob's append: %v", got)
		}
		s.do("POST", setPusherPath, carol, body, http.StatusOK)
		if got := s.pushers(alice); len(got) != 0 {
			t.Fatalf("alice keeps %v after carol's append false", got)
		}
		if got := s.pushers(bob); len(got) != 0 {
			t.Fatalf("bob keeps %v after carol's append false", got)
		}
		if got := s.pushers(carol); !slices.Equal(got, []string{"com.example.app/key-1"}) {
			t.Fatalf("carol has %v", got)
		}

		// kind null deletes (and deleting what is not there succeeds).
		remove := map[string]any{"kind": nil, "app_id": "com.example.app", "pushkey": "key-1"}
		s.do("POST", setPusherPath, carol, remove, http.StatusOK)
		s.do("POST", setPusherPath, carol, remove, http.StatusOK)
		if got := s.pushers(carol); len(got) != 0 {
			t.Fatalf("carol keeps %v after deleting", got)
		}
	})
}

// TestPushersErrors: bad pusher requests are 4xx Matrix errors, never stored.
func TestPushersErrors(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		good := httpPusher("com.example.app", "key-1", testGateway)
		for _, tc := range []struct {
			name    string
			body    any
			status  int
			errcode string
		}{
			{"empty", map[string]any{}, 400, "M_MISSING_PARAM"},
			{"no kind", with(good, map[string]any{"kind": nil}), 400, "M_MISSING_PARAM"},
			{"no pushkey", with(good, map[string]any{"pushkey": nil}), 400, "M_MISSING_PARAM"},
			{"no lang", with(good, map[string]any{"lang": nil}), 400, "M_MISSING_PARAM"},
			{"no data", with(good, map[string]any{"data": nil}), 400, "M_MISSING_PARAM"},
			{"no app_display_name", with(good, map[string]any{"app_display_name": nil}), 400, "M_MISSING_PARAM"},
			{"no url", with(good, map[string]any{"data": map[string]any{"format": "event_id_only"}}), 400, "M_MISSING_PARAM"},
			{"long app_id", with(good, map[string]any{"app_id": strings.Repeat("a", 65)}), 400, "M_INVALID_PARAM"},
			{"long pushkey", with(good, map[string]any{"pushkey": strings.Repeat("k", 513)}), 400, "M_INVALID_PARAM"},
			{"empty pushkey", with(good, map[string]any{"pushkey": ""}), 400, "M_INVALID_PARAM"},
			{"email", with(good, map[string]any{"kind": "email", "app_id": "m.email", "pushkey": "a@example.org"}), 400, "M_THREEPID_NOT_FOUND"},
			{"unknown kind", with(good, map[string]any{"kind": "carrier-pigeon"}), 400, "M_INVALID_PARAM"},
			{"kind not a string", with(good, map[string]any{"kind": 5}), 400, "M_BAD_JSON"},
			{"app_id not a string", with(good, map[string]any{"app_id": 5}), 400, "M_BAD_JSON"},
			{"data not an object", with(good, map[string]any{"data": "x"}), 400, "M_BAD_JSON"},
			{"url not a string", with(good, map[string]any{"data": map[string]any{"url": 5}}), 400, "M_INVALID_PARAM"},
			{"url with another path", httpPusher("a", "k", "https://gw.example/notify"), 400, "M_INVALID_PARAM"},
			{"relative url", httpPusher("a", "k", "/_matrix/push/v1/notify"), 400, "M_INVALID_PARAM"},
			{"ftp url", httpPusher("a", "k", "ftp://gw.example/_matrix/push/v1/notify"), 400, "M_INVALID_PARAM"},
			{"format not a string", with(good, map[string]any{"data": map[string]any{"url": testGateway, "format": 1}}), 400, "M_INVALID_PARAM"},
			{"huge data", with(good, map[string]any{"data": map[string]any{"url": testGateway, "x": strings.Repeat("x", 5000)}}), 413, "M_TOO_LARGE"},
			{"huge body", `{"kind":"http","x":"` + strings.Repeat("x", 20<<10) + `"}`, 413, "M_TOO_LARGE"},
			{"not JSON", `{"kind":`, 400, "M_NOT_JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s.on(t).expectErr("POST", setPusherPath, alice, tc.body, tc.status, tc.errcode)
			})
		}
		if got := s.pushers(alice); len(got) != 0 {
			t.Fatalf("a bad request stored %v", got)
		}
		// http:// is accepted (NOTSPEC, as Synapse).
		s.do("POST", setPusherPath, alice, httpPusher("a", "k", "http://gw.example:8080/_matrix/push/v1/notify"), http.StatusOK)

		// At most maxPushersPerUser pushers.
		for i := len(s.pushers(alice)); i < maxPushersPerUser; i++ {
			s.do("POST", setPusherPath, alice, httpPusher("app", fmt.Sprintf("k%d", i), testGateway), http.StatusOK)
		}
		s.expectErr("POST", setPusherPath, alice, httpPusher("app", "one-too-many", testGateway), http.StatusBadRequest, "M_UNKNOWN")
		// Updating one is still allowed.
		s.do("POST", setPusherPath, alice, httpPusher("app", "k1", testGateway), http.StatusOK)
		if got := s.pushers(alice); len(got) != maxPushersPerUser {
			t.Fatalf("%d pushers, want %d", len(got), maxPushersPerUser)
		}
	})
}

// TestPushersGoWithTheirDevice: a pusher belongs to the device that set it; logging that
// device out removes it, and the user's other devices keep theirs.
func TestPushersGoWithTheirDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, phone, _ := s.register("alice", "password-alice")
		laptop := s.do("POST", "/_matrix/client/v3/login", "", map[string]any{"type": auth.StagePassword,
			"user": "alice", "password": "password-alice"}, http.StatusOK)["access_token"].(string)
		s.do("POST", setPusherPath, phone, httpPusher("app", "phone-key", testGateway), http.StatusOK)
		s.do("POST", setPusherPath, laptop, httpPusher("app", "laptop-key", testGateway), http.StatusOK)
		if got := s.pushers(laptop); len(got) != 2 {
			t.Fatalf("pushers = %v", got)
		}
		s.do("POST", "/_matrix/client/v3/logout", phone, map[string]any{}, http.StatusOK)
		if got := s.pushers(laptop); !slices.Equal(got, []string{"app/laptop-key"}) {
			t.Fatalf("after the phone logged out: %v", got)
		}
	})
}
