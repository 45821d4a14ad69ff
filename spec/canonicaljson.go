package spec

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"unicode/utf8"
)

// Canonical JSON (appendices §"Signing JSON" › §"Canonical JSON").
//
// Canonical JSON is the shortest UTF-8 encoding of a JSON value with object keys sorted by
// Unicode code point, no insignificant whitespace, only the escapes the grammar allows
// (\" \\ \b \t \n \f \r and \u00XX in lower-case hex for the other ASCII control
// characters; every other code point written as raw UTF-8), and numbers that are integers in
// [-(2^53)+1, (2^53)-1] with no exponent, fraction or negative zero.
//
// The encoder below scans the input bytes once and writes the canonical form directly: no
// map[string]any round trip, so no float64 precision loss and few allocations. Because UTF-8
// preserves code point order, keys are sorted by comparing their decoded UTF-8 bytes.
//
// Duplicate object keys: the spec does not say. CanonicalJSON rejects them (they would make
// the signed bytes ambiguous); CanonicalJSONLenient keeps the last occurrence, which is what
// Python's json module (Synapse) and Go's encoding/json both do when decoding.

// ErrNotCanonical is returned for JSON that is well-formed but cannot be expressed as
// canonical JSON: non-integral or out-of-range numbers, duplicate keys, lone surrogates.
var ErrNotCanonical = errors.New("JSON not allowed in canonical JSON")

// Integer bounds of canonical JSON: [-(2^53)+1, (2^53)-1].
const (
	MaxCanonicalInt = 1<<53 - 1
	MinCanonicalInt = -(1<<53 - 1)
)

// maxJSONNesting bounds object/array nesting.
// NOTSPEC: the spec sets no limit; Synapse's Python parser fails at about 1000 levels too.
const maxJSONNesting = 1000

// numberMode says which number literals a canonicalisation accepts.
type numberMode int

const (
	// numbersCanonical accepts any literal whose value is an integer in range and writes it
	// in integer form: the appendix's own example turns -0 into 0 and 1e10 into 10000000000.
	numbersCanonical numberMode = iota
	// numbersIntegerLiterals accepts only the grammar's integer literals (plus -0): what
	// room versions 6+ enforce on events, matching Synapse, which rejects every float.
	numbersIntegerLiterals
	// numbersLenient accepts every JSON number: integral in-range values are normalised as in
	// numbersCanonical, anything else (floats, big integers) is kept as its literal text.
	// NOTSPEC: rooms v1–v5 may hold such numbers; Synapse keeps them rather than failing.
	numbersLenient
)

// CanonicalJSON re-encodes a JSON value as canonical JSON. Numbers must have integral values
// in [-(2^53)+1, (2^53)-1]; other numbers and duplicate keys yield ErrNotCanonical, malformed
// input or invalid UTF-8 yields ErrNotJSON.
func CanonicalJSON(in []byte) ([]byte, error) {
	return canonicalize(nil, in, numbersCanonical, nil)
}

// CanonicalJSONLenient is CanonicalJSON for room versions without strict canonical JSON
// (v1–v5): floats and out-of-range integers are kept as their literal text and duplicate keys
// resolve to the last occurrence. For every input CanonicalJSON accepts, both agree.
// NOTSPEC: the spec only says servers SHOULD cope with such JSON; this is Synapse's behaviour.
func CanonicalJSONLenient(in []byte) ([]byte, error) {
	return canonicalize(nil, in, numbersLenient, nil)
}

// canonicalJSONForVersion canonicalises an event of room version rv: strict integer literals
// for versions with StrictCanonicalJSON, lenient otherwise.
func canonicalJSONForVersion(in []byte, rv *RoomVersion) ([]byte, error) {
	if rv.StrictCanonicalJSON {
		return canonicalize(nil, in, numbersIntegerLiterals, nil)
	}
	return canonicalize(nil, in, numbersLenient, nil)
}

