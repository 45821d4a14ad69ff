package keys

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// signedDeviceKeys makes device keys for user/device signed with a fresh ed25519 key.
func signedDeviceKeys(t *testing.T, userID, deviceID string) (json.RawMessage, ed25519.PrivateKey) {
	t.Helper()
	public, private, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(map[string]any{
		"user_id": userID, "device_id": deviceID,
		"algorithms": []string{"m.olm.v1.curve25519-aes-sha2", "m.megolm.v1.aes-sha2"},
		"keys": map[string]string{
			"curve25519:" + deviceID: spec.EncodeBase64(make([]byte, 32)),
			"ed25519:" + deviceID:    spec.EncodeBase64(public),
		},
	})
	signed, err := spec.SignJSON(raw, userID, "ed25519:"+deviceID, private)
	if err != nil {
		t.Fatal(err)
	}
	return signed, private
}

func TestParseDeviceKeys(t *testing.T) {
	raw, _ := signedDeviceKeys(t, "@alice:example.org", "DEV")
	keys, clean, err := ParseDeviceKeys(raw, "@alice:example.org", "DEV")
	if err != nil || keys.Ed25519() == "" || DeviceKeyOf(clean, "DEV") == nil {
		t.Fatalf("valid device keys: %v", err)
	}
	withUnsigned := WithUnsigned(clean, map[string]any{"device_display_name": "phone"})
	if _, _, err := ParseDeviceKeys(withUnsigned, "@alice:example.org", "DEV"); err != nil {
		t.Fatalf("unsigned is not covered by the signature: %v", err)
	}
	for name, tc := range map[string]struct {
		raw          json.RawMessage
		user, device string
	}{
		"other user":   {raw, "@bob:example.org", "DEV"},
		"other device": {raw, "@alice:example.org", "OTHER"},
		"tampered":     {tamper(t, raw), "@alice:example.org", "DEV"},
		"not json":     {json.RawMessage(`[1]`), "@alice:example.org", "DEV"},
	} {
		if _, _, err := ParseDeviceKeys(tc.raw, tc.user, tc.device); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

// tamper changes the algorithms of signed device keys, keeping the signature.
func tamper(t *testing.T, raw json.RawMessage) json.RawMessage {
	var object map[string]any
	if err := json.Unmarshal(raw, &object); err != nil {
		t.Fatal(err)
	}
	object["algorithms"] = []string{"m.megolm.v1.aes-sha2"}
	out, _ := json.Marshal(object)
	return out
}

func TestParseOneTimeKeys(t *testing.T) {
	_, private := signedDeviceKeys(t, "@alice:example.org", "DEV")
	public := private.Public().(ed25519.PublicKey)
	object, _ := json.Marshal(map[string]any{"key": "abc"})
	signed, err := spec.SignJSON(object, "@alice:example.org", "ed25519:DEV", private)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseOneTimeKeys(map[string]json.RawMessage{
		"signed_curve25519:AAAB": signed, "curve25519:AAAA": json.RawMessage(`"plainkey"`),
	}, "@alice:example.org", "DEV", public, false)
	if err != nil || len(got) != 2 || got[0].Algorithm != "curve25519" || got[1].KeyID != "AAAB" {
		t.Fatalf("ParseOneTimeKeys = %+v, %v", got, err)
	}
	if _, err := ParseOneTimeKeys(map[string]json.RawMessage{"signed_curve25519:X": object}, "@alice:example.org", "DEV", public, false); err == nil {
		t.Fatal("unsigned key object accepted")
	}
	if _, err := ParseOneTimeKeys(map[string]json.RawMessage{"nocolon": signed}, "@alice:example.org", "DEV", public, false); err == nil {
		t.Fatal("key name without algorithm accepted")
	}
	two := map[string]json.RawMessage{"signed_curve25519:A": signed, "signed_curve25519:B": signed}
	if _, err := ParseOneTimeKeys(two, "@alice:example.org", "DEV", public, true); err == nil {
		t.Fatal("two fallback keys of one algorithm accepted")
	}
	many := map[string]json.RawMessage{}
	for i := 0; i <= MaxOneTimeKeysPerUpload; i++ {
		many["curve25519:"+string(rune('a'+i%26))+spec.EncodeBase64([]byte{byte(i), byte(i >> 8)})] = json.RawMessage(`"k"`)
	}
	if _, err := ParseOneTimeKeys(many, "@alice:example.org", "DEV", nil, false); err == nil {
		t.Fatal("too many keys accepted")
	}
}

func TestCrossSigningKeys(t *testing.T) {
	masterPublic, masterPrivate, _ := ed25519.GenerateKey(rand.Reader)
	selfPublic, _, _ := ed25519.GenerateKey(rand.Reader)
	key := func(usage string, public ed25519.PublicKey) json.RawMessage {
		encoded := spec.EncodeBase64(public)
		raw, _ := json.Marshal(map[string]any{"user_id": "@alice:example.org", "usage": []string{usage},
			"keys": map[string]string{"ed25519:" + encoded: encoded}})
		return raw
	}
	master, err := ParseCrossSigningKey(key("master", masterPublic), "@alice:example.org", "master")
	if err != nil {
		t.Fatal(err)
	}
	selfRaw := key("self_signing", selfPublic)
	if err := master.VerifySignedBy(selfRaw); err == nil {
		t.Fatal("unsigned self-signing key verified")
	}
	signed, err := spec.SignJSON(selfRaw, "@alice:example.org", "ed25519:"+master.PublicKey, masterPrivate)
	if err != nil {
		t.Fatal(err)
	}
	if err := master.VerifySignedBy(signed); err != nil {
		t.Fatalf("signed self-signing key: %v", err)
	}
	if !SameKey(selfRaw, signed) || SameKey(selfRaw, key("master", masterPublic)) {
		t.Fatal("SameKey compares more or less than the key")
	}
	if _, err := ParseCrossSigningKey(key("self_signing", selfPublic), "@alice:example.org", "master"); err == nil {
		t.Fatal("key with the wrong usage accepted")
	}
	merged := WithSignatures(master.Raw, []storage.KeySignature{{SignerUserID: "@bob:example.org", SignerKeyID: "ed25519:X", Signature: "sig"}})
	if s, ok := SignatureBy(merged, "@bob:example.org", "ed25519:X"); !ok || s != "sig" {
		t.Fatalf("WithSignatures lost the signature: %s", merged)
	}
}

func TestBetterBackupKey(t *testing.T) {
	k := func(verified bool, first, forwarded int64) *storage.BackupKey {
		return &storage.BackupKey{IsVerified: verified, FirstMessageIndex: first, ForwardedCount: forwarded}
	}
	for _, tc := range []struct {
		name              string
		stored, candidate *storage.BackupKey
		want              bool
	}{
		{"verified beats unverified", k(false, 0, 0), k(true, 5, 5), true},
		{"unverified never beats verified", k(true, 5, 5), k(false, 0, 0), false},
		{"lower first index wins", k(true, 3, 0), k(true, 1, 9), true},
		{"higher first index loses", k(true, 1, 0), k(true, 3, 0), false},
		{"then lower forwarded count", k(false, 1, 2), k(false, 1, 1), true},
		{"an equal key does not replace", k(false, 1, 1), k(false, 1, 1), false},
	} {
		if got := BetterBackupKey(tc.stored, tc.candidate); got != tc.want {
			t.Errorf("%s: got %v", tc.name, got)
		}
	}
}
