package spec

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Identifier grammar (appendices §"Identifier Grammar"): server names, user IDs, room IDs,
// room aliases, event IDs and the common namespaced identifier grammar.

// ErrBadIdentifier is wrapped by every identifier validation error.
var ErrBadIdentifier = errors.New("invalid identifier")

// MaxIdentifierLength is the byte limit on user IDs, room IDs, room aliases and event IDs,
// sigil and domain included (appendices §"User Identifiers", §"Room IDs", §"Room Aliases",
// §"Event IDs"), and on the namespaced identifier grammar.
const MaxIdentifierLength = 255

func badIdentifier(kind, id, why string) error {
	return fmt.Errorf("%w: %s %q: %s", ErrBadIdentifier, kind, id, why)
}

// ServerName is a parsed server name (appendices §"Server Name"):
// server_name = hostname [ ":" port ], hostname = IPv4address / "[" IPv6address "]" / dns-name.
type ServerName struct {
	// Host is the hostname as written: a DNS name, a dotted-quad IPv4 literal, or an IPv6
	// literal including its square brackets.
	Host string
	// Port is the explicit port, or 0 when there is none.
	Port int
}

// IsIPLiteral reports whether the host is an IPv4 or IPv6 literal rather than a DNS name.
func (s ServerName) IsIPLiteral() bool {
	return strings.HasPrefix(s.Host, "[") || isIPv4Literal(s.Host)
}

// String is the server name in its written form.
func (s ServerName) String() string {
	if s.Port == 0 {
		return s.Host
	}
	return s.Host + ":" + strconv.Itoa(s.Port)
}

// ParseServerName parses and validates a server name. Server names are case-sensitive and
// are not normalised.
func ParseServerName(name string) (ServerName, error) {
	if name == "" {
		return ServerName{}, badIdentifier("server name", name, "empty")
	}
	host, portText := name, ""
	if strings.HasPrefix(name, "[") {
		end := strings.IndexByte(name, ']')
		if end < 0 {
			return ServerName{}, badIdentifier("server name", name, "unterminated IPv6 literal")
		}
		host = name[:end+1]
		rest := name[end+1:]
		if rest != "" {
			if rest[0] != ':' {
				return ServerName{}, badIdentifier("server name", name, "junk after IPv6 literal")
			}
			portText = rest[1:]
		}
		if !validIPv6Literal(host[1 : len(host)-1]) {
			return ServerName{}, badIdentifier("server name", name, "invalid IPv6 literal")
		}
	} else {
		if i := strings.IndexByte(name, ':'); i >= 0 {
			host, portText = name[:i], name[i+1:]
		}
		if !validDNSNameOrIPv4(host) {
			return ServerName{}, badIdentifier("server name", name, "invalid hostname")
		}
	}
	port := 0
	if host != name {
		// port = 1*5DIGIT; NOTSPEC: also within 1–65535, since nothing can listen elsewhere.
		if portText == "" || len(portText) > 5 || !allDigits(portText) {
			return ServerName{}, badIdentifier("server name", name, "invalid port")
		}
		port, _ = strconv.Atoi(portText)
		if port < 1 || port > 65535 {
			return ServerName{}, badIdentifier("server name", name, "port out of range")
		}
	}
	return ServerName{Host: host, Port: port}, nil
}

// ValidateServerName checks a server name against the grammar.
func ValidateServerName(name string) error {
	_, err := ParseServerName(name)
	return err
}

// validIPv6Literal checks IPv6address = 2*45IPv6char and RFC 3513 §2.2 syntax (no zone).
func validIPv6Literal(s string) bool {
	if len(s) < 2 || len(s) > 45 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !isDigit(c) && !(c >= 'a' && c <= 'f') && !(c >= 'A' && c <= 'F') && c != ':' && c != '.' {
			return false
		}
	}
	addr, err := netip.ParseAddr(s)
	return err == nil && addr.Is6()
}

// validDNSNameOrIPv4 checks dns-name = 1*255dns-char (digits, letters, "-", "."). A name of
// four dot-separated numbers is an IPv4 literal and each number must be in 0–255.
func validDNSNameOrIPv4(s string) bool {
	if s == "" || len(s) > 255 {
		return false
	}
	digitsAndDots := true
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c), c == '.':
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '-':
			digitsAndDots = false
		default:
			return false
		}
	}
	if digitsAndDots && strings.Count(s, ".") == 3 {
		return isIPv4Literal(s)
	}
	return true
}

// isIPv4Literal checks IPv4address = 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT "." 1*3DIGIT with
// each number in 0–255.
func isIPv4Literal(s string) bool {
	parts := strings.Split(s, ".")
	if len(parts) != 4 {
		return false
	}
	for _, p := range parts {
		if p == "" || len(p) > 3 || !allDigits(p) {
			return false
		}
		if n, _ := strconv.Atoi(p); n > 255 {
			return false
		}
	}
	return true
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isDigit(s[i]) {
			return false
		}
	}
	return true
}

