package spec

import (
	"encoding/json"
	"errors"
	"fmt"
)

// StateTuple identifies a piece of room state: (event type, state key).
type StateTuple struct {
	Type     string
	StateKey string
}

func (t StateTuple) String() string { return fmt.Sprintf("(%q, %q)", t.Type, t.StateKey) }

// StateMap maps each piece of state to the ID of the event that holds it.
type StateMap map[StateTuple]string

// Event is a persistent data unit (PDU) of one room version. It is immutable once built:
// the JSON it was parsed from is kept in canonical form (same value, same hashes and
// signatures) and every accessor reads parsed fields. Build one with ParseEvent,
// ProtoEvent.Build or EventFromTrusted (eventparse.go).
type Event struct {
	version *RoomVersion
	eventID string
	// raw is the event's canonical JSON as signed and as sent over federation: for room
	// versions with reference-hash IDs it has no "event_id" key, and for a room version 12
	// create event no "room_id" (fields.RoomID is derived from the event ID instead).
	raw    []byte
	fields eventFields
	// roomIDDerived is set on a v12 create event, whose room ID comes from its own hash
	// rather than from a "room_id" key.
	roomIDDerived bool
}

// eventFields are the top-level PDU keys the server interprets.
type eventFields struct {
	RoomID         string          `json:"room_id"`
	Sender         string          `json:"sender"`
	Type           string          `json:"type"`
	StateKey       *string         `json:"state_key,omitempty"`
	Content        json.RawMessage `json:"content"`
	PrevEvents     []string        `json:"-"`
	AuthEvents     []string        `json:"-"`
	Depth          int64           `json:"depth"`
	OriginServerTS int64           `json:"origin_server_ts"`
	Redacts        string          `json:"redacts,omitempty"`
	Unsigned       json.RawMessage `json:"unsigned,omitempty"`
	// membership is content.membership of a member event, parsed once.
	membership string
}

// membershipOf reads content.membership of a member event ("" otherwise).
func membershipOf(evType string, content json.RawMessage) string {
	if evType != "m.room.member" {
		return ""
	}
	var c struct {
		Membership string `json:"membership"`
	}
	if json.Unmarshal(content, &c) != nil {
		return ""
	}
	return c.Membership
}

// Errors that event parsing returns; callers map them to M_BAD_JSON / M_NOT_JSON.
var (
	ErrNotJSON   = errors.New("not valid JSON")
	ErrBadEvent  = errors.New("malformed event")
	ErrTooLarge  = errors.New("event exceeds 65536 bytes")
	MaxEventSize = 65536
)

// EventID is the event's ID: computed from its reference hash for v3+, taken from the JSON for v1/v2.
func (e *Event) EventID() string { return e.eventID }

// Version is the room version whose rules this event follows.
func (e *Event) Version() *RoomVersion { return e.version }

// JSON is the event as signed (federation format).
func (e *Event) JSON() []byte { return e.raw }

func (e *Event) RoomID() string            { return e.fields.RoomID }
func (e *Event) Sender() string            { return e.fields.Sender }
func (e *Event) Type() string              { return e.fields.Type }
func (e *Event) Content() json.RawMessage  { return e.fields.Content }
func (e *Event) PrevEventIDs() []string    { return e.fields.PrevEvents }
func (e *Event) AuthEventIDs() []string    { return e.fields.AuthEvents }
func (e *Event) Depth() int64              { return e.fields.Depth }
func (e *Event) OriginServerTS() int64     { return e.fields.OriginServerTS }
func (e *Event) Unsigned() json.RawMessage { return e.fields.Unsigned }

// StateKey is nil for a message event and non-nil (possibly "") for a state event.
func (e *Event) StateKey() *string { return e.fields.StateKey }

// IsState reports whether the event has a state key.
func (e *Event) IsState() bool { return e.fields.StateKey != nil }

// StateKeyEquals reports whether the event is a state event with this state key.
func (e *Event) StateKeyEquals(stateKey string) bool {
	return e.fields.StateKey != nil && *e.fields.StateKey == stateKey
}

// Tuple is the (type, state_key) of a state event; ok is false for message events.
func (e *Event) Tuple() (StateTuple, bool) {
	if e.fields.StateKey == nil {
		return StateTuple{}, false
	}
	return StateTuple{Type: e.fields.Type, StateKey: *e.fields.StateKey}, true
}

// Redacts is the event ID that an m.room.redaction event redacts: from content in v11+,
// from the top level before (and as a fallback, as Synapse does).
func (e *Event) Redacts() string {
	if e.fields.Type != "m.room.redaction" {
		return ""
	}
	if e.version.RedactsInContent {
		var c struct {
			Redacts string `json:"redacts"`
		}
		if json.Unmarshal(e.fields.Content, &c) == nil && c.Redacts != "" {
			return c.Redacts
		}
	}
	return e.fields.Redacts
}

// Membership is content.membership of an m.room.member event.
func (e *Event) Membership() (string, error) {
	if e.fields.Type != "m.room.member" {
		return "", fmt.Errorf("%w: %s is not a member event", ErrBadEvent, e.eventID)
	}
	m := e.fields.membership
	if m == "" {
		m = membershipOf(e.fields.Type, e.fields.Content)
	}
	if m == "" {
		return "", fmt.Errorf("%w: member event without membership", ErrBadEvent)
	}
	return m, nil
}
