// Package push is the push rules concern of the client-server API (spec v1.19, "Push
// Rules", "Predefined Rules", "Push Rules: API"): rulesets and their exact JSON, the
// server-default rules, the evaluation of an event against a user's rules, and the edits
// the push rules API makes. It is pure: no I/O, no clock, no storage.
package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// Kind is the kind of a push rule ("Push Rules").
type Kind string

// The kinds of rule.
const (
	Override  Kind = "override"
	Content   Kind = "content"
	Room      Kind = "room"
	Sender    Kind = "sender"
	Underride Kind = "underride"
)

// Kinds are the kinds of rule in the order they are checked ("Push Rules": override,
// content, room, sender, underride).
var Kinds = [...]Kind{Override, Content, Room, Sender, Underride}

// ParseKind reads the kind of a rule, as the {kind} of the push rules API.
func ParseKind(s string) (Kind, bool) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, true
		}
	}
	return "", false
}

// hasConditions reports whether rules of the kind carry conditions: only override and
// underride rules do ("Conditions"); content, room and sender rules have predefined ones.
func (k Kind) hasConditions() bool { return k == Override || k == Underride }

// Ruleset is a user's global push ruleset (definitions/push_ruleset.yaml), each kind's
// rules in priority order, most important first.
type Ruleset struct {
	Override  []Rule `json:"override"`
	Content   []Rule `json:"content"`
	Room      []Rule `json:"room"`
	Sender    []Rule `json:"sender"`
	Underride []Rule `json:"underride"`
}

// Rules are the rules of one kind, in priority order.
func (rs *Ruleset) Rules(kind Kind) []Rule {
	if p := rs.rulesOf(kind); p != nil {
		return *p
	}
	return nil
}

// rulesOf points at the rules of one kind; nil for an unknown kind.
func (rs *Ruleset) rulesOf(kind Kind) *[]Rule {
	switch kind {
	case Override:
		return &rs.Override
	case Content:
		return &rs.Content
	case Room:
		return &rs.Room
	case Sender:
		return &rs.Sender
	case Underride:
		return &rs.Underride
	}
	return nil
}

// MarshalJSON writes every kind, an empty list rather than null for kinds without rules:
// clients iterate over each of them.
func (rs Ruleset) MarshalJSON() ([]byte, error) {
	type plain Ruleset
	out := plain(rs)
	for _, kind := range Kinds {
		if p := (*Ruleset)(&out).rulesOf(kind); *p == nil {
			*p = []Rule{}
		}
	}
	return json.Marshal(out)
}

// Rule is one push rule (definitions/push_rule.yaml). Conditions are those of override and
// underride rules: nil for the other kinds, which then carry no "conditions" key, while an
// override or underride rule always has a list, [] when it matches every event. Pattern is
// that of content rules.
type Rule struct {
	RuleID     string      `json:"rule_id"`
	Default    bool        `json:"default"`
	Enabled    bool        `json:"enabled"`
	Conditions []Condition `json:"conditions,omitzero"`
	Actions    []Action    `json:"actions"`
	Pattern    string      `json:"pattern,omitempty"`
}

// MarshalJSON writes actions as [] rather than null.
func (r Rule) MarshalJSON() ([]byte, error) {
	type plain Rule
	out := plain(r)
	if out.Actions == nil {
		out.Actions = []Action{}
	}
	return json.Marshal(out)
}

// Condition kinds ("Conditions").
const (
	EventMatch                   = "event_match"
	EventPropertyIs              = "event_property_is"
	EventPropertyContains        = "event_property_contains"
	ContainsDisplayName          = "contains_display_name"
	RoomMemberCount              = "room_member_count"
	SenderNotificationPermission = "sender_notification_permission"
)

// Condition is one condition of an override or underride rule
// (definitions/push_condition.yaml). Which parameters a kind uses is in "Conditions"; a
// condition of a kind this server does not know never matches, and its other keys are kept
// in Extra, as they came, so that the rule reads back as it was written.
type Condition struct {
	Kind    string
	Key     string // event_match, event_property_is/contains, sender_notification_permission
	Pattern string // event_match
	Is      string // room_member_count
	Value   Value  // event_property_is/contains; the zero Value when absent
	Extra   map[string]json.RawMessage

	// present records which of key, pattern and is the JSON had, so that an empty one
	// (.m.rule.tombstone's state_key pattern "") is written back.
	present uint8
}

