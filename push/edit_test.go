package push

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// ids lists the rule IDs of one kind.
func ids(rs Ruleset, kind Kind) []string {
	var out []string
	for _, r := range rs.Rules(kind) {
		out = append(out, r.RuleID)
	}
	return out
}

func actions(t *testing.T, js string) []Action {
	t.Helper()
	var out []Action
	if err := json.Unmarshal([]byte(js), &out); err != nil {
		t.Fatal(err)
	}
	return out
}

func mustPut(t *testing.T, rs Ruleset, kind Kind, r Rule, before, after string) Ruleset {
	t.Helper()
	out, err := Put(rs, kind, r, before, after)
	if err != nil {
		t.Fatalf("Put %s %s: %v", kind, r.RuleID, err)
	}
	return out
}

func TestPushDefaults(t *testing.T) {
	rs := Defaults(testUser)
	want := map[Kind][]string{
		Override: {".m.rule.master", ".m.rule.suppress_notices", ".m.rule.invite_for_me", ".m.rule.member_event",
			".m.rule.is_user_mention", ".m.rule.is_room_mention", ".m.rule.tombstone", ".m.rule.reaction",
			".m.rule.room.server_acl", ".m.rule.suppress_edits"},
		Underride: {".m.rule.call", ".m.rule.encrypted_room_one_to_one", ".m.rule.room_one_to_one", ".m.rule.message", ".m.rule.encrypted"},
	}
	for _, kind := range Kinds {
		if got := ids(rs, kind); !slices.Equal(got, want[kind]) {
			t.Errorf("%s: %v, want %v", kind, got, want[kind])
		}
		for _, r := range rs.Rules(kind) {
			if !r.Default || r.Enabled != (r.RuleID != ".m.rule.master") {
				t.Errorf("%s: default %v enabled %v", r.RuleID, r.Default, r.Enabled)
			}
		}
	}
	encoded := string(mustMarshal(t, rs))
	if strings.Contains(encoded, userIDPlaceholder) || strings.Count(encoded, testUser) != 2 {
		t.Fatalf("user ID not put in: %s", encoded)
	}
	// Each call is its own: changing one does not change the next.
	rs.Override[2].Conditions[2].Pattern = "changed"
	if again := Defaults(testUser); again.Override[2].Conditions[2].Pattern != testUser {
		t.Fatal("Defaults shares its conditions")
	}
	// A user ID with characters JSON escapes stays as it is.
	odd := `@"quote\:example.org`
	if got, _ := Defaults(odd).Override[4].Conditions[0].Value.AsString(); got != odd {
		t.Fatalf("mention value %q", got)
	}
}

