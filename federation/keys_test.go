package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestServerKeysRotation restarts a server with a new key and back, checking the published
// keys and the old keys' expired_ts kept in server_meta.
func TestServerKeysRotation(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		keyA := rooms.Identity{ServerName: "hs.test", KeyID: "ed25519:a", Key: testKey("a")}
		keyB := rooms.Identity{ServerName: "hs.test", KeyID: "ed25519:b", Key: testKey("b")}
		publicA := spec.EncodeBase64(keyA.Key.Public().(ed25519.PublicKey))

		first, err := NewServerKeys(ctx, db, keyA, clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		response := decodeOwnResponse(t, first, clock)
		if len(response.VerifyKeys) != 1 || response.VerifyKeys["ed25519:a"].Key != publicA || len(response.OldVerifyKeys) != 0 {
			t.Fatalf("first start: %+v", response)
		}

		clock.Advance(time.Hour)
		rotatedAt := clock.Now().UnixMilli()
		second, err := NewServerKeys(ctx, db, keyB, clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		response = decodeOwnResponse(t, second, clock)
		if _, ok := response.VerifyKeys["ed25519:b"]; !ok || len(response.VerifyKeys) != 1 {
			t.Fatalf("after rotation verify_keys %+v", response.VerifyKeys)
		}
		if old := response.OldVerifyKeys["ed25519:a"]; old.Key != publicA || old.ExpiredTS != rotatedAt {
			t.Fatalf("after rotation old_verify_keys %+v", response.OldVerifyKeys)
		}
		for _, tc := range []struct {
			keyID string
			atTS  int64
			want  error
		}{
			{"ed25519:b", rotatedAt + 1e9, nil},
			{"ed25519:a", rotatedAt, nil},
			{"ed25519:a", 0, nil},
			{"ed25519:a", rotatedAt + 1, ErrKeyExpired},
			{"ed25519:c", 0, ErrKeyNotFound},
		} {
			if _, err := second.Lookup(tc.keyID, tc.atTS); !errors.Is(err, tc.want) {
				t.Errorf("Lookup(%s, %d) = %v, want %v", tc.keyID, tc.atTS, err, tc.want)
			}
		}

		// Going back to key A makes it current again and B old.
		clock.Advance(time.Hour)
		third, err := NewServerKeys(ctx, db, keyA, clock.Now)
		if err != nil {
			t.Fatal(err)
		}
		response = decodeOwnResponse(t, third, clock)
		if _, ok := response.VerifyKeys["ed25519:a"]; !ok {
			t.Errorf("key a not current again: %+v", response)
		}
		if _, ok := response.OldVerifyKeys["ed25519:a"]; ok {
			t.Errorf("key a still old: %+v", response.OldVerifyKeys)
		}
		if old := response.OldVerifyKeys["ed25519:b"]; old.ExpiredTS != clock.Now().UnixMilli() {
			t.Errorf("key b not old: %+v", response.OldVerifyKeys)
		}
	})
}

// decodeOwnResponse checks our response as a peer would and decodes it.
func decodeOwnResponse(t *testing.T, keys *ServerKeys, clock *fakeClock) KeyResponse {
	t.Helper()
	raw, err := keys.Response()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := verifyKeyResponse(raw, keys.identity.ServerName, clock.Now().UnixMilli()); err != nil {
		t.Fatalf("our own response does not verify: %v", err)
	}
	var response KeyResponse
	if err := json.Unmarshal(raw, &response); err != nil {
		t.Fatal(err)
	}
	if want := clock.Now().Add(KeyValidity).UnixMilli(); response.ValidUntilTS != want {
		t.Errorf("valid_until_ts %d, want %d", response.ValidUntilTS, want)
	}
	return response
}

// TestServerKeysResigned reuses a signed response for an hour, then signs a new one.
func TestServerKeysResigned(t *testing.T) {
	clock := newFakeClock()
	db := storagetest.NewDB(t, storage.SQLite)
	keys, err := NewServerKeys(context.Background(), db, rooms.Identity{ServerName: "hs.test", KeyID: "ed25519:a", Key: testKey("a")}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	first, _ := keys.Response()
	clock.Advance(keyResponseRefresh - time.Millisecond)
	if again, _ := keys.Response(); string(again) != string(first) {
		t.Error("response re-signed within the hour")
	}
	clock.Advance(time.Millisecond)
	decodeOwnResponse(t, keys, clock)
}

// TestServeKeys fetches /_matrix/key/v2/server and its deprecated per-key form over TLS.
func TestServeKeys(t *testing.T) {
	clock := newFakeClock()
	roots := testRoots(t)
	server := newTestServer(t, nil, clock, roots)
	client := &http.Client{Transport: server.client.transport(Target{Addrs: []string{server.name}, TLSServerName: "127.0.0.1"})}
	for _, path := range []string{"/_matrix/key/v2/server", "/_matrix/key/v2/server/ed25519:a_1", "/_matrix/key/v2/server/ed25519:other"} {
		response, err := client.Get("https://" + server.name + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(response.Body)
		response.Body.Close()
		if response.StatusCode != http.StatusOK || response.Header.Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d %s", path, response.StatusCode, response.Header.Get("Content-Type"))
		}
		if _, err := verifyKeyResponse(body, server.name, clock.Now().UnixMilli()); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	}
}

// TestSpecExampleKeyResponse reads the example of §"Publishing Keys": it has the shape of
// a key response, but its keys are placeholders, not ed25519 keys, so it must be refused.
func TestSpecExampleKeyResponse(t *testing.T) {
	raw, err := os.ReadFile("testdata/server-server-api-publishing-keys.json")
	if err != nil {
		t.Fatal(err)
	}
	var response KeyResponse
	if err := json.Unmarshal(raw, &response); err != nil {
		t.Fatal(err)
	}
	if response.ServerName != "example.org" || response.ValidUntilTS != 1652262000000 ||
		response.OldVerifyKeys["ed25519:0ldk3y"].ExpiredTS != 1532645052628 || response.VerifyKeys["ed25519:abc123"].Key == "" {
		t.Errorf("decoded %+v", response)
	}
	if _, err := verifyKeyResponse(raw, "example.org", 0); !errors.Is(err, ErrBadKeyResponse) {
		t.Errorf("placeholder keys accepted: %v", err)
	}
}
