package spec

import (
	"encoding/json"
	"os"
	"testing"
)

// TestRedactEventJSON runs testdata/rooms-redactions.json: for each event, the expected
// redaction under every RedactionRules variant, keyed by the first room version using it.
func TestRedactEventJSON(t *testing.T) {
	data, err := os.ReadFile("testdata/rooms-redactions.json")
	if err != nil {
		t.Fatal(err)
	}
	var fixture struct {
		Cases []struct {
			Name     string                     `json:"name"`
			Input    json.RawMessage            `json:"input"`
			Redacted map[string]json.RawMessage `json:"redacted"`
		} `json:"cases"`
	}
	if err := json.Unmarshal(data, &fixture); err != nil {
		t.Fatal(err)
	}
	// Every room version must use the variant of the row the fixture keys it under.
	variantOf := map[string]string{"1": "1", "2": "1", "3": "1", "4": "1", "5": "1", "6": "6", "7": "6", "8": "8", "9": "9", "10": "9", "11": "11", "12": "11"}
	for _, tc := range fixture.Cases {
		for version, variant := range variantOf {
			rv := mustVersion(t, version)
			got, err := RedactEventJSON(tc.Input, rv)
			if err != nil {
				t.Fatalf("%s v%s: %v", tc.Name, version, err)
			}
			if want := mustCanonical(t, tc.Redacted[variant]); string(got) != want {
				t.Errorf("%s v%s:\n got %s\nwant %s", tc.Name, version, got, want)
			}
		}
	}
}

func TestRedactEventJSONErrors(t *testing.T) {
	rv := mustVersion(t, "11")
	for _, in := range []string{`[]`, `"x"`, `{`, `{"a":1}{}`} {
		if out, err := RedactEventJSON([]byte(in), rv); err == nil {
			t.Errorf("RedactEventJSON(%s) = %s, want error", in, out)
		}
	}
}

func TestEventRedacted(t *testing.T) {
	_, key := loadCryptoVectors(t)
	for _, version := range []string{"1", "10", "11"} {
		rv := mustVersion(t, version)
		p := ProtoEvent{Type: "m.room.redaction", Sender: "@a:domain", RoomID: "!r:domain", Content: json.RawMessage(`{"reason":"spam"}`), Redacts: "$target:domain", Depth: 4, OriginServerTS: 9, Unsigned: json.RawMessage(`{"age":1}`)}
		if !rv.RedactsInContent {
			p.Redacts = ""
		}
		e, err := p.Build(rv, "domain", "ed25519:1", key)
		if err != nil {
			t.Fatalf("v%s: %v", version, err)
		}
		r, err := e.Redacted()
		if err != nil {
			t.Fatal(err)
		}
		if r.EventID() != e.EventID() || r.Unsigned() != nil {
			t.Errorf("v%s: redacted event changed ID or kept unsigned", version)
		}
		wantContent := `{}`
		if rv.RedactsInContent {
			wantContent = `{"redacts":"$target:domain"}`
		}
		if string(r.Content()) != wantContent {
			t.Errorf("v%s: content = %s, want %s", version, r.Content(), wantContent)
		}
		again, err := ParseEvent(r.JSON(), rv)
		if err != nil {
			t.Fatalf("v%s: redacted event does not parse: %v", version, err)
		}
		if again.EventID() != e.EventID() {
			t.Errorf("v%s: redacted event ID %s != %s", version, again.EventID(), e.EventID())
		}
		if err := r.CheckContentHash(); err == nil {
			t.Errorf("v%s: redacted event passed the content hash check", version)
		}
		if err := e.CheckContentHash(); err != nil {
			t.Errorf("v%s: %v", version, err)
		}
	}
}