func TestPushPut(t *testing.T) {
	notify := actions(t, `["notify"]`)
	rs := Defaults(testUser)
	original := string(mustMarshal(t, rs))

	// A new override is the most important user rule: after .m.rule.master, before the
	// other server-default rules.
	rs = mustPut(t, rs, Override, Rule{RuleID: "a", Actions: notify}, "", "")
	rs = mustPut(t, rs, Override, Rule{RuleID: "b", Actions: notify}, "", "")
	if got := ids(rs, Override)[:4]; !slices.Equal(got, []string{".m.rule.master", "b", "a", ".m.rule.suppress_notices"}) {
		t.Fatalf("override order %v", got)
	}
	if string(mustMarshal(t, Defaults(testUser))) != original {
		t.Fatal("Put changed its input")
	}
	// before and after place among the user's rules.
	rs = mustPut(t, rs, Override, Rule{RuleID: "c", Actions: notify}, "a", "")
	rs = mustPut(t, rs, Override, Rule{RuleID: "d", Actions: notify}, "", "a")
	rs = mustPut(t, rs, Override, Rule{RuleID: "e", Actions: notify}, "b", "a") // before wins
	if got := ids(rs, Override)[:7]; !slices.Equal(got, []string{".m.rule.master", "e", "b", "c", "a", "d", ".m.rule.suppress_notices"}) {
		t.Fatalf("override order %v", got)
	}
	// Replacing keeps the place and the enabled state, and takes the new parameters.
	rs, _ = SetEnabled(rs, Override, "c", false)
	before := rs
	rs = mustPut(t, rs, Override, Rule{RuleID: "c", Actions: actions(t, `["notify",{"set_tweak":"highlight"}]`),
		Conditions: []Condition{{Kind: EventMatch, Key: "type", Pattern: "m.room.message"}}}, "", "")
	c, _ := Get(rs, Override, "c")
	if got := ids(rs, Override); !slices.Equal(got, ids(before, Override)) || c.Enabled || len(c.Conditions) != 1 || len(c.Actions) != 2 {
		t.Fatalf("replaced: %v %+v", got, c)
	}
	// Moving an existing rule.
	rs = mustPut(t, rs, Override, Rule{RuleID: "e", Actions: notify}, "", "d")
	if got := ids(rs, Override)[:7]; !slices.Equal(got, []string{".m.rule.master", "b", "c", "a", "d", "e", ".m.rule.suppress_notices"}) {
		t.Fatalf("after move %v", got)
	}
	// Underride: the user's rules come before the server-default ones.
	rs = mustPut(t, rs, Underride, Rule{RuleID: "u", Actions: notify}, "", "")
	if got := ids(rs, Underride)[0]; got != "u" {
		t.Fatalf("underride %v", ids(rs, Underride))
	}

	// Errors.
	for _, c := range []struct {
		kind          Kind
		rule          Rule
		before, after string
		want          error
	}{
		{Override, Rule{RuleID: "x", Actions: notify}, "nope", "", ErrAnchorNotFound},
		{Override, Rule{RuleID: "x", Actions: notify}, "", "nope", ErrAnchorNotFound},
		{Override, Rule{RuleID: "x", Actions: notify}, ".m.rule.suppress_notices", "", ErrAnchorNotFound},
		{Override, Rule{RuleID: "x", Actions: notify}, "", ".m.rule.master", ErrAnchorNotFound},
		{Override, Rule{RuleID: "x", Actions: notify}, "u", "", ErrAnchorNotFound}, // another kind's rule
		{Override, Rule{RuleID: "a", Actions: notify}, "a", "", ErrAnchorNotFound}, // itself
		{Override, Rule{RuleID: ".m.rule.master", Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: ".mine", Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: "a/b", Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: `a\b`, Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: "", Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: strings.Repeat("x", MaxRuleIDLength+1), Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: "bad\xff", Actions: notify}, "", "", ErrInvalidRuleID},
		{Override, Rule{RuleID: "x"}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: actions(t, `["org.example.x"]`)}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: actions(t, `[{"set_tweak":""}]`)}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: make([]Action, MaxActions+1)}, "", "", ErrInvalidRule},
		{Content, Rule{RuleID: "x", Actions: notify}, "", "", ErrInvalidRule},
		{Content, Rule{RuleID: "x", Actions: notify, Pattern: strings.Repeat("p", MaxParamLength+1)}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: EventMatch, Key: "type"}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: EventMatch, Pattern: "x"}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: EventPropertyIs, Key: "k"}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: EventPropertyContains, Key: "k", Value: parseValue([]byte(`{}`))}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: EventPropertyIs, Key: "k", Value: IntValue(1 << 60)}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: RoomMemberCount, Is: "two"}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: SenderNotificationPermission}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: ""}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: EventMatch, Key: strings.Repeat("k", MaxParamLength+1), Pattern: "x"}}}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: make([]Condition, MaxConditions+1)}, "", "", ErrInvalidRule},
		{Override, Rule{RuleID: "x", Actions: notify, Conditions: []Condition{{Kind: "org.example", Extra: map[string]json.RawMessage{"big": json.RawMessage(`"` + strings.Repeat("b", MaxRuleSize) + `"`)}}}}, "", "", ErrInvalidRule},
		{Kind("device"), Rule{RuleID: "x", Actions: notify}, "", "", ErrInvalidRule},
	} {
		out, err := Put(rs, c.kind, c.rule, c.before, c.after)
		if !errors.Is(err, c.want) {
			t.Errorf("Put %s %q before %q after %q: %v, want %v", c.kind, c.rule.RuleID, c.before, c.after, err, c.want)
		}
		if string(mustMarshal(t, out)) != string(mustMarshal(t, rs)) {
			t.Errorf("failed Put %q changed the ruleset", c.rule.RuleID)
		}
	}
}

