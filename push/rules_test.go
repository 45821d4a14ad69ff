package push

import (
	_ "embed"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

//go:embed testdata/m.push_rules-example.json
var pushRulesEventExample []byte

// sameJSON compares two JSON texts as values.
func sameJSON(t *testing.T, got, want []byte) {
	t.Helper()
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		t.Fatalf("bad JSON %s: %v", got, err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		t.Fatalf("bad JSON %s: %v", want, err)
	}
	if !reflect.DeepEqual(g, w) {
		t.Fatalf("JSON differs:\n got %s\nwant %s", got, want)
	}
}

// withAllKinds adds an empty list for each kind a ruleset's JSON leaves out.
func withAllKinds(t *testing.T, ruleset []byte) []byte {
	t.Helper()
	var object map[string]json.RawMessage
	if err := json.Unmarshal(ruleset, &object); err != nil {
		t.Fatal(err)
	}
	for _, kind := range Kinds {
		if _, ok := object[string(kind)]; !ok {
			object[string(kind)] = json.RawMessage("[]")
		}
	}
	return mustMarshal(t, object)
}

// TestPushRulesetJSONSpecExample: the m.push_rules example of "Push Rules: Events" (the
// same ruleset as the example of definitions/push_ruleset.yaml) reads and writes back as
// it is, but for the content kind it leaves out, written as [].
func TestPushRulesetJSONSpecExample(t *testing.T) {
	var event struct {
		Type    string `json:"type"`
		Content struct {
			Global json.RawMessage `json:"global"`
		} `json:"content"`
	}
	if err := json.Unmarshal(pushRulesEventExample, &event); err != nil {
		t.Fatal(err)
	}
	var rs Ruleset
	if err := json.Unmarshal(event.Content.Global, &rs); err != nil {
		t.Fatal(err)
	}
	if len(rs.Override) != 2 || len(rs.Underride) != 6 || rs.Underride[1].RuleID != ".m.rule.is_user_mention" {
		t.Fatalf("parsed %+v", rs)
	}
	sameJSON(t, mustMarshal(t, rs), withAllKinds(t, event.Content.Global))
	// The highlight tweak of .m.rule.call has value false; that of is_user_mention none.
	if a := rs.Underride[0].Actions[2]; a.Tweak != TweakHighlight || string(a.Value) != "false" {
		t.Fatalf("call highlight %+v", a)
	}
	if a := rs.Underride[1].Actions[2]; a.Tweak != TweakHighlight || a.Value != nil {
		t.Fatalf("mention highlight %+v", a)
	}
}

// TestPushPredefinedRulesJSON: each predefined rule writes back as push.md defines it.
func TestPushPredefinedRulesJSON(t *testing.T) {
	sameJSON(t, mustMarshal(t, predefined), withAllKinds(t, predefinedJSON))
	var spec map[string][]json.RawMessage
	if err := json.Unmarshal(predefinedJSON, &spec); err != nil {
		t.Fatal(err)
	}
	for _, kind := range Kinds {
		for i, raw := range spec[string(kind)] {
			var r Rule
			if err := json.Unmarshal(raw, &r); err != nil {
				t.Fatal(err)
			}
			sameJSON(t, mustMarshal(t, r), raw)
			if got := predefined.Rules(kind)[i].RuleID; got != r.RuleID {
				t.Fatalf("%s rule %d is %s, want %s", kind, i, got, r.RuleID)
			}
		}
	}
}

// TestPushRuleJSONExamples: the examples of pushrules.yaml.
func TestPushRuleJSONExamples(t *testing.T) {
	for _, example := range []string{
		// getPushRule's response.
		`{"actions":[],"pattern":"cake*lie","rule_id":"nocake","enabled":true,"default":false}`,
		// An override with every condition kind.
		`{"rule_id":"all","default":false,"enabled":true,"actions":["notify",{"set_tweak":"sound","value":"beeroclock.wav"}],"conditions":[
			{"kind":"event_match","key":"content.body","pattern":"beer"},{"kind":"room_member_count","is":"<=10"},
			{"kind":"event_property_is","key":"content.m\\.federate","value":true},{"kind":"event_property_is","key":"a","value":null},
			{"kind":"event_property_contains","key":"content.alt_aliases","value":"#myroom:example.com"},
			{"kind":"event_property_is","key":"n","value":-9007199254740991},
			{"kind":"contains_display_name"},{"kind":"sender_notification_permission","key":"room"},
			{"kind":"event_match","key":"state_key","pattern":""},
			{"kind":"org.example.future","key":"k","rel_type":"m.thread","value":{"nested":[1,2]},"include_fallbacks":false}]}`,
		// Tweaks pass through as they are.
		`{"rule_id":"t","default":false,"enabled":false,"actions":[{"set_tweak":"org.example.light","value":{"colour":"#ff0000","blink":[1,2]}},{"set_tweak":"highlight","value":false},{"set_tweak":"sound","value":null},"dont_notify","coalesce","org.example.action"]}`,
		// A room rule: no conditions key.
		`{"rule_id":"!dj234r78wl45Gh4D:matrix.org","default":false,"enabled":true,"actions":[]}`,
	} {
		var r Rule
		if err := json.Unmarshal([]byte(example), &r); err != nil {
			t.Fatalf("%s: %v", example, err)
		}
		sameJSON(t, mustMarshal(t, r), []byte(example))
	}
}

func TestPushJSONShapes(t *testing.T) {
	// Empty kinds are [], never null; actions of a rule too.
	sameJSON(t, mustMarshal(t, Ruleset{Room: []Rule{{RuleID: "!r:x", Enabled: true}}}),
		[]byte(`{"override":[],"content":[],"room":[{"rule_id":"!r:x","default":false,"enabled":true,"actions":[]}],"sender":[],"underride":[]}`))
	// An override rule with no conditions has [].
	sameJSON(t, mustMarshal(t, Rule{RuleID: "o", Conditions: []Condition{}, Actions: []Action{{Name: ActionNotify}}}),
		[]byte(`{"rule_id":"o","default":false,"enabled":false,"conditions":[],"actions":["notify"]}`))
	// Conditions made in code write the parameters their kind needs.
	sameJSON(t, mustMarshal(t, []Condition{
		{Kind: EventMatch, Key: "state_key"},
		{Kind: EventPropertyIs, Key: "k", Value: IntValue(3)},
		{Kind: RoomMemberCount, Is: "2"},
		{Kind: ContainsDisplayName},
	}), []byte(`[{"kind":"event_match","key":"state_key","pattern":""},{"kind":"event_property_is","key":"k","value":3},
		{"kind":"room_member_count","is":"2"},{"kind":"contains_display_name"}]`))

	for _, v := range []struct {
		value Value
		json  string
	}{
		{StringValue("x"), `"x"`}, {IntValue(-4), `-4`}, {BoolValue(true), `true`}, {BoolValue(false), `false`},
		{NullValue(), `null`}, {IntValue(1 << 60), `1152921504606846976`},
	} {
		if got := string(mustMarshal(t, v.value)); got != v.json {
			t.Errorf("%+v marshals to %s, want %s", v.value, got, v.json)
		}
		var back Value
		if err := json.Unmarshal([]byte(v.json), &back); err != nil || back != v.value {
			t.Errorf("%s reads as %+v, %v", v.json, back, err)
		}
	}
	if IntValue(1<<60).comparable() || !IntValue(1<<53-1).comparable() || (Value{}).comparable() {
		t.Error("comparable() is wrong")
	}
}

func TestPushJSONRefused(t *testing.T) {
	for _, bad := range []string{
		`5`, `{"value":"notify"}`, `{"set_tweak":5}`, `{"set_tweak":null}`, `"set_tweak"`, `null`, `[]`, `true`,
	} {
		var a Action
		if err := json.Unmarshal([]byte(bad), &a); err == nil && bad != `null` {
			t.Errorf("action %s accepted as %+v", bad, a)
		}
	}
	for _, bad := range []string{
		`{}`, `{"kind":5}`, `{"kind":null}`, `{"kind":"event_match","key":5}`, `{"kind":"event_match","pattern":null}`,
		`{"kind":"room_member_count","is":2}`, `[]`, `"event_match"`,
	} {
		var c Condition
		if err := json.Unmarshal([]byte(bad), &c); err == nil {
			t.Errorf("condition %s accepted as %+v", bad, c)
		}
	}
	for _, bad := range []string{`{"override":{}}`, `{"content":[{"rule_id":5}]}`, `{"room":[{"actions":[6]}]}`, `[]`} {
		var rs Ruleset
		if err := json.Unmarshal([]byte(bad), &rs); err == nil {
			t.Errorf("ruleset %s accepted", bad)
		}
	}
}

func TestPushParseKind(t *testing.T) {
	for _, k := range Kinds {
		if got, ok := ParseKind(string(k)); !ok || got != k {
			t.Errorf("ParseKind(%s)", k)
		}
	}
	for _, bad := range []string{"", "Override", "global", "device"} {
		if _, ok := ParseKind(bad); ok {
			t.Errorf("ParseKind(%q) succeeded", bad)
		}
	}
}

// FuzzRulesetJSON: any ruleset that parses writes JSON that parses to the same ruleset,
// upgrades to a fixed point and evaluates without a panic.
func FuzzRulesetJSON(f *testing.F) {
	var event struct {
		Content struct {
			Global json.RawMessage `json:"global"`
		} `json:"content"`
	}
	if err := json.Unmarshal(pushRulesEventExample, &event); err != nil {
		f.Fatal(err)
	}
	f.Add(string(event.Content.Global))
	f.Add(string(predefinedJSON))
	f.Add(`{"override":[{"rule_id":"x","conditions":[{"kind":"k","value":1.5,"x":{"a":"<&>"}}],"actions":[{"set_tweak":"s","value":"\u00e9"}]}]}`)
	f.Add(`{"content":[{"rule_id":"c","pattern":"c?k*","enabled":true,"actions":["notify"]}],"room":[{"rule_id":"!r:x","default":true}]}`)
	events := []EvalEvent{}
	for _, e := range []string{
		`{"type":"m.room.message","sender":"@bob:example.org","room_id":"!r:x","content":{"body":"cake","msgtype":"m.text","m.mentions":{"user_ids":["@alice:example.org"],"room":true}}}`,
		`{"type":"m.room.member","sender":"@bob:example.org","state_key":"@alice:example.org","content":{"membership":"invite"}}`,
	} {
		ev, err := NewEvalEvent([]byte(e))
		if err != nil {
			f.Fatal(err)
		}
		events = append(events, ev)
	}
	f.Fuzz(func(t *testing.T, data string) {
		var rs Ruleset
		if json.Unmarshal([]byte(data), &rs) != nil {
			return
		}
		first, err := json.Marshal(rs)
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		var again Ruleset
		if err := json.Unmarshal(first, &again); err != nil {
			t.Fatalf("re-parse of %s: %v", first, err)
		}
		second, err := json.Marshal(again)
		if err != nil || string(second) != string(first) {
			t.Fatalf("not stable:\n%s\n%s", first, second)
		}
		upgraded := Upgrade(rs, testUser)
		once, _ := json.Marshal(upgraded)
		twice, _ := json.Marshal(Upgrade(upgraded, testUser))
		if string(once) != string(twice) {
			t.Fatalf("Upgrade is not a fixed point:\n%s\n%s", once, twice)
		}
		if !strings.Contains(string(once), `".m.rule.master"`) {
			t.Fatal("upgraded ruleset lacks .m.rule.master")
		}
		ctx := EvalContext{UserID: testUser, DisplayName: "Alice", MemberCount: 2,
			PowerLevels: func() *PowerLevels { return &PowerLevels{Sender: 50} }}
		for _, ev := range events {
			Evaluate(rs, ev, ctx)
			Evaluate(upgraded, ev, ctx)
		}
	})
}
