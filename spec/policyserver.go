package spec

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
)

// Policy Servers (client-server API §"Policy Servers", m.room.policy; server-server API
// §"Determining if a Policy Server is enabled in a room", §"Validating Policy Server
// signatures"). Whether the server named by m.room.policy has a joined user in the room is
// for the caller to decide: it needs the room's membership, which this package does not keep.

// PolicyServerKeyID is the key ID of every Policy Server signature: "The Key ID for the
// ed25519 key in m.room.policy is always ed25519:policy_server".
const PolicyServerKeyID = "ed25519:policy_server"

// PolicyTuple is the state that names a room's Policy Server.
var PolicyTuple = StateTuple{Type: "m.room.policy"}

// PolicyServer is a room's Policy Server as its m.room.policy state event names it.
type PolicyServer struct {
	// ServerName is content.via.
	ServerName string
	// Key is content.public_keys.ed25519, nil when that string is not an ed25519 public key
	// in unpadded base64: the room still uses the Policy Server, but no signature verifies
	// (as after a key rotation that the room did not follow).
	Key ed25519.PublicKey
}

// ParsePolicyServer reads the Policy Server that an m.room.policy state event with an empty
// state key names. ok is false when the event is missing or invalid: content.via must be a
// string and content.public_keys an object with a string ed25519. Such a room uses no Policy
// Server.
func ParsePolicyServer(policy *Event) (ps PolicyServer, ok bool) {
	if policy == nil || policy.Type() != PolicyTuple.Type || !policy.StateKeyEquals("") {
		return PolicyServer{}, false
	}
	var content struct {
		Via        json.RawMessage            `json:"via"`
		PublicKeys map[string]json.RawMessage `json:"public_keys"`
	}
	if json.Unmarshal(policy.Content(), &content) != nil || content.PublicKeys == nil {
		return PolicyServer{}, false
	}
	via, ok := jsonString(content.Via)
	if !ok {
		return PolicyServer{}, false
	}
	encodedKey, ok := jsonString(content.PublicKeys["ed25519"])
	if !ok {
		return PolicyServer{}, false
	}
	ps = PolicyServer{ServerName: via}
	if key, err := DecodeBase64(encodedKey); err == nil && len(key) == ed25519.PublicKeySize {
		ps.Key = key
	}
	return ps, true
}

// jsonString decodes a JSON string value; anything else (null included) is not one.
func jsonString(raw json.RawMessage) (string, bool) {
	var s string
	if len(raw) == 0 || raw[0] != '"' || json.Unmarshal(raw, &s) != nil {
		return "", false
	}
	return s, true
}

// NeedsPolicyServerSignature reports whether an event is checked by a room's Policy Server:
// every event but the m.room.policy state event with an empty state key, which must stay
// sendable while the Policy Server is unreachable.
func NeedsPolicyServerSignature(e *Event) bool {
	return e.Type() != PolicyTuple.Type || !e.StateKeyEquals("")
}

// VerifyPolicyServerSignature checks the signature of ps on the redacted event, made with
// the key from m.room.policy under PolicyServerKeyID. It returns ErrSignatureMissing or
// ErrSignatureInvalid.
func VerifyPolicyServerSignature(e *Event, ps PolicyServer) error {
	redacted, err := redactCanonical(e.raw, e.version)
	if err != nil {
		return err
	}
	if err := verifyCanonical(redacted, numbersLenient, ps.ServerName, PolicyServerKeyID, ps.Key); err != nil {
		return fmt.Errorf("policy server signature on %s: %w", e.eventID, err)
	}
	return nil
}

// WithSignature returns the event with one more signature, by serverName with keyID (a
// signature already there under that key ID is replaced). Signatures are part of neither the
// content hash nor the reference hash, so the event ID stays the same.
func (e *Event) WithSignature(serverName, keyID, signature string) (*Event, error) {
	raw, err := addSignature(e.raw, numbersLenient, serverName, keyID, signature)
	if err != nil {
		return nil, fmt.Errorf("add signature to %s: %w", e.eventID, err)
	}
	signed := *e
	signed.raw = raw
	return &signed, nil
}
