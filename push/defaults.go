package push

import (
	_ "embed"
	"encoding/json"
	"slices"
	"strings"
)

// The server-default rules ("Predefined Rules") are data: predefined_rules.json holds each
// rule's definition as v1.19 gives it, in the spec's order, with the spec's placeholder for
// the user's Matrix ID. v1.17 removed the legacy rules that looked for mentions in the body
// (.m.rule.contains_display_name, .m.rule.roomnotif, .m.rule.contains_user_name), so there
// are no default content rules.

//go:embed predefined_rules.json
var predefinedJSON []byte

// userIDPlaceholder stands for the user's Matrix ID in the predefined rules.
const userIDPlaceholder = "[the user's Matrix ID]"

// predefined are the predefined rules with the placeholder still in them.
var predefined = func() Ruleset {
	var rs Ruleset
	if err := json.Unmarshal(predefinedJSON, &rs); err != nil {
		panic("push: predefined_rules.json: " + err.Error())
	}
	return rs
}()

// prependedDefaults are the server-default rules that come before the user's rules of
// their kind: "Unlike other server-default rules, [.m.rule.master] has always a higher
// priority than other rules, even user defined ones". Every other server-default rule
// comes after them.
var prependedDefaults = map[string]bool{".m.rule.master": true}

// Defaults is the ruleset of a user who has changed nothing: every predefined rule of
// v1.19, for userID.
func Defaults(userID string) Ruleset {
	var rs Ruleset
	for _, kind := range Kinds {
		src := predefined.Rules(kind)
		if len(src) == 0 {
			continue
		}
		rules := make([]Rule, len(src))
		for i, r := range src {
			r.Conditions = slices.Clone(r.Conditions)
			for j := range r.Conditions {
				c := &r.Conditions[j]
				if c.Pattern == userIDPlaceholder {
					c.Pattern = userID
				}
				if s, ok := c.Value.AsString(); ok && s == userIDPlaceholder {
					c.Value = StringValue(userID)
				}
			}
			r.Actions = slices.Clone(r.Actions)
			rules[i] = r
		}
		*rs.rulesOf(kind) = rules
	}
	return rs
}

// Upgrade brings a user's stored ruleset to the rules of this server: every predefined
// rule, in its canonical position (.m.rule.master first, the user's rules of each kind in
// their stored order, then the other server-default rules of the kind in the spec's
// order), with the user's enabled state and actions of the ones they had. Stored
// server-default rules that the spec no longer has are dropped, as are duplicate rule IDs
// and rules no user could have written.
//
// A server-default rule takes its conditions from this server, so that a change of the
// spec's definition reaches every user. NOTSPEC: its actions stay those stored, as a user
// may have changed them; Synapse keeps only the actions a user set, which this storage (the
// whole ruleset as account data, as /sync delivers it) cannot tell apart from the defaults
// of the version that stored them.
func Upgrade(stored Ruleset, userID string) Ruleset {
	defaults := Defaults(userID)
	var out Ruleset
	for _, kind := range Kinds {
		defs := defaults.Rules(kind)
		known := make(map[string]bool, len(defs))
		for _, d := range defs {
			known[d.RuleID] = true
		}
		kept := map[string]Rule{}
		seen := map[string]bool{}
		var users []Rule
		for _, r := range stored.Rules(kind) {
			if r.Default || strings.HasPrefix(r.RuleID, ".") {
				if _, dup := kept[r.RuleID]; known[r.RuleID] && !dup {
					kept[r.RuleID] = r
				}
				continue
			}
			if seen[r.RuleID] || ValidateRuleID(r.RuleID) != nil {
				continue
			}
			seen[r.RuleID] = true
			users = append(users, normalizeUserRule(kind, r))
		}
		for i := range defs {
			if s, ok := kept[defs[i].RuleID]; ok {
				defs[i].Enabled = s.Enabled
				defs[i].Actions = slices.Clone(s.Actions)
				if defs[i].Actions == nil {
					defs[i].Actions = []Action{}
				}
			}
		}
		*out.rulesOf(kind) = arrange(users, defs)
	}
	return out
}

// arrange puts a kind's rules in their order: the prepended server-default rules, the
// user's rules, then the other server-default rules.
func arrange(users, defaults []Rule) []Rule {
	out := make([]Rule, 0, len(users)+len(defaults))
	for _, d := range defaults {
		if prependedDefaults[d.RuleID] {
			out = append(out, d)
		}
	}
	out = append(out, users...)
	for _, d := range defaults {
		if !prependedDefaults[d.RuleID] {
			out = append(out, d)
		}
	}
	return out
}

// normalizeUserRule gives a user's rule the shape of its kind: conditions only for
// override and underride rules (always a list), a pattern only for content rules.
func normalizeUserRule(kind Kind, r Rule) Rule {
	r.Default = false
	if kind.hasConditions() {
		if r.Conditions == nil {
			r.Conditions = []Condition{}
		}
	} else {
		r.Conditions = nil
	}
	if kind != Content {
		r.Pattern = ""
	}
	if r.Actions == nil {
		r.Actions = []Action{}
	}
	return r
}
