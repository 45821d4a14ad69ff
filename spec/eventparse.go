package spec

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
)

// Event parsing and building: the PDU format of each room version (rooms/v1.md … v12.md
// §"Event format", data/api/server-server/definitions/pdu_v*.yaml), the size limits of
// client-server API §"Size limits", and the event ID rules of each version's §"Event IDs".

// PDU limits.
const (
	// MaxFieldLength bounds sender, room_id, state_key and type (client-server API
	// §"Size limits").
	MaxFieldLength = 255
	// MaxPrevEvents and MaxAuthEvents: "Must contain less than or equal to 20 / 10 events".
	MaxPrevEvents = 20
	MaxAuthEvents = 10
)

// ParseEvent validates a PDU of room version rv received from anywhere untrusted and returns
// the event with its ID. It checks the canonical JSON rules of the version, the 65536-byte
// limit on the canonical event (ErrTooLarge), required keys and their JSON types, the
// 255-byte field limits, identifier grammar, depth, and the prev_events/auth_events format.
// It does not check hashes or signatures (CheckContentHash, VerifyEventSignatures).
//
// For reference-hash versions an "event_id" key is removed: the ID is computed. In room
// version 12 an m.room.create event must not have a room_id; its RoomID() is "!" + the
// URL-safe reference hash.
func ParseEvent(raw []byte, rv *RoomVersion) (*Event, error) {
	if rv == nil {
		return nil, errors.New("parse event: no room version")
	}
	canonical, err := canonicalJSONForVersion(raw, rv)
	if err != nil {
		if errors.Is(err, ErrNotJSON) {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
	}
	if len(canonical) == 0 || canonical[0] != '{' {
		return nil, fmt.Errorf("%w: event is not a JSON object", ErrBadEvent)
	}
	members, err := splitCanonicalObject(canonical)
	if err != nil {
		return nil, err
	}
	if rv.EventIDFormat != EventIDOriginGenerated && findMember(members, "event_id") != nil {
		members = withoutMember(members, "event_id")
		canonical = appendObject(nil, members)
	}
	if len(canonical) > MaxEventSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrTooLarge, len(canonical))
	}
	fields, jsonEventID, err := parseEventFields(members, rv, true)
	if err != nil {
		return nil, err
	}
	e := &Event{version: rv, raw: canonical, fields: fields}
	if rv.EventIDFormat == EventIDOriginGenerated {
		e.eventID = jsonEventID
	} else {
		sum, err := e.ReferenceHash()
		if err != nil {
			return nil, err
		}
		if rv.EventIDFormat == EventIDReferenceHashStd {
			e.eventID = "$" + EncodeBase64(sum[:])
		} else {
			e.eventID = "$" + EncodeBase64URL(sum[:])
		}
	}
	if isHashRoomCreate(fields.Type, rv) {
		e.fields.RoomID = "!" + e.eventID[1:]
		e.roomIDDerived = true
	}
	return e, nil
}

// EventFromTrusted rebuilds an event that was validated before, such as one read back from
// our database as stored from Event.JSON(), without recomputing hashes or re-validating.
func EventFromTrusted(raw []byte, eventID string, rv *RoomVersion) (*Event, error) {
	if rv == nil {
		return nil, errors.New("event from trusted: no room version")
	}
	members, err := splitCanonicalObject(raw)
	if err != nil {
		// Not in canonical form (e.g. re-indented): canonicalise once.
		if raw, err = CanonicalJSONLenient(raw); err != nil {
			return nil, err
		}
		if members, err = splitCanonicalObject(raw); err != nil {
			return nil, err
		}
	}
	fields, jsonEventID, err := parseEventFields(members, rv, false)
	if err != nil {
		return nil, err
	}
	if eventID == "" {
		eventID = jsonEventID
	}
	if eventID == "" {
		return nil, fmt.Errorf("%w: no event ID", ErrBadEvent)
	}
	if isHashRoomCreate(fields.Type, rv) && fields.RoomID == "" {
		fields.RoomID = "!" + eventID[1:]
		return &Event{version: rv, eventID: eventID, raw: raw, fields: fields, roomIDDerived: true}, nil
	}
	return &Event{version: rv, eventID: eventID, raw: raw, fields: fields}, nil
}

// isHashRoomCreate reports whether an event of this type is a create event whose room ID is
// derived from its own reference hash (room version 12).
func isHashRoomCreate(eventType string, rv *RoomVersion) bool {
	return rv.RoomIDIsCreateEventHash && eventType == "m.room.create"
}

