package clientapi

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// testDeviceKeys makes device keys signed by the device's own fresh ed25519 key.
func testDeviceKeys(t *testing.T, userID, deviceID string) json.RawMessage {
	t.Helper()
	public, private, _ := ed25519.GenerateKey(rand.Reader)
	raw, _ := json.Marshal(map[string]any{
		"user_id": userID, "device_id": deviceID, "algorithms": []string{"m.megolm.v1.aes-sha2"},
		"keys": map[string]string{"ed25519:" + deviceID: spec.EncodeBase64(public), "curve25519:" + deviceID: "c"},
	})
	signed, err := spec.SignJSON(raw, userID, "ed25519:"+deviceID, private)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func TestKeysUploadQueryClaim(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		alice, aliceToken, aliceDevice := s.register("alice", "correct horse battery")
		_, bobToken, _ := s.register("bob", "correct horse battery")

		// Keys of another device, or not self-signed, are refused.
		s.expectErr("POST", "/_matrix/client/v3/keys/upload", aliceToken,
			map[string]any{"device_keys": testDeviceKeys(t, alice, "OTHER")}, http.StatusBadRequest, "M_BAD_JSON")
		var forged map[string]any
		_ = json.Unmarshal(testDeviceKeys(t, alice, aliceDevice), &forged)
		forged["algorithms"] = []string{"forged"}
		s.expectErr("POST", "/_matrix/client/v3/keys/upload", aliceToken,
			map[string]any{"device_keys": forged}, http.StatusBadRequest, "M_INVALID_SIGNATURE")

		out := s.do("POST", "/_matrix/client/v3/keys/upload", aliceToken, map[string]any{
			"device_keys":   testDeviceKeys(t, alice, aliceDevice),
			"one_time_keys": map[string]any{"curve25519:AAAA": "k1"},
			"fallback_keys": map[string]any{"curve25519:FFFF": "f1"},
		}, http.StatusOK)
		if counts := out["one_time_key_counts"].(map[string]any); counts["curve25519"] != 1.0 {
			t.Fatalf("one_time_key_counts = %v", counts)
		}
		s.expectErr("POST", "/_matrix/client/v3/keys/upload", aliceToken,
			map[string]any{"one_time_keys": map[string]any{"curve25519:AAAA": "different"}}, http.StatusBadRequest, "M_INVALID_PARAM")

		s.do("PUT", "/_matrix/client/v3/devices/"+aliceDevice, aliceToken, map[string]any{"display_name": "phone"}, http.StatusOK)
		query := s.do("POST", "/_matrix/client/v3/keys/query", bobToken, map[string]any{
			"device_keys": map[string]any{alice: []string{}, "@carol:elsewhere.example": []string{}},
		}, http.StatusOK)
		device := query["device_keys"].(map[string]any)[alice].(map[string]any)[aliceDevice].(map[string]any)
		if device["unsigned"].(map[string]any)["device_display_name"] != "phone" {
			t.Fatalf("queried device has no display name: %v", device)
		}
		if query["failures"].(map[string]any)["elsewhere.example"] == nil {
			t.Fatalf("remote server not in failures: %v", query["failures"])
		}

		claim := func() map[string]any {
			out := s.do("POST", "/_matrix/client/v3/keys/claim", bobToken, map[string]any{
				"one_time_keys": map[string]any{alice: map[string]string{aliceDevice: "curve25519"}},
			}, http.StatusOK)
			return out["one_time_keys"].(map[string]any)[alice].(map[string]any)[aliceDevice].(map[string]any)
		}
		if first := claim(); first["curve25519:AAAA"] != "k1" {
			t.Fatalf("first claim = %v, want the one-time key", first)
		}
		if second := claim(); second["curve25519:FFFF"] != "f1" {
			t.Fatalf("second claim = %v, want the fallback key", second)
		}
		syncOut := s.sync(aliceToken, nil)
		if types := syncOut["device_unused_fallback_key_types"].([]any); len(types) != 0 {
			t.Fatalf("used fallback key still reported unused: %v", types)
		}
	})
}

func TestSendToDeviceTransactions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, aliceToken, _ := s.register("alice", "correct horse battery")
		bob, bobToken, bobDevice := s.register("bob", "correct horse battery")
		body := map[string]any{"messages": map[string]any{bob: map[string]any{"*": map[string]any{"n": 1}}}}
		s.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", aliceToken, body, http.StatusOK)
		s.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn1", aliceToken, body, http.StatusOK)
		first := s.sync(bobToken, nil)
		if events := first["to_device"].(map[string]any)["events"].([]any); len(events) != 1 {
			t.Fatalf("bob's device %s got %d messages, want 1", bobDevice, len(events))
		}
		next := s.sync(bobToken, url.Values{"since": {first["next_batch"].(string)}})
		if events := next["to_device"].(map[string]any)["events"].([]any); len(events) != 0 {
			t.Fatalf("acknowledged message delivered again: %v", events)
		}
		s.expectErr("PUT", "/_matrix/client/v3/sendToDevice/m.test/txn2", aliceToken,
			map[string]any{"messages": map[string]any{bob: map[string]any{"*": "not an object"}}}, http.StatusBadRequest, "M_BAD_JSON")
	})
}

