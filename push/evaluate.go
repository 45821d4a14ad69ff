package push

import (
	"bytes"
	"encoding/json"
	"errors"
	"slices"
	"strconv"
	"strings"
)

// EvalEvent is an event as push rules see it: its client-format JSON flattened once into
// dot-separated property paths (appendices "Dot-separated property paths"), with the dots
// and backslashes of property names escaped by a backslash. Paths do not reach into
// arrays. Build it once per event; it serves every user the event is evaluated for.
type EvalEvent struct {
	props  map[string]Value   // properties whose values conditions compare
	arrays map[string][]Value // array properties: their elements that conditions compare
}

// NewEvalEvent flattens an event in client format.
func NewEvalEvent(clientJSON []byte) (EvalEvent, error) {
	dec := json.NewDecoder(bytes.NewReader(clientJSON))
	dec.UseNumber()
	var object map[string]any
	if err := dec.Decode(&object); err != nil {
		return EvalEvent{}, err
	}
	if object == nil {
		return EvalEvent{}, errors.New("push: event is not a JSON object")
	}
	e := EvalEvent{props: map[string]Value{}, arrays: map[string][]Value{}}
	e.flatten("", true, object)
	return e, nil
}

// flatten adds the properties of an object at path prefix (at the root of the event when
// root, as a property named "" is not the root).
func (e *EvalEvent) flatten(prefix string, root bool, object map[string]any) {
	for name, v := range object {
		path := escapePathKey(name)
		if !root {
			path = prefix + "." + path
		}
		switch v := v.(type) {
		case map[string]any:
			e.flatten(path, false, v)
		case []any:
			values := make([]Value, 0, len(v))
			for _, element := range v {
				if value, ok := comparableValue(element); ok {
					values = append(values, value)
				}
			}
			e.arrays[path] = values
		default:
			if value, ok := comparableValue(v); ok {
				e.props[path] = value
			}
		}
	}
}

// comparableValue converts a decoded JSON scalar to a Value; integers out of canonical
// JSON's range and fractions are not compared.
func comparableValue(v any) (Value, bool) {
	switch v := v.(type) {
	case nil:
		return NullValue(), true
	case bool:
		return BoolValue(v), true
	case string:
		return StringValue(v), true
	case json.Number:
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil && n >= -maxSafeInteger && n <= maxSafeInteger {
			return IntValue(n), true
		}
	}
	return Value{}, false
}

// Property returns the string, integer, boolean or null value at a dot-separated path.
func (e EvalEvent) Property(path string) (Value, bool) {
	v, ok := e.props[canonicalPath(path)]
	return v, ok
}

// str returns the string at a path already canonical.
func (e EvalEvent) str(path string) (string, bool) {
	return e.props[path].AsString()
}

