package spec

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
)

// Event hashes (server-server API §"Signing Events": §"Calculating the content hash for an
// event" and §"Calculating the reference hash for an event").

// ErrContentHashMismatch means an event's hashes.sha256 does not match its content: the
// receiver must use the redacted event instead (server-server API §"Validating hashes and
// signatures on received events").
var ErrContentHashMismatch = errors.New("content hash mismatch")

// contentHashSkip are the keys left out of the content hash.
var contentHashSkip = []string{"unsigned", "signatures", "hashes"}

// ContentHash is the sha256 of the event's canonical JSON without "unsigned", "signatures" and
// "hashes". It covers the unredacted content. Numbers are handled leniently: events of older
// room versions may carry floats, and strict versions are checked when they are parsed.
func ContentHash(eventJSON []byte) ([32]byte, error) {
	canonical, err := canonicalize(nil, eventJSON, numbersLenient, contentHashSkip)
	if err != nil {
		return [32]byte{}, fmt.Errorf("content hash: %w", err)
	}
	return sha256.Sum256(canonical), nil
}

// ReferenceHash is the sha256 of the event redacted by the rules of rv, without "signatures"
// and "unsigned", as canonical JSON. For room versions whose event IDs are reference hashes an
// "event_id" key is not part of the event and is ignored.
func ReferenceHash(eventJSON []byte, rv *RoomVersion) ([32]byte, error) {
	redacted, err := RedactEventJSON(eventJSON, rv)
	if err != nil {
		return [32]byte{}, fmt.Errorf("reference hash: %w", err)
	}
	return referenceHashOfRedacted(redacted, rv)
}

func referenceHashOfRedacted(redacted []byte, rv *RoomVersion) ([32]byte, error) {
	skip := []string{"signatures", "unsigned"}
	if rv.EventIDFormat != EventIDOriginGenerated {
		skip = append(skip, "event_id")
	}
	canonical, err := canonicalize(nil, redacted, numbersLenient, skip)
	if err != nil {
		return [32]byte{}, fmt.Errorf("reference hash: %w", err)
	}
	return sha256.Sum256(canonical), nil
}

// ReferenceHash is the event's reference hash (see ReferenceHash).
func (e *Event) ReferenceHash() ([32]byte, error) {
	redacted, err := redactCanonical(e.raw, e.version)
	if err != nil {
		return [32]byte{}, err
	}
	return referenceHashOfRedacted(redacted, e.version)
}

// CheckContentHash compares the event's hashes.sha256 with its content hash. It returns
// ErrContentHashMismatch when they differ or when the hash is missing or undecodable.
func (e *Event) CheckContentHash() error {
	want, err := eventSHA256(e.raw)
	if err != nil {
		return fmt.Errorf("%w: event %s: %w", ErrContentHashMismatch, e.eventID, err)
	}
	got, err := ContentHash(e.raw)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(want, got[:]) != 1 {
		return fmt.Errorf("%w: event %s", ErrContentHashMismatch, e.eventID)
	}
	return nil
}

// eventSHA256 decodes hashes.sha256 of a canonical event.
func eventSHA256(canonical []byte) ([]byte, error) {
	members, err := splitCanonicalObject(canonical)
	if err != nil {
		return nil, err
	}
	hashes := findMember(members, "hashes")
	if len(hashes) == 0 || hashes[0] != '{' {
		return nil, errors.New("no hashes object")
	}
	hashMembers, err := splitCanonicalObject(hashes)
	if err != nil {
		return nil, err
	}
	lit := findMember(hashMembers, "sha256")
	if len(lit) == 0 || lit[0] != '"' {
		return nil, errors.New("no sha256 hash")
	}
	encoded, err := decodeCanonicalString(lit)
	if err != nil {
		return nil, err
	}
	sum, err := DecodeBase64(encoded)
	if err != nil {
		return nil, fmt.Errorf("sha256 hash: %w", err)
	}
	return sum, nil
}
