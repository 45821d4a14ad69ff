package spec

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func allVersionIDs() []string {
	return []string{"1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12"}
}

// roomIDFor is a room ID of the right format for rv.
func roomIDFor(rv *RoomVersion) string {
	if rv.RoomIDIsCreateEventHash {
		return "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ"
	}
	return "!r:domain"
}

// eventIDFor is a syntactically valid event ID for rv.
func eventIDFor(rv *RoomVersion, n int) string {
	switch rv.EventIDFormat {
	case EventIDOriginGenerated:
		return "$" + strings.Repeat("x", n+1) + ":domain"
	case EventIDReferenceHashStd:
		return "$" + strings.Repeat("a", 41) + "+" + string(rune('A'+n))
	default:
		return "$" + strings.Repeat("a", 41) + "-" + string(rune('A'+n))
	}
}

func testProto(rv *RoomVersion) ProtoEvent {
	sk := ""
	return ProtoEvent{
		Type: "m.room.topic", StateKey: &sk, Sender: "@alice:domain", RoomID: roomIDFor(rv),
		Content:    json.RawMessage(`{"topic": "caf\u00e9 \ud83d\ude00", "n": 3}`),
		PrevEvents: []string{eventIDFor(rv, 0)}, AuthEvents: []string{eventIDFor(rv, 1), eventIDFor(rv, 2)},
		Depth: 7, OriginServerTS: 1700000000000, Unsigned: json.RawMessage(`{"age": 5}`),
	}
}

// TestBuildParseRoundTrip builds a signed event in every room version and parses it back.
func TestBuildParseRoundTrip(t *testing.T) {
	_, key := loadCryptoVectors(t)
	for _, version := range allVersionIDs() {
		rv := mustVersion(t, version)
		t.Run("v"+version, func(t *testing.T) {
			p := testProto(rv)
			e, err := p.Build(rv, "domain", "ed25519:1", key)
			if err != nil {
				t.Fatal(err)
			}
			again, err := ParseEvent(e.JSON(), rv)
			if err != nil {
				t.Fatal(err)
			}
			if again.EventID() != e.EventID() || string(again.JSON()) != string(e.JSON()) {
				t.Errorf("round trip changed the event: %s vs %s", again.EventID(), e.EventID())
			}
			if err := ValidateEventID(e.EventID(), rv); err != nil {
				t.Error(err)
			}
			if e.Type() != p.Type || !e.StateKeyEquals("") || e.Sender() != p.Sender || e.RoomID() != p.RoomID ||
				e.Depth() != 7 || e.OriginServerTS() != p.OriginServerTS || len(e.PrevEventIDs()) != 1 ||
				e.PrevEventIDs()[0] != p.PrevEvents[0] || len(e.AuthEventIDs()) != 2 || string(e.Unsigned()) != `{"age":5}` {
				t.Errorf("fields differ: %+v", e.fields)
			}
			if string(e.Content()) != "{\"n\":3,\"topic\":\"caf\u00e9 \U0001F600\"}" {
				t.Errorf("content = %s", e.Content())
			}
			if err := e.CheckContentHash(); err != nil {
				t.Error(err)
			}
			lookup := func(server, keyID string, _ int64) (ed25519.PublicKey, error) {
				return key.Public().(ed25519.PublicKey), nil
			}
			if err := VerifyEventSignatures(e, lookup); err != nil {
				t.Error(err)
			}
			hasEventIDKey := strings.Contains(string(e.JSON()), `"event_id"`)
			if hasEventIDKey != (rv.EventIDFormat == EventIDOriginGenerated) {
				t.Errorf("event_id key present = %v in %s", hasEventIDKey, e.JSON())
			}
			trusted, err := EventFromTrusted(e.JSON(), e.EventID(), rv)
			if err != nil || trusted.EventID() != e.EventID() || trusted.RoomID() != e.RoomID() || string(trusted.Content()) != string(e.Content()) {
				t.Errorf("EventFromTrusted = %v, %v", trusted, err)
			}
		})
	}
}

