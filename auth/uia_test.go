package auth

import (
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// testStages are validators for the UIA tests: m.login.password accepts "secret",
// m.login.registration_token accepts "tok-1", and two test stages fail in the two
// non-retryable ways.
func testStages(calls map[string]int) Stages {
	count := func(stage string, check StageCheck) StageCheck {
		return func(d json.RawMessage) error {
			calls[stage]++
			return check(d)
		}
	}
	return Stages{
		StageDummy: count(StageDummy, DummyStage),
		StagePassword: count(StagePassword, PasswordStage(func(c PasswordCredentials) error {
			if c.Identifier.User != "@alice:example.org" || c.Password != "secret" {
				return &StageError{Code: ErrCodeForbidden, Message: "Invalid password"}
			}
			return nil
		})),
		StageRegistrationToken: count(StageRegistrationToken, RegistrationTokenStage(func(token string) (bool, error) {
			return token == "tok-1", nil
		})),
		"test.forbidden": count("test.forbidden", func(json.RawMessage) error {
			return &Error{Status: 403, Code: ErrCodeForbidden, Message: "no such 3PID"}
		}),
		"test.broken": count("test.broken", func(json.RawMessage) error {
			return errors.New("database down")
		}),
	}
}

var (
	opRegister = Operation{Method: "POST", Path: "/_matrix/client/v3/register"}
	opDelete   = Operation{Method: "POST", Path: "/_matrix/client/v3/delete_devices", UserID: "@alice:example.org"}
	opOther    = Operation{Method: "POST", Path: "/_matrix/client/v3/account/password", UserID: "@alice:example.org"}

	offerRegister = AuthFlows{Flows: [][]string{{StageDummy}, {StageRegistrationToken, StageDummy}}}
	offerPassword = AuthFlows{Flows: [][]string{{StagePassword}}}
	offerTwoStep  = AuthFlows{
		Flows:  [][]string{{StagePassword, StageDummy}, {StageRegistrationToken, "test.forbidden"}},
		Params: map[string]any{"m.login.terms": map[string]any{"policies": map[string]any{}}},
	}
	offerBroken = AuthFlows{Flows: [][]string{{"test.broken"}}}
)

const passwordAuth = `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@alice:example.org"},"password":"secret","session":"$S"}`

// uiaStep is one request in a UIA exchange. "$S" in auth is replaced by the session ID
// the exchange has so far.
type uiaStep struct {
	advance       time.Duration
	op            Operation
	offer         AuthFlows
	auth          string
	wantDone      bool
	wantErrCode   string   // errcode in the 401 body
	wantCompleted []string // completed in resp (nil: don't check)
	wantStatus    int      // status of a returned *Error; -1 for an internal error
	wantNewID     bool     // the response names a session other than $S
}

func TestUIA(t *testing.T) {
	tests := []struct {
		name  string
		steps []uiaStep
	}{
		{"no auth gives 401 with a session, even for a dummy-only flow", []uiaStep{
			{op: opRegister, offer: AuthFlows{Flows: [][]string{{StageDummy}}}, auth: ``, wantCompleted: []string{}, wantNewID: true},
		}},
		{"null and empty auth are no auth", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: `null`, wantNewID: true},
			{op: opRegister, offer: offerRegister, auth: `{}`, wantNewID: true},
		}},
		{"dummy without a session creates one implicitly", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.dummy"}`, wantDone: true, wantNewID: true, wantCompleted: []string{StageDummy}},
		}},
		{"dummy in an existing session", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: ``, wantNewID: true},
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.dummy","session":"$S"}`, wantDone: true},
		}},
		{"registration token then dummy", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: ``, wantNewID: true},
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.registration_token","token":"bad!","session":"$S"}`, wantErrCode: ErrCodeUnauthorized, wantCompleted: []string{}},
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.registration_token","token":"tok-2","session":"$S"}`, wantErrCode: ErrCodeUnauthorized},
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.registration_token","token":"tok-1","session":"$S"}`, wantCompleted: []string{StageRegistrationToken}},
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.dummy","session":"$S"}`, wantDone: true, wantCompleted: []string{StageRegistrationToken, StageDummy}},
		}},
		{"registration token without a token", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: `{"type":"m.login.registration_token"}`, wantStatus: 400},
		}},
		{"wrong then right password", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: ``, wantNewID: true},
			{op: opDelete, offer: offerPassword, auth: strings.Replace(passwordAuth, `"secret"`, `"wrong"`, 1), wantErrCode: ErrCodeForbidden, wantCompleted: []string{}},
			{op: opDelete, offer: offerPassword, auth: passwordAuth, wantDone: true, wantCompleted: []string{StagePassword}},
		}},
		{"malformed password dict ends the request", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: `{"type":"m.login.password","password":"secret"}`, wantStatus: 400},
		}},
		{"stages out of order are refused", []uiaStep{
			{op: opDelete, offer: offerTwoStep, auth: ``, wantNewID: true},
			{op: opDelete, offer: offerTwoStep, auth: `{"type":"m.login.dummy","session":"$S"}`, wantErrCode: ErrCodeUnauthorized, wantCompleted: []string{}},
			{op: opDelete, offer: offerTwoStep, auth: passwordAuth, wantCompleted: []string{StagePassword}},
			{op: opDelete, offer: offerTwoStep, auth: `{"type":"m.login.registration_token","token":"tok-1","session":"$S"}`, wantErrCode: ErrCodeUnauthorized, wantCompleted: []string{StagePassword}},
			{op: opDelete, offer: offerTwoStep, auth: `{"type":"m.login.dummy","session":"$S"}`, wantDone: true, wantCompleted: []string{StagePassword, StageDummy}},
		}},
		{"stage not offered", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: `{"type":"m.login.recaptcha","response":"x"}`, wantErrCode: ErrCodeUnauthorized, wantNewID: true},
		}},
		{"retrying a completed stage reports it completed", []uiaStep{
			{op: opDelete, offer: offerTwoStep, auth: passwordAuth, wantNewID: true, wantCompleted: []string{StagePassword}},
			// A wrong password is not even checked again: the stage is done.
			{op: opDelete, offer: offerTwoStep, auth: strings.Replace(passwordAuth, `"secret"`, `"wrong"`, 1), wantCompleted: []string{StagePassword}},
		}},
		{"a finished session succeeds again on retry", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: passwordAuth, wantNewID: true, wantDone: true},
			{op: opDelete, offer: offerPassword, auth: `{"session":"$S"}`, wantDone: true},
			{op: opDelete, offer: offerPassword, auth: passwordAuth, wantDone: true},
		}},
		{"session-only auth on an unfinished session", []uiaStep{
			{op: opDelete, offer: offerTwoStep, auth: ``, wantNewID: true},
			{op: opDelete, offer: offerTwoStep, auth: `{"session":"$S"}`, wantCompleted: []string{}},
		}},
		{"unknown session", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: `{"type":"m.login.password","session":"nope"}`, wantStatus: 400},
		}},
		{"expired session", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: ``, wantNewID: true},
			{advance: DefaultUIASessionTTL, op: opDelete, offer: offerPassword, auth: passwordAuth, wantStatus: 400},
		}},
		{"session still alive just before expiry", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: ``, wantNewID: true},
			{advance: DefaultUIASessionTTL - time.Second, op: opDelete, offer: offerPassword, auth: passwordAuth, wantDone: true},
		}},
		{"changing the endpoint is refused", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: ``, wantNewID: true},
			{op: opOther, offer: offerPassword, auth: passwordAuth, wantStatus: 403},
		}},
		{"changing the user is refused", []uiaStep{
			{op: opDelete, offer: offerPassword, auth: ``, wantNewID: true},
			{op: Operation{Method: opDelete.Method, Path: opDelete.Path, UserID: "@mallory:example.org"}, offer: offerPassword, auth: passwordAuth, wantStatus: 403},
		}},
		{"changing the body fingerprint is refused", []uiaStep{
			{op: Operation{Method: "POST", Path: "/delete_devices", UserID: "@alice:example.org", Fingerprint: "devices=A"}, offer: offerPassword, auth: ``, wantNewID: true},
			{op: Operation{Method: "POST", Path: "/delete_devices", UserID: "@alice:example.org", Fingerprint: "devices=A,B"}, offer: offerPassword, auth: passwordAuth, wantStatus: 403},
			{op: Operation{Method: "POST", Path: "/delete_devices", UserID: "@alice:example.org", Fingerprint: "devices=A"}, offer: offerPassword, auth: passwordAuth, wantDone: true},
		}},
		{"auth that is not an object", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: `["m.login.dummy"]`, wantStatus: 400},
		}},
		{"type that is not a string", []uiaStep{
			{op: opRegister, offer: offerRegister, auth: `{"type":1}`, wantStatus: 400},
		}},
		{"validator's Matrix error ends the request", []uiaStep{
			{op: opDelete, offer: offerTwoStep, auth: `{"type":"m.login.registration_token","token":"tok-1"}`, wantNewID: true, wantCompleted: []string{StageRegistrationToken}},
			{op: opDelete, offer: offerTwoStep, auth: `{"type":"test.forbidden","session":"$S"}`, wantStatus: 403},
		}},
		{"validator's internal error", []uiaStep{
			{op: opDelete, offer: offerBroken, auth: `{"type":"test.broken"}`, wantStatus: -1},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			engine := NewUIA(UIAConfig{Clock: clock.Now})
			validate := testStages(map[string]int{}).Validate
			session := ""
			for i, step := range tt.steps {
				clock.Advance(step.advance)
				auth := json.RawMessage(strings.ReplaceAll(step.auth, "$S", session))
				done, resp, err := engine.Check(step.op, step.offer, auth, validate)
				if step.wantStatus != 0 {
					var matrixErr *Error
					switch {
					case err == nil:
						t.Fatalf("step %d: no error, want status %d", i, step.wantStatus)
					case step.wantStatus == -1 && errors.As(err, &matrixErr):
						t.Fatalf("step %d: error %v, want an internal error", i, err)
					case step.wantStatus > 0 && (!errors.As(err, &matrixErr) || matrixErr.Status != step.wantStatus):
						t.Fatalf("step %d: error %v, want status %d", i, err, step.wantStatus)
					}
					continue
				}
				if err != nil {
					t.Fatalf("step %d: %v", i, err)
				}
				if done != step.wantDone {
					t.Fatalf("step %d: done = %v, want %v (resp %+v)", i, done, step.wantDone, resp)
				}
				if resp.ErrCode != step.wantErrCode {
					t.Fatalf("step %d: errcode %q, want %q", i, resp.ErrCode, step.wantErrCode)
				}
				if step.wantCompleted != nil && !slices.Equal(resp.Completed, step.wantCompleted) {
					t.Fatalf("step %d: completed %v, want %v", i, resp.Completed, step.wantCompleted)
				}
				if resp.Session == "" {
					t.Fatalf("step %d: response without a session", i)
				}
				if isNew := resp.Session != session; isNew != step.wantNewID {
					t.Fatalf("step %d: new session = %v, want %v", i, isNew, step.wantNewID)
				}
				if len(resp.Flows) != len(step.offer.Flows) || resp.Params == nil {
					t.Fatalf("step %d: flows %v params %v do not reflect the offer", i, resp.Flows, resp.Params)
				}
				session = resp.Session
			}
		})
	}
}