// parseEventFields reads the PDU keys. With validate it enforces the event format of rv;
// without, it only decodes what is there. It returns the "event_id" key for v1/v2.
func parseEventFields(members []jsonMember, rv *RoomVersion, validate bool) (eventFields, string, error) {
	var f eventFields
	var eventID string
	seen := map[string]bool{}
	bad := func(key, why string) error { return fmt.Errorf("%w: %s %s", ErrBadEvent, key, why) }
	for _, m := range members {
		var err error
		switch m.key {
		case "room_id", "sender", "type", "state_key", "event_id", "redacts":
			if m.value[0] != '"' {
				if m.key == "redacts" && rv.RedactsInContent {
					continue // not a PDU key in v11+: ignored
				}
				return f, "", bad(m.key, "must be a string")
			}
			var s string
			if s, err = decodeCanonicalString(m.value); err != nil {
				return f, "", err
			}
			switch m.key {
			case "room_id":
				f.RoomID = s
			case "sender":
				f.Sender = s
			case "type":
				f.Type = s
			case "state_key":
				f.StateKey = &s
			case "event_id":
				eventID = s
			case "redacts":
				f.Redacts = s
			}
		case "content", "unsigned", "hashes", "signatures":
			if m.value[0] != '{' {
				return f, "", bad(m.key, "must be an object")
			}
			switch m.key {
			case "content":
				f.Content = json.RawMessage(m.value)
			case "unsigned":
				f.Unsigned = json.RawMessage(m.value)
			}
		case "depth", "origin_server_ts":
			n, err := strconv.ParseInt(string(m.value), 10, 64)
			if err != nil {
				return f, "", bad(m.key, "must be an integer")
			}
			if m.key == "depth" {
				f.Depth = n
			} else {
				f.OriginServerTS = n
			}
		case "prev_events", "auth_events":
			ids, err := parseEventRefs(m.value, rv)
			if err != nil {
				return f, "", fmt.Errorf("%s: %w", m.key, err)
			}
			if m.key == "prev_events" {
				f.PrevEvents = ids
			} else {
				f.AuthEvents = ids
			}
		default:
			continue
		}
		seen[m.key] = true
	}
	f.membership = membershipOf(f.Type, f.Content)
	if !validate {
		return f, eventID, nil
	}
	required := []string{"sender", "type", "content", "depth", "origin_server_ts", "hashes", "signatures", "prev_events", "auth_events"}
	if rv.EventIDFormat == EventIDOriginGenerated {
		required = append(required, "event_id")
	}
	for _, key := range required {
		if !seen[key] {
			return f, "", bad(key, "missing")
		}
	}
	if err := validateEventFields(&f, members, eventID, seen["room_id"], rv); err != nil {
		return f, "", err
	}
	return f, eventID, nil
}

func validateEventFields(f *eventFields, members []jsonMember, eventID string, hasRoomID bool, rv *RoomVersion) error {
	bad := func(key, why string) error { return fmt.Errorf("%w: %s %s", ErrBadEvent, key, why) }
	if len(f.Sender) > MaxFieldLength {
		return bad("sender", "longer than 255 bytes")
	}
	if _, err := ParseUserID(f.Sender); err != nil {
		return fmt.Errorf("%w: sender: %w", ErrBadEvent, err)
	}
	if len(f.Type) > MaxFieldLength {
		return bad("type", "longer than 255 bytes")
	}
	if f.StateKey != nil && len(*f.StateKey) > MaxFieldLength {
		return bad("state_key", "longer than 255 bytes")
	}
	switch {
	case isHashRoomCreate(f.Type, rv):
		if hasRoomID {
			return bad("room_id", "must be absent from a room version 12 m.room.create event")
		}
	case !hasRoomID:
		return bad("room_id", "missing")
	default:
		if len(f.RoomID) > MaxFieldLength {
			return bad("room_id", "longer than 255 bytes")
		}
		if err := ValidateRoomID(f.RoomID, rv); err != nil {
			return fmt.Errorf("%w: room_id: %w", ErrBadEvent, err)
		}
	}
	maxDepth := int64(math.MaxInt64)
	if rv.StrictCanonicalJSON {
		maxDepth = MaxCanonicalInt
	}
	if f.Depth < 0 || f.Depth > maxDepth {
		return bad("depth", "out of range")
	}
	if len(f.PrevEvents) > MaxPrevEvents {
		return bad("prev_events", "has more than 20 events")
	}
	if len(f.AuthEvents) > MaxAuthEvents {
		return bad("auth_events", "has more than 10 events")
	}
	if rv.EventIDFormat == EventIDOriginGenerated {
		if err := ValidateEventID(eventID, rv); err != nil {
			return fmt.Errorf("%w: event_id: %w", ErrBadEvent, err)
		}
	}
	hashes, err := splitCanonicalObject(findMember(members, "hashes"))
	if err != nil {
		return err
	}
	if sha := findMember(hashes, "sha256"); len(sha) == 0 || sha[0] != '"' {
		return bad("hashes", "must have a sha256 string")
	}
	signatures, err := splitCanonicalObject(findMember(members, "signatures"))
	if err != nil {
		return err
	}
	for _, s := range signatures {
		if s.value[0] != '{' {
			return bad("signatures", "must map server names to objects")
		}
	}
	return nil
}

