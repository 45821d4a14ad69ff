package federation

import (
	"encoding/json"
	"testing"
)

// TestServerACL applies ACLs to server names: the example of m.room.server_acl
// (allow_ip_literals false, allow "*", deny "*.evil.com" and "evil.com") and the rules of
// its description: ports are ignored, globs match case-insensitively, a missing allow list
// allows nobody, and allow_ip_literals defaults to true.
func TestServerACL(t *testing.T) {
	const example = `{"allow_ip_literals": false, "allow": ["*"], "deny": ["*.evil.com", "evil.com"]}`
	cases := []struct {
		name    string
		content string
		server  string
		allowed bool
	}{
		{"example: ordinary server", example, "matrix.org", true},
		{"example: ordinary server with port", example, "matrix.org:8448", true},
		{"example: denied subdomain", example, "sub.evil.com", false},
		{"example: denied domain", example, "evil.com", false},
		{"example: denied domain with port", example, "evil.com:1234", false},
		{"example: denied case-insensitively", example, "EVIL.com", false},
		{"example: similar name allowed", example, "notevil.com", true},
		{"example: IPv4 literal", example, "1.2.3.4", false},
		{"example: IPv4 literal with port", example, "1.2.3.4:8448", false},
		{"example: IPv6 literal", example, "[::1]:8448", false},
		{"ip literals allowed by default", `{"allow": ["*"]}`, "1.2.3.4", true},
		{"ip literals not a boolean", `{"allow": ["*"], "allow_ip_literals": "no"}`, "[::1]", true},
		{"no allow list", `{"deny": []}`, "matrix.org", false},
		{"allow list not a list", `{"allow": "*"}`, "matrix.org", false},
		{"non-string entries ignored", `{"allow": [1, "*.org"]}`, "matrix.org", true},
		{"question mark is one character", `{"allow": ["server?.example"]}`, "server1.example", true},
		{"question mark not zero characters", `{"allow": ["server?.example"]}`, "server.example", false},
		{"star matches nothing", `{"allow": ["matrix*.org"]}`, "matrix.org", true},
		{"star in the middle", `{"allow": ["m*x.o*g"]}`, "matrix.org", true},
		{"deny wins over allow", `{"allow": ["*"], "deny": ["*"]}`, "matrix.org", false},
		{"allow is case-insensitive", `{"allow": ["MATRIX.ORG"]}`, "matrix.org", true},
		{"not an object", `[]`, "matrix.org", false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := ParseServerACL(json.RawMessage(c.content)).Allows(c.server); got != c.allowed {
				t.Errorf("ACL %s for %s: allowed %v, want %v", c.content, c.server, got, c.allowed)
			}
		})
	}
}

// FuzzServerACL checks that glob matching terminates and never panics.
func FuzzServerACL(f *testing.F) {
	f.Add(`{"allow": ["*.ex?mple.*"]}`, "a.example.org:80")
	f.Add(`{"allow": ["**********a"]}`, "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")
	f.Fuzz(func(t *testing.T, content, server string) {
		ParseServerACL(json.RawMessage(content)).Allows(server)
	})
}
