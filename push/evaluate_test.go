package push

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"strings"
	"testing"
)

const (
	testUser   = "@alice:example.org"
	testSender = "@bob:example.org"
	testRoom   = "!room:example.org"
)

//go:embed testdata/predefined_rules.jsonl
var predefinedRulesFixture []byte

// predefinedCase is one line of testdata/predefined_rules.jsonl.
type predefinedCase struct {
	Name          string           `json:"name"`
	Event         map[string]any   `json:"event"`
	Members       *int             `json:"members"`
	DisplayName   string           `json:"display_name"`
	SenderLevel   int64            `json:"sender_level"`
	Notifications map[string]int64 `json:"notifications"`
	NoPowerLevels bool             `json:"no_power_levels"`
	Enable        []string         `json:"enable"`
	Disable       []string         `json:"disable"`
	Rule          string           `json:"rule"`
	Notify        bool             `json:"notify"`
	Highlight     bool             `json:"highlight"`
	Sound         string           `json:"sound"`
}

func readPredefinedCases(t *testing.T) []predefinedCase {
	t.Helper()
	var cases []predefinedCase
	scanner := bufio.NewScanner(bytes.NewReader(predefinedRulesFixture))
	scanner.Buffer(nil, 1<<20)
	for scanner.Scan() {
		line := bytes.TrimSpace(scanner.Bytes())
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		var c predefinedCase
		dec := json.NewDecoder(bytes.NewReader(line))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&c); err != nil {
			t.Fatalf("fixture line %s: %v", line, err)
		}
		cases = append(cases, c)
	}
	return cases
}

// mustEvent flattens an event given as a Go value or JSON text.
func mustEvent(t testing.TB, event any) EvalEvent {
	t.Helper()
	raw, ok := event.(string)
	if !ok {
		encoded, err := json.Marshal(event)
		if err != nil {
			t.Fatal(err)
		}
		raw = string(encoded)
	}
	ev, err := NewEvalEvent([]byte(raw))
	if err != nil {
		t.Fatalf("NewEvalEvent(%s): %v", raw, err)
	}
	return ev
}

func toggle(t *testing.T, rs Ruleset, ids []string, enabled bool) Ruleset {
	t.Helper()
	for _, id := range ids {
		found := false
		for _, kind := range Kinds {
			if _, err := Get(rs, kind, id); err == nil {
				var err error
				if rs, err = SetEnabled(rs, kind, id, enabled); err != nil {
					t.Fatal(err)
				}
				found = true
			}
		}
		if !found {
			t.Fatalf("no rule %s", id)
		}
	}
	return rs
}

// TestPushPredefinedRules runs testdata/predefined_rules.jsonl: what each predefined rule
// does to representative events.
func TestPushPredefinedRules(t *testing.T) {
	cases := readPredefinedCases(t)
	if len(cases) < 40 {
		t.Fatalf("only %d fixture cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			rs := Defaults(testUser)
			rs = toggle(t, rs, c.Enable, true)
			rs = toggle(t, rs, c.Disable, false)
			if _, ok := c.Event["sender"]; !ok {
				c.Event["sender"] = testSender
			}
			if _, ok := c.Event["room_id"]; !ok {
				c.Event["room_id"] = testRoom
			}
			c.Event["event_id"] = "$event:example.org"
			members := 5
			if c.Members != nil {
				members = *c.Members
			}
			ctx := EvalContext{UserID: testUser, DisplayName: c.DisplayName, MemberCount: members}
			if !c.NoPowerLevels {
				ctx.PowerLevels = func() *PowerLevels {
					return &PowerLevels{Sender: c.SenderLevel, Notifications: c.Notifications}
				}
			}
			got := Evaluate(rs, mustEvent(t, c.Event), ctx)
			if got.RuleID != c.Rule || got.Notify != c.Notify || got.Highlight != c.Highlight || got.Sound != c.Sound {
				t.Fatalf("got rule %q notify %v highlight %v sound %q; want %q %v %v %q",
					got.RuleID, got.Notify, got.Highlight, got.Sound, c.Rule, c.Notify, c.Highlight, c.Sound)
			}
		})
	}
}

// TestPushEveryPredefinedRuleExercised: the fixture reaches every predefined rule.
func TestPushEveryPredefinedRuleExercised(t *testing.T) {
	reached := map[string]bool{}
	for _, c := range readPredefinedCases(t) {
		reached[c.Rule] = true
	}
	rs := Defaults(testUser)
	for _, kind := range Kinds {
		for _, r := range rs.Rules(kind) {
			if !reached[r.RuleID] {
				t.Errorf("no fixture case ends at %s", r.RuleID)
			}
		}
	}
}