// canonicalize appends the canonical form of in to dst, leaving out the top-level object keys
// listed in skipTop (used to drop "signatures", "unsigned" and "hashes" while encoding).
func canonicalize(dst, in []byte, mode numberMode, skipTop []string) ([]byte, error) {
	if dst == nil {
		dst = make([]byte, 0, len(in))
	}
	c := canonicalizer{in: in, out: dst, mode: mode, skipTop: skipTop}
	if err := c.value(); err != nil {
		return nil, err
	}
	c.skipSpace()
	if c.pos != len(c.in) {
		return nil, c.syntaxError("trailing data after JSON value")
	}
	return c.out, nil
}

// canonicalizer is the state of one canonicalisation. keys and members are stacks shared by
// all nested objects: an object truncates them back when it is done.
type canonicalizer struct {
	in      []byte
	pos     int
	out     []byte
	mode    numberMode
	skipTop []string
	depth   int

	keys    []byte         // decoded keys of the objects being encoded
	members []objectMember // members of the objects being encoded
	scratch []byte         // copy of an object's members while they are reordered
	str     []byte         // decoded string being encoded
}

// objectMember locates one encoded member ("key":value) in out and its decoded key in keys.
type objectMember struct {
	keyStart, keyEnd int
	start, end       int
}

func (c *canonicalizer) syntaxError(msg string) error {
	return fmt.Errorf("%w: %s at offset %d", ErrNotJSON, msg, c.pos)
}

func (c *canonicalizer) skipSpace() {
	for c.pos < len(c.in) {
		switch c.in[c.pos] {
		case ' ', '\t', '\n', '\r':
			c.pos++
		default:
			return
		}
	}
}

func (c *canonicalizer) value() error {
	c.skipSpace()
	if c.pos >= len(c.in) {
		return c.syntaxError("unexpected end of input")
	}
	switch ch := c.in[c.pos]; {
	case ch == '{':
		return c.object()
	case ch == '[':
		return c.array()
	case ch == '"':
		var err error
		if c.str, err = c.readString(c.str[:0]); err != nil {
			return err
		}
		c.out = appendJSONString(c.out, c.str)
		return nil
	case ch == 't':
		return c.literal("true")
	case ch == 'f':
		return c.literal("false")
	case ch == 'n':
		return c.literal("null")
	case ch == '-' || (ch >= '0' && ch <= '9'):
		return c.number()
	default:
		return c.syntaxError(fmt.Sprintf("unexpected character %q", ch))
	}
}

func (c *canonicalizer) literal(word string) error {
	if !bytes.HasPrefix(c.in[c.pos:], []byte(word)) {
		return c.syntaxError("invalid literal")
	}
	c.pos += len(word)
	c.out = append(c.out, word...)
	return nil
}

func (c *canonicalizer) enter() error {
	c.depth++
	if c.depth > maxJSONNesting {
		return c.syntaxError("nesting too deep")
	}
	return nil
}

func (c *canonicalizer) array() error {
	if err := c.enter(); err != nil {
		return err
	}
	c.pos++ // '['
	c.out = append(c.out, '[')
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == ']' {
		c.pos++
		c.out = append(c.out, ']')
		c.depth--
		return nil
	}
	for {
		if err := c.value(); err != nil {
			return err
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.syntaxError("unterminated array")
		}
		switch c.in[c.pos] {
		case ',':
			c.pos++
			c.out = append(c.out, ',')
		case ']':
			c.pos++
			c.out = append(c.out, ']')
			c.depth--
			return nil
		default:
			return c.syntaxError("expected , or ] in array")
		}
	}
}

