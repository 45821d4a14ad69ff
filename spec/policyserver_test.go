package spec

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"testing"
)

// TestPolicyServerParse covers §"Determining if a Policy Server is enabled in a room": valid
// means content.via is a string and content.public_keys an object with a string ed25519.
func TestPolicyServerParse(t *testing.T) {
	rv, _ := LookupRoomVersion("12")
	key := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, 32)).Public().(ed25519.PublicKey)
	encodedKey := EncodeBase64(key)
	build := func(evType string, stateKey *string, content string) *Event {
		t.Helper()
		p := testProto(rv)
		p.Type, p.StateKey, p.Content = evType, stateKey, json.RawMessage(content)
		e, err := p.Build(rv, "domain", "ed25519:k", testSigningKey())
		if err != nil {
			t.Fatalf("build: %v", err)
		}
		return e
	}
	empty, other := "", "x"
	valid := `{"via":"policy.example","public_keys":{"ed25519":"` + encodedKey + `"}}`
	tests := []struct {
		name    string
		event   *Event
		want    bool
		wantKey bool
	}{
		{"valid", build("m.room.policy", &empty, valid), true, true},
		{"extra keys", build("m.room.policy", &empty, `{"via":"policy.example","x":1,"public_keys":{"ed25519":"`+encodedKey+`","other":"k"}}`), true, true},
		{"undecodable key still enables", build("m.room.policy", &empty, `{"via":"policy.example","public_keys":{"ed25519":"not base64!"}}`), true, false},
		{"short key still enables", build("m.room.policy", &empty, `{"via":"policy.example","public_keys":{"ed25519":"AAAA"}}`), true, false},
		{"no event", nil, false, false},
		{"empty content", build("m.room.policy", &empty, `{}`), false, false},
		{"via missing", build("m.room.policy", &empty, `{"public_keys":{"ed25519":"`+encodedKey+`"}}`), false, false},
		{"via not a string", build("m.room.policy", &empty, `{"via":7,"public_keys":{"ed25519":"`+encodedKey+`"}}`), false, false},
		{"via null", build("m.room.policy", &empty, `{"via":null,"public_keys":{"ed25519":"`+encodedKey+`"}}`), false, false},
		{"public_keys missing", build("m.room.policy", &empty, `{"via":"policy.example"}`), false, false},
		{"public_keys not an object", build("m.room.policy", &empty, `{"via":"policy.example","public_keys":"k"}`), false, false},
		{"ed25519 missing", build("m.room.policy", &empty, `{"via":"policy.example","public_keys":{"other":"k"}}`), false, false},
		{"ed25519 not a string", build("m.room.policy", &empty, `{"via":"policy.example","public_keys":{"ed25519":["k"]}}`), false, false},
		{"non-empty state key", build("m.room.policy", &other, valid), false, false},
		{"not a state event", build("m.room.policy", nil, valid), false, false},
		{"other type", build("m.room.topic", &empty, valid), false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, ok := ParsePolicyServer(tt.event)
			if ok != tt.want {
				t.Fatalf("ok = %v, want %v", ok, tt.want)
			}
			if !ok {
				return
			}
			if ps.ServerName != "policy.example" {
				t.Errorf("server name = %q", ps.ServerName)
			}
			if gotKey := ps.Key != nil; gotKey != tt.wantKey {
				t.Errorf("key = %x, want one: %v", ps.Key, tt.wantKey)
			} else if gotKey && !ps.Key.Equal(key) {
				t.Errorf("key = %x, want %x", ps.Key, key)
			}
		})
	}
}

// TestPolicyServerNeedsSignature: every event but the m.room.policy state event with an empty
// state key is checked (including non-state and non-empty-state-key m.room.policy events).
func TestPolicyServerNeedsSignature(t *testing.T) {
	rv, _ := LookupRoomVersion("12")
	empty, other := "", "x"
	tests := []struct {
		evType   string
		stateKey *string
		want     bool
	}{
		{"m.room.policy", &empty, false},
		{"m.room.policy", &other, true},
		{"m.room.policy", nil, true},
		{"m.room.message", nil, true},
		{"m.room.member", &other, true},
		{"m.room.power_levels", &empty, true},
	}
	for _, tt := range tests {
		p := testProto(rv)
		p.Type, p.StateKey = tt.evType, tt.stateKey
		e, err := p.Build(rv, "domain", "ed25519:k", testSigningKey())
		if err != nil {
			t.Fatal(err)
		}
		if got := NeedsPolicyServerSignature(e); got != tt.want {
			t.Errorf("%s with state key %v: %v, want %v", tt.evType, tt.stateKey, got, tt.want)
		}
	}
}

