package spec

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Signing JSON (appendices §"Signing Details", §"Checking for a Signature") and signing events
// (server-server API §"Adding hashes and signatures to outgoing events", §"Validating hashes
// and signatures on received events").

// Signature errors. Callers drop events whose signatures fail.
var (
	ErrSignatureMissing = errors.New("signature missing")
	ErrSignatureInvalid = errors.New("signature invalid")
)

// signingSkip are the keys a signature does not cover.
var signingSkip = []string{"signatures", "unsigned"}

// ed25519KeyPrefix is the only signing algorithm Matrix defines.
const ed25519KeyPrefix = "ed25519:"

// KeyLookup finds the public key keyID of serverName. For room versions that enforce key
// validity (v5+) atTS is the event's origin_server_ts and the key must have been valid then
// (rooms/fragments/v5-signing-requirements.md); atTS 0 means any validity is acceptable.
// An error means the key is unknown or expired: signatures by such keys are skipped.
type KeyLookup func(serverName, keyID string, atTS int64) (ed25519.PublicKey, error)

// SignJSON signs a JSON object with an ed25519 key and returns it as canonical JSON with the
// signature added under signatures[serverName][keyID], next to any signatures it already
// had. The signature covers the canonical JSON without "signatures" and "unsigned"; an
// "unsigned" object is kept in the output. keyID must be "ed25519:<version>".
func SignJSON(raw []byte, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	return signJSON(raw, numbersCanonical, serverName, keyID, key)
}

func signJSON(raw []byte, mode numberMode, serverName, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	if !strings.HasPrefix(keyID, ed25519KeyPrefix) {
		return nil, fmt.Errorf("sign: unsupported key ID %q", keyID)
	}
	if len(key) != ed25519.PrivateKeySize {
		return nil, errors.New("sign: bad ed25519 private key")
	}
	signed, err := canonicalize(nil, raw, mode, signingSkip)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	signature := EncodeBase64(ed25519.Sign(key, signed))
	return addSignature(raw, mode, serverName, keyID, signature)
}

// addSignature returns raw as canonical JSON with one more signature.
func addSignature(raw []byte, mode numberMode, serverName, keyID, signature string) ([]byte, error) {
	canonical, err := canonicalize(nil, raw, mode, nil)
	if err != nil {
		return nil, err
	}
	members, err := splitCanonicalObject(canonical)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	signatures, err := parseSignatures(findMember(members, "signatures"))
	if err != nil {
		return nil, err
	}
	if signatures[serverName] == nil {
		signatures[serverName] = map[string]string{}
	}
	signatures[serverName][keyID] = signature
	encoded, err := json.Marshal(signatures)
	if err != nil {
		return nil, err
	}
	// The marshalled map may escape HTML characters; canonicalising fixes that.
	return canonicalize(nil, appendObject(nil, setMember(members, "signatures", encoded)), mode, nil)
}

// parseSignatures decodes a "signatures" value: server name → key ID → base64 signature.
func parseSignatures(value []byte) (map[string]map[string]string, error) {
	signatures := map[string]map[string]string{}
	if value == nil {
		return signatures, nil
	}
	if err := json.Unmarshal(value, &signatures); err != nil || signatures == nil {
		return nil, fmt.Errorf("%w: signatures must map server names to key IDs to strings", ErrBadEvent)
	}
	return signatures, nil
}

// VerifyJSON checks the signature of serverName with keyID on a JSON object (appendices
// §"Checking for a Signature"). It returns ErrSignatureMissing or ErrSignatureInvalid.
func VerifyJSON(raw []byte, serverName, keyID string, key ed25519.PublicKey) error {
	canonical, err := canonicalize(nil, raw, numbersCanonical, nil)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return verifyCanonical(canonical, numbersCanonical, serverName, keyID, key)
}

func verifyCanonical(canonical []byte, mode numberMode, serverName, keyID string, key ed25519.PublicKey) error {
	members, err := splitCanonicalObject(canonical)
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	signatures, err := parseSignatures(findMember(members, "signatures"))
	if err != nil {
		return err
	}
	encoded, ok := signatures[serverName][keyID]
	if !ok {
		return fmt.Errorf("%w: no signature by %s with %s", ErrSignatureMissing, serverName, keyID)
	}
	signed, err := canonicalize(nil, canonical, mode, signingSkip)
	if err != nil {
		return err
	}
	return verifySignature(signed, encoded, serverName, keyID, key)
}

func verifySignature(signed []byte, encoded, serverName, keyID string, key ed25519.PublicKey) error {
	if !strings.HasPrefix(keyID, ed25519KeyPrefix) {
		return fmt.Errorf("%w: unsupported algorithm in key ID %q", ErrSignatureInvalid, keyID)
	}
	signature, err := DecodeBase64(encoded)
	if err != nil || len(signature) != ed25519.SignatureSize {
		return fmt.Errorf("%w: undecodable signature by %s with %s", ErrSignatureInvalid, serverName, keyID)
	}
	if len(key) != ed25519.PublicKeySize || !ed25519.Verify(key, signed, signature) {
		return fmt.Errorf("%w: by %s with %s", ErrSignatureInvalid, serverName, keyID)
	}
	return nil
}