// TestEventIDFormats checks the event ID rules: the "event_id" key in v1/v2, the reference
// hash in standard base64 for v3 and URL-safe base64 from v4, and the v12 room ID.
func TestEventIDFormats(t *testing.T) {
	_, key := loadCryptoVectors(t)
	// The same JSON in v3 and v4 (same redaction rules) has the same reference hash.
	raw := []byte(`{"auth_events":[],"content":{"body":"a"},"depth":1,"hashes":{"sha256":"x"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:domain","sender":"@a:domain","signatures":{},"type":"m.room.message"}`)
	v3, err := ParseEvent(raw, mustVersion(t, "3"))
	if err != nil {
		t.Fatal(err)
	}
	v4, err := ParseEvent(raw, mustVersion(t, "4"))
	if err != nil {
		t.Fatal(err)
	}
	sum, err := ReferenceHash(raw, mustVersion(t, "3"))
	if err != nil {
		t.Fatal(err)
	}
	if v3.EventID() != "$"+EncodeBase64(sum[:]) || v4.EventID() != "$"+EncodeBase64URL(sum[:]) {
		t.Errorf("v3 %s, v4 %s, hash %x", v3.EventID(), v4.EventID(), sum)
	}
	// An "event_id" key sent with a v4 event is ignored.
	withID := strings.Replace(string(raw), `{`, `{"event_id":"$bogus",`, 1)
	if e, err := ParseEvent([]byte(withID), mustVersion(t, "4")); err != nil || e.EventID() != v4.EventID() {
		t.Errorf("v4 with event_id: %v, %v", e, err)
	}
	// v1: the ID is the event_id key.
	v1raw := strings.Replace(string(raw), `{`, `{"event_id":"$abc:domain",`, 1)
	if e, err := ParseEvent([]byte(v1raw), mustVersion(t, "1")); err != nil || e.EventID() != "$abc:domain" {
		t.Errorf("v1: %v, %v", e, err)
	}
	// v12: the create event has no room_id; its room ID is "!" + its event ID's hash.
	rv12 := mustVersion(t, "12")
	sk := ""
	create := ProtoEvent{Type: "m.room.create", StateKey: &sk, Sender: "@a:domain", Content: json.RawMessage(`{"room_version":"12"}`), Depth: 1, OriginServerTS: 1}
	e, err := create.Build(rv12, "domain", "ed25519:1", key)
	if err != nil {
		t.Fatal(err)
	}
	if e.RoomID() != "!"+e.EventID()[1:] || strings.Contains(string(e.JSON()), "room_id") {
		t.Errorf("v12 create: room %s, event %s, json %s", e.RoomID(), e.EventID(), e.JSON())
	}
	if err := ValidateRoomID(e.RoomID(), rv12); err != nil {
		t.Error(err)
	}
	create.RoomID = e.RoomID()
	if _, err := create.Build(rv12, "domain", "ed25519:1", key); err == nil {
		t.Error("Build accepted a v12 create event with a room_id")
	}
	withRoom := strings.Replace(string(e.JSON()), `{`, `{"room_id":"`+e.RoomID()+`",`, 1)
	if _, err := ParseEvent([]byte(withRoom), rv12); !errors.Is(err, ErrBadEvent) {
		t.Errorf("v12 create with room_id: %v", err)
	}
	trusted, err := EventFromTrusted(e.JSON(), e.EventID(), rv12)
	if err != nil || trusted.RoomID() != e.RoomID() {
		t.Errorf("EventFromTrusted v12 create: %v, %v", trusted, err)
	}
}