func TestPushPutShapes(t *testing.T) {
	rs := Defaults(testUser)
	conditions := []Condition{{Kind: EventMatch, Key: "type", Pattern: "x"}}
	// Room, sender and content rules drop conditions; only content rules keep a pattern;
	// historical actions go; override rules without conditions get [].
	rs = mustPut(t, rs, Room, Rule{RuleID: testRoom, Default: true, Enabled: false, Conditions: conditions, Pattern: "p",
		Actions: actions(t, `["dont_notify"]`)}, "", "")
	rs = mustPut(t, rs, Content, Rule{RuleID: "k", Conditions: conditions, Pattern: "cake", Actions: actions(t, `["coalesce","notify"]`)}, "", "")
	rs = mustPut(t, rs, Override, Rule{RuleID: "all", Pattern: "p", Actions: []Action{}}, "", "")
	sameJSON(t, mustMarshal(t, rs.Room), []byte(`[{"rule_id":"!room:example.org","default":false,"enabled":true,"actions":[]}]`))
	sameJSON(t, mustMarshal(t, rs.Content), []byte(`[{"rule_id":"k","default":false,"enabled":true,"pattern":"cake","actions":["notify"]}]`))
	sameJSON(t, mustMarshal(t, rs.Override[1]), []byte(`{"rule_id":"all","default":false,"enabled":true,"conditions":[],"actions":[]}`))
	// Unknown condition kinds are kept as they are.
	var unknown Condition
	if err := json.Unmarshal([]byte(`{"kind":"org.example.future","rel_type":"m.thread"}`), &unknown); err != nil {
		t.Fatal(err)
	}
	rs = mustPut(t, rs, Underride, Rule{RuleID: "future", Conditions: []Condition{unknown}, Actions: []Action{}}, "", "")
	sameJSON(t, mustMarshal(t, rs.Underride[0].Conditions), []byte(`[{"kind":"org.example.future","rel_type":"m.thread"}]`))
}

func TestPushDeleteEnableActions(t *testing.T) {
	notify := actions(t, `["notify"]`)
	rs := mustPut(t, Defaults(testUser), Sender, Rule{RuleID: "@spam:example.org", Actions: []Action{}}, "", "")

	if _, err := Delete(rs, Override, ".m.rule.master"); !errors.Is(err, ErrServerDefault) {
		t.Fatalf("deleting a default: %v", err)
	}
	if _, err := Delete(rs, Sender, "@other:example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting nothing: %v", err)
	}
	if _, err := Delete(rs, Override, "@spam:example.org"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleting from another kind: %v", err)
	}
	deleted, err := Delete(rs, Sender, "@spam:example.org")
	if err != nil || len(deleted.Sender) != 0 || len(rs.Sender) != 1 {
		t.Fatalf("delete: %v %v %v", err, deleted.Sender, rs.Sender)
	}

	// Enabling and disabling, server-default rules too.
	off, err := SetEnabled(rs, Underride, ".m.rule.message", false)
	if r, _ := Get(off, Underride, ".m.rule.message"); err != nil || r.Enabled {
		t.Fatalf("disable: %v %+v", err, r)
	}
	if r, _ := Get(rs, Underride, ".m.rule.message"); !r.Enabled {
		t.Fatal("SetEnabled changed its input")
	}
	if _, err := SetEnabled(rs, Underride, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("enable nothing: %v", err)
	}

	// Actions, server-default rules too; historical actions are stripped.
	loud, err := SetActions(rs, Underride, ".m.rule.message", actions(t, `["notify","dont_notify",{"set_tweak":"sound","value":"default"}]`))
	if r, _ := Get(loud, Underride, ".m.rule.message"); err != nil || string(mustMarshal(t, r.Actions)) != `["notify",{"set_tweak":"sound","value":"default"}]` {
		t.Fatalf("actions: %v %+v", err, r)
	}
	if _, err := SetActions(rs, Underride, "nope", notify); !errors.Is(err, ErrNotFound) {
		t.Fatalf("actions of nothing: %v", err)
	}
	for _, bad := range [][]Action{nil, actions(t, `["org.example.x"]`), {{Name: ActionSetTweak}},
		{{Name: ActionSetTweak, Tweak: "x", Value: json.RawMessage(`"` + strings.Repeat("v", MaxParamLength) + `"`)}}} {
		if _, err := SetActions(rs, Underride, ".m.rule.message", bad); !errors.Is(err, ErrInvalidRule) {
			t.Errorf("actions %+v: %v", bad, err)
		}
	}
	if _, err := Get(rs, Kind("device"), ".m.rule.message"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown kind: %v", err)
	}
}