func TestKeyBackupRules(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, token, _ := s.register("alice", "correct horse battery")
		s.expectErr("GET", "/_matrix/client/v3/room_keys/version", token, nil, http.StatusNotFound, "M_NOT_FOUND")
		create := map[string]any{"algorithm": "m.megolm_backup.v1.curve25519-aes-sha2", "auth_data": map[string]any{"public_key": "p"}}
		v1 := s.do("POST", "/_matrix/client/v3/room_keys/version", token, create, http.StatusOK)["version"].(string)
		v2 := s.do("POST", "/_matrix/client/v3/room_keys/version", token, create, http.StatusOK)["version"].(string)
		key := func(verified bool, first int) map[string]any {
			return map[string]any{"first_message_index": first, "forwarded_count": 0, "is_verified": verified, "session_data": map[string]any{"c": first}}
		}
		path := "/_matrix/client/v3/room_keys/keys/!room:example.org/sess?version="
		wrong := s.expectErr("PUT", path+v1, token, key(false, 0), http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION")
		if wrong["current_version"] != v2 {
			t.Fatalf("current_version = %v, want %s", wrong["current_version"], v2)
		}
		put := s.do("PUT", path+v2, token, key(false, 5), http.StatusOK)
		if put["count"] != 1.0 || put["etag"] == nil {
			t.Fatalf("put = %v", put)
		}
		worse := s.do("PUT", path+v2, token, key(false, 9), http.StatusOK)
		if worse["etag"] != put["etag"] {
			t.Fatalf("a worse key changed the etag: %v → %v", put["etag"], worse["etag"])
		}
		better := s.do("PUT", path+v2, token, key(true, 9), http.StatusOK)
		if better["etag"] == put["etag"] {
			t.Fatal("a verified key did not replace an unverified one")
		}
		got := s.do("GET", path+v2, token, nil, http.StatusOK)
		if got["is_verified"] != true {
			t.Fatalf("stored key = %v", got)
		}
		s.expectErr("PUT", "/_matrix/client/v3/room_keys/version/"+v2, token,
			map[string]any{"algorithm": "other", "auth_data": map[string]any{}}, http.StatusBadRequest, "M_INVALID_PARAM")
		s.do("DELETE", "/_matrix/client/v3/room_keys/version/"+v2, token, nil, http.StatusOK)
		s.expectErr("GET", "/_matrix/client/v3/room_keys/version/"+v2, token, nil, http.StatusNotFound, "M_NOT_FOUND")
	})
}

func TestDehydratedDevice(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		alice, token, _ := s.register("alice", "correct horse battery")
		const prefix = "/_matrix/client/unstable/org.matrix.msc3814.v1/dehydrated_device"
		s.expectErr("GET", prefix, token, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.do("PUT", prefix, token, map[string]any{
			"device_id": "DEHYDRATED", "device_data": map[string]any{"algorithm": "m.dehydration.v1.olm"},
			"device_keys": testDeviceKeys(t, alice, "DEHYDRATED"),
		}, http.StatusOK)
		got := s.do("GET", prefix, token, nil, http.StatusOK)
		if got["device_id"] != "DEHYDRATED" {
			t.Fatalf("dehydrated device = %v", got)
		}
		s.do("PUT", "/_matrix/client/v3/sendToDevice/m.test/t1", token,
			map[string]any{"messages": map[string]any{alice: map[string]any{"DEHYDRATED": map[string]any{"n": 1}}}}, http.StatusOK)
		events := s.do("POST", prefix+"/DEHYDRATED/events", token, map[string]any{}, http.StatusOK)
		if len(events["events"].([]any)) != 1 {
			t.Fatalf("events = %v", events)
		}
		again := s.do("POST", prefix+"/DEHYDRATED/events", token, map[string]any{"next_batch": events["next_batch"]}, http.StatusOK)
		if len(again["events"].([]any)) != 0 {
			t.Fatalf("acknowledged events returned again: %v", again)
		}
		s.expectErr("POST", prefix+"/OTHER/events", token, map[string]any{}, http.StatusForbidden, "M_FORBIDDEN")
		s.do("DELETE", prefix, token, nil, http.StatusOK)
		s.expectErr("GET", prefix, token, nil, http.StatusNotFound, "M_NOT_FOUND")
	})
}
