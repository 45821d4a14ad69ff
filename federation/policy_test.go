package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// TestPolicySigner asks a fake Policy Server to sign an event (POST /_matrix/policy/v1/sign)
// and checks what reaches the client when it signs, refuses, fails or signs with another key.
func TestPolicySigner(t *testing.T) {
	clock := newFakeClock()
	roots := testRoots(t)
	ps := newTestServer(t, nil, clock, roots)
	here := newTestServer(t, nil, clock, roots)
	psKey := testKey("policy server")
	policy := spec.PolicyServer{ServerName: ps.name, Key: psKey.Public().(ed25519.PublicKey)}
	signer := &PolicySigner{Client: here.client}

	rv, _ := spec.LookupRoomVersion("12")
	proto := spec.ProtoEvent{Type: "m.room.message", Sender: "@alice:" + here.name, RoomID: "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
		Content: json.RawMessage(`{"body":"hi","msgtype":"m.text"}`), PrevEvents: []string{"$" + strings.Repeat("a", 43)},
		AuthEvents: []string{}, Depth: 3, OriginServerTS: clock.Now().UnixMilli()}
	ev, err := proto.Build(rv, here.name, "ed25519:a_1", testKey(here.name))
	if err != nil {
		t.Fatal(err)
	}

	// signWith answers as a Policy Server signing the redacted event with key.
	signWith := func(key ed25519.PrivateKey) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			body, _ := io.ReadAll(r.Body)
			if r.Method != http.MethodPost || r.URL.Path != "/_matrix/policy/v1/sign" || !strings.HasPrefix(r.Header.Get("Authorization"), "X-Matrix ") {
				httpapi.WriteError(w, r, httpapi.Unrecognized("unexpected %s %s", r.Method, r.URL.Path))
				return
			}
			received, err := spec.ParseEvent(body, rv)
			if err != nil || received.EventID() != ev.EventID() {
				httpapi.WriteError(w, r, httpapi.BadJSON("not the event: %v", err))
				return
			}
			redacted, _ := spec.RedactEventJSON(body, rv)
			signed, _ := spec.SignJSON(redacted, ps.name, spec.PolicyServerKeyID, key)
			var doc struct {
				Signatures map[string]map[string]string `json:"signatures"`
			}
			_ = json.Unmarshal(signed, &doc)
			httpapi.WriteJSON(w, http.StatusOK, map[string]any{ps.name: doc.Signatures[ps.name]})
		}
	}
	answer := func(status int, body string) http.HandlerFunc {
		return func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(status)
			_, _ = io.WriteString(w, body)
		}
	}

	ctx := context.Background()
	ps.serve(signWith(psKey))
	signed, err := signer.Sign(ctx, ev, policy)
	if err != nil {
		t.Fatalf("sign: %v", err)
	}
	if signed.EventID() != ev.EventID() || spec.VerifyPolicyServerSignature(signed, policy) != nil {
		t.Fatalf("signed event %s lacks a valid policy server signature", signed.EventID())
	}

	tests := []struct {
		name    string
		handler http.HandlerFunc
		status  int
		errcode string
		message string
	}{
		{"refused", answer(http.StatusBadRequest, `{"errcode":"M_FORBIDDEN","error":"The message appears to contain possible spam"}`),
			http.StatusForbidden, "M_FORBIDDEN", "The message appears to contain possible spam"},
		{"room unknown to it", answer(http.StatusNotFound, `{"errcode":"M_NOT_FOUND","error":"Unknown room"}`),
			http.StatusForbidden, "M_NOT_FOUND", "Unknown room"},
		{"rate limited", answer(http.StatusTooManyRequests, `{"errcode":"M_LIMIT_EXCEEDED","error":"slow down"}`),
			http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "slow down"},
		{"failing", answer(http.StatusInternalServerError, `{"errcode":"M_UNKNOWN","error":"oops"}`),
			http.StatusBadGateway, "M_UNKNOWN", ""},
		{"not JSON", answer(http.StatusOK, `<html>`), http.StatusBadGateway, "M_UNKNOWN", ""},
		{"no signature", answer(http.StatusOK, `{}`), http.StatusBadGateway, "M_UNKNOWN", ""},
		{"signature not a string", answer(http.StatusOK, `{"`+ps.name+`":{"ed25519:policy_server":1}}`), http.StatusBadGateway, "M_UNKNOWN", ""},
		{"another key", signWith(testKey("someone else")), http.StatusBadGateway, "M_UNKNOWN", ""},
	}
	for _, tt := range tests {
		ps.serve(tt.handler)
		_, err := signer.Sign(ctx, ev, policy)
		var merr *httpapi.Error
		if !errors.As(err, &merr) || merr.Status != tt.status || merr.ErrCode != tt.errcode || (tt.message != "" && merr.Message != tt.message) {
			t.Errorf("%s: %v, want %d %s %q", tt.name, err, tt.status, tt.errcode, tt.message)
		}
	}

	ps.down.Store(true)
	var merr *httpapi.Error
	if _, err := signer.Sign(ctx, ev, policy); !errors.As(err, &merr) || merr.Status != http.StatusBadGateway {
		t.Fatalf("sign with the policy server down: %v, want 502", err)
	}
	// Unreachable a moment ago: not asked again for policyDownFor, then asked again.
	ps.down.Store(false)
	ps.serve(signWith(psKey))
	if _, err := signer.Sign(ctx, ev, policy); !errors.As(err, &merr) || merr.Status != http.StatusBadGateway {
		t.Fatalf("sign right after the policy server was unreachable: %v, want 502 without asking", err)
	}
	signer.Clock = func() time.Time { return time.Now().Add(policyDownFor + time.Second) }
	if _, err := signer.Sign(ctx, ev, policy); err != nil {
		t.Fatalf("sign once the policy server is back: %v", err)
	}
}