const (
	hasKey uint8 = 1 << iota
	hasPattern
	hasIs
)

// usesKey, usesPattern and usesIs tell which parameters a known kind always writes.
func (c *Condition) usesKey() bool {
	switch c.Kind {
	case EventMatch, EventPropertyIs, EventPropertyContains, SenderNotificationPermission:
		return true
	}
	return false
}
func (c *Condition) usesPattern() bool { return c.Kind == EventMatch }
func (c *Condition) usesIs() bool      { return c.Kind == RoomMemberCount }

// MarshalJSON writes the condition's kind, the parameters it has and its extra keys.
func (c Condition) MarshalJSON() ([]byte, error) {
	out := make(map[string]any, 3+len(c.Extra))
	for k, v := range c.Extra {
		out[k] = v
	}
	out["kind"] = c.Kind
	if c.Key != "" || c.present&hasKey != 0 || c.usesKey() {
		out["key"] = c.Key
	}
	if c.Pattern != "" || c.present&hasPattern != 0 || c.usesPattern() {
		out["pattern"] = c.Pattern
	}
	if c.Is != "" || c.present&hasIs != 0 || c.usesIs() {
		out["is"] = c.Is
	}
	if !c.Value.IsZero() {
		out["value"] = c.Value
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads a condition: an object with a string kind; key, pattern and is, when
// present, must be strings.
func (c *Condition) UnmarshalJSON(data []byte) error {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(data, &fields); err != nil {
		return err
	}
	if fields == nil {
		return errors.New("push condition must be an object")
	}
	*c = Condition{}
	kind, ok := fields["kind"]
	if !ok || bytes.Equal(kind, []byte("null")) || json.Unmarshal(kind, &c.Kind) != nil {
		return errors.New("push condition needs a string kind")
	}
	for name, raw := range fields {
		var target *string
		var bit uint8
		switch name {
		case "kind":
			continue
		case "key":
			target, bit = &c.Key, hasKey
		case "pattern":
			target, bit = &c.Pattern, hasPattern
		case "is":
			target, bit = &c.Is, hasIs
		case "value":
			c.Value = parseValue(raw)
			continue
		default:
			var compact bytes.Buffer
			if err := json.Compact(&compact, raw); err != nil {
				return err
			}
			if c.Extra == nil {
				c.Extra = map[string]json.RawMessage{}
			}
			c.Extra[name] = compact.Bytes()
			continue
		}
		if bytes.Equal(raw, []byte("null")) || json.Unmarshal(raw, target) != nil {
			return fmt.Errorf("push condition %s must be a string", name)
		}
		c.present |= bit
	}
	return nil
}

// Action names ("Actions", "Historical Actions").
const (
	ActionNotify   = "notify"
	ActionSetTweak = "set_tweak"
	// ActionDontNotify and ActionCoalesce are historical: accepted, and ignored.
	ActionDontNotify = "dont_notify"
	ActionCoalesce   = "coalesce"
)

// Tweaks the spec defines ("Actions").
const (
	TweakSound     = "sound"
	TweakHighlight = "highlight"
)

// Action is one action of a rule ("Actions"): a string such as "notify", or a set_tweak
// object, {"set_tweak": Tweak, "value": Value} (value left out when Value is nil). Tweak
// values are passed through as they are.
type Action struct {
	Name  string
	Tweak string
	Value json.RawMessage
}

// MarshalJSON writes a set_tweak as its object and every other action as its name.
func (a Action) MarshalJSON() ([]byte, error) {
	if a.Name != ActionSetTweak {
		return json.Marshal(a.Name)
	}
	if a.Value == nil {
		return json.Marshal(map[string]string{"set_tweak": a.Tweak})
	}
	return json.Marshal(map[string]any{"set_tweak": a.Tweak, "value": a.Value})
}

// UnmarshalJSON reads an action: a string, or an object with a string set_tweak. Other
// objects are refused, as Synapse refuses them.
func (a *Action) UnmarshalJSON(data []byte) error {
	*a = Action{}
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &a.Name); err != nil {
			return err
		}
		if a.Name == ActionSetTweak {
			return errors.New("set_tweak must be an object")
		}
		return nil
	}
	var object struct {
		SetTweak *string         `json:"set_tweak"`
		Value    json.RawMessage `json:"value"`
	}
	if len(data) == 0 || data[0] != '{' {
		return errors.New("push action must be a string or an object")
	}
	if err := json.Unmarshal(data, &object); err != nil {
		return err
	}
	if object.SetTweak == nil {
		return errors.New("push action object must be a set_tweak")
	}
	a.Name, a.Tweak = ActionSetTweak, *object.SetTweak
	if object.Value != nil {
		var compact bytes.Buffer
		if err := json.Compact(&compact, object.Value); err != nil {
			return err
		}
		a.Value = compact.Bytes()
	}
	return nil
}