func (c *canonicalizer) object() error {
	if err := c.enter(); err != nil {
		return err
	}
	topLevel := c.depth == 1
	c.pos++ // '{'
	c.out = append(c.out, '{')
	bodyStart := len(c.out)
	keysBase, membersBase := len(c.keys), len(c.members)
	c.skipSpace()
	if c.pos < len(c.in) && c.in[c.pos] == '}' {
		c.pos++
		c.out = append(c.out, '}')
		c.depth--
		return nil
	}
	for {
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != '"' {
			return c.syntaxError("expected string key in object")
		}
		memberStart := len(c.out)
		if len(c.members) > membersBase {
			c.out = append(c.out, ',')
		}
		keyStart := len(c.keys)
		var err error
		if c.keys, err = c.readString(c.keys); err != nil {
			return err
		}
		key := c.keys[keyStart:]
		skip := topLevel && c.skipKey(key)
		encodedStart := len(c.out)
		c.out = appendJSONString(c.out, key)
		c.skipSpace()
		if c.pos >= len(c.in) || c.in[c.pos] != ':' {
			return c.syntaxError("expected : after object key")
		}
		c.pos++
		c.out = append(c.out, ':')
		if err := c.value(); err != nil {
			return err
		}
		if skip {
			c.out = c.out[:memberStart]
			c.keys = c.keys[:keyStart]
		} else {
			c.members = append(c.members, objectMember{keyStart: keyStart, keyEnd: keyStart + len(key), start: encodedStart, end: len(c.out)})
		}
		c.skipSpace()
		if c.pos >= len(c.in) {
			return c.syntaxError("unterminated object")
		}
		if c.in[c.pos] == ',' {
			c.pos++
			continue
		}
		if c.in[c.pos] != '}' {
			return c.syntaxError("expected , or } in object")
		}
		c.pos++
		break
	}
	if err := c.sortMembers(bodyStart, membersBase); err != nil {
		return err
	}
	c.out = append(c.out, '}')
	c.keys = c.keys[:keysBase]
	c.members = c.members[:membersBase]
	c.depth--
	return nil
}

func (c *canonicalizer) skipKey(key []byte) bool {
	for _, s := range c.skipTop {
		if string(key) == s {
			return true
		}
	}
	return false
}

func (c *canonicalizer) keyOf(m objectMember) []byte { return c.keys[m.keyStart:m.keyEnd] }

// sortMembers puts the members written since bodyStart in code point order of their keys,
// dropping or rejecting duplicate keys. Input that is already sorted is left untouched.
func (c *canonicalizer) sortMembers(bodyStart, membersBase int) error {
	members := c.members[membersBase:]
	sorted := true
	for i := 1; i < len(members); i++ {
		if bytes.Compare(c.keyOf(members[i-1]), c.keyOf(members[i])) >= 0 {
			sorted = false
			break
		}
	}
	if sorted {
		return nil
	}
	slices.SortStableFunc(members, func(a, b objectMember) int {
		return bytes.Compare(c.keyOf(a), c.keyOf(b))
	})
	c.scratch = append(c.scratch[:0], c.out[bodyStart:]...)
	c.out = c.out[:bodyStart]
	written := 0
	for i, m := range members {
		if i+1 < len(members) && bytes.Equal(c.keyOf(m), c.keyOf(members[i+1])) {
			if c.mode != numbersLenient {
				return fmt.Errorf("%w: duplicate key %q", ErrNotCanonical, c.keyOf(m))
			}
			continue // the last of equal keys wins
		}
		if written > 0 {
			c.out = append(c.out, ',')
		}
		c.out = append(c.out, c.scratch[m.start-bodyStart:m.end-bodyStart]...)
		written++
	}
	return nil
}

// readString decodes the JSON string starting at c.pos (an opening quote) and appends its
// UTF-8 bytes to dst. It rejects raw control characters, invalid UTF-8 and lone surrogates.
func (c *canonicalizer) readString(dst []byte) ([]byte, error) {
	c.pos++ // opening quote
	for {
		start := c.pos
		for c.pos < len(c.in) {
			b := c.in[c.pos]
			if b == '"' || b == '\\' || b < 0x20 || b >= utf8.RuneSelf {
				break
			}
			c.pos++
		}
		dst = append(dst, c.in[start:c.pos]...)
		if c.pos >= len(c.in) {
			return nil, c.syntaxError("unterminated string")
		}
		switch b := c.in[c.pos]; {
		case b == '"':
			c.pos++
			return dst, nil
		case b < 0x20:
			return nil, c.syntaxError("unescaped control character in string")
		case b >= utf8.RuneSelf:
			r, size := utf8.DecodeRune(c.in[c.pos:])
			if r == utf8.RuneError && size <= 1 {
				return nil, c.syntaxError("invalid UTF-8 in string")
			}
			dst = append(dst, c.in[c.pos:c.pos+size]...)
			c.pos += size
		default:
			var err error
			if dst, err = c.readEscape(dst); err != nil {
				return nil, err
			}
		}
	}
}

