package clientapi

import (
	"net/http"
	"net/url"
	"strconv"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestSpaceHierarchy walks a space with two children and a private grandchild: depth-first
// order by the children's "order", children without "via" left out, pages of one room
// chained by next_batch, max_depth and suggested_only, and rooms the user cannot see hidden.
func TestSpaceHierarchy(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		space := s.createRoom(alice, map[string]any{"preset": "public_chat", "creation_content": map[string]any{"type": "m.space"}})
		first := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "first"})
		second := s.createRoom(alice, map[string]any{"preset": "public_chat", "name": "second"})
		secret := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		orphan := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		via := []string{testServerName}
		s.setStateKey(alice, space, "m.space.child", second, map[string]any{"via": via, "order": "b"})
		s.setStateKey(alice, space, "m.space.child", first, map[string]any{"via": via, "order": "a", "suggested": true})
		s.setStateKey(alice, space, "m.space.child", orphan, map[string]any{})
		s.setStateKey(alice, first, "m.space.child", secret, map[string]any{"via": via})

		ids := func(resp map[string]any) []string {
			var out []string
			for _, r := range resp["rooms"].([]any) {
				out = append(out, r.(map[string]any)["room_id"].(string))
			}
			return out
		}
		path := "/_matrix/client/v1/rooms/" + space + "/hierarchy"
		got := ids(s.do("GET", path, alice, nil, http.StatusOK))
		if want := []string{space, first, secret, second}; !equalStrings(got, want) {
			t.Fatalf("alice's hierarchy %v, want %v", got, want)
		}
		got = ids(s.do("GET", path, bob, nil, http.StatusOK))
		if want := []string{space, first, second}; !equalStrings(got, want) {
			t.Fatalf("bob's hierarchy %v, want %v (no private room)", got, want)
		}
		var paged []string
		from := ""
		for i := 0; i < 10; i++ {
			q := "?limit=1"
			if from != "" {
				q += "&from=" + from
			}
			resp := s.do("GET", path+q, bob, nil, http.StatusOK)
			paged = append(paged, ids(resp)...)
			next, _ := resp["next_batch"].(string)
			if next == "" {
				break
			}
			from = next
		}
		if want := []string{space, first, second}; !equalStrings(paged, want) {
			t.Fatalf("paged hierarchy %v, want %v", paged, want)
		}
		s.expectErr("GET", path+"?from="+from+"&max_depth=1", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		if got := ids(s.do("GET", path+"?max_depth=0", alice, nil, http.StatusOK)); !equalStrings(got, []string{space}) {
			t.Fatalf("max_depth=0: %v", got)
		}
		if got := ids(s.do("GET", path+"?suggested_only=true", alice, nil, http.StatusOK)); !equalStrings(got, []string{space, first}) {
			t.Fatalf("suggested_only: %v", got)
		}
		s.expectErr("GET", "/_matrix/client/v1/rooms/"+secret+"/hierarchy", bob, nil, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// TestTimestampToEventAndOpenID covers /timestamp_to_event in both directions and OpenID
// token requests.
func TestTimestampToEventAndOpenID(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		path := "/_matrix/client/v1/rooms/" + roomID + "/timestamp_to_event"
		got := s.do("GET", path+"?dir=b&ts=99999999999999", alice, nil, http.StatusOK)
		if id, _ := got["event_id"].(string); id == "" {
			t.Fatalf("latest event: %v", got)
		}
		first := s.do("GET", path+"?dir=f&ts=0", alice, nil, http.StatusOK)
		if ts, _ := first["origin_server_ts"].(float64); ts <= 0 {
			t.Fatalf("earliest event: %v", first)
		}
		s.expectErr("GET", path+"?dir=f&ts=99999999999999", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", path+"?dir=x&ts=1", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", path+"?dir=f", alice, nil, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("GET", path+"?dir=f&ts=0", bob, nil, http.StatusForbidden, "M_FORBIDDEN")

		token := s.do("POST", "/_matrix/client/v3/user/"+aliceID+"/openid/request_token", alice, map[string]any{}, http.StatusOK)
		if token["access_token"] == "" || token["token_type"] != "Bearer" || token["matrix_server_name"] != testServerName ||
			strconv.FormatFloat(token["expires_in"].(float64), 'f', -1, 64) != "3600" {
			t.Fatalf("OpenID token: %v", token)
		}
		s.expectErr("POST", "/_matrix/client/v3/user/"+aliceID+"/openid/request_token", bob, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
	})
}

// setStateKey sends a state event with a state key.
func (s *testServer) setStateKey(token, roomID, evType, stateKey string, content map[string]any) {
	s.t.Helper()
	s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/state/"+evType+"/"+url.PathEscape(stateKey), token, content, http.StatusOK)
}

func equalStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}