func TestParseEventLimits(t *testing.T) {
	_, key := loadCryptoVectors(t)
	rv := mustVersion(t, "11")
	build := func(mutate func(*ProtoEvent)) ([]byte, error) {
		p := testProto(rv)
		mutate(&p)
		raw, err := json.Marshal(map[string]any{
			"type": p.Type, "state_key": p.StateKey, "sender": p.Sender, "room_id": p.RoomID,
			"content": p.Content, "prev_events": p.PrevEvents, "auth_events": p.AuthEvents,
			"depth": p.Depth, "origin_server_ts": p.OriginServerTS,
		})
		if err != nil {
			return nil, err
		}
		return SignEvent(raw, rv, "domain", "ed25519:1", key)
	}
	long := strings.Repeat("x", 256)
	tests := []struct {
		name    string
		mutate  func(*ProtoEvent)
		wantErr error
	}{
		{"ok", func(*ProtoEvent) {}, nil},
		{"just under the size limit", func(p *ProtoEvent) {
			p.Content = json.RawMessage(`{"topic":"` + strings.Repeat("a", 64900) + `"}`)
		}, nil},
		{"too large", func(p *ProtoEvent) { p.Content = json.RawMessage(`{"topic":"` + strings.Repeat("a", 65536) + `"}`) }, ErrTooLarge},
		{"type too long", func(p *ProtoEvent) { p.Type = long }, ErrBadEvent},
		{"state_key too long", func(p *ProtoEvent) { p.StateKey = &long }, ErrBadEvent},
		{"state_key 255 bytes", func(p *ProtoEvent) { s := long[:255]; p.StateKey = &s }, nil},
		{"sender too long", func(p *ProtoEvent) { p.Sender = "@" + long + ":domain" }, ErrBadEvent},
		{"room_id too long", func(p *ProtoEvent) { p.RoomID = "!" + long + ":domain" }, ErrBadEvent},
		{"bad sender", func(p *ProtoEvent) { p.Sender = "alice" }, ErrBadEvent},
		{"bad room_id for version", func(p *ProtoEvent) { p.RoomID = "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ" }, ErrBadEvent},
		{"negative depth", func(p *ProtoEvent) { p.Depth = -1 }, ErrBadEvent},
		{"depth above 2^53-1", func(p *ProtoEvent) { p.Depth = MaxCanonicalInt + 1 }, ErrBadEvent},
		{"too many prev_events", func(p *ProtoEvent) {
			p.PrevEvents = nil
			for i := range 21 {
				p.PrevEvents = append(p.PrevEvents, eventIDFor(rv, i))
			}
		}, ErrBadEvent},
		{"too many auth_events", func(p *ProtoEvent) {
			p.AuthEvents = nil
			for i := range 11 {
				p.AuthEvents = append(p.AuthEvents, eventIDFor(rv, i))
			}
		}, ErrBadEvent},
		{"bad prev event ID", func(p *ProtoEvent) { p.PrevEvents = []string{"$x:domain"} }, ErrBadEvent},
		{"float in content", func(p *ProtoEvent) { p.Content = json.RawMessage(`{"n":1.5}`) }, ErrBadEvent},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			raw, err := build(tc.mutate)
			if err != nil {
				if tc.wantErr != nil && errors.Is(err, ErrNotCanonical) {
					return // rejected even earlier, when signing
				}
				t.Fatal(err)
			}
			_, err = ParseEvent(raw, rv)
			if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
				t.Errorf("ParseEvent = %v, want %v", err, tc.wantErr)
			}
		})
	}
}

