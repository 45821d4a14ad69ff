package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"testing"

	"github.com/scrambledeggs/eggs/push"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

const pushRulesPath = "/_matrix/client/v3/pushrules/"

// ruleIDsOf lists the rule IDs of one kind of a ruleset answer.
func ruleIDsOf(t *testing.T, ruleset any, kind string) []string {
	t.Helper()
	object, ok := ruleset.(map[string]any)
	if !ok {
		t.Fatalf("ruleset %v", ruleset)
	}
	list, ok := object[kind].([]any)
	if !ok {
		t.Fatalf("kind %s of %v", kind, object)
	}
	ids := []string{}
	for _, r := range list {
		ids = append(ids, r.(map[string]any)["rule_id"].(string))
	}
	return ids
}

// userRuleIDs are the rule IDs of a kind without the server-default ones.
func userRuleIDs(t *testing.T, ruleset any, kind string) []string {
	t.Helper()
	var out []string
	for _, id := range ruleIDsOf(t, ruleset, kind) {
		if !strings.HasPrefix(id, ".") {
			out = append(out, id)
		}
	}
	return out
}

// TestPushRulesDefaults: a user who changed nothing is served every predefined rule, with
// or without the trailing slash, and each rule, its enabled state and actions alone.
func TestPushRulesDefaults(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")

		all := s.do("GET", pushRulesPath, alice, nil, http.StatusOK)
		want := map[string]any{}
		if err := json.Unmarshal(mustJSONBytes(t, map[string]any{"global": push.Defaults(aliceID)}), &want); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(all, want) {
			t.Fatalf("GET /pushrules/ = %v\nwant %v", all, want)
		}
		if again := s.do("GET", "/_matrix/client/v3/pushrules", alice, nil, http.StatusOK); !reflect.DeepEqual(again, want) {
			t.Fatalf("GET /pushrules = %v", again)
		}
		for _, path := range []string{"/_matrix/client/v3/pushrules/global/", "/_matrix/client/v3/pushrules/global", "/_matrix/client/r0/pushrules/global/"} {
			if global := s.do("GET", path, alice, nil, http.StatusOK); !reflect.DeepEqual(global, want["global"]) {
				t.Fatalf("GET %s = %v", path, global)
			}
		}
		override := ruleIDsOf(t, all["global"], "override")
		if override[0] != ".m.rule.master" || len(ruleIDsOf(t, all["global"], "content")) != 0 || len(ruleIDsOf(t, all["global"], "underride")) != 5 {
			t.Fatalf("override %v", override)
		}

		master := s.do("GET", pushRulesPath+"global/override/.m.rule.master", alice, nil, http.StatusOK)
		if master["rule_id"] != ".m.rule.master" || master["enabled"] != false || master["default"] != true {
			t.Fatalf("master %v", master)
		}
		if got := s.do("GET", pushRulesPath+"global/override/.m.rule.master/enabled", alice, nil, http.StatusOK); !reflect.DeepEqual(got, map[string]any{"enabled": false}) {
			t.Fatalf("enabled %v", got)
		}
		invite := s.do("GET", pushRulesPath+"global/override/.m.rule.invite_for_me", alice, nil, http.StatusOK)
		if conds := invite["conditions"].([]any); conds[2].(map[string]any)["pattern"] != aliceID {
			t.Fatalf("invite_for_me %v", invite)
		}
		actions := s.do("GET", pushRulesPath+"global/underride/.m.rule.call/actions", alice, nil, http.StatusOK)
		if got := string(mustJSONBytes(t, actions)); got != `{"actions":["notify",{"set_tweak":"sound","value":"ring"}]}` {
			t.Fatalf("call actions %s", got)
		}

		s.expectErr("GET", pushRulesPath+"global/override/nope", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", pushRulesPath+"global/content/.m.rule.master", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", pushRulesPath+"global/override/nope/enabled", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", pushRulesPath+"global/override/nope/actions", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("GET", pushRulesPath+"global/device/.m.rule.master", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", pushRulesPath, "", nil, http.StatusUnauthorized, "M_MISSING_TOKEN")
	})
}