// TestPushDottedPaths: appendices "Dot-separated property paths", escaping included.
func TestPushDottedPaths(t *testing.T) {
	event := `{"type":"m.x","content":{"m.relates_to":{"rel_type":"m.thread"},"m\\foo":"backslash","a.b":1,"a":{"b":2},"x\\":{"y":"trailing"},"":{"z":"empty"},"list":[{"in":"array"}],"deep":{"er":{"est":true}},"n":null,"f":1.5,"big":9007199254740992,"max":9007199254740991}}`
	ev := mustEvent(t, event)
	cases := []struct {
		path string
		want Value
		ok   bool
	}{
		{`type`, StringValue("m.x"), true},
		{`content.m\.relates_to.rel_type`, StringValue("m.thread"), true},
		{`content.m.relates_to.rel_type`, Value{}, false},
		{`content.m\\foo`, StringValue("backslash"), true},
		{`content.m\foo`, StringValue("backslash"), true}, // "\f" is not an escape: a literal backslash
		{`content.a\.b`, IntValue(1), true},
		{`content.a.b`, IntValue(2), true},
		{`content.x\\.y`, StringValue("trailing"), true},
		{`content..z`, StringValue("empty"), true},
		{`content.list.in`, Value{}, false},
		{`content.list.0.in`, Value{}, false},
		{`content.list`, Value{}, false}, // arrays are not scalar properties
		{`content.deep.er.est`, BoolValue(true), true},
		{`content.deep.er`, Value{}, false},
		{`content.n`, NullValue(), true},
		{`content.f`, Value{}, false},
		{`content.big`, Value{}, false},
		{`content.max`, IntValue(1<<53 - 1), true},
		{`content.missing`, Value{}, false},
		{``, Value{}, false},
	}
	for _, c := range cases {
		got, ok := ev.Property(c.path)
		if ok != c.ok || got != c.want {
			t.Errorf("Property(%q) = %v, %v; want %v, %v", c.path, got, ok, c.want, c.ok)
		}
	}
	for _, bad := range []string{``, `[]`, `null`, `"x"`, `{`} {
		if _, err := NewEvalEvent([]byte(bad)); err == nil {
			t.Errorf("NewEvalEvent(%q) succeeded", bad)
		}
	}
}