// TestPolicyServerSignature covers §"Validating Policy Server signatures": the signature is
// over the redacted event, under the Policy Server's name and ed25519:policy_server, with the
// key from m.room.policy; adding it keeps the event ID and the other signatures.
func TestPolicyServerSignature(t *testing.T) {
	for _, version := range []string{"1", "10", "12"} {
		rv, _ := LookupRoomVersion(version)
		t.Run("v"+version, func(t *testing.T) {
			psKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{1}, 32))
			otherKey := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{2}, 32))
			p := testProto(rv)
			unsigned, err := p.Build(rv, "domain", "ed25519:k", testSigningKey())
			if err != nil {
				t.Fatal(err)
			}
			ps := PolicyServer{ServerName: "policy.example", Key: psKey.Public().(ed25519.PublicKey)}
			signed := policySign(t, unsigned, "policy.example", psKey)
			if signed.EventID() != unsigned.EventID() {
				t.Fatalf("event ID changed: %s → %s", unsigned.EventID(), signed.EventID())
			}
			if err := VerifyEventSignatures(signed, testKeyLookup()); err != nil {
				t.Fatalf("origin signature lost: %v", err)
			}
			// A Policy Server that is the sender's server too: its policy_server signature is
			// not checked with the published keys (the lookup answers for any key ID).
			bySender := policySign(t, unsigned, "domain", psKey)
			if err := VerifyEventSignatures(bySender, testKeyLookup()); err != nil {
				t.Fatalf("policy server signature checked as a server key: %v", err)
			}
			if err := signed.CheckContentHash(); err != nil {
				t.Fatalf("content hash: %v", err)
			}
			redacted, err := signed.Redacted()
			if err != nil {
				t.Fatal(err)
			}
			tests := []struct {
				name  string
				event *Event
				ps    PolicyServer
				want  error
			}{
				{"valid", signed, ps, nil},
				{"valid on the redacted event", redacted, ps, nil},
				{"missing", unsigned, ps, ErrSignatureMissing},
				{"by another server name", policySign(t, unsigned, "elsewhere.example", psKey), ps, ErrSignatureMissing},
				{"by another key", policySign(t, unsigned, "policy.example", otherKey), ps, ErrSignatureInvalid},
				{"rotated key in state", signed, PolicyServer{ServerName: "policy.example", Key: otherKey.Public().(ed25519.PublicKey)}, ErrSignatureInvalid},
				{"undecodable key in state", signed, PolicyServer{ServerName: "policy.example"}, ErrSignatureInvalid},
				{"re-signed replaces the bad one", policySign(t, policySign(t, unsigned, "policy.example", otherKey), "policy.example", psKey), ps, nil},
			}
			for _, tt := range tests {
				err := VerifyPolicyServerSignature(tt.event, tt.ps)
				if (tt.want == nil) != (err == nil) || (tt.want != nil && !errors.Is(err, tt.want)) {
					t.Errorf("%s: %v, want %v", tt.name, err, tt.want)
				}
			}
		})
	}
}

// policySign adds the signature that a Policy Server named server with key would return.
func policySign(t *testing.T, e *Event, server string, key ed25519.PrivateKey) *Event {
	t.Helper()
	redacted, err := RedactEventJSON(e.JSON(), e.Version())
	if err != nil {
		t.Fatal(err)
	}
	withSignature, err := SignJSON(redacted, server, PolicyServerKeyID, key)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(withSignature, &doc); err != nil {
		t.Fatal(err)
	}
	signed, err := e.WithSignature(server, PolicyServerKeyID, doc.Signatures[server][PolicyServerKeyID])
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

func testSigningKey() ed25519.PrivateKey {
	return ed25519.NewKeyFromSeed(bytes.Repeat([]byte{9}, 32))
}

func testKeyLookup() KeyLookup {
	return func(server, _ string, _ int64) (ed25519.PublicKey, error) {
		if server != "domain" {
			return nil, errors.New("unknown server")
		}
		return testSigningKey().Public().(ed25519.PublicKey), nil
	}
}