// validOpaqueLocalpart checks the historical localpart grammar shared by user IDs (appendices
// §"Historical User IDs"), room ID localparts and alias localparts: any valid non-surrogate
// code points except ":" and NUL. The caller has already split at the first ":".
func validOpaqueLocalpart(s string) bool {
	return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
}

// splitSigilID splits "&localpart:domain" after checking the sigil, the byte limit, the
// localpart and the server name.
func splitSigilID(kind string, sigil byte, id string) (localpart, server string, err error) {
	if len(id) > MaxIdentifierLength {
		return "", "", badIdentifier(kind, id, "longer than 255 bytes")
	}
	if id == "" || id[0] != sigil {
		return "", "", badIdentifier(kind, id, fmt.Sprintf("must start with %q", sigil))
	}
	colon := strings.IndexByte(id, ':')
	if colon < 0 {
		return "", "", badIdentifier(kind, id, "missing :domain")
	}
	localpart, server = id[1:colon], id[colon+1:]
	if !validOpaqueLocalpart(localpart) {
		return "", "", badIdentifier(kind, id, "invalid localpart")
	}
	if err := ValidateServerName(server); err != nil {
		return "", "", fmt.Errorf("%s %q: %w", kind, id, err)
	}
	return localpart, server, nil
}

// UserID is a Matrix user ID "@localpart:domain" (appendices §"User Identifiers").
type UserID struct {
	localpart string
	server    string
}

// ParseUserID parses a user ID accepting historical localparts (appendices §"Historical User
// IDs"): any valid code points except ":" and NUL, even empty, as servers MUST accept them
// in events. Use ValidateNewLocalpart when creating users.
func ParseUserID(id string) (UserID, error) {
	localpart, server, err := splitSigilID("user ID", '@', id)
	if err != nil {
		return UserID{}, err
	}
	return UserID{localpart: localpart, server: server}, nil
}

// NewUserID builds the ID of a new local user, enforcing the current localpart grammar and
// the 255-byte limit.
func NewUserID(localpart, server string) (UserID, error) {
	if err := ValidateNewLocalpart(localpart); err != nil {
		return UserID{}, err
	}
	id := "@" + localpart + ":" + server
	if len(id) > MaxIdentifierLength {
		return UserID{}, badIdentifier("user ID", id, "longer than 255 bytes")
	}
	if err := ValidateServerName(server); err != nil {
		return UserID{}, err
	}
	return UserID{localpart: localpart, server: server}, nil
}

// ValidateNewLocalpart checks user_id_localpart = 1*user_id_char with user_id_char one of
// a-z, 0-9, "-", ".", "=", "_", "/", "+" (appendices §"User Identifiers"), as required for
// user IDs the server allocates.
func ValidateNewLocalpart(localpart string) error {
	if localpart == "" {
		return badIdentifier("localpart", localpart, "empty")
	}
	for i := 0; i < len(localpart); i++ {
		if !isUserIDChar(localpart[i]) {
			return badIdentifier("localpart", localpart, fmt.Sprintf("character %q not allowed", localpart[i]))
		}
	}
	return nil
}

func isUserIDChar(c byte) bool {
	return isDigit(c) || (c >= 'a' && c <= 'z') || strings.IndexByte("-.=_/+", c) >= 0
}

// Localpart is the part between "@" and the first ":".
func (u UserID) Localpart() string { return u.localpart }

// Server is the server name of the homeserver that allocated the user.
func (u UserID) Server() string { return u.server }

// String is the full user ID.
func (u UserID) String() string { return "@" + u.localpart + ":" + u.server }

// IsZero reports whether u is the zero UserID.
func (u UserID) IsZero() bool { return u == UserID{} }

// IsCompliant reports whether the localpart is non-empty and uses only U+0021–U+007E; other
// user IDs are "non-compliant" historical IDs that servers SHOULD NOT forward to clients
// outside of events (appendices §"Historical User IDs").
func (u UserID) IsCompliant() bool {
	if u.localpart == "" {
		return false
	}
	for i := 0; i < len(u.localpart); i++ {
		if u.localpart[i] < 0x21 || u.localpart[i] > 0x7E {
			return false
		}
	}
	return true
}

// hashIDLength is the length of unpadded base64 of a sha256 hash.
const hashIDLength = 43

// RoomID is a room ID (appendices §"Room IDs"): "!opaque:domain" in room versions 1–11,
// "!" + URL-safe unpadded base64 of the create event's reference hash from version 12.
type RoomID struct {
	opaque string
	server string // "" for domainless room IDs
}

