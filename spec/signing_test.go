package spec

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"os"
	"testing"
)

// cryptoVectors is testdata/appendices-cryptographic-test-vectors.json: the examples of
// appendices §"Cryptographic Test Vectors".
type cryptoVectors struct {
	SigningKeySeed string `json:"signing_key_seed"`
	ServerName     string `json:"server_name"`
	KeyID          string `json:"key_id"`
	JSONSigning    []struct {
		Name   string          `json:"name"`
		Input  json.RawMessage `json:"input"`
		Signed json.RawMessage `json:"signed"`
	} `json:"json_signing"`
	EventSigning []struct {
		Name   string          `json:"name"`
		Input  json.RawMessage `json:"input"`
		Signed json.RawMessage `json:"signed"`
	} `json:"event_signing"`
}

func loadCryptoVectors(t testing.TB) (cryptoVectors, ed25519.PrivateKey) {
	t.Helper()
	data, err := os.ReadFile("testdata/appendices-cryptographic-test-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var v cryptoVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	seed, err := DecodeBase64(v.SigningKeySeed)
	if err != nil || len(seed) != ed25519.SeedSize {
		t.Fatalf("seed: %v", err)
	}
	return v, ed25519.NewKeyFromSeed(seed)
}

func mustCanonical(t testing.TB, in []byte) string {
	t.Helper()
	out, err := CanonicalJSONLenient(in)
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

func TestSignJSONAppendixVectors(t *testing.T) {
	v, key := loadCryptoVectors(t)
	pub := key.Public().(ed25519.PublicKey)
	for _, tc := range v.JSONSigning {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := SignJSON(tc.Input, v.ServerName, v.KeyID, key)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustCanonical(t, tc.Signed); string(got) != want {
				t.Errorf("got %s\nwant %s", got, want)
			}
			if err := VerifyJSON(tc.Signed, v.ServerName, v.KeyID, pub); err != nil {
				t.Errorf("VerifyJSON: %v", err)
			}
		})
	}
}

