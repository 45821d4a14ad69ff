package spec

import (
	"errors"
	"strings"
	"testing"
)

func mustVersion(t testing.TB, id string) *RoomVersion {
	t.Helper()
	rv, ok := LookupRoomVersion(id)
	if !ok {
		t.Fatalf("unknown room version %s", id)
	}
	return rv
}

// TestParseServerName includes the valid examples of appendices §"Server Name".
func TestParseServerName(t *testing.T) {
	tests := []struct {
		in   string
		host string
		port int
		ok   bool
	}{
		{"matrix.org", "matrix.org", 0, true},
		{"matrix.org:8888", "matrix.org", 8888, true},
		{"1.2.3.4", "1.2.3.4", 0, true},
		{"1.2.3.4:1234", "1.2.3.4", 1234, true},
		{"[1234:5678::abcd]", "[1234:5678::abcd]", 0, true},
		{"[1234:5678::abcd]:5678", "[1234:5678::abcd]", 5678, true},
		{"MATRIX.ORG", "MATRIX.ORG", 0, true},
		{"localhost", "localhost", 0, true},
		{"a-b.example", "a-b.example", 0, true},
		{"[::ffff:1.2.3.4]", "[::ffff:1.2.3.4]", 0, true},
		{"1.2.3", "1.2.3", 0, true}, // a DNS name made of digits
		{"", "", 0, false},
		{"1.2.3.256", "", 0, false},
		{"1.2.3.4:", "", 0, false},
		{"matrix.org:0", "", 0, false},
		{"matrix.org:65536", "", 0, false},
		{"matrix.org:123456", "", 0, false},
		{"matrix.org:80a", "", 0, false},
		{"matrix.org:80:80", "", 0, false},
		{"under_score.org", "", 0, false},
		{"exa mple.org", "", 0, false},
		{"[1234:5678::abcd", "", 0, false},
		{"[1.2.3.4]", "", 0, false},
		{"[fe80::1%eth0]", "", 0, false},
		{"[::1]x", "", 0, false},
		{"[g::1]", "", 0, false},
		{"1234:5678::abcd", "", 0, false},
		{strings.Repeat("a", 256), "", 0, false},
	}
	for _, tc := range tests {
		got, err := ParseServerName(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseServerName(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (got.Host != tc.host || got.Port != tc.port || got.String() != tc.in) {
			t.Errorf("ParseServerName(%q) = %+v", tc.in, got)
		}
		if !tc.ok && !errors.Is(err, ErrBadIdentifier) {
			t.Errorf("ParseServerName(%q) error %v does not wrap ErrBadIdentifier", tc.in, err)
		}
	}
}

// TestParseUserID covers appendices §"User Identifiers" and §"Historical User IDs".
func TestParseUserID(t *testing.T) {
	long := "@" + strings.Repeat("a", 255-len("@:example.org")) + ":example.org"
	tests := []struct {
		in        string
		localpart string
		server    string
		compliant bool
		ok        bool
	}{
		{"@user:matrix.org", "user", "matrix.org", true, true},
		{"@john.doe:example.com", "john.doe", "example.com", true, true},
		{"@a=b_c/d+e-f:example.org:8448", "a=b_c/d+e-f", "example.org:8448", true, true},
		{"@USER:matrix.org", "USER", "matrix.org", true, true},
		{"@:matrix.org", "", "matrix.org", false, true},
		{"@caf\u00e9:matrix.org", "caf\u00e9", "matrix.org", false, true},
		{"@a b:matrix.org", "a b", "matrix.org", false, true},
		{"@x:[::1]:8448", "x", "[::1]:8448", true, true},
		{long, long[1 : len(long)-len(":example.org")], "example.org", true, true},
		{long[:1] + "a" + long[1:], "", "", false, false},
		{"user:matrix.org", "", "", false, false},
		{"@user", "", "", false, false},
		{"@user:", "", "", false, false},
		{"@a\x00b:matrix.org", "", "", false, false},
		{"@a\xffb:matrix.org", "", "", false, false},
		{"@user:bad_server", "", "", false, false},
	}
	for _, tc := range tests {
		got, err := ParseUserID(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseUserID(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if !tc.ok {
			continue
		}
		if got.Localpart() != tc.localpart || got.Server() != tc.server || got.String() != tc.in || got.IsCompliant() != tc.compliant {
			t.Errorf("ParseUserID(%q) = %q %q compliant=%v", tc.in, got.Localpart(), got.Server(), got.IsCompliant())
		}
	}
}

func TestValidateNewLocalpart(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"alice", true},
		{"a.b_c=d-e/f+g0", true},
		{"", false},
		{"Alice", false},
		{"a:b", false},
		{"a b", false},
		{"caf\u00e9", false},
		{"a*", false},
	}
	for _, tc := range tests {
		if err := ValidateNewLocalpart(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateNewLocalpart(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
	if _, err := NewUserID(strings.Repeat("a", 250), "example.org"); err == nil {
		t.Error("NewUserID accepted a 263-byte user ID")
	}
	if u, err := NewUserID("alice", "example.org"); err != nil || u.String() != "@alice:example.org" {
		t.Errorf("NewUserID = %v, %v", u, err)
	}
}

// TestParseRoomID covers appendices §"Room IDs": classic and v12 domainless forms.
func TestParseRoomID(t *testing.T) {
	tests := []struct {
		in     string
		server string
		ok     bool
	}{
		{"!abc123:matrix.org", "matrix.org", true},
		{"!x:domain", "domain", true},
		{"!:matrix.org", "matrix.org", true},
		{"!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", "", true},
		{"!Nhcu5BS+UMnFX7hBVfVSoXiD7OgH6iRT/xyIuqDnpYQ", "", false},
		{"!short", "", false},
		{"abc:matrix.org", "", false},
		{"!a\x00:matrix.org", "", false},
		{"!" + strings.Repeat("a", 250) + ":matrix.org", "", false},
	}
	for _, tc := range tests {
		got, err := ParseRoomID(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRoomID(%q) error = %v, want ok=%v", tc.in, err, tc.ok)
			continue
		}
		if tc.ok && (got.Server() != tc.server || got.String() != tc.in || got.HasDomain() != (tc.server != "")) {
			t.Errorf("ParseRoomID(%q) = %+v", tc.in, got)
		}
	}
	if err := ValidateRoomID("!x:domain", mustVersion(t, "12")); err == nil {
		t.Error("v12 accepted a room ID with a domain")
	}
	if err := ValidateRoomID("!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", mustVersion(t, "11")); err == nil {
		t.Error("v11 accepted a domainless room ID")
	}
	if err := ValidateRoomID("!Nhcu5BS-UMnFX7hBVfVSoXiD7OgH6iRT-xyIuqDnpYQ", mustVersion(t, "12")); err != nil {
		t.Error(err)
	}
}

func TestParseRoomAlias(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"#room:matrix.org", true},
		{"#\u65e5\u672c:matrix.org", true},
		{"#:matrix.org", true},
		{"room:matrix.org", false},
		{"#room", false},
		{"#ro\x00om:matrix.org", false},
		{"#" + strings.Repeat("a", 250) + ":matrix.org", false},
	}
	for _, tc := range tests {
		a, err := ParseRoomAlias(tc.in)
		if (err == nil) != tc.ok {
			t.Errorf("ParseRoomAlias(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
		if tc.ok && a.String() != tc.in {
			t.Errorf("ParseRoomAlias(%q).String() = %q", tc.in, a.String())
		}
	}
}

// TestValidateEventID covers appendices §"Event IDs" and the per-version event ID formats.
func TestValidateEventID(t *testing.T) {
	tests := []struct {
		id      string
		version string
		ok      bool
	}{
		{"$a4ecee13e2accdadf56c1025:example.com", "1", true},
		{"$0:domain", "2", true},
		{"$nodomain", "1", false},
		{"$acR1l0raoZnm60CBwAVgqbZqoO/mYU81xysh1u7XcJk", "3", true},
		{"$acR1l0raoZnm60CBwAVgqbZqoO-mYU81xysh1u7XcJk", "3", false},
		{"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", "4", true},
		{"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg", "12", true},
		{"$Rqnc+F+dvnEYJTyHq/iKxU2bZ1CI92+kuZq3a5lr5Zg", "4", false},
		{"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Z", "10", false},
		{"$Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zg:example.org", "10", false},
		{"Rqnc-F-dvnEYJTyHq_iKxU2bZ1CI92-kuZq3a5lr5Zgx", "10", false},
		{"$" + strings.Repeat("a", 250) + ":example.org", "1", false},
	}
	for _, tc := range tests {
		if err := ValidateEventID(tc.id, mustVersion(t, tc.version)); (err == nil) != tc.ok {
			t.Errorf("ValidateEventID(%q, v%s) = %v, want ok=%v", tc.id, tc.version, err, tc.ok)
		}
	}
}

func TestValidateNamespacedIdentifier(t *testing.T) {
	tests := []struct {
		in string
		ok bool
	}{
		{"m.room.message", true},
		{"com.example.identifier", true},
		{"a", true},
		{"a-b_c.9", true},
		{"", false},
		{"9abc", false},
		{"M.room", false},
		{"m.room message", false},
		{strings.Repeat("a", 256), false},
	}
	for _, tc := range tests {
		if err := ValidateNamespacedIdentifier(tc.in); (err == nil) != tc.ok {
			t.Errorf("ValidateNamespacedIdentifier(%q) = %v, want ok=%v", tc.in, err, tc.ok)
		}
	}
}
