package federation

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestNotaryEndpoints queries a notary in both forms, for a server it has cached and that is
// now down, for itself, and for servers it cannot reach.
func TestNotaryEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		roots := testRoots(t)
		remote := newTestServer(t, nil, clock, roots)
		notary := newTestServer(t, db, clock, roots)
		if _, err := notary.ring.Lookup(ctx, remote.name, "ed25519:a_1", 0); err != nil {
			t.Fatal(err)
		}
		remote.down.Store(true)
		example, err := os.ReadFile("testdata/server-server-api-querying-keys-request.json")
		if err != nil {
			t.Fatal(err)
		}
		client := &http.Client{Transport: notary.client.transport(Target{Addrs: []string{notary.name}, TLSServerName: "127.0.0.1"})}
		for _, tc := range []struct {
			name, method, path, body string
			wantStatus               int
			wantServers              []string
		}{
			{"GET cached server", "GET", "/_matrix/key/v2/query/" + remote.name, "", 200, []string{remote.name}},
			{"GET with minimum_valid_until_ts", "GET", "/_matrix/key/v2/query/" + remote.name + "?minimum_valid_until_ts=1", "", 200, []string{remote.name}},
			{"GET itself", "GET", "/_matrix/key/v2/query/" + notary.name, "", 200, []string{notary.name}},
			{"GET unreachable", "GET", "/_matrix/key/v2/query/127.0.0.1:1", "", 200, nil},
			{"GET invalid name", "GET", "/_matrix/key/v2/query/bad%20name", "", 200, nil},
			{"GET bad minimum", "GET", "/_matrix/key/v2/query/" + remote.name + "?minimum_valid_until_ts=soon", "", 400, nil},
			{"POST two servers", "POST", "/_matrix/key/v2/query",
				`{"server_keys":{"` + remote.name + `":{"ed25519:a_1":{"minimum_valid_until_ts":1}},"` + notary.name + `":{}}}`, 200,
				[]string{remote.name, notary.name}},
			{"POST spec example (unreachable example.org)", "POST", "/_matrix/key/v2/query", string(example), 200, nil},
			{"POST no servers", "POST", "/_matrix/key/v2/query", `{"server_keys":{}}`, 200, nil},
			{"POST without server_keys", "POST", "/_matrix/key/v2/query", `{}`, 400, nil},
		} {
			t.Run(tc.name, func(t *testing.T) {
				req, _ := newRequest(tc.method, "https://"+notary.name+tc.path, tc.body)
				response, err := client.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(response.Body)
				response.Body.Close()
				if response.StatusCode != tc.wantStatus {
					t.Fatalf("status %d: %s", response.StatusCode, body)
				}
				if tc.wantStatus != 200 {
					return
				}
				var answer notaryAnswer
				if err := json.Unmarshal(body, &answer); err != nil || answer.ServerKeys == nil {
					t.Fatalf("answer %s: %v", body, err)
				}
				got := map[string]bool{}
				for _, raw := range answer.ServerKeys {
					var r KeyResponse
					if err := json.Unmarshal(raw, &r); err != nil {
						t.Fatal(err)
					}
					got[r.ServerName] = true
					// Self-signed, and signed by the notary.
					if _, err := verifyKeyResponse(raw, r.ServerName, 0); err != nil {
						t.Errorf("%s: %v", r.ServerName, err)
					}
					notaryKey := notary.keys.identity.Key.Public()
					if err := verifyJSONWith(raw, notary.name, "ed25519:a_1", notaryKey); err != nil {
						t.Errorf("%s: notary signature: %v", r.ServerName, err)
					}
				}
				if len(got) != len(tc.wantServers) {
					t.Errorf("servers %v, want %v", got, tc.wantServers)
				}
				for _, s := range tc.wantServers {
					if !got[s] {
						t.Errorf("servers %v, want %v", got, tc.wantServers)
					}
				}
			})
		}
	})
}

// TestSpecExampleNotaryResponse decodes the response example of keys_query.yaml: one key
// response signed by the server and the notary.
func TestSpecExampleNotaryResponse(t *testing.T) {
	raw, err := os.ReadFile("testdata/server-server-api-querying-keys-response.json")
	if err != nil {
		t.Fatal(err)
	}
	var answer notaryAnswer
	if err := json.Unmarshal(raw, &answer); err != nil || len(answer.ServerKeys) != 1 {
		t.Fatalf("%v, %d responses", err, len(answer.ServerKeys))
	}
	stripped, err := onlySignaturesOf(mustCanonical(t, answer.ServerKeys[0]), "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(stripped, []byte("notary.server.com")) || !bytes.Contains(stripped, []byte(`"example.org":{"ed25519:abc123"`)) {
		t.Errorf("stripped response %s", stripped)
	}
}