func TestSignJSONKeepsUnsignedAndOtherSignatures(t *testing.T) {
	_, key := loadCryptoVectors(t)
	pub := key.Public().(ed25519.PublicKey)
	in := []byte(`{"a":1,"unsigned":{"age_ts":5},"signatures":{"other.org":{"ed25519:x":"c2ln"}}}`)
	signed, err := SignJSON(in, "domain", "ed25519:1", key)
	if err != nil {
		t.Fatal(err)
	}
	var out struct {
		Unsigned   map[string]int               `json:"unsigned"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(signed, &out); err != nil {
		t.Fatal(err)
	}
	if out.Unsigned["age_ts"] != 5 || out.Signatures["other.org"]["ed25519:x"] != "c2ln" || out.Signatures["domain"]["ed25519:1"] == "" {
		t.Errorf("signed = %s", signed)
	}
	// Changing unsigned keeps the signature valid; changing signed data breaks it.
	tests := []struct {
		name    string
		doc     string
		wantErr error
	}{
		{"as signed", string(signed), nil},
		{"unsigned changed", `{"a":1,"unsigned":{"age_ts":99},"signatures":` + sigsOf(t, signed) + `}`, nil},
		{"data changed", `{"a":2,"signatures":` + sigsOf(t, signed) + `}`, ErrSignatureInvalid},
		{"no signatures", `{"a":1}`, ErrSignatureMissing},
	}
	for _, tc := range tests {
		if err := VerifyJSON([]byte(tc.doc), "domain", "ed25519:1", pub); !errors.Is(err, tc.wantErr) {
			t.Errorf("%s: VerifyJSON = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
	if err := VerifyJSON(signed, "domain", "ed25519:2", pub); !errors.Is(err, ErrSignatureMissing) {
		t.Errorf("wrong key ID: %v", err)
	}
	if _, err := SignJSON(in, "domain", "curve25519:1", key); err == nil {
		t.Error("SignJSON accepted a non-ed25519 key ID")
	}
}

func sigsOf(t *testing.T, doc []byte) string {
	t.Helper()
	var v struct {
		Signatures json.RawMessage `json:"signatures"`
	}
	if err := json.Unmarshal(doc, &v); err != nil {
		t.Fatal(err)
	}
	return string(v.Signatures)
}

// TestSignEventAppendixVectors checks hashes and signatures of appendices §"Event Signing".
// Both examples use the pre-v11 redaction algorithm ("origin" is protected) and the second
// has a v1/v2 event ID.
func TestSignEventAppendixVectors(t *testing.T) {
	v, key := loadCryptoVectors(t)
	rv := mustVersion(t, "1")
	for _, tc := range v.EventSigning {
		t.Run(tc.Name, func(t *testing.T) {
			got, err := SignEvent(tc.Input, rv, v.ServerName, v.KeyID, key)
			if err != nil {
				t.Fatal(err)
			}
			if want := mustCanonical(t, tc.Signed); string(got) != want {
				t.Errorf("got %s\nwant %s", got, want)
			}
		})
	}
}

func TestVerifyEventSignatures(t *testing.T) {
	_, keyA := loadCryptoVectors(t)
	_, keyB, _ := ed25519.GenerateKey(nil)
	keys := map[string]ed25519.PublicKey{
		"a.example ed25519:1": keyA.Public().(ed25519.PublicKey),
		"b.example ed25519:1": keyB.Public().(ed25519.PublicKey),
	}
	var lookedUpAt int64 = -1
	lookup := func(server, keyID string, atTS int64) (ed25519.PublicKey, error) {
		lookedUpAt = atTS
		if k, ok := keys[server+" "+keyID]; ok {
			return k, nil
		}
		return nil, errors.New("unknown key")
	}
	sk := "@bob:a.example"
	build := func(rvID, sender, origin string, key ed25519.PrivateKey, content string, cosign ...ed25519.PrivateKey) *Event {
		t.Helper()
		rv := mustVersion(t, rvID)
		p := ProtoEvent{Type: "m.room.member", StateKey: &sk, Sender: sender, RoomID: "!r:a.example", Content: json.RawMessage(content), Depth: 2, OriginServerTS: 1234}
		e, err := p.Build(rv, origin, "ed25519:1", key)
		if err != nil {
			t.Fatal(err)
		}
		for _, k := range cosign {
			raw, err := SignEvent(e.JSON(), rv, "b.example", "ed25519:1", k)
			if err != nil {
				t.Fatal(err)
			}
			if e, err = ParseEvent(raw, rv); err != nil {
				t.Fatal(err)
			}
		}
		return e
	}
	restricted := `{"membership":"join","join_authorised_via_users_server":"@mod:b.example"}`
	tests := []struct {
		name    string
		event   *Event
		wantErr error
		wantTS  int64
	}{
		{"sender's server signed (v10)", build("10", "@bob:a.example", "a.example", keyA, `{"membership":"join"}`), nil, 1234},
		{"v4 looks keys up at any time", build("4", "@bob:a.example", "a.example", keyA, `{"membership":"join"}`), nil, 0},
		{"signed by the wrong server", build("10", "@bob:a.example", "b.example", keyB, `{"membership":"join"}`), ErrSignatureMissing, 0},
		{"signed with a bad key", build("10", "@bob:a.example", "a.example", keyB, `{"membership":"join"}`), ErrSignatureInvalid, 1234},
		{"v1 event ID server must sign too", signedV1(t, keyA), ErrSignatureMissing, 0},
		{"v1 event ID server signed", signedV1(t, keyA, keyB), nil, 0},
		{"restricted join without authoriser signature", build("9", "@bob:a.example", "a.example", keyA, restricted), ErrSignatureMissing, 1234},
		{"restricted join with authoriser signature", build("9", "@bob:a.example", "a.example", keyA, restricted, keyB), nil, 1234},
		{"authoriser key ignored before v8", build("7", "@bob:a.example", "a.example", keyA, restricted), nil, 1234},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lookedUpAt = -1
			err := VerifyEventSignatures(tc.event, lookup)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Fatalf("VerifyEventSignatures = %v, want %v", err, tc.wantErr)
			}
			if tc.wantErr == nil && lookedUpAt != tc.wantTS {
				t.Errorf("key looked up at %d, want %d", lookedUpAt, tc.wantTS)
			}
		})
	}
	// The signature covers only the redacted event: a redacted copy still verifies.
	e := build("10", "@bob:a.example", "a.example", keyA, `{"membership":"join","displayname":"Bob"}`)
	redacted, err := e.Redacted()
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyEventSignatures(redacted, lookup); err != nil {
		t.Errorf("redacted copy: %v", err)
	}
}

// signedV1 is a v1 event sent by @bob:a.example with an ID from b.example, signed by
// a.example and then by b.example with each further key.
func signedV1(t *testing.T, keyA ed25519.PrivateKey, keyB ...ed25519.PrivateKey) *Event {
	t.Helper()
	rv := mustVersion(t, "1")
	raw := []byte(`{"auth_events":[],"content":{"body":"hi"},"depth":1,"event_id":"$abc:b.example","origin_server_ts":5,"prev_events":[],"room_id":"!r:a.example","sender":"@bob:a.example","type":"m.room.message"}`)
	raw, err := SignEvent(raw, rv, "a.example", "ed25519:1", keyA)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keyB {
		if raw, err = SignEvent(raw, rv, "b.example", "ed25519:1", k); err != nil {
			t.Fatal(err)
		}
	}
	e, err := ParseEvent(raw, rv)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