func mustJSONBytes(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestPushRulesEdit: adding with before and after, the spec's examples, enabling,
// actions, deleting, and the errors of each.
func TestPushRulesEdit(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		global := pushRulesPath + "global/"
		ruleset := func() any { return s.do("GET", global, alice, nil, http.StatusOK) }

		// The examples of "Push Rules: Events".
		s.do("PUT", global+"room/%21dj234r78wl45Gh4D%3Amatrix.org", alice, map[string]any{"actions": []any{}}, http.StatusOK)
		s.do("PUT", global+"sender/%40spambot%3Amatrix.org", alice, map[string]any{"actions": []any{}}, http.StatusOK)
		s.do("PUT", global+"content/SSByZWFsbHkgbGlrZSBjYWtl", alice, map[string]any{
			"pattern": "cake", "actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "cakealarm.wav"}}}, http.StatusOK)
		s.do("PUT", global+"content/U3BvbmdlIGNha2UgaXMgYmVzdA?before=SSByZWFsbHkgbGlrZSBjYWtl", alice, map[string]any{
			"pattern": "cake*lie", "actions": []any{"notify"}}, http.StatusOK)
		s.do("PUT", global+"override/U2VlIHlvdSBpbiBUaGUgRHVrZQ", alice, map[string]any{
			"conditions": []any{
				map[string]any{"kind": "event_match", "key": "content.body", "pattern": "beer"},
				map[string]any{"kind": "room_member_count", "is": "<=10"},
			},
			"actions": []any{"notify", map[string]any{"set_tweak": "sound", "value": "beeroclock.wav"}},
		}, http.StatusOK)

		rs := ruleset()
		if got := ruleIDsOf(t, rs, "room"); !reflect.DeepEqual(got, []string{"!dj234r78wl45Gh4D:matrix.org"}) {
			t.Fatalf("room %v", got)
		}
		if got := ruleIDsOf(t, rs, "sender"); !reflect.DeepEqual(got, []string{"@spambot:matrix.org"}) {
			t.Fatalf("sender %v", got)
		}
		if got := ruleIDsOf(t, rs, "content"); !reflect.DeepEqual(got, []string{"U3BvbmdlIGNha2UgaXMgYmVzdA", "SSByZWFsbHkgbGlrZSBjYWtl"}) {
			t.Fatalf("content %v", got)
		}
		if got := ruleIDsOf(t, rs, "override")[:3]; !reflect.DeepEqual(got, []string{".m.rule.master", "U2VlIHlvdSBpbiBUaGUgRHVrZQ", ".m.rule.suppress_notices"}) {
			t.Fatalf("override %v", got)
		}
		room := s.do("GET", global+"room/%21dj234r78wl45Gh4D%3Amatrix.org", alice, nil, http.StatusOK)
		if !reflect.DeepEqual(room, map[string]any{"rule_id": "!dj234r78wl45Gh4D:matrix.org", "default": false, "enabled": true, "actions": []any{}}) {
			t.Fatalf("room rule %v", room)
		}
		nocake := s.do("GET", global+"content/U3BvbmdlIGNha2UgaXMgYmVzdA", alice, nil, http.StatusOK)
		if !reflect.DeepEqual(nocake, map[string]any{"rule_id": "U3BvbmdlIGNha2UgaXMgYmVzdA", "default": false, "enabled": true,
			"pattern": "cake*lie", "actions": []any{"notify"}}) {
			t.Fatalf("content rule %v", nocake)
		}

		// after, and before winning over after; a replaced rule keeps its place.
		s.do("PUT", global+"content/last?after=SSByZWFsbHkgbGlrZSBjYWtl", alice, map[string]any{"pattern": "z", "actions": []any{}}, http.StatusOK)
		s.do("PUT", global+"content/first?before=U3BvbmdlIGNha2UgaXMgYmVzdA&after=last", alice, map[string]any{"pattern": "a", "actions": []any{}}, http.StatusOK)
		s.do("PUT", global+"content/SSByZWFsbHkgbGlrZSBjYWtl", alice, map[string]any{"pattern": "pie", "actions": []any{}}, http.StatusOK)
		if got := ruleIDsOf(t, ruleset(), "content"); !reflect.DeepEqual(got, []string{"first", "U3BvbmdlIGNha2UgaXMgYmVzdA", "SSByZWFsbHkgbGlrZSBjYWtl", "last"}) {
			t.Fatalf("content %v", got)
		}

		// Errors of PUT.
		body := map[string]any{"pattern": "x", "actions": []any{"notify"}}
		s.expectErr("PUT", global+"content/x?before=nope", alice, body, http.StatusBadRequest, "M_UNKNOWN")
		s.expectErr("PUT", global+"content/x?after=nope", alice, body, http.StatusBadRequest, "M_UNKNOWN")
		s.expectErr("PUT", global+"underride/x?before=.m.rule.message", alice, body, http.StatusBadRequest, "M_UNKNOWN")
		s.expectErr("PUT", global+"content/.mine", alice, body, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", global+"override/.m.rule.master", alice, body, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", global+"content/a%2Fb", alice, body, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", global+"content/a%5Cb", alice, body, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", global+"content/"+strings.Repeat("x", 300), alice, body, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", global+"device/x", alice, body, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("PUT", global+"content/x", alice, map[string]any{"actions": []any{"notify"}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"content/x", alice, map[string]any{"pattern": "x"}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"content/x", alice, map[string]any{"pattern": 5, "actions": []any{}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"content/x", alice, map[string]any{"pattern": "x", "actions": []any{5}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"content/x", alice, map[string]any{"pattern": "x", "actions": []any{"org.example.x"}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"override/x", alice, map[string]any{"conditions": []any{map[string]any{"key": "type"}}, "actions": []any{}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"override/x", alice, map[string]any{"conditions": []any{map[string]any{"kind": "event_match", "key": "type"}}, "actions": []any{}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"override/x", alice, map[string]any{"conditions": "all", "actions": []any{}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"content/x", alice, "[]", http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"content/x", alice, "{", http.StatusBadRequest, "M_NOT_JSON")
		s.expectErr("PUT", global+"content/x", alice, `{"pattern":"`+strings.Repeat("x", maxPushRuleBody)+`","actions":[]}`, http.StatusRequestEntityTooLarge, "M_TOO_LARGE")
		if got := ruleIDsOf(t, ruleset(), "content"); len(got) != 4 {
			t.Fatalf("a refused PUT changed the rules: %v", got)
		}
		// An override without conditions matches everything and says so with [].
		s.do("PUT", global+"override/everything", alice, map[string]any{"actions": []any{"dont_notify"}}, http.StatusOK)
		if got := s.do("GET", global+"override/everything", alice, nil, http.StatusOK); !reflect.DeepEqual(got,
			map[string]any{"rule_id": "everything", "default": false, "enabled": true, "conditions": []any{}, "actions": []any{}}) {
			t.Fatalf("everything %v", got)
		}

		// Enabled, server-default rules included; a bare boolean is taken too.
		s.do("PUT", global+"underride/.m.rule.message/enabled", alice, map[string]any{"enabled": false}, http.StatusOK)
		if got := s.do("GET", global+"underride/.m.rule.message/enabled", alice, nil, http.StatusOK); got["enabled"] != false {
			t.Fatalf("enabled %v", got)
		}
		s.do("PUT", global+"override/.m.rule.master/enabled", alice, "true", http.StatusOK)
		if got := s.do("GET", global+"override/.m.rule.master", alice, nil, http.StatusOK); got["enabled"] != true {
			t.Fatalf("master %v", got)
		}
		s.expectErr("PUT", global+"override/.m.rule.master/enabled", alice, map[string]any{"enabled": "no"}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"override/.m.rule.master/enabled", alice, map[string]any{}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"override/nope/enabled", alice, map[string]any{"enabled": true}, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("PUT", global+"device/x/enabled", alice, map[string]any{"enabled": true}, http.StatusBadRequest, "M_INVALID_PARAM")

		// Actions, of server-default rules too; historical actions are stripped.
		s.do("PUT", global+"underride/.m.rule.message/actions", alice,
			map[string]any{"actions": []any{"notify", "coalesce", map[string]any{"set_tweak": "sound", "value": "bing"}}}, http.StatusOK)
		if got := string(mustJSONBytes(t, s.do("GET", global+"underride/.m.rule.message/actions", alice, nil, http.StatusOK))); got != `{"actions":["notify",{"set_tweak":"sound","value":"bing"}]}` {
			t.Fatalf("actions %s", got)
		}
		s.expectErr("PUT", global+"underride/.m.rule.message/actions", alice, map[string]any{"actions": []any{"org.example.x"}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"underride/.m.rule.message/actions", alice, map[string]any{}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"underride/.m.rule.message/actions", alice, map[string]any{"actions": "notify"}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("PUT", global+"underride/nope/actions", alice, map[string]any{"actions": []any{}}, http.StatusNotFound, "M_NOT_FOUND")

		// Delete.
		s.do("DELETE", global+"content/first", alice, nil, http.StatusOK)
		s.expectErr("GET", global+"content/first", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("DELETE", global+"content/first", alice, nil, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("DELETE", global+"override/.m.rule.master", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("DELETE", global+"device/x", alice, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.do("DELETE", global+"room/%21dj234r78wl45Gh4D%3Amatrix.org", alice, nil, http.StatusOK)
		if got := userRuleIDs(t, ruleset(), "room"); len(got) != 0 {
			t.Fatalf("room rules %v", got)
		}

		// Bob's rules are his own.
		bobs := s.do("GET", global, bob, nil, http.StatusOK)
		if got := userRuleIDs(t, bobs, "content"); len(got) != 0 {
			t.Fatalf("bob sees %v", got)
		}
		s.expectErr("GET", global+"content/last", bob, nil, http.StatusNotFound, "M_NOT_FOUND")
		if invite := s.do("GET", global+"override/.m.rule.invite_for_me", bob, nil, http.StatusOK); invite["conditions"].([]any)[2].(map[string]any)["pattern"] != bobID {
			t.Fatalf("bob's invite_for_me %v", invite)
		}

		// The account data holds the rules as served.
		stored := s.do("GET", "/_matrix/client/v3/user/"+aliceID+"/account_data/m.push_rules", alice, nil, http.StatusOK)
		if served := s.do("GET", pushRulesPath, alice, nil, http.StatusOK); !reflect.DeepEqual(stored, served) {
			t.Fatalf("stored %v\nserved %v", stored, served)
		}
		s.expectErr("PUT", "/_matrix/client/v3/user/"+aliceID+"/account_data/m.push_rules", alice, stored, http.StatusMethodNotAllowed, "M_BAD_JSON")
	})
}

// pushRulesInSync finds the m.push_rules content among a /sync's global account data.
func pushRulesInSync(resp map[string]any) map[string]any {
	data, _ := resp["account_data"].(map[string]any)
	events, _ := data["events"].([]any)
	for _, e := range events {
		if ev := e.(map[string]any); ev["type"] == pushRulesType {
			content, _ := ev["content"].(map[string]any)
			return content
		}
	}
	return nil
}

// TestPushRulesSync: a change reaches /sync as m.push_rules account data, incrementally and
// in an initial sync; pushRulesAccountData gives the defaults for a user without stored
// rules and what GET /pushrules/ gives once they have some.
func TestPushRulesSync(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		ctx := context.Background()

		content, err := s.api.pushRulesAccountData(ctx, aliceID)
		if err != nil {
			t.Fatal(err)
		}
		if want := mustJSONBytes(t, map[string]any{"global": push.Defaults(aliceID)}); !bytes.Equal(content, want) {
			t.Fatalf("account data of a user without rules %s\nwant %s", content, want)
		}

		since := s.sync(alice, url.Values{"timeout": {"0"}})["next_batch"].(string)
		s.do("PUT", pushRulesPath+"global/content/cake", alice, map[string]any{"pattern": "cake", "actions": []any{"notify"}}, http.StatusOK)
		served := s.do("GET", pushRulesPath, alice, nil, http.StatusOK)

		incremental := s.sync(alice, url.Values{"since": {since}, "timeout": {"0"}})
		if got := pushRulesInSync(incremental); !reflect.DeepEqual(got, served) {
			t.Fatalf("incremental sync m.push_rules %v\nwant %v", got, served)
		}
		if got := pushRulesInSync(s.sync(alice, url.Values{"timeout": {"0"}})); !reflect.DeepEqual(got, served) {
			t.Fatalf("initial sync m.push_rules %v", got)
		}
		content, err = s.api.pushRulesAccountData(ctx, aliceID)
		if err != nil {
			t.Fatal(err)
		}
		var decoded map[string]any
		if err := json.Unmarshal(content, &decoded); err != nil || !reflect.DeepEqual(decoded, served) {
			t.Fatalf("pushRulesAccountData %s, %v", content, err)
		}

		// Each change is delivered again; a refused one is not.
		next := incremental["next_batch"].(string)
		s.do("PUT", pushRulesPath+"global/content/cake/enabled", alice, map[string]any{"enabled": false}, http.StatusOK)
		after := s.sync(alice, url.Values{"since": {next}, "timeout": {"0"}})
		rules := pushRulesInSync(after)
		cake := rules["global"].(map[string]any)["content"].([]any)[0].(map[string]any)
		if cake["rule_id"] != "cake" || cake["enabled"] != false {
			t.Fatalf("synced cake %v", cake)
		}
		s.expectErr("PUT", pushRulesPath+"global/content/nope/enabled", alice, map[string]any{"enabled": false}, http.StatusNotFound, "M_NOT_FOUND")
		if got := pushRulesInSync(s.sync(alice, url.Values{"since": {after["next_batch"].(string)}, "timeout": {"0"}})); got != nil {
			t.Fatalf("a refused change was synced: %v", got)
		}
	})
}

// TestPushRulesConcurrentEdits: edits by one user at the same time are all kept: new
// rules and changed actions of server-default rules, side by side.
func TestPushRulesConcurrentEdits(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		type target struct{ kind, ruleID string }
		var defaults []target
		rs := push.Defaults(aliceID)
		for _, kind := range push.Kinds {
			for _, r := range rs.Rules(kind) {
				defaults = append(defaults, target{string(kind), r.RuleID})
			}
		}
		const writers = 12
		var wg sync.WaitGroup
		errs := make(chan error, writers*2)
		put := func(path string, body any) {
			defer wg.Done()
			encoded, _ := json.Marshal(body)
			req, _ := http.NewRequest("PUT", s.srv.URL+path, bytes.NewReader(encoded))
			req.Header.Set("Authorization", "Bearer "+alice)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			if raw, _ := io.ReadAll(resp.Body); resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("PUT %s: %d %s", path, resp.StatusCode, raw)
			}
		}
		for i := range writers {
			wg.Add(2)
			go put(fmt.Sprintf("%sglobal/sender/%%40spam%d%%3Aexample.org", pushRulesPath, i), map[string]any{"actions": []any{}})
			d := defaults[i]
			go put(pushRulesPath+"global/"+d.kind+"/"+d.ruleID+"/actions",
				map[string]any{"actions": []any{map[string]any{"set_tweak": "sound", "value": fmt.Sprint(i)}}})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		got := s.do("GET", pushRulesPath+"global/", alice, nil, http.StatusOK)
		if senders := ruleIDsOf(t, got, "sender"); len(senders) != writers {
			t.Fatalf("%d of %d sender rules kept: %v", len(senders), writers, senders)
		}
		for i, d := range defaults[:writers] {
			actions := s.do("GET", pushRulesPath+"global/"+d.kind+"/"+d.ruleID+"/actions", alice, nil, http.StatusOK)
			if want := fmt.Sprintf(`{"actions":[{"set_tweak":"sound","value":"%d"}]}`, i); string(mustJSONBytes(t, actions)) != want {
				t.Errorf("%s actions %v, want %s", d.ruleID, actions, want)
			}
		}
	})
}