// readEscape decodes one backslash escape at c.pos, including \uXXXX surrogate pairs.
func (c *canonicalizer) readEscape(dst []byte) ([]byte, error) {
	c.pos++ // backslash
	if c.pos >= len(c.in) {
		return nil, c.syntaxError("unterminated escape")
	}
	esc := c.in[c.pos]
	c.pos++
	switch esc {
	case '"', '\\', '/':
		return append(dst, esc), nil
	case 'b':
		return append(dst, '\b'), nil
	case 'f':
		return append(dst, '\f'), nil
	case 'n':
		return append(dst, '\n'), nil
	case 'r':
		return append(dst, '\r'), nil
	case 't':
		return append(dst, '\t'), nil
	case 'u':
		r, err := c.readHex4()
		if err != nil {
			return nil, err
		}
		switch {
		case r >= 0xD800 && r < 0xDC00:
			if c.pos+1 >= len(c.in) || c.in[c.pos] != '\\' || c.in[c.pos+1] != 'u' {
				return nil, fmt.Errorf("%w: lone surrogate \\u%04x at offset %d", ErrNotCanonical, r, c.pos)
			}
			c.pos += 2
			low, err := c.readHex4()
			if err != nil {
				return nil, err
			}
			if low < 0xDC00 || low > 0xDFFF {
				return nil, fmt.Errorf("%w: lone surrogate \\u%04x at offset %d", ErrNotCanonical, r, c.pos)
			}
			r = 0x10000 + (r-0xD800)<<10 + (low - 0xDC00)
		case r >= 0xDC00 && r <= 0xDFFF:
			return nil, fmt.Errorf("%w: lone surrogate \\u%04x at offset %d", ErrNotCanonical, r, c.pos)
		}
		return utf8.AppendRune(dst, r), nil
	default:
		return nil, c.syntaxError("invalid escape")
	}
}

func (c *canonicalizer) readHex4() (rune, error) {
	if c.pos+4 > len(c.in) {
		return 0, c.syntaxError("short \\u escape")
	}
	var r rune
	for _, h := range c.in[c.pos : c.pos+4] {
		r <<= 4
		switch {
		case h >= '0' && h <= '9':
			r |= rune(h - '0')
		case h >= 'a' && h <= 'f':
			r |= rune(h - 'a' + 10)
		case h >= 'A' && h <= 'F':
			r |= rune(h - 'A' + 10)
		default:
			return 0, c.syntaxError("invalid hex digit in \\u escape")
		}
	}
	c.pos += 4
	return r, nil
}

