// Package keys is the end-to-end encryption key server: the rules that decide which keys and
// signatures a homeserver accepts and how it hands them out (client-server API "End-to-End
// Encryption": device keys, one-time and fallback keys, cross-signing, server-side key
// backups). It checks what it can — shapes, owners and ed25519 signatures — and never sees
// a private key or a plaintext: every key object is kept as the client signed it.
package keys

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Limits on uploads. NOTSPEC: the spec sets none; these are far above what clients send
// (libolm and vodozemac upload at most 50 one-time keys at a time) and bound the work of one
// request.
const (
	// MaxOneTimeKeysPerUpload bounds the one-time keys of one /keys/upload.
	MaxOneTimeKeysPerUpload = 1000
	// MaxFallbackKeysPerUpload bounds the fallback keys (one per algorithm) of one upload.
	MaxFallbackKeysPerUpload = 16
	// MaxKeyObjectSize bounds one key object, in bytes.
	MaxKeyObjectSize = 8 * 1024
	// MaxKeyIDLength bounds an "<algorithm>:<key_id>" name, in bytes.
	MaxKeyIDLength = 255
)

// invalidSignature is the error of a signature that does not verify.
func invalidSignature(format string, args ...any) *httpapi.Error {
	return httpapi.NewError(http.StatusBadRequest, "M_INVALID_SIGNATURE", format, args...)
}

// DeviceKeys is a device's identity keys (definitions/device_keys.yaml) as checked.
type DeviceKeys struct {
	UserID     string                       `json:"user_id"`
	DeviceID   string                       `json:"device_id"`
	Algorithms []string                     `json:"algorithms"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures"`
}

// Ed25519 is the device's ed25519 fingerprint key, "" if it has none.
func (d *DeviceKeys) Ed25519() string { return d.Keys["ed25519:"+d.DeviceID] }

// ParseDeviceKeys checks an uploaded device_keys object (client-server API "Device keys"):
// it must name the uploading user and device, list algorithms, hold the device's ed25519
// key "ed25519:<device_id>", and be signed with that key by the user. It returns the keys
// and the object in canonical JSON without "unsigned", which the server adds when it hands
// the keys out.
func ParseDeviceKeys(raw json.RawMessage, userID, deviceID string) (*DeviceKeys, []byte, error) {
	if len(raw) > MaxKeyObjectSize {
		return nil, nil, httpapi.TooLarge("device_keys exceeds %d bytes", MaxKeyObjectSize)
	}
	var keys DeviceKeys
	if err := json.Unmarshal(raw, &keys); err != nil {
		return nil, nil, httpapi.BadJSON("device_keys is malformed: %v", err)
	}
	if keys.UserID != userID || keys.DeviceID != deviceID {
		return nil, nil, httpapi.BadJSON("device_keys must be for user %s and device %s", userID, deviceID)
	}
	if len(keys.Algorithms) == 0 || len(keys.Keys) == 0 {
		return nil, nil, httpapi.BadJSON("device_keys must list algorithms and keys")
	}
	public, err := decodeEd25519(keys.Ed25519())
	if err != nil {
		return nil, nil, httpapi.BadJSON("device_keys has no valid ed25519:%s key", deviceID)
	}
	clean, err := withoutUnsigned(raw)
	if err != nil {
		return nil, nil, err
	}
	if err := spec.VerifyJSON(clean, userID, "ed25519:"+deviceID, public); err != nil {
		return nil, nil, invalidSignature("device_keys is not signed by its device: %v", err)
	}
	return &keys, clean, nil
}

// withoutUnsigned is a JSON object in canonical form with its "unsigned" member removed.
func withoutUnsigned(raw json.RawMessage) ([]byte, error) {
	var object map[string]json.RawMessage
	if err := json.Unmarshal(raw, &object); err != nil || object == nil {
		return nil, httpapi.BadJSON("key must be a JSON object")
	}
	delete(object, "unsigned")
	return canonical(object)
}

// canonical encodes a value as canonical JSON.
func canonical(v any) ([]byte, error) {
	encoded, err := json.Marshal(v)
	if err != nil {
		return nil, httpapi.BadJSON("key is not valid JSON: %v", err)
	}
	out, err := spec.CanonicalJSON(encoded)
	if err != nil {
		return nil, httpapi.BadJSON("key is not valid canonical JSON: %v", err)
	}
	return out, nil
}

// decodeEd25519 decodes an unpadded-base64 ed25519 public key.
func decodeEd25519(s string) (ed25519.PublicKey, error) {
	b, err := spec.DecodeBase64(s)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("not an ed25519 public key")
	}
	return ed25519.PublicKey(b), nil
}

