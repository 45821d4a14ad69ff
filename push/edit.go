package push

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"unicode/utf8"
)

// The edits of the push rules API ("Push Rules: API", pushrules.yaml), as functions from a
// ruleset to a new one. None of them changes the ruleset it is given.

// Errors of the edits; the API answers each with its own status.
var (
	// ErrNotFound: no rule of that kind has that ID (404 M_NOT_FOUND).
	ErrNotFound = errors.New("push rule not found")
	// ErrAnchorNotFound: before or after names no user-defined rule of the kind.
	ErrAnchorNotFound = errors.New("before/after rule not found")
	// ErrInvalidRuleID: the rule ID may not be used for a user-defined rule.
	ErrInvalidRuleID = errors.New("invalid push rule ID")
	// ErrInvalidRule: the rule's actions, conditions or pattern are not valid.
	ErrInvalidRule = errors.New("invalid push rule")
	// ErrServerDefault: server-default rules cannot be deleted.
	ErrServerDefault = errors.New("server-default push rules cannot be deleted")
	// ErrTooManyRules: the edit would pass MaxUserRules or MaxRulesetSize.
	ErrTooManyRules = errors.New("too many push rules")
)

// Limits on what a user may store. NOTSPEC: the spec sets none; these keep a ruleset,
// which every /sync may carry, small, while far above what clients write (Element keeps a
// rule per muted room or keyword, each a few hundred bytes).
const (
	// MaxUserRules bounds the user-defined rules of a user, all kinds together.
	MaxUserRules = 1000
	// MaxRuleIDLength bounds a rule ID, in bytes: room and user IDs, the rule IDs of room
	// and sender rules, are at most 255 bytes.
	MaxRuleIDLength = 255
	// MaxConditions and MaxActions bound the conditions and actions of one rule.
	MaxConditions = 32
	MaxActions    = 32
	// MaxParamLength bounds, in bytes, a condition's kind, key, pattern, is and string
	// value, a content rule's pattern, a tweak's name and the JSON of its value.
	MaxParamLength = 1024
	// MaxRuleSize bounds the JSON of one rule, in bytes.
	MaxRuleSize = 16 << 10
	// MaxRulesetSize bounds the JSON of a whole ruleset, in bytes.
	MaxRulesetSize = 512 << 10
)

// Get returns the rule of kind with ruleID; ErrNotFound if there is none.
func Get(rs Ruleset, kind Kind, ruleID string) (Rule, error) {
	i := indexOf(rs.Rules(kind), ruleID)
	if i < 0 {
		return Rule{}, fmt.Errorf("%w: %s %s", ErrNotFound, kind, ruleID)
	}
	return rs.Rules(kind)[i], nil
}

// Put adds a user-defined rule of kind, or replaces the one with its rule ID (pushrules.yaml
// setPushRule). rule needs an ID that ValidateRuleID accepts and actions; override and
// underride rules use its conditions (none: the rule matches every event), content rules
// its pattern; the other parameters are ignored. Historical actions are stripped.
//
// A new rule is enabled. With before, the rule goes right before that user-defined rule;
// else with after, right after it; a rule named by either that is not a user-defined rule
// of kind is ErrAnchorNotFound. A new rule without either becomes the most important
// user-defined rule of its kind. NOTSPEC: a replaced rule without either keeps its place and
// its enabled state (the spec speaks only of created rules; Synapse moves it to the top).
func Put(rs Ruleset, kind Kind, rule Rule, before, after string) (Ruleset, error) {
	if rs.rulesOf(kind) == nil {
		return rs, fmt.Errorf("%w: unknown kind %q", ErrInvalidRule, kind)
	}
	if err := ValidateRuleID(rule.RuleID); err != nil {
		return rs, err
	}
	rule, err := checkUserRule(kind, rule)
	if err != nil {
		return rs, err
	}
	rules := rs.Rules(kind)
	existing := indexOf(rules, rule.RuleID)
	var rest []Rule
	if existing >= 0 {
		rule.Enabled = rules[existing].Enabled
		rest = slices.Delete(slices.Clone(rules), existing, existing+1)
	} else {
		if userRuleCount(rs) >= MaxUserRules {
			return rs, fmt.Errorf("%w: at most %d user-defined rules", ErrTooManyRules, MaxUserRules)
		}
		rule.Enabled = true
		rest = slices.Clone(rules)
	}
	var at int
	switch {
	case before != "":
		if at = userIndexOf(rest, before); at < 0 {
			return rs, fmt.Errorf("%w: %s", ErrAnchorNotFound, before)
		}
	case after != "":
		if at = userIndexOf(rest, after); at < 0 {
			return rs, fmt.Errorf("%w: %s", ErrAnchorNotFound, after)
		}
		at++
	case existing >= 0:
		at = existing
	default:
		for at < len(rest) && rest[at].Default && prependedDefaults[rest[at].RuleID] {
			at++
		}
	}
	out := rs
	*out.rulesOf(kind) = slices.Insert(rest, at, rule)
	if err := checkRulesetSize(out); err != nil {
		return rs, err
	}
	return out, nil
}

