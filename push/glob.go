package push

import (
	"math/bits"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Glob matching of push rules (appendices "Glob-style matching"): * matches zero or more
// characters, ? exactly one, every other character itself. Push rules match
// case-insensitively ("Conditions": event_match), which the spec leaves to the server:
// here it is Unicode simple case folding, as Go's regexp (?i) does. A character is a
// Unicode code point.

// globMatch reports whether pattern matches the whole of value.
func globMatch(pattern, value string) bool {
	px, vx := 0, 0
	// The last * seen, and where in value it would resume when it takes one more character.
	starPx, starVx := -1, 0
	for vx < len(value) {
		if px < len(pattern) {
			pc, psize := utf8.DecodeRuneInString(pattern[px:])
			switch pc {
			case '*':
				starPx, starVx = px, vx
				px += psize
				continue
			case '?':
				_, vsize := utf8.DecodeRuneInString(value[vx:])
				px, vx = px+psize, vx+vsize
				continue
			default:
				vc, vsize := utf8.DecodeRuneInString(value[vx:])
				if foldEqual(pc, vc) {
					px, vx = px+psize, vx+vsize
					continue
				}
			}
		}
		if starPx < 0 {
			return false
		}
		_, vsize := utf8.DecodeRuneInString(value[starVx:])
		starVx += vsize
		px, vx = starPx+1, starVx
	}
	for ; px < len(pattern); px++ {
		if pattern[px] != '*' {
			return false
		}
	}
	return true
}

// wordMatch reports whether pattern matches a substring of text that starts and ends at a
// word boundary: the special case of content.body ("Conditions": event_match, and content
// rules). A word boundary is the start or end of text or any character not in [A-Z],
// [a-z], [0-9] or _; the boundary characters are not part of the substring, as in
// Synapse's (^|\W)pattern(\W|$).
func wordMatch(pattern, text string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return literalWordMatch(pattern, text)
	}
	// A simulation of the pattern's automaton, started afresh at every word start: state s
	// means the first s runes of the pattern have matched.
	runes := []rune(pattern)
	final := len(runes)
	current, next := newStateSet(final+1), newStateSet(final+1)
	enter := func(set stateSet, s int) {
		// A * may match nothing: entering it enters what follows too.
		for {
			set.add(s)
			if s == final || runes[s] != '*' {
				return
			}
			s++
		}
	}
	for i := 0; ; {
		if i == 0 || !isWordByte(text[i-1]) {
			enter(current, 0)
		}
		if current.has(final) && (i == len(text) || !isWordByte(text[i])) {
			return true
		}
		if i == len(text) {
			return false
		}
		c, size := utf8.DecodeRuneInString(text[i:])
		next.clear()
		for s := range current.members(final) {
			switch runes[s] {
			case '*':
				enter(next, s)
			case '?':
				enter(next, s+1)
			default:
				if foldEqual(runes[s], c) {
					enter(next, s+1)
				}
			}
		}
		current, next = next, current
		i += size
	}
}

// literalWordMatch is wordMatch for a pattern without wildcards, or for a display name,
// whose * and ? are characters like any other (contains_display_name).
func literalWordMatch(word, text string) bool {
	for i := 0; i <= len(text); {
		if i == 0 || !isWordByte(text[i-1]) {
			if end, ok := foldPrefix(text[i:], word); ok && (i+end == len(text) || !isWordByte(text[i+end])) {
				return true
			}
		}
		if i == len(text) {
			return false
		}
		_, size := utf8.DecodeRuneInString(text[i:])
		i += size
	}
	return false
}

// foldPrefix reports whether text starts with prefix, ignoring case, and how many bytes of
// text it took.
func foldPrefix(text, prefix string) (int, bool) {
	tx := 0
	for _, pc := range prefix {
		if tx == len(text) {
			return 0, false
		}
		tc, size := utf8.DecodeRuneInString(text[tx:])
		if !foldEqual(pc, tc) {
			return 0, false
		}
		tx += size
	}
	return tx, true
}

// isWordByte reports whether b is one of [A-Za-z0-9_]. Every byte of a multi-byte UTF-8
// character is not, and such characters are word boundaries.
func isWordByte(b byte) bool {
	return b == '_' || ('0' <= b && b <= '9') || ('a' <= b && b <= 'z') || ('A' <= b && b <= 'Z')
}

// foldEqual reports whether two runes are equal under Unicode simple case folding.
func foldEqual(a, b rune) bool {
	if a == b {
		return true
	}
	if a < utf8.RuneSelf && b < utf8.RuneSelf {
		return 'A' <= a && a <= 'Z' && a+'a'-'A' == b || 'A' <= b && b <= 'Z' && b+'a'-'A' == a
	}
	for r := unicode.SimpleFold(a); r != a; r = unicode.SimpleFold(r) {
		if r == b {
			return true
		}
	}
	return false
}

// stateSet is a set of automaton states, a bit each.
type stateSet []uint64

func newStateSet(n int) stateSet  { return make(stateSet, (n+63)/64) }
func (s stateSet) add(i int)      { s[i/64] |= 1 << (i % 64) }
func (s stateSet) has(i int) bool { return s[i/64]&(1<<(i%64)) != 0 }
func (s stateSet) clear()         { clear(s) }

// members yields the states below limit that are in the set.
func (s stateSet) members(limit int) func(yield func(int) bool) {
	return func(yield func(int) bool) {
		for w, word := range s {
			for word != 0 {
				bit := bits.TrailingZeros64(word)
				i := w*64 + bit
				if i >= limit || !yield(i) {
					return
				}
				word &^= 1 << bit
			}
		}
	}
}