// escapePathKey escapes a property name for a dot-separated path: "any literal dot or
// backslash found in a property name should be escaped with a backslash".
func escapePathKey(name string) string {
	if !strings.ContainsAny(name, `.\`) {
		return name
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] == '.' || name[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(name[i])
	}
	return b.String()
}

// canonicalPath rewrites a path of a condition the way the event's paths are written:
// "Other escape sequences are left as-is, e.g. a \x would be treated as a literal
// backslash followed by 'x'", so such a backslash, or one at the end, becomes \\.
func canonicalPath(path string) string {
	first := strings.IndexByte(path, '\\')
	if first < 0 {
		return path
	}
	escaped := func(i int) bool { return i+1 < len(path) && (path[i+1] == '.' || path[i+1] == '\\') }
	canonical := true
	for i := first; i < len(path); i++ {
		if path[i] == '\\' {
			if !escaped(i) {
				canonical = false
				break
			}
			i++
		}
	}
	if canonical {
		return path
	}
	var b strings.Builder
	b.WriteString(path[:first])
	for i := first; i < len(path); i++ {
		if path[i] != '\\' {
			b.WriteByte(path[i])
			continue
		}
		if escaped(i) {
			b.WriteString(path[i : i+2])
			i++
			continue
		}
		b.WriteString(`\\`)
	}
	return b.String()
}

// EvalContext is what push rules know of the user and the room beyond the event.
type EvalContext struct {
	// UserID is the user whose rules are evaluated.
	UserID string
	// DisplayName is the user's display name in the room; "" when they have none
	// (contains_display_name never matches then).
	DisplayName string
	// MemberCount is the number of joined members of the room (room_member_count).
	MemberCount int
	// PowerLevels gives the power levels of the room for sender_notification_permission; it
	// is called at most once per Evaluate, and only when a rule asks. Nil, or a nil answer,
	// means the sender has no permission.
	PowerLevels func() *PowerLevels
}

// PowerLevels are the power levels that sender_notification_permission compares.
type PowerLevels struct {
	// Sender is the power level of the event's sender.
	Sender int64
	// Notifications is the notifications object of the room's m.room.power_levels; a key
	// that is missing asks for 50 (m.room.power_levels: "room" defaults to 50).
	Notifications map[string]int64
}

// defaultNotificationLevel is the level a notifications key asks for when the power levels
// do not name it. NOTSPEC for keys other than "room": Synapse uses 50 for all.
const defaultNotificationLevel = 50

// Result is the outcome of a user's rules for an event.
type Result struct {
	// Kind and RuleID name the rule that matched; RuleID is "" when none did.
	Kind   Kind
	RuleID string
	// Notify is whether the event notifies: the rule's actions have "notify".
	Notify bool
	// Highlight and Sound are the highlight and sound tweaks of the actions: a highlight
	// tweak without a value is true ("Actions"), and no tweak is false and "".
	Highlight bool
	Sound     string
	// Actions are the matched rule's actions, for the tweaks a push gateway is sent.
	Actions []Action
}

// Evaluate applies a user's rules to an event ("Push Rules"): the first enabled rule that
// matches, in the order of Kinds and each kind's priority order, gives the actions. Override
// and underride rules match when all their conditions hold, content rules when their
// pattern matches content.body at word boundaries, room rules when the event's room_id is
// their rule ID, sender rules when its sender is. The user's own events match nothing:
// "Homeservers MUST NOT notify the Push Gateway for events that the user has sent
// themselves."
func Evaluate(rs Ruleset, ev EvalEvent, ctx EvalContext) Result {
	if sender, ok := ev.str("sender"); ok && sender == ctx.UserID {
		return Result{}
	}
	e := evaluation{event: &ev, ctx: &ctx}
	for _, kind := range Kinds {
		rules := rs.Rules(kind)
		for i := range rules {
			if rules[i].Enabled && e.matches(kind, &rules[i]) {
				return resultOf(kind, &rules[i])
			}
		}
	}
	return Result{}
}

// evaluation is one Evaluate, with the power levels once they have been asked for.
type evaluation struct {
	event        *EvalEvent
	ctx          *EvalContext
	levels       *PowerLevels
	levelsLoaded bool
}

func (e *evaluation) matches(kind Kind, r *Rule) bool {
	switch kind {
	case Content:
		body, ok := e.event.str("content.body")
		return ok && r.Pattern != "" && wordMatch(r.Pattern, body)
	case Room:
		roomID, ok := e.event.str("room_id")
		return ok && roomID == r.RuleID
	case Sender:
		sender, ok := e.event.str("sender")
		return ok && sender == r.RuleID
	}
	for i := range r.Conditions {
		if !e.holds(&r.Conditions[i]) {
			return false
		}
	}
	return true
}

// holds reports whether a condition holds ("Conditions"). Unrecognised conditions "MUST
// NOT match any events".
func (e *evaluation) holds(c *Condition) bool {
	switch c.Kind {
	case EventMatch:
		path := canonicalPath(c.Key)
		value, ok := e.event.str(path)
		if !ok {
			return false
		}
		if path == "content.body" {
			return wordMatch(c.Pattern, value)
		}
		return globMatch(c.Pattern, value)
	case EventPropertyIs:
		value, ok := e.event.props[canonicalPath(c.Key)]
		return ok && c.Value.comparable() && value == c.Value
	case EventPropertyContains:
		values, ok := e.event.arrays[canonicalPath(c.Key)]
		return ok && c.Value.comparable() && slices.Contains(values, c.Value)
	case ContainsDisplayName:
		body, ok := e.event.str("content.body")
		return ok && e.ctx.DisplayName != "" && literalWordMatch(e.ctx.DisplayName, body)
	case RoomMemberCount:
		op, n, ok := parseMemberCount(c.Is)
		return ok && compareCount(int64(e.ctx.MemberCount), op, n)
	case SenderNotificationPermission:
		levels := e.powerLevels()
		if c.Key == "" || levels == nil {
			return false
		}
		required, ok := levels.Notifications[c.Key]
		if !ok {
			required = defaultNotificationLevel
		}
		return levels.Sender >= required
	}
	return false
}

func (e *evaluation) powerLevels() *PowerLevels {
	if !e.levelsLoaded {
		e.levelsLoaded = true
		if e.ctx.PowerLevels != nil {
			e.levels = e.ctx.PowerLevels()
		}
	}
	return e.levels
}

// parseMemberCount reads the is of room_member_count: "A decimal integer optionally
// prefixed by one of, ==, <, >, >= or <=. [...] If no prefix is present, this parameter
// defaults to ==."
func parseMemberCount(is string) (op string, n int64, ok bool) {
	op = "=="
	for _, prefix := range []string{"==", "<=", ">=", "<", ">"} {
		if strings.HasPrefix(is, prefix) {
			op, is = prefix, is[len(prefix):]
			break
		}
	}
	if is == "" || strings.TrimLeft(is, "0123456789") != "" {
		return "", 0, false
	}
	n, err := strconv.ParseInt(is, 10, 64)
	return op, n, err == nil
}

func compareCount(count int64, op string, n int64) bool {
	switch op {
	case "<":
		return count < n
	case ">":
		return count > n
	case "<=":
		return count <= n
	case ">=":
		return count >= n
	}
	return count == n
}

// resultOf reads the actions of the matched rule. Historical actions are ignored; of
// repeated tweaks the last counts.
func resultOf(kind Kind, r *Rule) Result {
	res := Result{Kind: kind, RuleID: r.RuleID, Actions: r.Actions}
	for _, a := range r.Actions {
		switch {
		case a.Name == ActionNotify:
			res.Notify = true
		case a.Name != ActionSetTweak:
		case a.Tweak == TweakHighlight:
			// No value means true; a value other than true (false, or not a boolean) is false.
			res.Highlight = a.Value == nil || bytes.Equal(a.Value, []byte("true"))
		case a.Tweak == TweakSound:
			res.Sound, _ = parseValue(a.Value).AsString()
		}
	}
	return res
}