// Value is the value of an event_property_is or event_property_contains condition, or of
// an event property: a string, an integer in [-(2**53)+1, (2**53)-1], a boolean or null,
// the non-compound canonical JSON values these conditions compare ("Conditions"). The
// zero Value is absent. Values compare with ==; values of other JSON (objects, arrays,
// fractions, integers out of range) are kept as their JSON and never match.
type Value struct {
	kind valueKind
	str  string // the string; the JSON of other values
	num  int64  // the integer; 1 for true
}

type valueKind uint8

const (
	absentValue valueKind = iota
	nullValue
	boolValue
	intValue
	stringValue
	otherValue
)

// maxSafeInteger bounds the integers of canonical JSON: (2**53)-1.
const maxSafeInteger = 1<<53 - 1

// StringValue, IntValue, BoolValue and NullValue make the values a condition compares.
func StringValue(s string) Value { return Value{kind: stringValue, str: s} }
func IntValue(n int64) Value {
	if n > maxSafeInteger || n < -maxSafeInteger {
		return Value{kind: otherValue, str: strconv.FormatInt(n, 10)}
	}
	return Value{kind: intValue, num: n}
}
func BoolValue(b bool) Value {
	v := Value{kind: boolValue}
	if b {
		v.num = 1
	}
	return v
}
func NullValue() Value { return Value{kind: nullValue} }

// IsZero reports whether the value is absent.
func (v Value) IsZero() bool { return v.kind == absentValue }

// comparable reports whether the value is one that conditions compare.
func (v Value) comparable() bool { return v.kind != absentValue && v.kind != otherValue }

// AsString returns the value of a string Value.
func (v Value) AsString() (string, bool) { return v.str, v.kind == stringValue }

// MarshalJSON writes the value as JSON; an absent value as null.
func (v Value) MarshalJSON() ([]byte, error) {
	switch v.kind {
	case boolValue:
		return strconv.AppendBool(nil, v.num == 1), nil
	case intValue:
		return strconv.AppendInt(nil, v.num, 10), nil
	case stringValue:
		return json.Marshal(v.str)
	case otherValue:
		return []byte(v.str), nil
	}
	return []byte("null"), nil
}

// UnmarshalJSON reads any JSON value.
func (v *Value) UnmarshalJSON(data []byte) error {
	if !json.Valid(data) {
		return errors.New("invalid JSON value")
	}
	*v = parseValue(data)
	return nil
}

// parseValue reads a JSON value known to be valid.
func parseValue(raw []byte) Value {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return Value{}
	}
	switch c := raw[0]; {
	case c == 'n':
		return NullValue()
	case c == 't' || c == 'f':
		return BoolValue(c == 't')
	case c == '"':
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return StringValue(s)
		}
	case c == '-' || (c >= '0' && c <= '9'):
		if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			return IntValue(n)
		}
	}
	var compact bytes.Buffer
	if json.Compact(&compact, raw) != nil {
		return Value{}
	}
	return Value{kind: otherValue, str: compact.String()}
}
