package push

import (
	"regexp"
	"strings"
	"testing"
	"unicode/utf8"
)

// referenceGlob is the glob as a regular expression: Go's regexp folds case as foldEqual
// does, and its word boundaries are spelled out as the spec gives them (outside (?i), so
// that no non-ASCII letter joins the class by folding).
func referenceGlob(pattern string, word bool) *regexp.Regexp {
	var b strings.Builder
	for _, r := range pattern {
		switch r {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(r)))
		}
	}
	if word {
		return regexp.MustCompile(`(?s)(?:^|[^A-Za-z0-9_])(?i:` + b.String() + `)(?:[^A-Za-z0-9_]|$)`)
	}
	return regexp.MustCompile(`(?s)^(?i:` + b.String() + `)$`)
}

func TestPushGlobWhole(t *testing.T) {
	cases := []struct {
		pattern, value string
		want           bool
	}{
		{"", "", true}, {"", "a", false}, {"*", "", true}, {"*", "anything at all", true},
		{"?", "", false}, {"?", "a", true}, {"?", "ab", false}, {"??", "ab", true},
		{"a*", "a", true}, {"a*", "abc", true}, {"a*", "ba", false}, {"*a", "ba", true}, {"*a", "ab", false},
		{"a*c", "abbbc", true}, {"a*c", "abbbcd", false}, {"a*b*c", "aXbYc", true}, {"a*b*c", "acb", false},
		{"**", "x", true}, {"*?*", "", false}, {"*?*", "x", true},
		{"m.room.*", "m.room.message", true}, {"m.room.*", "m.roomy", false}, {"m.room.message", "M.Room.Message", true},
		{"lunc?*", "Lunch plans", true}, {"lunc?*", "lunc", false}, {"lunc?*", " lunch", false},
		{"é", "É", true}, {"?", "é", true}, {"?", "👍", true}, {"??", "👍", false},
		{"k", "\u212a", true}, // Kelvin sign folds to k
		{"straße", "STRASSE", false}, {"a.b", "aXb", false}, {"[ab]", "a", false}, {"[ab]", "[ab]", true},
		{"*aaa*", strings.Repeat("a", 2) + "b" + strings.Repeat("a", 3), true},
		{"a*a*a*a*b", strings.Repeat("a", 200), false},
		{"line*end", "line\nend", true},
	}
	for _, c := range cases {
		if got := globMatch(c.pattern, c.value); got != c.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", c.pattern, c.value, got, c.want)
		}
		if ref := referenceGlob(c.pattern, false).MatchString(c.value); ref != c.want {
			t.Errorf("reference of (%q, %q) = %v: case is wrong", c.pattern, c.value, ref)
		}
	}
}

func TestPushGlobWords(t *testing.T) {
	cases := []struct {
		pattern, text string
		want          bool
	}{
		{"cake", "cake", true}, {"cake", "a cake.", true}, {"cake", "cakes", false}, {"cake", "pancake", false},
		{"cake", "CAKE!", true}, {"cake", "cake_", false}, {"cake", "cake1", false}, {"cake", "(cake)", true},
		{"cake", "ñcakeñ", true}, {"cake", "", false}, {"", "", true}, {"", "x", false}, {"", "x y", false}, {"", "!", true},
		{"ex*ple", "An example event.", true}, {"ex*ple", "exple", true}, {"ex*ple", "An exciting triple-whammy", true},
		{"ex*ple", "examples", false}, {"ex*ple", "example", true}, {"ex*ple", "xexample", false},
		{"cake*lie", "the cake is a lie", true}, {"cake*lie", "the cake is a lie!", true}, {"cake*lie", "the cake is a lier", false},
		{"c?ke", "a coke", true}, {"c?ke", "a cke", false}, {"*", "", true}, {"*", "anything", true},
		{"*cake", "pancake", true}, {"cake*", "cakes", true}, {"?", "a", true}, {"?", "ab", false}, {"?", "a b", true},
		{"@room", "hey @room", true}, {"@room", "hey@room", false}, {"@room", "@roomy", false}, {"@room", "@room!", true},
		{"alice", "@alice:example.org", true}, {"a*e", "a b c e", true},
		{"b*", "ab", false}, {"*b", "ab", true},
	}
	for _, c := range cases {
		if got := wordMatch(c.pattern, c.text); got != c.want {
			t.Errorf("wordMatch(%q, %q) = %v, want %v", c.pattern, c.text, got, c.want)
		}
		if ref := referenceGlob(c.pattern, true).MatchString(c.text); ref != c.want {
			t.Errorf("reference of (%q, %q) = %v: case is wrong", c.pattern, c.text, ref)
		}
	}
	// A long body with a pattern that fails late stays linear in the body per state.
	long := strings.Repeat("a ", 20000)
	if wordMatch("a*b", long) || !wordMatch("a*a", long) {
		t.Fatal("long body")
	}
}

// FuzzGlob compares the matchers with their regular-expression reference.
func FuzzGlob(f *testing.F) {
	for _, seed := range [][2]string{{"ex*ple", "An example event."}, {"lunc?*", "Lunch"}, {"?", "é"}, {"*a*", "b_a-c"}, {"cake", "cakes cake"}} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, pattern, text string) {
		if !utf8.ValidString(pattern) || !utf8.ValidString(text) || len(pattern) > 64 || len(text) > 256 {
			return
		}
		if got, want := globMatch(pattern, text), referenceGlob(pattern, false).MatchString(text); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, reference %v", pattern, text, got, want)
		}
		if got, want := wordMatch(pattern, text), referenceGlob(pattern, true).MatchString(text); got != want {
			t.Fatalf("wordMatch(%q, %q) = %v, reference %v", pattern, text, got, want)
		}
	})
}