// SignEvent signs an event of room version rv for origin (server-server API §"Adding hashes
// and signatures to outgoing events"): it computes the content hash unless "hashes" already
// has a sha256 (as when co-signing another server's event), signs the redacted event, and returns the full event as canonical JSON with the signature
// attached. For reference-hash room versions an "event_id" key is removed first.
func SignEvent(raw []byte, rv *RoomVersion, origin, keyID string, key ed25519.PrivateKey) ([]byte, error) {
	canonical, err := canonicalJSONForVersion(raw, rv)
	if err != nil {
		return nil, fmt.Errorf("sign event: %w", err)
	}
	members, err := splitCanonicalObject(canonical)
	if err != nil {
		return nil, fmt.Errorf("sign event: %w", err)
	}
	if rv.EventIDFormat != EventIDOriginGenerated {
		members = withoutMember(members, "event_id")
	}
	if !hasSHA256(findMember(members, "hashes")) {
		sum, err := ContentHash(appendObject(nil, members))
		if err != nil {
			return nil, err
		}
		hashes := appendObject(nil, []jsonMember{{key: "sha256", value: appendJSONString(nil, []byte(EncodeBase64(sum[:])))}})
		members = setMember(members, "hashes", hashes)
	}
	full := appendObject(nil, members)
	redacted, err := redactCanonical(full, rv)
	if err != nil {
		return nil, err
	}
	if !strings.HasPrefix(keyID, ed25519KeyPrefix) || len(key) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("sign event: unsupported key %q", keyID)
	}
	signed, err := canonicalize(nil, redacted, numbersLenient, signingSkip)
	if err != nil {
		return nil, err
	}
	return addSignature(full, numbersLenient, origin, keyID, EncodeBase64(ed25519.Sign(key, signed)))
}

// RequiredSigners lists the servers whose signatures an event must carry (server-server API
// §"Validating hashes and signatures on received events"): the sender's server; in room
// versions 1 and 2 also the server of the event ID; and for membership events with
// content.join_authorised_via_users_server in versions with restricted joins, that user's
// server (rooms v8+ auth rule 4.2: the event must be validly signed by it).
func RequiredSigners(e *Event) ([]string, error) {
	sender, err := ParseUserID(e.Sender())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	servers := []string{sender.Server()}
	if e.version.EventIDFormat == EventIDOriginGenerated {
		if s := eventIDServer(e.eventID); s != "" && !slices.Contains(servers, s) {
			servers = append(servers, s)
		}
	}
	if e.version.AllowRestrictedJoins && e.Type() == "m.room.member" {
		var content struct {
			Authoriser *string `json:"join_authorised_via_users_server"`
		}
		if err := json.Unmarshal(e.Content(), &content); err == nil && content.Authoriser != nil {
			authoriser, err := ParseUserID(*content.Authoriser)
			if err != nil {
				return nil, fmt.Errorf("%w: join_authorised_via_users_server: %w", ErrBadEvent, err)
			}
			if !slices.Contains(servers, authoriser.Server()) {
				servers = append(servers, authoriser.Server())
			}
		}
	}
	return servers, nil
}

// VerifyEventSignatures checks that every server in RequiredSigners signed the redacted event.
// For each such server, signatures by keys that lookup does not know are skipped, every
// signature by a known key must verify, and at least one must: otherwise the event is to be
// dropped. Signatures of other servers are ignored.
func VerifyEventSignatures(e *Event, lookup KeyLookup) error {
	servers, err := RequiredSigners(e)
	if err != nil {
		return err
	}
	redacted, err := redactCanonical(e.raw, e.version)
	if err != nil {
		return err
	}
	members, err := splitCanonicalObject(redacted)
	if err != nil {
		return err
	}
	signatures, err := parseSignatures(findMember(members, "signatures"))
	if err != nil {
		return err
	}
	signed, err := canonicalize(nil, redacted, numbersLenient, signingSkip)
	if err != nil {
		return err
	}
	var atTS int64
	if e.version.EnforceKeyValidity {
		atTS = e.OriginServerTS()
	}
	for _, server := range servers {
		if err := verifyServerSignatures(signed, signatures[server], server, atTS, lookup); err != nil {
			return fmt.Errorf("event %s: %w", e.eventID, err)
		}
	}
	return nil
}

func verifyServerSignatures(signed []byte, byKey map[string]string, server string, atTS int64, lookup KeyLookup) error {
	keyIDs := make([]string, 0, len(byKey))
	for keyID := range byKey {
		// "the policy server key is not expected to be published and therefore should be
		// skipped at this stage", even when the Policy Server is the sender's server.
		if strings.HasPrefix(keyID, ed25519KeyPrefix) && keyID != PolicyServerKeyID {
			keyIDs = append(keyIDs, keyID)
		}
	}
	if len(keyIDs) == 0 {
		return fmt.Errorf("%w: no ed25519 signature by %s", ErrSignatureMissing, server)
	}
	slices.Sort(keyIDs)
	verified := 0
	var lookupErr error
	for _, keyID := range keyIDs {
		key, err := lookup(server, keyID, atTS)
		if err != nil || key == nil {
			lookupErr = err
			continue
		}
		if err := verifySignature(signed, byKey[keyID], server, keyID, key); err != nil {
			return err
		}
		verified++
	}
	if verified == 0 && lookupErr != nil {
		return fmt.Errorf("%w: no signature by %s from a known key: %w", ErrSignatureMissing, server, lookupErr)
	}
	if verified == 0 {
		return fmt.Errorf("%w: no signature by %s from a known key", ErrSignatureMissing, server)
	}
	return nil
}

// hasSHA256 reports whether a canonical "hashes" value has a "sha256" key.
func hasSHA256(hashes []byte) bool {
	if len(hashes) == 0 || hashes[0] != '{' {
		return false
	}
	members, err := splitCanonicalObject(hashes)
	return err == nil && findMember(members, "sha256") != nil
}
