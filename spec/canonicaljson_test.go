package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"os"
	"reflect"
	"strings"
	"testing"
)

// TestCanonicalJSONAppendixExamples runs every example of appendices §"Canonical JSON".
func TestCanonicalJSONAppendixExamples(t *testing.T) {
	data, err := os.ReadFile("testdata/appendices-canonical-json-examples.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Name      string `json:"name"`
		Input     string `json:"input"`
		Canonical string `json:"canonical"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) != 10 {
		t.Fatalf("fixture has %d examples, the appendix has 10", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.Name, func(t *testing.T) {
			for name, canon := range map[string]func([]byte) ([]byte, error){"strict": CanonicalJSON, "lenient": CanonicalJSONLenient} {
				got, err := canon([]byte(tc.Input))
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if string(got) != tc.Canonical {
					t.Errorf("%s: got %s, want %s", name, got, tc.Canonical)
				}
			}
		})
	}
}

func TestCanonicalJSONCases(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		strict  string // "" means the strict form fails with strictErr
		lenient string // "" means the lenient form fails too
		wantErr error
	}{
		{"scalar string", `"x"`, `"x"`, `"x"`, nil},
		{"top-level array", ` [ 1 , 2 ] `, `[1,2]`, `[1,2]`, nil},
		{"empty array", `[]`, `[]`, `[]`, nil},
		{"booleans", `{"t":true,"f":false}`, `{"f":false,"t":true}`, `{"f":false,"t":true}`, nil},
		{"escapes kept minimal", `{"a":"\"\\\/\b\f\n\r\t"}`, `{"a":"\"\\/\b\f\n\r\t"}`, `{"a":"\"\\/\b\f\n\r\t"}`, nil},
		{"control chars lower hex", `"\u0001\u001F\u000b"`, `"\u0001\u001f\u000b"`, `"\u0001\u001f\u000b"`, nil},
		{"non-control escapes decoded", `"\u0041\u00e9\u007f\u2028"`, "\"A\u00e9\x7f\u2028\"", "\"A\u00e9\x7f\u2028\"", nil},
		{"surrogate pair", `"\ud83d\ude00"`, "\"\U0001F600\"", "\"\U0001F600\"", nil},
		{"keys by code point not UTF-16", "{\"\uff61\":1,\"\U0001F600\":2}", "{\"\uff61\":1,\"\U0001F600\":2}", "{\"\uff61\":1,\"\U0001F600\":2}", nil},
		{"escaped key sorts by decoded value", `{"b":1,"\u0061":2}`, `{"a":2,"b":1}`, `{"a":2,"b":1}`, nil},
		{"nested unsorted", `{"b":{"d":1,"c":2},"a":[{"z":1,"y":2}]}`, `{"a":[{"y":2,"z":1}],"b":{"c":2,"d":1}}`, `{"a":[{"y":2,"z":1}],"b":{"c":2,"d":1}}`, nil},
		{"max int", `9007199254740991`, `9007199254740991`, `9007199254740991`, nil},
		{"min int", `-9007199254740991`, `-9007199254740991`, `-9007199254740991`, nil},
		{"integral fraction", `[1.0, 2.50e1, 0.0, -0.0, 1E+2, 100e-2]`, `[1,25,0,0,100,1]`, `[1,25,0,0,100,1]`, nil},
		{"int above range", `9007199254740992`, "", `9007199254740992`, ErrNotCanonical},
		{"int below range", `-9007199254740992`, "", `-9007199254740992`, ErrNotCanonical},
		{"exponent above range", `1e16`, "", `1e16`, ErrNotCanonical},
		{"float", `{"a":1.5}`, "", `{"a":1.5}`, ErrNotCanonical},
		{"tiny float", `1e-400`, "", `1e-400`, ErrNotCanonical},
		{"huge exponent", `1e99999999999`, "", `1e99999999999`, ErrNotCanonical},
		{"zero huge exponent", `0e99999999999`, `0`, `0`, nil},
		{"duplicate key", `{"a":1,"a":2}`, "", `{"a":2}`, ErrNotCanonical},
		{"duplicate key among others", `{"b":0,"a":1,"c":3,"a":2}`, "", `{"a":2,"b":0,"c":3}`, ErrNotCanonical},
		{"lone high surrogate", `"\ud83d"`, "", "", ErrNotCanonical},
		{"lone low surrogate", `"\ude00x"`, "", "", ErrNotCanonical},
		{"invalid UTF-8", "\"\xff\"", "", "", ErrNotJSON},
		{"UTF-8 encoded surrogate", "\"\xed\xa0\x80\"", "", "", ErrNotJSON},
		{"raw control char", "\"a\nb\"", "", "", ErrNotJSON},
		{"leading zero", `01`, "", "", ErrNotJSON},
		{"bare minus", `-`, "", "", ErrNotJSON},
		{"missing fraction digits", `1.`, "", "", ErrNotJSON},
		{"trailing comma", `[1,]`, "", "", ErrNotJSON},
		{"trailing data", `{} {}`, "", "", ErrNotJSON},
		{"single quotes", `{'a':1}`, "", "", ErrNotJSON},
		{"NaN", `NaN`, "", "", ErrNotJSON},
		{"empty input", ``, "", "", ErrNotJSON},
		{"truncated object", `{"a":1`, "", "", ErrNotJSON},
		{"bad literal", `tru`, "", "", ErrNotJSON},
		{"too deep", strings.Repeat("[", maxJSONNesting+1) + strings.Repeat("]", maxJSONNesting+1), "", "", ErrNotJSON},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CanonicalJSON([]byte(tc.in))
			switch {
			case tc.strict != "" && err != nil:
				t.Errorf("strict: unexpected error %v", err)
			case tc.strict != "" && string(got) != tc.strict:
				t.Errorf("strict: got %s, want %s", got, tc.strict)
			case tc.strict == "" && !errors.Is(err, tc.wantErr):
				t.Errorf("strict: got (%s, %v), want error %v", got, err, tc.wantErr)
			}
			got, err = CanonicalJSONLenient([]byte(tc.in))
			switch {
			case tc.lenient != "" && err != nil:
				t.Errorf("lenient: unexpected error %v", err)
			case tc.lenient != "" && string(got) != tc.lenient:
				t.Errorf("lenient: got %s, want %s", got, tc.lenient)
			case tc.lenient == "" && !errors.Is(err, tc.wantErr):
				t.Errorf("lenient: got (%s, %v), want error %v", got, err, tc.wantErr)
			}
		})
	}
}

func TestCanonicalJSONEventLiterals(t *testing.T) {
	rv6, _ := LookupRoomVersion("6")
	rv5, _ := LookupRoomVersion("5")
	tests := []struct {
		in       string
		strictOK bool
	}{
		{`{"depth":-0}`, true},
		{`{"depth":12}`, true},
		{`{"depth":1e1}`, false},
		{`{"depth":1.0}`, false},
		{`{"depth":9007199254740992}`, false},
	}
	for _, tc := range tests {
		if _, err := canonicalJSONForVersion([]byte(tc.in), rv6); (err == nil) != tc.strictOK {
			t.Errorf("v6 %s: err = %v, want ok=%v", tc.in, err, tc.strictOK)
		}
		if _, err := canonicalJSONForVersion([]byte(tc.in), rv5); err != nil {
			t.Errorf("v5 %s: %v", tc.in, err)
		}
	}
}

func TestCanonicalizeSkipTop(t *testing.T) {
	got, err := canonicalize(nil, []byte(`{"unsigned":{"a":1},"b":1,"signatures":{},"a":{"unsigned":2}}`), numbersCanonical, []string{"unsigned", "signatures"})
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"a":{"unsigned":2},"b":1}`; string(got) != want {
		t.Errorf("got %s, want %s", got, want)
	}
}

// FuzzCanonicalJSON checks that canonicalisation is idempotent, that its output is JSON that
// decodes to the same value as its input, and that lenient and strict agree where both succeed.
func FuzzCanonicalJSON(f *testing.F) {
	f.Add([]byte(`{"b":"2","a":"1"}`))
	f.Add([]byte(`{"a": -0, "b": 1e10}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		lenient, lenientErr := CanonicalJSONLenient(in)
		strict, strictErr := CanonicalJSON(in)
		if strictErr == nil {
			if lenientErr != nil {
				t.Fatalf("strict accepted what lenient rejected: %v", lenientErr)
			}
			if !bytes.Equal(strict, lenient) {
				t.Fatalf("strict %s != lenient %s", strict, lenient)
			}
			again, err := CanonicalJSON(strict)
			if err != nil || !bytes.Equal(again, strict) {
				t.Fatalf("strict not idempotent: %s -> %s (%v)", strict, again, err)
			}
		}
		if lenientErr != nil {
			return
		}
		again, err := CanonicalJSONLenient(lenient)
		if err != nil || !bytes.Equal(again, lenient) {
			t.Fatalf("lenient not idempotent: %s -> %s (%v)", lenient, again, err)
		}
		want, err := decodeWithNumbers(in)
		if err != nil {
			t.Fatalf("accepted input encoding/json rejects: %v", err)
		}
		got, err := decodeWithNumbers(lenient)
		if err != nil {
			t.Fatalf("output is not JSON: %s: %v", lenient, err)
		}
		if !jsonValuesEqual(want, got) {
			t.Fatalf("value changed: %#v -> %#v", want, got)
		}
	})
}

// decodeWithNumbers decodes JSON keeping numbers as json.Number, so that literals beyond
// float64's range still decode.
func decodeWithNumbers(data []byte) (any, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, err
	}
	return v, nil
}

// jsonValuesEqual compares decoded JSON values, numbers by their exact decimal value.
func jsonValuesEqual(a, b any) bool {
	switch a := a.(type) {
	case json.Number:
		b, ok := b.(json.Number)
		if !ok {
			return false
		}
		if a == b {
			return true
		}
		// big.Float keeps huge exponents cheap; 512 bits is exact for the integers compared.
		x, okX := new(big.Float).SetPrec(512).SetString(string(a))
		y, okY := new(big.Float).SetPrec(512).SetString(string(b))
		return okX && okY && x.Cmp(y) == 0
	case map[string]any:
		b, ok := b.(map[string]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for k, v := range a {
			if w, ok := b[k]; !ok || !jsonValuesEqual(v, w) {
				return false
			}
		}
		return true
	case []any:
		b, ok := b.([]any)
		if !ok || len(a) != len(b) {
			return false
		}
		for i := range a {
			if !jsonValuesEqual(a[i], b[i]) {
				return false
			}
		}
		return true
	default:
		return reflect.DeepEqual(a, b)
	}
}

var benchmarkEvent = []byte(`{
  "auth_events": ["$aDFiZmQ3NTY0Y2Q1YjQxZjk5ZjM3NjA4ZTFhNzZmNzU", "$bXNkZmxrc2RmbGtzZGZsa3NkZmxrc2RmbGtzZGY", "$Y3JlYXRlZXZlbnRoYXNoaGFzaGhhc2hoYXNoaGFzaA"],
  "content": {"body": "Hello, world! \u00e9\u00e8 \ud83d\ude00 this is a reasonably sized message body", "msgtype": "m.text",
    "m.relates_to": {"rel_type": "m.thread", "event_id": "$dGhyZWFkcm9vdGV2ZW50aWRoYXNoaGFzaGhhc2g"}},
  "depth": 1234,
  "hashes": {"sha256": "5jM4wQpv6lnBo7CLIghJuHdW+s2CMBJPUOGOC89ncos"},
  "origin_server_ts": 1700000000000,
  "prev_events": ["$cHJldmV2ZW50aGFzaGhhc2hoYXNoaGFzaGhhc2hoYQ"],
  "room_id": "!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ",
  "sender": "@alice:example.org",
  "type": "m.room.message",
  "signatures": {"example.org": {"ed25519:a_key": "KxwGjPSDEtvnFgU00fwFz+l6d2pJM6XBIaMEn81SXPTRl16AqLAYqfIReFGZlHi5KLjAWbOoMszkwsQma+lYAg"}},
  "unsigned": {"age": 4612}
}`)

func BenchmarkCanonicalJSON(b *testing.B) {
	b.SetBytes(int64(len(benchmarkEvent)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := CanonicalJSON(benchmarkEvent); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanonicalJSONMapRoundTrip is the naive approach, for comparison.
func BenchmarkCanonicalJSONMapRoundTrip(b *testing.B) {
	b.SetBytes(int64(len(benchmarkEvent)))
	b.ReportAllocs()
	for b.Loop() {
		var v any
		if err := json.Unmarshal(benchmarkEvent, &v); err != nil {
			b.Fatal(err)
		}
		if _, err := json.Marshal(v); err != nil {
			b.Fatal(err)
		}
	}
}