func TestUIAResponseJSON(t *testing.T) {
	engine := NewUIA(UIAConfig{Clock: newFakeClock().Now})
	offer := AuthFlows{
		Flows:  [][]string{{"example.type.foo", "example.type.bar"}, {"example.type.foo", "example.type.baz"}},
		Params: map[string]any{"example.type.baz": map[string]string{"example_key": "foobar"}},
	}
	_, resp, err := engine.Check(opRegister, offer, nil, Stages{}.Validate)
	if err != nil {
		t.Fatal(err)
	}
	got, err := json.Marshal(resp)
	if err != nil {
		t.Fatal(err)
	}
	// The example of "User-interactive API in the REST API", with completed always present.
	want := `{"flows":[{"stages":["example.type.foo","example.type.bar"]},{"stages":["example.type.foo","example.type.baz"]}],` +
		`"params":{"example.type.baz":{"example_key":"foobar"}},"session":"` + resp.Session + `","completed":[]}`
	if string(got) != want {
		t.Errorf("401 body\n got %s\nwant %s", got, want)
	}
	if len(resp.Session) != sessionIDLength {
		t.Errorf("session ID %q has %d characters, want %d", resp.Session, len(resp.Session), sessionIDLength)
	}
}

func TestUIARetryDoesNotRevalidate(t *testing.T) {
	engine := NewUIA(UIAConfig{Clock: newFakeClock().Now})
	calls := map[string]int{}
	validate := testStages(calls).Validate
	_, resp, err := engine.Check(opDelete, offerTwoStep, json.RawMessage(strings.ReplaceAll(passwordAuth, `,"session":"$S"`, "")), validate)
	if err != nil {
		t.Fatal(err)
	}
	auth := json.RawMessage(strings.ReplaceAll(passwordAuth, "$S", resp.Session))
	for range 3 {
		if _, _, err := engine.Check(opDelete, offerTwoStep, auth, validate); err != nil {
			t.Fatal(err)
		}
	}
	if calls[StagePassword] != 1 {
		t.Errorf("password validated %d times, want 1", calls[StagePassword])
	}
}