// parseEventRefs reads prev_events or auth_events: event IDs from room version 3, and
// [event_id, {"sha256": hash}] pairs in versions 1 and 2 (the hashes are not used).
func parseEventRefs(value []byte, rv *RoomVersion) ([]string, error) {
	if value[0] != '[' {
		return nil, fmt.Errorf("%w: must be an array", ErrBadEvent)
	}
	elements, err := splitCanonicalArray(value)
	if err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(elements))
	for _, el := range elements {
		idLit := el
		if rv.PrevEventsAreHashPairs {
			pair, err := splitCanonicalArray(el)
			if err != nil || len(pair) != 2 || pair[1][0] != '{' {
				return nil, fmt.Errorf("%w: must hold [event_id, hashes] pairs", ErrBadEvent)
			}
			idLit = pair[0]
		}
		if idLit[0] != '"' {
			return nil, fmt.Errorf("%w: event IDs must be strings", ErrBadEvent)
		}
		id, err := decodeCanonicalString(idLit)
		if err != nil {
			return nil, err
		}
		if err := ValidateEventID(id, rv); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadEvent, err)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// ProtoEvent is an event before hashing and signing: what a local user or a make_join
// template asks for.
type ProtoEvent struct {
	Type     string
	StateKey *string // nil for a message event
	Sender   string
	// RoomID must be empty for a room version 12 m.room.create event, whose room ID is
	// derived from the event itself.
	RoomID         string
	Content        json.RawMessage // nil means {}
	PrevEvents     []string
	AuthEvents     []string
	Depth          int64
	OriginServerTS int64
	// Redacts is the redacted event of an m.room.redaction: written at the top level before
	// room version 11 and into content (unless content has it) from version 11.
	Redacts  string
	Unsigned json.RawMessage
	// ReferenceHashes gives, for room versions 1 and 2, the unpadded base64 reference hashes
	// of the events in PrevEvents and AuthEvents for their [event_id, {"sha256": hash}]
	// pairs. NOTSPEC: receivers ignore these hashes, so a missing one is written as {}.
	ReferenceHashes map[string]string
}

// Build turns the proto event into a signed event of room version rv: it adds a random
// "$opaque:origin" event ID for versions 1 and 2, the content hash and the signature of
// origin with keyID, and parses the result with ParseEvent.
func (p *ProtoEvent) Build(rv *RoomVersion, origin, keyID string, key ed25519.PrivateKey) (*Event, error) {
	if rv == nil {
		return nil, errors.New("build event: no room version")
	}
	str := func(s string) []byte { return appendJSONString(nil, []byte(s)) }
	content := []byte(p.Content)
	if len(content) == 0 {
		content = []byte("{}")
	}
	content, err := canonicalJSONForVersion(content, rv)
	if err != nil {
		return nil, fmt.Errorf("build event: content: %w", err)
	}
	if p.Redacts != "" && rv.RedactsInContent {
		contentMembers, err := splitCanonicalObject(content)
		if err != nil {
			return nil, fmt.Errorf("build event: content: %w", err)
		}
		if findMember(contentMembers, "redacts") == nil {
			content = appendObject(nil, setMember(contentMembers, "redacts", str(p.Redacts)))
		}
	}
	members := []jsonMember{
		{key: "auth_events", value: p.eventRefs(p.AuthEvents, rv)},
		{key: "content", value: content},
		{key: "depth", value: strconv.AppendInt(nil, p.Depth, 10)},
		{key: "origin_server_ts", value: strconv.AppendInt(nil, p.OriginServerTS, 10)},
		{key: "prev_events", value: p.eventRefs(p.PrevEvents, rv)},
		{key: "sender", value: str(p.Sender)},
		{key: "type", value: str(p.Type)},
	}
	switch {
	case isHashRoomCreate(p.Type, rv) && p.RoomID != "":
		return nil, errors.New("build event: a room version 12 create event has no room_id")
	case !isHashRoomCreate(p.Type, rv):
		members = append(members, jsonMember{key: "room_id", value: str(p.RoomID)})
	}
	if p.StateKey != nil {
		members = append(members, jsonMember{key: "state_key", value: str(*p.StateKey)})
	}
	if p.Redacts != "" && !rv.RedactsInContent {
		members = append(members, jsonMember{key: "redacts", value: str(p.Redacts)})
	}
	if len(p.Unsigned) > 0 {
		members = append(members, jsonMember{key: "unsigned", value: p.Unsigned})
	}
	if rv.EventIDFormat == EventIDOriginGenerated {
		members = append(members, jsonMember{key: "event_id", value: str("$" + rand.Text() + ":" + origin)})
	}
	signed, err := SignEvent(appendObject(nil, members), rv, origin, keyID, key)
	if err != nil {
		return nil, fmt.Errorf("build event: %w", err)
	}
	return ParseEvent(signed, rv)
}

// eventRefs writes prev_events/auth_events in the format of rv.
func (p *ProtoEvent) eventRefs(ids []string, rv *RoomVersion) []byte {
	out := []byte{'['}
	for i, id := range ids {
		if i > 0 {
			out = append(out, ',')
		}
		if !rv.PrevEventsAreHashPairs {
			out = appendJSONString(out, []byte(id))
			continue
		}
		out = append(out, '[')
		out = appendJSONString(out, []byte(id))
		out = append(out, ",{"...)
		if hash, ok := p.ReferenceHashes[id]; ok {
			out = append(out, `"sha256":`...)
			out = appendJSONString(out, []byte(hash))
		}
		out = append(out, "}]"...)
	}
	return append(out, ']')
}
