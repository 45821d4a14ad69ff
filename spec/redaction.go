package spec

import (
	"fmt"
	"slices"
)

// Redaction (client-server API §"Redactions"; the algorithm of each room version:
// rooms/fragments/v1-redactions.md, v6-, v9- (also used by v8 without the member key),
// v11-redactions.md). Redacting strips every top-level key not in a fixed list and every
// content key not protected for the event's type.

// redactionTopLevelKeys are the top-level keys kept by the algorithms before room version 11.
var redactionTopLevelKeys = []string{
	"auth_events", "content", "depth", "event_id", "hashes", "membership", "origin",
	"origin_server_ts", "prev_events", "prev_state", "room_id", "sender", "signatures",
	"state_key", "type",
}

// redactionTopLevelKeysV11: room version 11 no longer keeps origin, membership and prev_state.
var redactionTopLevelKeysV11 = []string{
	"auth_events", "content", "depth", "event_id", "hashes", "origin_server_ts",
	"prev_events", "room_id", "sender", "signatures", "state_key", "type",
}

// redactionContentKeys lists the content keys the rules keep for an event type. It relies on
// each RedactionRules variant extending the one before it. keepAll is true for content that
// survives whole (m.room.create from v11).
func redactionContentKeys(rules RedactionRules, eventType string) (keys []string, keepAll bool) {
	switch eventType {
	case "m.room.member":
		if rules >= RedactionV9 {
			// v11 also keeps third_party_invite.signed, handled in redactContent.
			return []string{"join_authorised_via_users_server", "membership"}, false
		}
		return []string{"membership"}, false
	case "m.room.create":
		if rules >= RedactionV11 {
			return nil, true
		}
		return []string{"creator"}, false
	case "m.room.join_rules":
		if rules >= RedactionV8 {
			return []string{"allow", "join_rule"}, false
		}
		return []string{"join_rule"}, false
	case "m.room.power_levels":
		keys := []string{"ban", "events", "events_default", "kick", "redact", "state_default", "users", "users_default"}
		if rules >= RedactionV11 {
			keys = append(keys, "invite")
		}
		return keys, false
	case "m.room.aliases":
		if rules == RedactionV1 {
			return []string{"aliases"}, false
		}
	case "m.room.history_visibility":
		return []string{"history_visibility"}, false
	case "m.room.redaction":
		if rules >= RedactionV11 {
			return []string{"redacts"}, false
		}
	}
	return nil, false
}

// RedactEventJSON applies the redaction algorithm of room version rv to an event and returns
// the redacted event as canonical JSON. The redacted event always has a "content" object.
func RedactEventJSON(raw []byte, rv *RoomVersion) ([]byte, error) {
	canonical, err := CanonicalJSONLenient(raw)
	if err != nil {
		return nil, fmt.Errorf("redact: %w", err)
	}
	return redactCanonical(canonical, rv)
}

func redactCanonical(canonical []byte, rv *RoomVersion) ([]byte, error) {
	members, err := splitCanonicalObject(canonical)
	if err != nil {
		return nil, fmt.Errorf("redact: %w", err)
	}
	topLevel := redactionTopLevelKeys
	if rv.Redaction >= RedactionV11 {
		topLevel = redactionTopLevelKeysV11
	}
	eventType := ""
	if t := findMember(members, "type"); len(t) > 0 && t[0] == '"' {
		if eventType, err = decodeCanonicalString(t); err != nil {
			return nil, err
		}
	}
	kept := make([]jsonMember, 0, len(topLevel))
	for _, m := range members {
		if !slices.Contains(topLevel, m.key) {
			continue
		}
		if m.key == "content" {
			if m.value, err = redactContent(m.value, rv.Redaction, eventType); err != nil {
				return nil, err
			}
		}
		kept = append(kept, m)
	}
	if findMember(kept, "content") == nil {
		kept = setMember(kept, "content", []byte("{}"))
	}
	return appendObject(make([]byte, 0, len(canonical)), kept), nil
}

// redactContent keeps the protected keys of a canonical content object.
func redactContent(content []byte, rules RedactionRules, eventType string) ([]byte, error) {
	if len(content) == 0 || content[0] != '{' {
		return []byte("{}"), nil
	}
	keys, keepAll := redactionContentKeys(rules, eventType)
	if keepAll {
		return content, nil
	}
	members, err := splitCanonicalObject(content)
	if err != nil {
		return nil, err
	}
	kept := members[:0]
	for _, m := range members {
		switch {
		case slices.Contains(keys, m.key):
			kept = append(kept, m)
		case rules >= RedactionV11 && eventType == "m.room.member" && m.key == "third_party_invite":
			// v11: third_party_invite is kept with only its "signed" key. NOTSPEC: a
			// non-object is dropped and an object without "signed" becomes {}, as Synapse.
			if len(m.value) == 0 || m.value[0] != '{' {
				continue
			}
			invite, err := splitCanonicalObject(m.value)
			if err != nil {
				return nil, err
			}
			var signedOnly []jsonMember
			if signed := findMember(invite, "signed"); signed != nil {
				signedOnly = []jsonMember{{key: "signed", value: signed}}
			}
			kept = append(kept, jsonMember{key: m.key, value: appendObject(nil, signedOnly)})
		}
	}
	return appendObject(nil, kept), nil
}

// Redacted returns the event with the redaction algorithm of its room version applied. The
// event ID is unchanged: it never depended on the redactable parts.
func (e *Event) Redacted() (*Event, error) {
	raw, err := redactCanonical(e.raw, e.version)
	if err != nil {
		return nil, err
	}
	members, err := splitCanonicalObject(raw)
	if err != nil {
		return nil, err
	}
	redacted := &Event{version: e.version, eventID: e.eventID, raw: raw, fields: e.fields}
	redacted.fields.Content = findMember(members, "content")
	redacted.fields.Unsigned = nil
	redacted.fields.Redacts = "" // top-level "redacts" is never protected
	return redacted, nil
}