func TestUIARegistrationTokenKeptInSession(t *testing.T) {
	engine := NewUIA(UIAConfig{Clock: newFakeClock().Now})
	validate := testStages(map[string]int{}).Validate
	_, resp, err := engine.Check(opRegister, offerRegister, json.RawMessage(`{"type":"m.login.registration_token","token":"tok-1"}`), validate)
	if err != nil {
		t.Fatal(err)
	}
	done, _, err := engine.Check(opRegister, offerRegister, json.RawMessage(`{"type":"m.login.dummy","session":"`+resp.Session+`"}`), validate)
	if err != nil || !done {
		t.Fatalf("done = %v, err = %v", done, err)
	}
	token, ok := engine.SessionData(resp.Session, SessionDataRegistrationToken)
	if !ok || token != "tok-1" {
		t.Errorf("session registration token = %v, %v; want tok-1", token, ok)
	}
}

func TestUIASessionData(t *testing.T) {
	clock := newFakeClock()
	engine := NewUIA(UIAConfig{Clock: clock.Now})
	_, resp, err := engine.Check(opRegister, offerRegister, nil, acceptAll)
	if err != nil {
		t.Fatal(err)
	}
	if !engine.SetSessionData(resp.Session, "registered_user_id", "@bob:example.org") {
		t.Fatal("SetSessionData on a live session failed")
	}
	if v, ok := engine.SessionData(resp.Session, "registered_user_id"); !ok || v != "@bob:example.org" {
		t.Errorf("SessionData = %v, %v", v, ok)
	}
	if _, ok := engine.SessionData(resp.Session, "other"); ok {
		t.Error("SessionData found a key never set")
	}
	if engine.SetSessionData("unknown", "k", 1) {
		t.Error("SetSessionData on an unknown session succeeded")
	}
	engine.Delete(resp.Session)
	if _, ok := engine.SessionData(resp.Session, "registered_user_id"); ok {
		t.Error("data outlived Delete")
	}
	_, _, err = engine.Check(opRegister, offerRegister, json.RawMessage(`{"type":"m.login.dummy","session":"`+resp.Session+`"}`), acceptAll)
	if err == nil {
		t.Error("a deleted session was accepted")
	}
}