// Delete removes a user-defined rule (pushrules.yaml deletePushRule): ErrNotFound if there
// is none, ErrServerDefault for a server-default rule.
func Delete(rs Ruleset, kind Kind, ruleID string) (Ruleset, error) {
	rules := rs.Rules(kind)
	i := indexOf(rules, ruleID)
	if i < 0 {
		return rs, fmt.Errorf("%w: %s %s", ErrNotFound, kind, ruleID)
	}
	if rules[i].Default {
		return rs, fmt.Errorf("%w: %s", ErrServerDefault, ruleID)
	}
	out := rs
	*out.rulesOf(kind) = slices.Delete(slices.Clone(rules), i, i+1)
	return out, nil
}

// SetEnabled enables or disables a rule, server-default rules included
// (pushrules.yaml setPushRuleEnabled); ErrNotFound if there is none.
func SetEnabled(rs Ruleset, kind Kind, ruleID string, enabled bool) (Ruleset, error) {
	return modify(rs, kind, ruleID, func(r *Rule) error {
		r.Enabled = enabled
		return nil
	})
}

// SetActions changes the actions of a rule, server-default rules included
// (pushrules.yaml setPushRuleActions: "This can be used to change the actions of builtin
// rules"); ErrNotFound if there is none. Historical actions are stripped.
func SetActions(rs Ruleset, kind Kind, ruleID string, actions []Action) (Ruleset, error) {
	checked, err := checkActions(actions)
	if err != nil {
		return rs, err
	}
	out, err := modify(rs, kind, ruleID, func(r *Rule) error {
		r.Actions = checked
		return checkRuleSize(*r)
	})
	if err != nil {
		return rs, err
	}
	if err := checkRulesetSize(out); err != nil {
		return rs, err
	}
	return out, nil
}

// modify applies change to a copy of one rule.
func modify(rs Ruleset, kind Kind, ruleID string, change func(*Rule) error) (Ruleset, error) {
	rules := rs.Rules(kind)
	i := indexOf(rules, ruleID)
	if i < 0 {
		return rs, fmt.Errorf("%w: %s %s", ErrNotFound, kind, ruleID)
	}
	rules = slices.Clone(rules)
	if err := change(&rules[i]); err != nil {
		return rs, err
	}
	out := rs
	*out.rulesOf(kind) = rules
	return out, nil
}