// ParseRoomID parses either form of room ID. A room ID without ":" must be the 43-character
// URL-safe base64 hash of the domainless form.
func ParseRoomID(id string) (RoomID, error) {
	if !strings.Contains(id, ":") {
		if len(id) > MaxIdentifierLength || len(id) == 0 || id[0] != '!' {
			return RoomID{}, badIdentifier("room ID", id, "must start with '!'")
		}
		if !isBase64Hash(id[1:], true) {
			return RoomID{}, badIdentifier("room ID", id, "domainless room ID must be a URL-safe base64 sha256 hash")
		}
		return RoomID{opaque: id[1:]}, nil
	}
	opaque, server, err := splitSigilID("room ID", '!', id)
	if err != nil {
		return RoomID{}, err
	}
	return RoomID{opaque: opaque, server: server}, nil
}

// ValidateRoomID checks a room ID against the format of room version rv.
func ValidateRoomID(id string, rv *RoomVersion) error {
	r, err := ParseRoomID(id)
	if err != nil {
		return err
	}
	if rv.RoomIDIsCreateEventHash != (r.server == "") {
		return badIdentifier("room ID", id, "wrong format for room version "+rv.ID)
	}
	return nil
}

// Opaque is the part after "!" (and before ":domain" when there is one).
func (r RoomID) Opaque() string { return r.opaque }

// Server is the domain of a classic room ID, or "" for a domainless one. The domain is only
// a namespace: it says nothing about which servers are in the room.
func (r RoomID) Server() string { return r.server }

// HasDomain reports whether the room ID has the classic "!opaque:domain" form.
func (r RoomID) HasDomain() bool { return r.server != "" }

// String is the full room ID.
func (r RoomID) String() string {
	if r.server == "" {
		return "!" + r.opaque
	}
	return "!" + r.opaque + ":" + r.server
}

// RoomAlias is a room alias "#localpart:domain" (appendices §"Room Aliases").
type RoomAlias struct {
	localpart string
	server    string
}

// ParseRoomAlias parses a room alias: localpart of any valid code points except ":" and
// NUL, a valid server name, at most 255 bytes in all.
func ParseRoomAlias(alias string) (RoomAlias, error) {
	localpart, server, err := splitSigilID("room alias", '#', alias)
	if err != nil {
		return RoomAlias{}, err
	}
	return RoomAlias{localpart: localpart, server: server}, nil
}

// Localpart is the part between "#" and the first ":".
func (a RoomAlias) Localpart() string { return a.localpart }

// Server is the server that hosts the alias.
func (a RoomAlias) Server() string { return a.server }

// String is the full alias.
func (a RoomAlias) String() string { return "#" + a.localpart + ":" + a.server }

// ValidateEventID checks an event ID against the format of room version rv (appendices
// §"Event IDs" and each version's "Event IDs" section): "$opaque:domain" for v1/v2,
// "$" + 43 characters of unpadded standard base64 for v3, URL-safe base64 for v4+; at most
// 255 bytes.
func ValidateEventID(id string, rv *RoomVersion) error {
	if len(id) > MaxIdentifierLength {
		return badIdentifier("event ID", id, "longer than 255 bytes")
	}
	if id == "" || id[0] != '$' {
		return badIdentifier("event ID", id, "must start with '$'")
	}
	switch rv.EventIDFormat {
	case EventIDOriginGenerated:
		_, _, err := splitSigilID("event ID", '$', id)
		return err
	case EventIDReferenceHashStd:
		if !isBase64Hash(id[1:], false) {
			return badIdentifier("event ID", id, "must be a base64 sha256 hash")
		}
	default:
		if !isBase64Hash(id[1:], true) {
			return badIdentifier("event ID", id, "must be a URL-safe base64 sha256 hash")
		}
	}
	return nil
}

// eventIDServer is the domain of a v1/v2 "$opaque:domain" event ID.
func eventIDServer(id string) string {
	if i := strings.IndexByte(id, ':'); i >= 0 {
		return id[i+1:]
	}
	return ""
}

// isBase64Hash reports whether s is 43 characters of unpadded base64 (standard or URL-safe
// alphabet), the encoding of a 32-byte hash.
func isBase64Hash(s string, urlSafe bool) bool {
	if len(s) != hashIDLength {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case isDigit(c), c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z':
		case urlSafe && (c == '-' || c == '_'):
		case !urlSafe && (c == '+' || c == '/'):
		default:
			return false
		}
	}
	return true
}

// ValidateNamespacedIdentifier checks the Common Namespaced Identifier Grammar (appendices
// §"Common Namespaced Identifier Grammar"): 1–255 characters of [a-z0-9._-], starting with
// [a-z]. Whether the "m." namespace is allowed is up to the caller.
func ValidateNamespacedIdentifier(id string) error {
	if id == "" || len(id) > MaxIdentifierLength {
		return badIdentifier("namespaced identifier", id, "must be 1 to 255 characters")
	}
	if id[0] < 'a' || id[0] > 'z' {
		return badIdentifier("namespaced identifier", id, "must start with a-z")
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !isDigit(c) && !(c >= 'a' && c <= 'z') && c != '-' && c != '_' && c != '.' {
			return badIdentifier("namespaced identifier", id, fmt.Sprintf("character %q not allowed", c))
		}
	}
	return nil
}