// acceptAll accepts every stage, for tests that are not about validation.
func acceptAll(string, json.RawMessage) error { return nil }

func TestUIACompleteStage(t *testing.T) {
	engine := NewUIA(UIAConfig{Clock: newFakeClock().Now})
	offer := AuthFlows{Flows: [][]string{{StageEmailIdentity, StageDummy}}}
	_, resp, err := engine.Check(opRegister, offer, nil, acceptAll)
	if err != nil {
		t.Fatal(err)
	}
	if err := engine.CompleteStage(resp.Session, offer, StageDummy); err == nil {
		t.Error("CompleteStage accepted a stage out of order")
	}
	if err := engine.CompleteStage(resp.Session, offer, StageEmailIdentity); err != nil {
		t.Fatal(err)
	}
	if err := engine.CompleteStage(resp.Session, offer, StageEmailIdentity); err != nil {
		t.Errorf("completing a stage twice: %v", err)
	}
	if err := engine.CompleteStage("unknown", offer, StageEmailIdentity); err == nil {
		t.Error("CompleteStage accepted an unknown session")
	}
	done, resp, err := engine.Check(opRegister, offer, json.RawMessage(`{"session":"`+resp.Session+`"}`), acceptAll)
	if err != nil || done || !slices.Equal(resp.Completed, []string{StageEmailIdentity}) {
		t.Fatalf("after out-of-band stage: done %v, completed %v, err %v", done, resp.Completed, err)
	}
	done, _, err = engine.Check(opRegister, offer, json.RawMessage(`{"type":"m.login.dummy","session":"`+resp.Session+`"}`), acceptAll)
	if err != nil || !done {
		t.Fatalf("done = %v, err = %v", done, err)
	}
}