// ValidateRuleID checks the ID of a user-defined rule (pushrules.yaml setPushRule): "If the
// string starts with a dot ("."), the request MUST be rejected as this is reserved for
// server-default rules. Slashes ("/") and backslashes ("\") are also not allowed." It must
// also be 1 to MaxRuleIDLength bytes of UTF-8.
func ValidateRuleID(ruleID string) error {
	switch {
	case ruleID == "" || len(ruleID) > MaxRuleIDLength:
		return fmt.Errorf("%w: rule IDs are 1 to %d bytes", ErrInvalidRuleID, MaxRuleIDLength)
	case strings.HasPrefix(ruleID, "."):
		return fmt.Errorf("%w: rule IDs starting with '.' are reserved for server-default rules", ErrInvalidRuleID)
	case strings.ContainsAny(ruleID, `/\`):
		return fmt.Errorf("%w: rule IDs may not contain slashes or backslashes", ErrInvalidRuleID)
	case !utf8.ValidString(ruleID):
		return fmt.Errorf("%w: rule IDs must be UTF-8", ErrInvalidRuleID)
	}
	return nil
}

// checkUserRule validates a user-defined rule and gives it the shape of its kind.
func checkUserRule(kind Kind, r Rule) (Rule, error) {
	actions, err := checkActions(r.Actions)
	if err != nil {
		return r, err
	}
	r.Actions = actions
	r = normalizeUserRule(kind, r)
	switch {
	case kind.hasConditions():
		if len(r.Conditions) > MaxConditions {
			return r, fmt.Errorf("%w: at most %d conditions", ErrInvalidRule, MaxConditions)
		}
		for i := range r.Conditions {
			if err := checkCondition(&r.Conditions[i]); err != nil {
				return r, err
			}
		}
	case kind == Content:
		if r.Pattern == "" || len(r.Pattern) > MaxParamLength {
			return r, fmt.Errorf("%w: content rules need a pattern of 1 to %d bytes", ErrInvalidRule, MaxParamLength)
		}
	}
	return r, checkRuleSize(r)
}

// checkActions validates the actions of a rule as Synapse does: "notify", the historical
// "dont_notify" and "coalesce", which are stripped ("Historical Actions": "for instance, by
// stripping them from actions arrays they encounter"), or set_tweak objects. Unknown
// actions are refused.
func checkActions(actions []Action) ([]Action, error) {
	if actions == nil {
		return nil, fmt.Errorf("%w: actions are required", ErrInvalidRule)
	}
	if len(actions) > MaxActions {
		return nil, fmt.Errorf("%w: at most %d actions", ErrInvalidRule, MaxActions)
	}
	out := make([]Action, 0, len(actions))
	for _, a := range actions {
		switch a.Name {
		case ActionNotify:
			out = append(out, a)
		case ActionDontNotify, ActionCoalesce:
		case ActionSetTweak:
			if a.Tweak == "" || len(a.Tweak) > MaxParamLength || len(a.Value) > MaxParamLength {
				return nil, fmt.Errorf("%w: set_tweak needs a name of 1 to %d bytes and a value of at most %[2]d", ErrInvalidRule, MaxParamLength)
			}
			if a.Value != nil && !json.Valid(a.Value) {
				return nil, fmt.Errorf("%w: set_tweak value is not JSON", ErrInvalidRule)
			}
			out = append(out, a)
		default:
			return nil, fmt.Errorf("%w: unknown action %q", ErrInvalidRule, a.Name)
		}
	}
	return out, nil
}

// checkCondition validates a condition: every string at most MaxParamLength bytes, and the
// parameters the spec requires for the kinds it defines (push_condition.yaml). Conditions
// of other kinds are kept; they never match.
func checkCondition(c *Condition) error {
	s, _ := c.Value.AsString()
	for _, field := range []string{c.Kind, c.Key, c.Pattern, c.Is, s} {
		if len(field) > MaxParamLength {
			return fmt.Errorf("%w: condition parameters are at most %d bytes", ErrInvalidRule, MaxParamLength)
		}
	}
	hasKeyParam := c.Key != "" || c.present&hasKey != 0
	switch c.Kind {
	case "":
		return fmt.Errorf("%w: conditions need a kind", ErrInvalidRule)
	case EventMatch:
		if !hasKeyParam || (c.Pattern == "" && c.present&hasPattern == 0) {
			return fmt.Errorf("%w: event_match needs key and pattern", ErrInvalidRule)
		}
	case EventPropertyIs, EventPropertyContains:
		if !hasKeyParam || !c.Value.comparable() {
			return fmt.Errorf("%w: %s needs key and a value that is a string, integer, boolean or null", ErrInvalidRule, c.Kind)
		}
	case RoomMemberCount:
		if _, _, ok := parseMemberCount(c.Is); !ok {
			return fmt.Errorf("%w: room_member_count needs is, a decimal integer after ==, <, >, >= or <=", ErrInvalidRule)
		}
	case SenderNotificationPermission:
		if c.Key == "" {
			return fmt.Errorf("%w: sender_notification_permission needs key", ErrInvalidRule)
		}
	}
	return nil
}

// checkRuleSize bounds the JSON of one rule.
func checkRuleSize(r Rule) error {
	encoded, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRule, err)
	}
	if len(encoded) > MaxRuleSize {
		return fmt.Errorf("%w: a rule's JSON is at most %d bytes", ErrInvalidRule, MaxRuleSize)
	}
	return nil
}

// checkRulesetSize bounds the JSON of a whole ruleset.
func checkRulesetSize(rs Ruleset) error {
	encoded, err := json.Marshal(rs)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidRule, err)
	}
	if len(encoded) > MaxRulesetSize {
		return fmt.Errorf("%w: a ruleset's JSON is at most %d bytes", ErrTooManyRules, MaxRulesetSize)
	}
	return nil
}

// indexOf finds a rule by ID; -1 if there is none.
func indexOf(rules []Rule, ruleID string) int {
	return slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID })
}

// userIndexOf finds a user-defined rule by ID; -1 if there is none. "It is not possible to
// add a rule relative to a predefined server rule."
func userIndexOf(rules []Rule, ruleID string) int {
	return slices.IndexFunc(rules, func(r Rule) bool { return r.RuleID == ruleID && !r.Default })
}

// userRuleCount counts the user-defined rules of every kind.
func userRuleCount(rs Ruleset) int {
	n := 0
	for _, kind := range Kinds {
		for _, r := range rs.Rules(kind) {
			if !r.Default {
				n++
			}
		}
	}
	return n
}