func TestParseEventMalformed(t *testing.T) {
	valid := map[string]string{
		"auth_events": `[]`, "content": `{}`, "depth": `1`, "hashes": `{"sha256":"x"}`, "origin_server_ts": `1`,
		"prev_events": `[]`, "room_id": `"!r:domain"`, "sender": `"@a:domain"`, "signatures": `{}`, "type": `"m.x"`,
	}
	assemble := func(overrides map[string]string, drop string) []byte {
		var b strings.Builder
		b.WriteString("{")
		first := true
		write := func(k, v string) {
			if !first {
				b.WriteString(",")
			}
			first = false
			b.WriteString(`"` + k + `":` + v)
		}
		for k, v := range valid {
			if k == drop {
				continue
			}
			if o, ok := overrides[k]; ok {
				v = o
			}
			write(k, v)
		}
		for k, v := range overrides {
			if _, ok := valid[k]; !ok {
				write(k, v)
			}
		}
		b.WriteString("}")
		return []byte(b.String())
	}
	rv := mustVersion(t, "10")
	if _, err := ParseEvent(assemble(nil, ""), rv); err != nil {
		t.Fatalf("baseline: %v", err)
	}
	for key := range valid {
		if _, err := ParseEvent(assemble(nil, key), rv); !errors.Is(err, ErrBadEvent) {
			t.Errorf("missing %s: %v", key, err)
		}
	}
	tests := []struct {
		name      string
		overrides map[string]string
		version   string
		wantErr   error
	}{
		{"content not object", map[string]string{"content": `[]`}, "10", ErrBadEvent},
		{"sender not string", map[string]string{"sender": `1`}, "10", ErrBadEvent},
		{"depth string", map[string]string{"depth": `"1"`}, "10", ErrBadEvent},
		{"depth float v5", map[string]string{"depth": `1.5`}, "5", ErrBadEvent},
		{"depth integral float v5", map[string]string{"depth": `1.0`}, "5", nil},
		{"depth exponent v6", map[string]string{"depth": `1e1`}, "6", ErrBadEvent},
		{"big int in content v5", map[string]string{"content": `{"n":99999999999999999999}`}, "5", nil},
		{"big int in content v6", map[string]string{"content": `{"n":99999999999999999999}`}, "6", ErrBadEvent},
		{"duplicate key v6", map[string]string{"content": `{"a":1,"a":2}`}, "6", ErrBadEvent},
		{"hashes without sha256", map[string]string{"hashes": `{}`}, "10", ErrBadEvent},
		{"signatures entry not object", map[string]string{"signatures": `{"domain":1}`}, "10", ErrBadEvent},
		{"prev_events strings in v1", map[string]string{"prev_events": `["$a:domain"]`, "event_id": `"$e:domain"`}, "1", ErrBadEvent},
		{"prev_events pairs in v1", map[string]string{"prev_events": `[["$a:domain",{"sha256":"x"}]]`, "event_id": `"$e:domain"`}, "1", nil},
		{"prev_events pair too long in v1", map[string]string{"prev_events": `[["$a:domain",{},1]]`, "event_id": `"$e:domain"`}, "1", ErrBadEvent},
		{"v1 without event_id", map[string]string{}, "1", ErrBadEvent},
		{"v1 bad event_id", map[string]string{"event_id": `"$nodomain"`}, "1", ErrBadEvent},
		{"top-level redacts must be a string before v11", map[string]string{"redacts": `1`}, "10", ErrBadEvent},
		{"top-level redacts ignored in v11", map[string]string{"redacts": `1`}, "11", nil},
		{"unsigned not object", map[string]string{"unsigned": `1`}, "10", ErrBadEvent},
	}
	for _, tc := range tests {
		_, err := ParseEvent(assemble(tc.overrides, ""), mustVersion(t, tc.version))
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && err != nil) {
			t.Errorf("%s: ParseEvent = %v, want %v", tc.name, err, tc.wantErr)
		}
	}
	for _, in := range []string{``, `[]`, `{"a":`, `"event"`} {
		if _, err := ParseEvent([]byte(in), rv); err == nil {
			t.Errorf("ParseEvent(%q) succeeded", in)
		}
	}
}

// FuzzParseEvent checks that parsing never panics and that a parsed event re-parses to the
// same ID and JSON.
func FuzzParseEvent(f *testing.F) {
	f.Add([]byte(`{"auth_events":[],"content":{},"depth":1,"hashes":{"sha256":"x"},"origin_server_ts":1,"prev_events":[],"room_id":"!r:domain","sender":"@a:domain","signatures":{},"type":"m.x"}`), uint8(10))
	f.Fuzz(func(t *testing.T, raw []byte, version uint8) {
		ids := allVersionIDs()
		rv := mustVersion(t, ids[int(version)%len(ids)])
		e, err := ParseEvent(raw, rv)
		if err != nil {
			return
		}
		again, err := ParseEvent(e.JSON(), rv)
		if err != nil {
			t.Fatalf("re-parse failed: %v", err)
		}
		if again.EventID() != e.EventID() || string(again.JSON()) != string(e.JSON()) || again.RoomID() != e.RoomID() {
			t.Fatalf("re-parse changed the event: %s -> %s", e.EventID(), again.EventID())
		}
		if _, err := e.Redacted(); err != nil {
			t.Fatalf("Redacted: %v", err)
		}
		_ = e.CheckContentHash()
	})
}

func BenchmarkParseEvent(b *testing.B) {
	_, key := loadCryptoVectors(b)
	rv := mustVersion(b, "12")
	p := testProto(rv)
	e, err := p.Build(rv, "domain", "ed25519:1", key)
	if err != nil {
		b.Fatal(err)
	}
	raw := e.JSON()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseEvent(raw, rv); err != nil {
			b.Fatal(err)
		}
	}
}