func TestPushLimits(t *testing.T) {
	rs := Defaults(testUser)
	notify := actions(t, `["notify"]`)
	for i := range MaxUserRules {
		rs = mustPut(t, rs, Kinds[i%len(Kinds)], Rule{RuleID: fmt.Sprintf("r%d", i), Pattern: "p", Actions: notify}, "", "")
	}
	if _, err := Put(rs, Room, Rule{RuleID: "one-more", Actions: notify}, "", ""); !errors.Is(err, ErrTooManyRules) {
		t.Fatalf("rule %d: %v", MaxUserRules+1, err)
	}
	// Replacing still works at the limit, and deleting makes room.
	rs = mustPut(t, rs, Room, Rule{RuleID: "r2", Actions: []Action{}}, "", "")
	rs, _ = Delete(rs, Room, "r2")
	rs = mustPut(t, rs, Room, Rule{RuleID: "one-more", Actions: notify}, "", "")

	// The whole ruleset is bounded too.
	big := Defaults(testUser)
	long := []Condition{{Kind: EventMatch, Key: "content.body", Pattern: strings.Repeat("x", MaxParamLength)}}
	var err error
	for i := 0; err == nil && i < MaxUserRules; i++ {
		big, err = Put(big, Override, Rule{RuleID: fmt.Sprintf("big%d", i), Conditions: slices.Repeat(long, 8), Actions: notify}, "", "")
	}
	if !errors.Is(err, ErrTooManyRules) || len(mustMarshal(t, big)) > MaxRulesetSize {
		t.Fatalf("ruleset grew to %d bytes: %v", len(mustMarshal(t, big)), err)
	}
}

