package federation

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strings"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
)

// Server access control lists (server-server API "Server Access Control Lists (ACLs)";
// m.room.server_acl). A room's ACL says which servers may take part in it; it is applied
// to the servers that make requests, "purely at the network layer", not to the events of
// the DAG: the origin of a room-scoped request, of each PDU of a transaction and of each
// room-scoped EDU.

// ServerACL is the content of an m.room.server_acl event.
type ServerACL struct {
	Allow           []string
	Deny            []string
	AllowIPLiterals bool
}

// ParseServerACL reads the content of an m.room.server_acl event. Entries that are not
// strings are ignored; allow_ip_literals is true "if missing or otherwise not a boolean"; a
// missing allow list allows no one.
func ParseServerACL(content json.RawMessage) *ServerACL {
	acl := &ServerACL{AllowIPLiterals: true}
	var fields map[string]json.RawMessage
	if json.Unmarshal(content, &fields) != nil {
		return acl
	}
	globs := func(raw json.RawMessage) []string {
		var list []any
		if json.Unmarshal(raw, &list) != nil {
			return nil
		}
		out := make([]string, 0, len(list))
		for _, v := range list {
			if s, ok := v.(string); ok {
				out = append(out, strings.ToLower(s))
			}
		}
		return out
	}
	acl.Allow, acl.Deny = globs(fields["allow"]), globs(fields["deny"])
	if strings.TrimSpace(string(fields["allow_ip_literals"])) == "false" {
		acl.AllowIPLiterals = false
	}
	return acl
}

// Allows applies the ACL to a server name, in the order m.room.server_acl gives: an IP
// literal when allow_ip_literals is false is denied; then a match in deny denies, a match in
// allow allows, and anything else is denied. The port is not considered, and the globs
// match case-insensitively.
func (acl *ServerACL) Allows(serverName string) bool {
	host := strings.ToLower(hostOf(serverName))
	if !acl.AllowIPLiterals && isIPLiteral(host) {
		return false
	}
	for _, pattern := range acl.Deny {
		if globMatch(pattern, host) {
			return false
		}
	}
	for _, pattern := range acl.Allow {
		if globMatch(pattern, host) {
			return true
		}
	}
	return false
}

// hostOf is a server name without its port: "[::1]:8448" → "[::1]", "a.example:80" →
// "a.example".
func hostOf(serverName string) string {
	if strings.HasPrefix(serverName, "[") {
		if end := strings.IndexByte(serverName, ']'); end >= 0 {
			return serverName[:end+1]
		}
		return serverName
	}
	if i := strings.LastIndexByte(serverName, ':'); i >= 0 {
		return serverName[:i]
	}
	return serverName
}

// isIPLiteral reports whether a host (without port) is an IPv4 or bracketed IPv6 literal.
func isIPLiteral(host string) bool {
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return net.ParseIP(host[1:len(host)-1]) != nil
	}
	return net.ParseIP(host) != nil
}

// globMatch matches name against a glob (appendices "Glob-style matching"): "*" matches
// zero or more characters, "?" exactly one. Both are lower-case already. It backtracks
// only to the last "*", so it runs in time linear in len(pattern)·len(name) at worst.
func globMatch(pattern, name string) bool {
	p, n := []rune(pattern), []rune(name)
	pi, ni := 0, 0
	star, starNI := -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, starNI = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			starNI++
			ni = starNI
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// errDeniedByACL is the answer to a server the room's ACL denies: 403 M_FORBIDDEN.
func errDeniedByACL(server, roomID string) *httpapi.Error {
	return httpapi.Forbidden("Server %s is denied by the server ACL of room %s", server, roomID)
}

// ServerAllowed reports whether the room's current m.room.server_acl lets server take part.
// Rooms without an ACL, and rooms this server does not know, allow every server.
func (a *API) ServerAllowed(ctx context.Context, roomID, server string) (bool, error) {
	e, err := a.Rooms.CurrentStateEvent(ctx, roomID, "m.room.server_acl", "")
	if errors.Is(err, rooms.ErrRoomNotFound) || (err == nil && e == nil) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	return ParseServerACL(e.Content()).Allows(server), nil
}

// CheckServerACL is the check of the room-scoped endpoints (make_join, send_join,
// make_leave, send_leave, invite, make_knock, send_knock, state, state_ids, backfill,
// event_auth, get_missing_events, …): nil when origin may act in the room, else 403
// M_FORBIDDEN as the spec requires.
func (a *API) CheckServerACL(ctx context.Context, roomID, origin string) error {
	allowed, err := a.ServerAllowed(ctx, roomID, origin)
	if err != nil {
		return err
	}
	if !allowed {
		return errDeniedByACL(origin, roomID)
	}
	return nil
}

// ReceiveCheck is the room server's check of received events (rooms.Server.SetReceiveCheck):
// a PDU that reached us in a request from a server the room's ACL denies is refused ("the
// PDU MUST be ignored with an appropriate error included in the response"). Events fetched
// on our own initiative (no authenticated origin in ctx) are not subject to it: ACLs apply
// to the servers that make requests.
func (a *API) ReceiveCheck(ctx context.Context, ev *spec.Event) error {
	origin, ok := Origin(ctx)
	if !ok || origin == a.ServerName {
		return nil
	}
	return a.CheckServerACL(ctx, ev.RoomID(), origin)
}

// aclProtectedPrefixes are the endpoints the server ACLs of a room guard (server-server API
// "Server Access Control Lists (ACLs)"); /send applies them per PDU and EDU instead.
var aclProtectedPrefixes = []string{
	"/_matrix/federation/v1/make_join/", "/_matrix/federation/v1/make_leave/",
	"/_matrix/federation/v1/send_join/", "/_matrix/federation/v2/send_join/",
	"/_matrix/federation/v1/send_leave/", "/_matrix/federation/v2/send_leave/",
	"/_matrix/federation/v1/invite/", "/_matrix/federation/v2/invite/",
	"/_matrix/federation/v1/make_knock/", "/_matrix/federation/v1/send_knock/",
	"/_matrix/federation/v1/state/", "/_matrix/federation/v1/state_ids/",
	"/_matrix/federation/v1/backfill/", "/_matrix/federation/v1/event_auth/",
	"/_matrix/federation/v1/get_missing_events/",
}

// aclGuard answers 403 M_FORBIDDEN to an origin the room's ACL denies, on the protected
// endpoints. It runs after authentication and routing (the room ID is a path parameter).
func (a *API) aclGuard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		protected := false
		for _, prefix := range aclProtectedPrefixes {
			protected = protected || strings.HasPrefix(r.URL.Path, prefix)
		}
		origin, ok := Origin(r.Context())
		roomID := pathParam(r, "roomId")
		if protected && ok && roomID != "" {
			if err := a.CheckServerACL(r.Context(), roomID, origin); err != nil {
				httpapi.WriteError(w, r, err)
				return
			}
		}
		next.ServeHTTP(w, r)
	})
}
