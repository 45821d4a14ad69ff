package auth

import (
	"bytes"
	"encoding/base64"
	"regexp"
	"strings"
	"testing"
)

func TestNewToken(t *testing.T) {
	seen := make(map[string]bool)
	for range 100 {
		token, hash := NewToken(TokenPrefix)
		if !strings.HasPrefix(token, TokenPrefix) {
			t.Fatalf("token %q lacks prefix %q", token, TokenPrefix)
		}
		raw, err := base64.RawURLEncoding.DecodeString(strings.TrimPrefix(token, TokenPrefix))
		if err != nil || len(raw)*8 < 256 {
			t.Fatalf("token %q does not carry 256 bits of base64url: %v", token, err)
		}
		if !bytes.Equal(hash, HashToken(token)) {
			t.Fatal("NewToken's hash differs from HashToken(token)")
		}
		if seen[token] {
			t.Fatal("NewToken repeated a token")
		}
		seen[token] = true
	}
}

func TestHashToken(t *testing.T) {
	// SHA-256("abc"), FIPS 180-2 appendix B.1.
	want := "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
	if got := base64.RawURLEncoding.EncodeToString(HashToken("abc")); got != want {
		t.Errorf("HashToken(abc) = %s, want %s", got, want)
	}
}

func TestConstantTimeEqual(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{"", "", true},
		{"abc", "abc", true},
		{"abc", "abd", false},
		{"abc", "abcd", false},
		{"", "a", false},
	}
	for _, tt := range tests {
		if got := ConstantTimeEqual([]byte(tt.a), []byte(tt.b)); got != tt.want {
			t.Errorf("ConstantTimeEqual(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestNewDeviceID(t *testing.T) {
	shape := regexp.MustCompile(`^[A-Z]{10}$`)
	seen := make(map[string]bool)
	for range 1000 {
		id := NewDeviceID()
		if !shape.MatchString(id) {
			t.Fatalf("device ID %q is not ten uppercase letters", id)
		}
		seen[id] = true
	}
	if len(seen) < 999 {
		t.Errorf("only %d distinct device IDs out of 1000", len(seen))
	}
}

func TestRandomStringUsesWholeAlphabet(t *testing.T) {
	const alphabet = "abc"
	counts := make(map[rune]int)
	for _, c := range randomString(3000, alphabet) {
		counts[c]++
	}
	for _, c := range alphabet {
		// Each letter is expected 1000 times; 800 is more than 8 standard deviations off.
		if counts[c] < 800 {
			t.Errorf("letter %q drawn %d times out of 3000", c, counts[c])
		}
	}
	if len(counts) != len(alphabet) {
		t.Errorf("drew letters outside the alphabet: %v", counts)
	}
}