// number scans a JSON number (RFC 8259 grammar) and writes its canonical form.
func (c *canonicalizer) number() error {
	start := c.pos
	negative := c.in[c.pos] == '-'
	if negative {
		c.pos++
	}
	intStart := c.pos
	switch {
	case c.pos < len(c.in) && c.in[c.pos] == '0':
		c.pos++
	case c.pos < len(c.in) && c.in[c.pos] >= '1' && c.in[c.pos] <= '9':
		c.skipDigits()
	default:
		return c.syntaxError("invalid number")
	}
	intDigits := c.in[intStart:c.pos]
	var fraction []byte
	hasFraction, hasExponent := false, false
	if c.pos < len(c.in) && c.in[c.pos] == '.' {
		c.pos++
		fracStart := c.pos
		c.skipDigits()
		if c.pos == fracStart {
			return c.syntaxError("invalid number fraction")
		}
		fraction, hasFraction = c.in[fracStart:c.pos], true
	}
	exponent, exponentHuge := 0, false
	if c.pos < len(c.in) && (c.in[c.pos] == 'e' || c.in[c.pos] == 'E') {
		hasExponent = true
		c.pos++
		exponentNegative := false
		if c.pos < len(c.in) && (c.in[c.pos] == '+' || c.in[c.pos] == '-') {
			exponentNegative = c.in[c.pos] == '-'
			c.pos++
		}
		expStart := c.pos
		for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
			if exponent < 1_000_000_000 {
				exponent = exponent*10 + int(c.in[c.pos]-'0')
			} else {
				exponentHuge = true
			}
			c.pos++
		}
		if c.pos == expStart {
			return c.syntaxError("invalid number exponent")
		}
		if exponentNegative {
			exponent = -exponent
		}
	}
	literal := c.in[start:c.pos]

	if !hasFraction && !hasExponent {
		if value, ok := safeIntegerDigits(intDigits); ok {
			if negative && value != 0 {
				c.out = append(c.out, '-')
			}
			c.out = append(c.out, intDigits...)
			return nil
		}
		if c.mode == numbersLenient {
			c.out = append(c.out, literal...)
			return nil
		}
		return fmt.Errorf("%w: integer %s out of range at offset %d", ErrNotCanonical, literal, start)
	}
	if c.mode == numbersIntegerLiterals {
		return fmt.Errorf("%w: number %s is not an integer literal at offset %d", ErrNotCanonical, literal, start)
	}
	if value, ok := integralValue(intDigits, fraction, exponent, exponentHuge); ok {
		if negative && value != 0 {
			value = -value
		}
		c.out = strconv.AppendInt(c.out, value, 10)
		return nil
	}
	if c.mode == numbersLenient {
		c.out = append(c.out, literal...)
		return nil
	}
	return fmt.Errorf("%w: number %s is not an integer in range at offset %d", ErrNotCanonical, literal, start)
}

func (c *canonicalizer) skipDigits() {
	for c.pos < len(c.in) && c.in[c.pos] >= '0' && c.in[c.pos] <= '9' {
		c.pos++
	}
}

// safeIntegerDigits parses decimal digits whose value is at most 2^53-1.
func safeIntegerDigits(digits []byte) (int64, bool) {
	if len(digits) > 16 {
		return 0, false
	}
	var v int64
	for _, d := range digits {
		v = v*10 + int64(d-'0')
	}
	return v, v <= MaxCanonicalInt
}

// integralValue reports the value of intDigits.fraction × 10^exponent if it is an integer of
// magnitude at most 2^53-1, computed exactly (no float rounding).
func integralValue(intDigits, fraction []byte, exponent int, exponentHuge bool) (int64, bool) {
	digits := make([]byte, 0, len(intDigits)+len(fraction))
	digits = append(digits, intDigits...)
	digits = append(digits, fraction...)
	digits = bytes.TrimLeft(digits, "0")
	if len(digits) == 0 {
		return 0, true
	}
	if exponentHuge {
		return 0, false // either a fraction or far out of range
	}
	scale := exponent - len(fraction)
	trimmed := bytes.TrimRight(digits, "0")
	scale += len(digits) - len(trimmed)
	digits = trimmed
	if scale < 0 || len(digits)+scale > 16 {
		return 0, false
	}
	var v int64
	for _, d := range digits {
		v = v*10 + int64(d-'0')
	}
	for range scale {
		v *= 10
	}
	return v, v <= MaxCanonicalInt
}

// appendJSONString appends s (UTF-8) as a canonical JSON string literal.
func appendJSONString(dst, s []byte) []byte {
	const hex = "0123456789abcdef"
	dst = append(dst, '"')
	start := 0
	for i, b := range s {
		if b >= 0x20 && b != '"' && b != '\\' {
			continue
		}
		dst = append(dst, s[start:i]...)
		switch b {
		case '"':
			dst = append(dst, '\\', '"')
		case '\\':
			dst = append(dst, '\\', '\\')
		case '\b':
			dst = append(dst, '\\', 'b')
		case '\t':
			dst = append(dst, '\\', 't')
		case '\n':
			dst = append(dst, '\\', 'n')
		case '\f':
			dst = append(dst, '\\', 'f')
		case '\r':
			dst = append(dst, '\\', 'r')
		default:
			dst = append(dst, '\\', 'u', '0', '0', hex[b>>4], hex[b&0xF])
		}
		start = i + 1
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}