// ParseOneTimeKeys checks one_time_keys or fallback_keys of an upload (client-server API
// "One-time and fallback keys"): names are "<algorithm>:<key_id>", values a key string or a
// key object. When deviceKey is set (the device's ed25519 key), signed key objects must
// carry the device's valid signature. fallback says the keys are fallback keys.
func ParseOneTimeKeys(keys map[string]json.RawMessage, userID, deviceID string, deviceKey ed25519.PublicKey, fallback bool) ([]storage.OneTimeKey, error) {
	limit := MaxOneTimeKeysPerUpload
	if fallback {
		limit = MaxFallbackKeysPerUpload
	}
	if len(keys) > limit {
		return nil, httpapi.TooLarge("At most %d keys may be uploaded at once", limit)
	}
	out := make([]storage.OneTimeKey, 0, len(keys))
	algorithms := map[string]bool{}
	for name, raw := range keys {
		algorithm, keyID, ok := strings.Cut(name, ":")
		if !ok || algorithm == "" || keyID == "" || len(name) > MaxKeyIDLength {
			return nil, httpapi.BadJSON("Key name %q must be <algorithm>:<key_id>", name)
		}
		if len(raw) > MaxKeyObjectSize {
			return nil, httpapi.TooLarge("Key %s exceeds %d bytes", name, MaxKeyObjectSize)
		}
		if fallback && algorithms[algorithm] {
			return nil, httpapi.BadJSON("At most one fallback key per algorithm may be uploaded")
		}
		algorithms[algorithm] = true
		stored, err := checkOneTimeKey(raw, userID, deviceID, deviceKey)
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", name, err)
		}
		out = append(out, storage.OneTimeKey{Algorithm: algorithm, KeyID: keyID, KeyJSON: stored})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Algorithm != out[j].Algorithm {
			return out[i].Algorithm < out[j].Algorithm
		}
		return out[i].KeyID < out[j].KeyID
	})
	return out, nil
}