func TestUIABoundedSessions(t *testing.T) {
	engine := NewUIA(UIAConfig{Clock: newFakeClock().Now, MaxSessions: 2})
	var sessions []string
	for range 3 {
		_, resp, err := engine.Check(opRegister, offerRegister, nil, acceptAll)
		if err != nil {
			t.Fatal(err)
		}
		sessions = append(sessions, resp.Session)
	}
	if engine.Len() != 2 {
		t.Fatalf("Len = %d, want 2", engine.Len())
	}
	dummy := func(s string) json.RawMessage {
		return json.RawMessage(`{"type":"m.login.dummy","session":"` + s + `"}`)
	}
	if _, _, err := engine.Check(opRegister, offerRegister, dummy(sessions[0]), acceptAll); err == nil {
		t.Error("the oldest session survived eviction")
	}
	if done, _, err := engine.Check(opRegister, offerRegister, dummy(sessions[2]), acceptAll); err != nil || !done {
		t.Errorf("newest session: done %v, err %v", done, err)
	}
}

func TestUIAInvalidOffer(t *testing.T) {
	engine := NewUIA(UIAConfig{})
	for _, offer := range []AuthFlows{{}, {Flows: [][]string{{StageDummy}, {}}}} {
		if _, _, err := engine.Check(opRegister, offer, nil, acceptAll); err == nil {
			t.Errorf("offer %v accepted", offer.Flows)
		}
	}
}

func TestStagesUnknownStage(t *testing.T) {
	err := Stages{}.Validate(StageDummy, nil)
	var matrixErr *Error
	var stageErr *StageError
	if err == nil || errors.As(err, &matrixErr) || errors.As(err, &stageErr) {
		t.Errorf("missing validator: err = %v, want an internal error", err)
	}
}

func BenchmarkUIADummyRegistration(b *testing.B) {
	engine := NewUIA(UIAConfig{})
	auth := json.RawMessage(`{"type":"m.login.dummy"}`)
	for b.Loop() {
		if done, _, err := engine.Check(opRegister, offerRegister, auth, acceptAll); err != nil || !done {
			b.Fatal(done, err)
		}
	}
}

func TestUIAConcurrentStages(t *testing.T) {
	engine := NewUIA(UIAConfig{Clock: newFakeClock().Now})
	_, resp, err := engine.Check(opDelete, offerTwoStep, nil, acceptAll)
	if err != nil {
		t.Fatal(err)
	}
	auth := json.RawMessage(strings.ReplaceAll(passwordAuth, "$S", resp.Session))
	results := make(chan []string, 16)
	var wg sync.WaitGroup
	for range cap(results) {
		wg.Go(func() {
			_, r, err := engine.Check(opDelete, offerTwoStep, auth, acceptAll)
			if err != nil {
				t.Error(err)
				return
			}
			results <- r.Completed
		})
	}
	wg.Wait()
	close(results)
	for completed := range results {
		if !slices.Equal(completed, []string{StagePassword}) {
			t.Errorf("completed = %v, want the password stage once", completed)
		}
	}
}