func TestPushCanonicalPath(t *testing.T) {
	for in, want := range map[string]string{
		`a.b`:      `a.b`,
		`a\.b`:     `a\.b`,
		`a\\b`:     `a\\b`,
		`a\b`:      `a\\b`,
		`a\`:       `a\\`,
		`a\\\.b\x`: `a\\\.b\\x`,
	} {
		if got := canonicalPath(in); got != want {
			t.Errorf("canonicalPath(%q) = %q, want %q", in, got, want)
		}
	}
	for in, want := range map[string]string{"a": "a", "a.b": `a\.b`, `a\b`: `a\\b`, `.\`: `\.\\`} {
		if got := escapePathKey(in); got != want {
			t.Errorf("escapePathKey(%q) = %q, want %q", in, got, want)
		}
	}
}

// condition reads one condition from JSON.
func condition(t *testing.T, js string) Condition {
	t.Helper()
	var c Condition
	if err := json.Unmarshal([]byte(js), &c); err != nil {
		t.Fatalf("condition %s: %v", js, err)
	}
	return c
}

// holds evaluates one condition against an event.
func holds(t *testing.T, cond, event string, ctx EvalContext) bool {
	t.Helper()
	rs := Ruleset{Override: []Rule{{RuleID: "c", Enabled: true, Conditions: []Condition{condition(t, cond)}, Actions: []Action{{Name: ActionNotify}}}}}
	if ctx.UserID == "" {
		ctx.UserID = testUser
	}
	return Evaluate(rs, mustEvent(t, event), ctx).RuleID == "c"
}

// TestPushConditions covers each condition kind ("Conditions"), with the spec's examples.
func TestPushConditions(t *testing.T) {
	topic := func(v string) string {
		return `{"type":"m.room.topic","state_key":"","sender":"@example:example.org","content":{"topic":` + v + `}}`
	}
	body := func(v string) string { return `{"type":"m.room.message","content":{"body":` + v + `}}` }
	props := `{"type":"m.room.create","content":{"m.federate":true,"s":"true","i":1,"zero":0,"neg":-5,"n":null,"f":1.0,"obj":{},"arr":[1],
		"alt_aliases":["#somewhere:example.org","#myroom:example.com",1,true,null,{"x":1},[2]],"big":9007199254740992}}`
	ctx := EvalContext{}
	cases := []struct {
		name, cond, event string
		want              bool
	}{
		// event_match, the spec's example: key content.topic, pattern lunc?*.
		{"topic/example", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`"Lunch plans"`), true},
		{"topic/upper", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`"LUNCH"`), true},
		{"topic/leading-space", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`" lunch"`), false},
		{"topic/too-short", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`"lunc"`), false},
		{"topic/null", `{"kind":"event_match","key":"content.topic","pattern":"lunc?*"}`, topic(`null`), false},
		{"match/star-needs-string", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, topic(`1`), false},
		{"match/star-absent", `{"kind":"event_match","key":"content.nothing","pattern":"*"}`, topic(`"x"`), false},
		{"match/star-empty", `{"kind":"event_match","key":"content.topic","pattern":"*"}`, topic(`""`), true},
		{"match/whole-value", `{"kind":"event_match","key":"content.topic","pattern":"lunch"}`, topic(`"lunch plans"`), false},
		{"match/empty-pattern", `{"kind":"event_match","key":"state_key","pattern":""}`, topic(`"x"`), true},
		// content.body: word boundaries, the spec's example: pattern ex*ple.
		{"body/example", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body(`"An example event."`), true},
		{"body/whole", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body(`"exple"`), true},
		{"body/spanning-words", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body(`"An exciting triple-whammy"`), true},
		{"body/inside-word", `{"kind":"event_match","key":"content.body","pattern":"ex*ple"}`, body(`"examples"`), false},
		{"body/literal-word", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, body(`"Time for CAKE!"`), true},
		{"body/literal-inside-word", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, body(`"cakes"`), false},
		{"body/underscore-is-word", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, body(`"cake_walk"`), false},
		{"body/non-ascii-is-boundary", `{"kind":"event_match","key":"content.body","pattern":"cake"}`, body(`"écakeé"`), true},
		{"body/number", `{"kind":"event_match","key":"content.body","pattern":"*"}`, body(`5`), false},
		{"body/escaped-key-is-body", `{"kind":"event_match","key":"content.bo\\dy","pattern":"cake"}`, `{"type":"m.x","content":{"bo\\dy":"a cake"}}`, false},
		// event_property_is, the spec's example: content.m\.federate is true.
		{"is/example", `{"kind":"event_property_is","key":"content.m\\.federate","value":true}`, props, true},
		{"is/string-not-bool", `{"kind":"event_property_is","key":"content.s","value":true}`, props, false},
		{"is/no-cast-int", `{"kind":"event_property_is","key":"content.i","value":true}`, props, false},
		{"is/int", `{"kind":"event_property_is","key":"content.i","value":1}`, props, true},
		{"is/int-not-string", `{"kind":"event_property_is","key":"content.i","value":"1"}`, props, false},
		{"is/zero-not-false", `{"kind":"event_property_is","key":"content.zero","value":false}`, props, false},
		{"is/negative", `{"kind":"event_property_is","key":"content.neg","value":-5}`, props, true},
		{"is/string", `{"kind":"event_property_is","key":"content.s","value":"true"}`, props, true},
		{"is/string-case-sensitive", `{"kind":"event_property_is","key":"content.s","value":"TRUE"}`, props, false},
		{"is/null", `{"kind":"event_property_is","key":"content.n","value":null}`, props, true},
		{"is/null-absent", `{"kind":"event_property_is","key":"content.missing","value":null}`, props, false},
		{"is/fraction-in-event", `{"kind":"event_property_is","key":"content.f","value":1}`, props, false},
		{"is/object", `{"kind":"event_property_is","key":"content.obj","value":{}}`, props, false},
		{"is/array", `{"kind":"event_property_is","key":"content.arr","value":[1]}`, props, false},
		{"is/out-of-range", `{"kind":"event_property_is","key":"content.big","value":9007199254740992}`, props, false},
		{"is/no-value", `{"kind":"event_property_is","key":"content.n"}`, props, false},
		// event_property_contains, the spec's example: content.alt_aliases has #myroom:example.com.
		{"contains/example", `{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"}`, props, true},
		{"contains/partial", `{"kind":"event_property_contains","key":"content.alt_aliases","value":":example.com"}`, props, false},
		{"contains/int", `{"kind":"event_property_contains","key":"content.alt_aliases","value":1}`, props, true},
		{"contains/bool", `{"kind":"event_property_contains","key":"content.alt_aliases","value":true}`, props, true},
		{"contains/null", `{"kind":"event_property_contains","key":"content.alt_aliases","value":null}`, props, true},
		{"contains/int-not-string", `{"kind":"event_property_contains","key":"content.alt_aliases","value":"1"}`, props, false},
		{"contains/compound-ignored", `{"kind":"event_property_contains","key":"content.alt_aliases","value":{"x":1}}`, props, false},
		{"contains/nested-ignored", `{"kind":"event_property_contains","key":"content.alt_aliases","value":2}`, props, false},
		{"contains/not-array", `{"kind":"event_property_contains","key":"content.s","value":"true"}`, props, false},
		{"contains/absent", `{"kind":"event_property_contains","key":"content.missing","value":"x"}`, props, false},
		// Unknown kinds never match; a rule with one is as good as disabled.
		{"unknown/kind", `{"kind":"org.example.always"}`, props, false},
		{"unknown/unstable-related", `{"kind":"im.nheko.msc3664.related_event_match","key":"sender","pattern":"*","rel_type":"m.in_reply_to"}`, props, false},
	}
	for _, c := range cases {
		if got := holds(t, c.cond, c.event, ctx); got != c.want {
			t.Errorf("%s: %s on %s = %v, want %v", c.name, c.cond, c.event, got, c.want)
		}
	}
}

func TestPushRoomMemberCount(t *testing.T) {
	event := `{"type":"m.room.message","content":{}}`
	cases := []struct {
		is      string
		members int
		want    bool
	}{
		{"2", 2, true}, {"2", 3, false}, {"==2", 2, true}, {"==2", 1, false},
		{"<10", 9, true}, {"<10", 10, false}, {">10", 11, true}, {">10", 10, false},
		{"<=10", 10, true}, {"<=10", 11, false}, {">=10", 10, true}, {">=10", 9, false},
		{"010", 10, true}, {"", 0, false}, {"=2", 2, false}, {"!=2", 3, false}, {"<>2", 3, false},
		{"+2", 2, false}, {"-1", 0, false}, {"2.0", 2, false}, {" 2", 2, false}, {"<", 0, false},
		{"99999999999999999999", 2, false},
	}
	for _, c := range cases {
		cond := `{"kind":"room_member_count","is":` + strings.TrimSpace(string(mustMarshal(t, c.is))) + `}`
		if got := holds(t, cond, event, EvalContext{MemberCount: c.members}); got != c.want {
			t.Errorf("is %q with %d members = %v, want %v", c.is, c.members, got, c.want)
		}
	}
}

func mustMarshal(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestPushSenderNotificationPermission(t *testing.T) {
	event := `{"type":"m.room.message","content":{}}`
	calls := 0
	levels := func(sender int64, notifications map[string]int64) func() *PowerLevels {
		return func() *PowerLevels {
			calls++
			return &PowerLevels{Sender: sender, Notifications: notifications}
		}
	}
	cases := []struct {
		key    string
		levels func() *PowerLevels
		want   bool
	}{
		{"room", levels(50, nil), true},
		{"room", levels(49, nil), false},
		{"room", levels(0, map[string]int64{"room": 0}), true},
		{"room", levels(99, map[string]int64{"room": 100}), false},
		{"org.example.custom", levels(50, nil), true},
		{"org.example.custom", levels(10, map[string]int64{"org.example.custom": 10}), true},
		{"room", nil, false},
		{"room", func() *PowerLevels { return nil }, false},
		{"", levels(100, nil), false},
	}
	for _, c := range cases {
		cond := `{"kind":"sender_notification_permission","key":"` + c.key + `"}`
		if got := holds(t, cond, event, EvalContext{PowerLevels: c.levels}); got != c.want {
			t.Errorf("key %q: %v, want %v", c.key, got, c.want)
		}
	}

	// The power levels are read once per evaluation, and only when a rule asks.
	calls = 0
	rs := Ruleset{Override: []Rule{
		{RuleID: "a", Enabled: true, Conditions: []Condition{condition(t, `{"kind":"sender_notification_permission","key":"x"}`), condition(t, `{"kind":"org.example.never"}`)}},
		{RuleID: "b", Enabled: true, Conditions: []Condition{condition(t, `{"kind":"sender_notification_permission","key":"room"}`)}},
	}}
	got := Evaluate(rs, mustEvent(t, event), EvalContext{UserID: testUser, PowerLevels: levels(100, nil)})
	if got.RuleID != "b" || calls != 1 {
		t.Fatalf("rule %q after %d power level reads, want b after 1", got.RuleID, calls)
	}
	calls = 0
	Evaluate(Defaults(testUser), mustEvent(t, `{"type":"m.room.message","sender":"@bob:example.org","content":{"body":"x"}}`),
		EvalContext{UserID: testUser, PowerLevels: levels(100, nil)})
	if calls != 0 {
		t.Fatalf("power levels read %d times for an event without a room mention", calls)
	}
}

func TestPushContainsDisplayName(t *testing.T) {
	cond := `{"kind":"contains_display_name"}`
	body := func(b string) string {
		return `{"type":"m.room.message","content":{"body":` + string(mustMarshal(t, b)) + `}}`
	}
	cases := []struct {
		name, body string
		want       bool
	}{
		{"Alice", "hi alice!", true},
		{"Alice", "ALICE", true},
		{"Alice", "alices", false},
		{"Alice", "malice", false},
		{"Alice Smith", "hey Alice Smith, hi", true},
		{"A*", "Abc", false}, // a display name is literal, not a glob
		{"A*", "say A* now", true},
		{"", "anything", false},
		{"Zoë", "hallo zoë.", true},
	}
	for _, c := range cases {
		if got := holds(t, cond, body(c.body), EvalContext{DisplayName: c.name}); got != c.want {
			t.Errorf("display name %q in %q = %v, want %v", c.name, c.body, got, c.want)
		}
	}
	if holds(t, cond, `{"type":"m.room.message","content":{"body":1}}`, EvalContext{DisplayName: "1"}) {
		t.Error("matched a body that is not a string")
	}
}

// TestPushEvaluationOrder: override, content, room, sender, underride; the first enabled
// match wins; .m.rule.master before user overrides, user rules before server-default rules.
func TestPushEvaluationOrder(t *testing.T) {
	notify := []Action{{Name: ActionNotify}}
	message := `{"type":"m.room.message","sender":"@bob:example.org","room_id":"!room:example.org","content":{"msgtype":"m.text","body":"a cake for you"}}`
	ctx := EvalContext{UserID: testUser, MemberCount: 5}
	rs := Defaults(testUser)
	put := func(kind Kind, r Rule) {
		t.Helper()
		var err error
		if rs, err = Put(rs, kind, r, "", ""); err != nil {
			t.Fatal(err)
		}
	}
	expect := func(want string) {
		t.Helper()
		if got := Evaluate(rs, mustEvent(t, message), ctx); got.RuleID != want {
			t.Fatalf("matched %q, want %q", got.RuleID, want)
		}
	}
	expect(".m.rule.message")
	put(Underride, Rule{RuleID: "under", Actions: notify})
	expect("under")
	put(Sender, Rule{RuleID: testSender, Actions: []Action{}})
	expect(testSender)
	put(Room, Rule{RuleID: testRoom, Actions: notify})
	expect(testRoom)
	put(Content, Rule{RuleID: "cake", Pattern: "cake", Actions: notify})
	expect("cake")
	put(Override, Rule{RuleID: "over", Conditions: []Condition{condition(t, `{"kind":"event_match","key":"type","pattern":"m.room.*"}`)}, Actions: []Action{{Name: ActionDontNotify}}})
	expect("over")
	if got := Evaluate(rs, mustEvent(t, message), ctx); got.Notify {
		t.Fatal("a rule of only dont_notify notified")
	}
	// A notice: the user's override still comes before .m.rule.suppress_notices.
	notice := strings.Replace(message, "m.text", "m.notice", 1)
	if got := Evaluate(rs, mustEvent(t, notice), ctx); got.RuleID != "over" {
		t.Fatalf("notice matched %q", got.RuleID)
	}
	// .m.rule.master comes before the user's overrides.
	rs = toggle(t, rs, []string{".m.rule.master"}, true)
	expect(".m.rule.master")
	rs = toggle(t, rs, []string{".m.rule.master", "over", "cake", testRoom}, false)
	expect(testSender)
	rs = toggle(t, rs, []string{testSender}, false)
	expect("under")
	// Other rooms and senders are not matched by room and sender rules.
	other := strings.NewReplacer(testRoom, "!other:example.org", testSender, "@carol:example.org").Replace(message)
	rs = toggle(t, rs, []string{testSender, testRoom}, true)
	if got := Evaluate(rs, mustEvent(t, other), ctx); got.RuleID != "under" {
		t.Fatalf("other room and sender matched %q", got.RuleID)
	}
	// A rule whose only condition is unknown is never matched.
	put(Override, Rule{RuleID: "unknown", Conditions: []Condition{condition(t, `{"kind":"org.example.x"}`)}, Actions: notify})
	if got := Evaluate(rs, mustEvent(t, other), ctx); got.RuleID != "under" {
		t.Fatalf("unknown condition matched as %q", got.RuleID)
	}
	// No rule at all: nothing.
	if got := Evaluate(Ruleset{}, mustEvent(t, message), ctx); got.RuleID != "" || got.Notify {
		t.Fatalf("empty ruleset gave %+v", got)
	}
}

func TestPushResultTweaks(t *testing.T) {
	event := mustEvent(t, `{"type":"m.x","sender":"@bob:example.org","content":{}}`)
	cases := []struct {
		actions   string
		notify    bool
		highlight bool
		sound     string
	}{
		{`["notify"]`, true, false, ""},
		{`["notify",{"set_tweak":"highlight"}]`, true, true, ""},
		{`["notify",{"set_tweak":"highlight","value":true}]`, true, true, ""},
		{`["notify",{"set_tweak":"highlight","value":false}]`, true, false, ""},
		{`["notify",{"set_tweak":"highlight","value":"yes"}]`, true, false, ""},
		{`["notify",{"set_tweak":"highlight"},{"set_tweak":"highlight","value":false}]`, true, false, ""},
		{`["notify",{"set_tweak":"sound","value":"default"}]`, true, false, "default"},
		{`["notify",{"set_tweak":"sound","value":"a\"b"}]`, true, false, `a"b`},
		{`["notify",{"set_tweak":"sound","value":5}]`, true, false, ""},
		{`[{"set_tweak":"sound","value":"ring"}]`, false, false, "ring"},
		{`["dont_notify"]`, false, false, ""},
		{`["coalesce","notify"]`, true, false, ""},
		{`["org.example.unknown"]`, false, false, ""},
		{`[]`, false, false, ""},
	}
	for _, c := range cases {
		var actions []Action
		if err := json.Unmarshal([]byte(c.actions), &actions); err != nil {
			t.Fatalf("%s: %v", c.actions, err)
		}
		rs := Ruleset{Underride: []Rule{{RuleID: "r", Enabled: true, Conditions: []Condition{}, Actions: actions}}}
		got := Evaluate(rs, event, EvalContext{UserID: testUser})
		if got.RuleID != "r" || got.Kind != Underride || got.Notify != c.notify || got.Highlight != c.highlight || got.Sound != c.sound {
			t.Errorf("%s: %+v", c.actions, got)
		}
	}
}

func BenchmarkEvaluateDefaults(b *testing.B) {
	rs := Defaults(testUser)
	ev := mustEvent(b, `{"type":"m.room.message","sender":"@bob:example.org","room_id":"!room:example.org","event_id":"$e",
		"origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":"Are we still on for lunch tomorrow? Bring the cake.",
		"m.mentions":{"user_ids":["@carol:example.org"]}},"unsigned":{"age":12}}`)
	ctx := EvalContext{UserID: testUser, DisplayName: "Alice", MemberCount: 12,
		PowerLevels: func() *PowerLevels { return &PowerLevels{Sender: 0} }}
	b.ReportAllocs()
	for b.Loop() {
		if res := Evaluate(rs, ev, ctx); res.RuleID != ".m.rule.message" {
			b.Fatal(res.RuleID)
		}
	}
}

func BenchmarkNewEvalEvent(b *testing.B) {
	raw := []byte(`{"type":"m.room.message","sender":"@bob:example.org","room_id":"!room:example.org","event_id":"$e",
		"origin_server_ts":1700000000000,"content":{"msgtype":"m.text","body":"Are we still on for lunch tomorrow?",
		"m.mentions":{"user_ids":["@carol:example.org"]}},"unsigned":{"age":12}}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := NewEvalEvent(raw); err != nil {
			b.Fatal(err)
		}
	}
}