// checkOneTimeKey checks one key value and returns it in canonical JSON.
func checkOneTimeKey(raw json.RawMessage, userID, deviceID string, deviceKey ed25519.PublicKey) ([]byte, error) {
	trimmed := bytes.TrimSpace(raw)
	if len(trimmed) > 0 && trimmed[0] == '"' {
		var key string
		if err := json.Unmarshal(trimmed, &key); err != nil || key == "" {
			return nil, httpapi.BadJSON("key must be a non-empty string or a key object")
		}
		return canonical(key)
	}
	var object struct {
		Key        string                       `json:"key"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(trimmed, &object); err != nil || object.Key == "" {
		return nil, httpapi.BadJSON("key object must have a key")
	}
	clean, err := withoutUnsigned(trimmed)
	if err != nil {
		return nil, err
	}
	if deviceKey != nil {
		if err := spec.VerifyJSON(clean, userID, "ed25519:"+deviceID, deviceKey); err != nil {
			return nil, invalidSignature("one-time key is not signed by its device: %v", err)
		}
	}
	return clean, nil
}

// DeviceKeyOf is the ed25519 public key in stored device keys, nil if there is none.
func DeviceKeyOf(stored []byte, deviceID string) ed25519.PublicKey {
	var keys DeviceKeys
	if json.Unmarshal(stored, &keys) != nil {
		return nil
	}
	public, err := decodeEd25519(keys.Keys["ed25519:"+deviceID])
	if err != nil {
		return nil
	}
	return public
}

// CrossSigningKey is a cross-signing key (definitions/cross_signing_key.yaml) as checked.
type CrossSigningKey struct {
	UserID     string                       `json:"user_id"`
	Usage      []string                     `json:"usage"`
	Keys       map[string]string            `json:"keys"`
	Signatures map[string]map[string]string `json:"signatures,omitempty"`
	// PublicKey is the unpadded-base64 ed25519 key, Raw the object in canonical JSON.
	PublicKey string `json:"-"`
	Raw       []byte `json:"-"`
	public    ed25519.PublicKey
}

// ParseCrossSigningKey checks a cross-signing key of userID for usage ("master",
// "self_signing" or "user_signing"): it names the user, lists the usage, and holds exactly
// one ed25519 key whose key ID is "ed25519:" followed by the key itself.
func ParseCrossSigningKey(raw json.RawMessage, userID, usage string) (*CrossSigningKey, error) {
	if len(raw) > MaxKeyObjectSize {
		return nil, httpapi.TooLarge("Cross-signing key exceeds %d bytes", MaxKeyObjectSize)
	}
	var key CrossSigningKey
	if err := json.Unmarshal(raw, &key); err != nil {
		return nil, httpapi.BadJSON("%s key is malformed: %v", usage, err)
	}
	if key.UserID != userID {
		return nil, httpapi.BadJSON("%s key must be for user %s", usage, userID)
	}
	if !contains(key.Usage, usage) {
		return nil, httpapi.BadJSON("%s key must have usage %s", usage, usage)
	}
	if len(key.Keys) != 1 {
		return nil, httpapi.BadJSON("%s key must hold exactly one key", usage)
	}
	for keyID, value := range key.Keys {
		public, err := decodeEd25519(value)
		if err != nil || keyID != "ed25519:"+value {
			return nil, httpapi.BadJSON("%s key must be an ed25519 key named ed25519:<public key>", usage)
		}
		key.PublicKey, key.public = value, public
	}
	clean, err := withoutUnsigned(raw)
	if err != nil {
		return nil, err
	}
	key.Raw = clean
	return &key, nil
}

// StoredCrossSigningKey reads a stored cross-signing key; nil if it cannot be read.
func StoredCrossSigningKey(raw []byte, userID, usage string) *CrossSigningKey {
	if raw == nil {
		return nil
	}
	key, err := ParseCrossSigningKey(raw, userID, usage)
	if err != nil {
		return nil
	}
	return key
}

// VerifySignedBy checks that object carries a valid signature of signer's key.
func (k *CrossSigningKey) VerifySignedBy(object []byte) error {
	if err := spec.VerifyJSON(object, k.UserID, "ed25519:"+k.PublicKey, k.public); err != nil {
		return invalidSignature("Invalid signature: %v", err)
	}
	return nil
}

// SameKey reports whether two key objects are the same key: equal apart from their
// signatures and unsigned data (the rule of /keys/signatures/upload).
func SameKey(a, b []byte) bool {
	ca, errA := withoutSignatures(a)
	cb, errB := withoutSignatures(b)
	return errA == nil && errB == nil && bytes.Equal(ca, cb)
}

func withoutSignatures(raw []byte) ([]byte, error) {
	var object map[string]json.RawMessage
	if err := json.Unmarshal(raw, &object); err != nil || object == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	delete(object, "signatures")
	delete(object, "unsigned")
	return canonical(object)
}

// WithSignatures adds uploaded signatures to a stored key object.
func WithSignatures(raw []byte, signatures []storage.KeySignature) []byte {
	if len(signatures) == 0 {
		return raw
	}
	var object map[string]json.RawMessage
	if json.Unmarshal(raw, &object) != nil {
		return raw
	}
	all := map[string]map[string]string{}
	if existing, ok := object["signatures"]; ok {
		_ = json.Unmarshal(existing, &all)
	}
	for _, s := range signatures {
		if all[s.SignerUserID] == nil {
			all[s.SignerUserID] = map[string]string{}
		}
		all[s.SignerUserID][s.SignerKeyID] = s.Signature
	}
	encoded, err := json.Marshal(all)
	if err != nil {
		return raw
	}
	object["signatures"] = encoded
	out, err := canonical(object)
	if err != nil {
		return raw
	}
	return out
}

// WithUnsigned adds an "unsigned" object to a key object, as /keys/query returns device
// keys with unsigned.device_display_name.
func WithUnsigned(raw []byte, unsigned map[string]any) []byte {
	var object map[string]json.RawMessage
	if json.Unmarshal(raw, &object) != nil {
		return raw
	}
	encoded, err := json.Marshal(unsigned)
	if err != nil {
		return raw
	}
	object["unsigned"] = encoded
	out, err := json.Marshal(object)
	if err != nil {
		return raw
	}
	return out
}

// SignatureBy finds the signature of signerUser with signerKeyID in an object.
func SignatureBy(raw []byte, signerUser, signerKeyID string) (string, bool) {
	var object struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if json.Unmarshal(raw, &object) != nil {
		return "", false
	}
	s, ok := object.Signatures[signerUser][signerKeyID]
	return s, ok
}

// VerifyDeviceSignature checks that object is signed by a device's ed25519 key.
func VerifyDeviceSignature(object []byte, userID, deviceID string, deviceKey ed25519.PublicKey) error {
	if err := spec.VerifyJSON(object, userID, "ed25519:"+deviceID, deviceKey); err != nil {
		return invalidSignature("Invalid signature: %v", err)
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// BetterBackupKey reports whether candidate should replace the stored key of a session in a
// backup (client-server API "Server-side key backups"): a verified key beats an unverified
// one; then the lower first_message_index wins; then the lower forwarded_count.
func BetterBackupKey(stored, candidate *storage.BackupKey) bool {
	if stored.IsVerified != candidate.IsVerified {
		return candidate.IsVerified
	}
	if stored.FirstMessageIndex != candidate.FirstMessageIndex {
		return candidate.FirstMessageIndex < stored.FirstMessageIndex
	}
	return candidate.ForwardedCount < stored.ForwardedCount
}
