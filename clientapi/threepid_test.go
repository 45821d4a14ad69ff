package clientapi

import (
	"net/http"
	"strings"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestThreePIDs: the account lists no third-party identifiers; adding, binding and the
// requestToken endpoints give the errors the spec defines for a server that takes none,
// after checking the request; deleting and unbinding succeed with "no-support".
func TestThreePIDs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		const v3 = "/_matrix/client/v3"

		out := s.do("GET", v3+"/account/3pid", alice, nil, http.StatusOK)
		if list, ok := out["threepids"].([]any); !ok || len(list) != 0 {
			t.Fatalf("threepids: %v", out)
		}
		s.expectErr("GET", v3+"/account/3pid", "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")

		creds := map[string]any{"client_secret": "d0nt-T3ll", "id_server": "id.example", "id_access_token": "abc", "sid": "123"}
		s.expectErr("POST", v3+"/account/3pid", alice, map[string]any{"three_pid_creds": creds}, http.StatusForbidden, "M_THREEPID_AUTH_FAILED")
		s.expectErr("POST", v3+"/account/3pid", alice, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", v3+"/account/3pid", alice, map[string]any{"three_pid_creds": map[string]any{"client_secret": "x", "id_server": "id.example"}},
			http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", v3+"/account/3pid", "", map[string]any{"three_pid_creds": creds}, http.StatusUnauthorized, "M_MISSING_TOKEN")

		s.expectErr("POST", v3+"/account/3pid/add", alice, map[string]any{"client_secret": "abc", "sid": "1"}, http.StatusBadRequest, "M_THREEPID_AUTH_FAILED")
		s.expectErr("POST", v3+"/account/3pid/add", alice, map[string]any{"client_secret": "abc"}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", v3+"/account/3pid/add", alice, map[string]any{"client_secret": "not secret!", "sid": "1"}, http.StatusBadRequest, "M_INVALID_PARAM")

		s.expectErr("POST", v3+"/account/3pid/bind", alice, creds, http.StatusBadRequest, "M_SERVER_NOT_TRUSTED")
		noToken := map[string]any{"client_secret": "abc", "id_server": "id.example", "sid": "1"}
		s.expectErr("POST", v3+"/account/3pid/bind", alice, noToken, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", v3+"/account/3pid/bind", alice, "[]", http.StatusBadRequest, "M_BAD_JSON")

		for _, path := range []string{v3 + "/account/3pid/delete", v3 + "/account/3pid/unbind"} {
			out := s.do("POST", path, alice, map[string]any{"medium": "email", "address": "alice@example.org"}, http.StatusOK)
			if out["id_server_unbind_result"] != "no-support" {
				t.Fatalf("%s: %v", path, out)
			}
			s.expectErr("POST", path, alice, map[string]any{"medium": "pigeon", "address": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")
			s.expectErr("POST", path, alice, map[string]any{"medium": "email"}, http.StatusBadRequest, "M_MISSING_PARAM")
			s.expectErr("POST", path, "", map[string]any{"medium": "email", "address": "x"}, http.StatusUnauthorized, "M_MISSING_TOKEN")
		}

		email := map[string]any{"client_secret": "monkeys_are_GREAT", "email": "alice@example.org", "send_attempt": 1}
		msisdn := map[string]any{"client_secret": "monkeys_are_GREAT", "country": "GB", "phone_number": "07700900001", "send_attempt": 1}
		for _, tc := range []struct {
			path   string
			body   map[string]any
			status int
			code   string
		}{
			{"/account/3pid/email/requestToken", email, http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
			{"/account/3pid/msisdn/requestToken", msisdn, http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED"},
			{"/register/email/requestToken", email, http.StatusForbidden, "M_THREEPID_DENIED"},
			{"/register/msisdn/requestToken", msisdn, http.StatusForbidden, "M_THREEPID_DENIED"},
			{"/account/password/email/requestToken", email, http.StatusForbidden, "M_THREEPID_DENIED"},
			{"/account/password/msisdn/requestToken", msisdn, http.StatusForbidden, "M_THREEPID_DENIED"},
		} {
			s.expectErr("POST", v3+tc.path, "", tc.body, tc.status, tc.code)
			for field := range tc.body {
				partial := map[string]any{}
				for k, v := range tc.body {
					if k != field {
						partial[k] = v
					}
				}
				s.expectErr("POST", v3+tc.path, "", partial, http.StatusBadRequest, "M_MISSING_PARAM")
			}
			bad := map[string]any{}
			for k, v := range tc.body {
				bad[k] = v
			}
			bad["client_secret"] = strings.Repeat("a", 256)
			s.expectErr("POST", v3+tc.path, "", bad, http.StatusBadRequest, "M_INVALID_PARAM")
			bad["client_secret"], bad["send_attempt"] = "abc", "one"
			s.expectErr("POST", v3+tc.path, "", bad, http.StatusBadRequest, "M_BAD_JSON")
		}
	})
}
