package spec

import (
	"fmt"
	"sort"
	"strings"
)

// Helpers to take canonical JSON apart and put it back together without decoding values.
// Redaction, signing and event parsing first canonicalise their input and then work on these
// byte spans, so a value that is passed through keeps its canonical bytes exactly.

// jsonMember is one "key": value pair of an object; value is its canonical JSON text.
type jsonMember struct {
	key   string
	value []byte
}

// splitCanonicalObject returns the members of a canonical JSON object in order. It expects
// canonical input (no whitespace) and reports anything else as malformed.
func splitCanonicalObject(obj []byte) ([]jsonMember, error) {
	if len(obj) < 2 || obj[0] != '{' || obj[len(obj)-1] != '}' {
		return nil, fmt.Errorf("%w: not a JSON object", ErrBadEvent)
	}
	var members []jsonMember
	pos := 1
	if obj[pos] == '}' {
		return members, nil
	}
	for {
		keyEnd, err := skipCanonicalValue(obj, pos)
		if err != nil || obj[pos] != '"' || keyEnd >= len(obj) || obj[keyEnd] != ':' {
			return nil, fmt.Errorf("%w: malformed object key at offset %d", ErrBadEvent, pos)
		}
		key, err := decodeCanonicalString(obj[pos:keyEnd])
		if err != nil {
			return nil, err
		}
		valueStart := keyEnd + 1
		valueEnd, err := skipCanonicalValue(obj, valueStart)
		if err != nil || valueEnd >= len(obj) {
			return nil, fmt.Errorf("%w: malformed object value at offset %d", ErrBadEvent, valueStart)
		}
		members = append(members, jsonMember{key: key, value: obj[valueStart:valueEnd]})
		switch obj[valueEnd] {
		case ',':
			pos = valueEnd + 1
		case '}':
			if valueEnd != len(obj)-1 {
				return nil, fmt.Errorf("%w: trailing data after object", ErrBadEvent)
			}
			return members, nil
		default:
			return nil, fmt.Errorf("%w: malformed object at offset %d", ErrBadEvent, valueEnd)
		}
	}
}

// splitCanonicalArray returns the elements of a canonical JSON array.
func splitCanonicalArray(arr []byte) ([][]byte, error) {
	if len(arr) < 2 || arr[0] != '[' || arr[len(arr)-1] != ']' {
		return nil, fmt.Errorf("%w: not a JSON array", ErrBadEvent)
	}
	var elements [][]byte
	pos := 1
	if arr[pos] == ']' {
		return elements, nil
	}
	for {
		end, err := skipCanonicalValue(arr, pos)
		if err != nil || end >= len(arr) {
			return nil, fmt.Errorf("%w: malformed array element at offset %d", ErrBadEvent, pos)
		}
		elements = append(elements, arr[pos:end])
		switch arr[end] {
		case ',':
			pos = end + 1
		case ']':
			if end != len(arr)-1 {
				return nil, fmt.Errorf("%w: trailing data after array", ErrBadEvent)
			}
			return elements, nil
		default:
			return nil, fmt.Errorf("%w: malformed array at offset %d", ErrBadEvent, end)
		}
	}
}

// skipCanonicalValue returns the offset just past the value starting at pos.
func skipCanonicalValue(data []byte, pos int) (int, error) {
	if pos >= len(data) {
		return 0, ErrBadEvent
	}
	switch data[pos] {
	case '"':
		return skipCanonicalString(data, pos)
	case '{', '[':
		depth := 0
		for i := pos; i < len(data); i++ {
			switch data[i] {
			case '"':
				end, err := skipCanonicalString(data, i)
				if err != nil {
					return 0, err
				}
				i = end - 1
			case '{', '[':
				depth++
			case '}', ']':
				depth--
				if depth == 0 {
					return i + 1, nil
				}
			}
		}
		return 0, ErrBadEvent
	default:
		i := pos
		for i < len(data) && data[i] != ',' && data[i] != '}' && data[i] != ']' {
			i++
		}
		if i == pos {
			return 0, ErrBadEvent
		}
		return i, nil
	}
}

func skipCanonicalString(data []byte, pos int) (int, error) {
	for i := pos + 1; i < len(data); i++ {
		switch data[i] {
		case '\\':
			i++
		case '"':
			return i + 1, nil
		}
	}
	return 0, ErrBadEvent
}

// decodeCanonicalString decodes a JSON string literal (quotes included).
func decodeCanonicalString(lit []byte) (string, error) {
	if len(lit) < 2 || lit[0] != '"' || lit[len(lit)-1] != '"' {
		return "", fmt.Errorf("%w: not a JSON string", ErrBadEvent)
	}
	inner := lit[1 : len(lit)-1]
	if !strings.ContainsRune(string(inner), '\\') {
		return string(inner), nil
	}
	c := canonicalizer{in: lit}
	decoded, err := c.readString(nil)
	if err != nil || c.pos != len(lit) {
		return "", fmt.Errorf("%w: bad JSON string", ErrBadEvent)
	}
	return string(decoded), nil
}

// appendObject writes members as a JSON object. The result is canonical when the members are
// in key order and their values canonical.
func appendObject(dst []byte, members []jsonMember) []byte {
	dst = append(dst, '{')
	for i, m := range members {
		if i > 0 {
			dst = append(dst, ',')
		}
		dst = appendJSONString(dst, []byte(m.key))
		dst = append(dst, ':')
		dst = append(dst, m.value...)
	}
	return append(dst, '}')
}

// findMember returns the value of key, or nil.
func findMember(members []jsonMember, key string) []byte {
	for _, m := range members {
		if m.key == key {
			return m.value
		}
	}
	return nil
}

// setMember replaces the value of key or inserts it in key order.
func setMember(members []jsonMember, key string, value []byte) []jsonMember {
	i := sort.Search(len(members), func(i int) bool { return members[i].key >= key })
	if i < len(members) && members[i].key == key {
		members[i].value = value
		return members
	}
	members = append(members, jsonMember{})
	copy(members[i+1:], members[i:])
	members[i] = jsonMember{key: key, value: value}
	return members
}

// withoutMember returns members minus key (a new slice; members is not changed).
func withoutMember(members []jsonMember, key string) []jsonMember {
	out := make([]jsonMember, 0, len(members))
	for _, m := range members {
		if m.key != key {
			out = append(out, m)
		}
	}
	return out
}