func TestPushUpgrade(t *testing.T) {
	// A ruleset stored by an older server: legacy rules the spec removed, no
	// .m.rule.is_user_mention, .m.rule.message turned off, louder .m.rule.call, the user's
	// rules before master, a duplicate and rules no user could have written.
	stored := `{
	  "override": [
	    {"rule_id":"mine","default":false,"enabled":true,"conditions":[{"kind":"event_match","key":"type","pattern":"x"}],"actions":["notify"]},
	    {"rule_id":".m.rule.master","default":true,"enabled":true,"conditions":[],"actions":["dont_notify"]},
	    {"rule_id":".m.rule.contains_display_name","default":true,"enabled":true,"conditions":[{"kind":"contains_display_name"}],"actions":["notify"]},
	    {"rule_id":".m.rule.roomnotif","default":true,"enabled":true,"conditions":[],"actions":["notify"]},
	    {"rule_id":"mine","default":false,"enabled":false,"conditions":[],"actions":[]},
	    {"rule_id":"a/b","default":false,"enabled":true,"conditions":[],"actions":[]},
	    {"rule_id":".m.rule.invite_for_me","default":true,"enabled":true,"conditions":[{"kind":"event_match","key":"state_key","pattern":"@someone:else"}],"actions":[]},
	    {"rule_id":"second","default":false,"enabled":true,"actions":["notify"]}
	  ],
	  "content": [
	    {"rule_id":".m.rule.contains_user_name","default":true,"enabled":true,"pattern":"alice","actions":["notify"]},
	    {"rule_id":"cake","default":false,"enabled":true,"pattern":"cake","conditions":[],"actions":["notify"]}
	  ],
	  "underride": [
	    {"rule_id":".m.rule.message","default":true,"enabled":false,"conditions":[],"actions":["notify"]},
	    {"rule_id":".m.rule.call","default":true,"enabled":true,"conditions":[],"actions":["notify",{"set_tweak":"sound","value":"loud"}]}
	  ]
	}`
	var rs Ruleset
	if err := json.Unmarshal([]byte(stored), &rs); err != nil {
		t.Fatal(err)
	}
	up := Upgrade(rs, testUser)
	wantOverride := append([]string{".m.rule.master", "mine", "second"}, ids(Defaults(testUser), Override)[1:]...)
	if got := ids(up, Override); !slices.Equal(got, wantOverride) {
		t.Fatalf("override %v, want %v", got, wantOverride)
	}
	if got := ids(up, Content); !slices.Equal(got, []string{"cake"}) {
		t.Fatalf("content %v", got)
	}
	if got := ids(up, Underride); !slices.Equal(got, ids(Defaults(testUser), Underride)) {
		t.Fatalf("underride %v", got)
	}
	master, _ := Get(up, Override, ".m.rule.master")
	invite, _ := Get(up, Override, ".m.rule.invite_for_me")
	message, _ := Get(up, Underride, ".m.rule.message")
	call, _ := Get(up, Underride, ".m.rule.call")
	mine, _ := Get(up, Override, "mine")
	second, _ := Get(up, Override, "second")
	cake, _ := Get(up, Content, "cake")
	switch {
	case !master.Enabled || string(mustMarshal(t, master.Actions)) != `["dont_notify"]`:
		t.Errorf("master %+v", master)
	case invite.Conditions[2].Pattern != testUser || len(invite.Conditions) != 3 || len(invite.Actions) != 0:
		t.Errorf("invite_for_me %+v", invite)
	case message.Enabled || len(message.Conditions) != 1:
		t.Errorf("message %+v", message)
	case string(mustMarshal(t, call.Actions)) != `["notify",{"set_tweak":"sound","value":"loud"}]` || len(call.Conditions) != 1:
		t.Errorf("call %+v", call)
	case !mine.Enabled || len(mine.Conditions) != 1:
		t.Errorf("mine %+v", mine)
	case second.Conditions == nil:
		t.Errorf("second has null conditions")
	case cake.Conditions != nil || cake.Pattern != "cake":
		t.Errorf("cake %+v", cake)
	}
	// Upgrading again changes nothing; the defaults upgrade to themselves.
	if a, b := mustMarshal(t, up), mustMarshal(t, Upgrade(up, testUser)); string(a) != string(b) {
		t.Fatalf("not a fixed point:\n%s\n%s", a, b)
	}
	if a, b := mustMarshal(t, Defaults(testUser)), mustMarshal(t, Upgrade(Defaults(testUser), testUser)); string(a) != string(b) {
		t.Fatalf("defaults changed:\n%s\n%s", a, b)
	}
	if a, b := mustMarshal(t, Defaults(testUser)), mustMarshal(t, Upgrade(Ruleset{}, testUser)); string(a) != string(b) {
		t.Fatalf("empty ruleset:\n%s\n%s", a, b)
	}
}
