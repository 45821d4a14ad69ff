// Package netguard keeps outbound connections to addresses that others choose (media
// Location URLs, URL previews, push gateways) away from this machine and its private
// network: server-side request forgery.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// ErrBlocked is the error of a connection refused by Control; the HTTP client's errors
// wrap it.
var ErrBlocked = errors.New("not a public address")

// blockedPrefixes are the networks refused. NOTSPEC: Synapse's default
// ip_range_blacklist (loopback, private, carrier-grade NAT, link-local, documentation,
// benchmarking, multicast, 6to4 relay anycast, IPv6 unique and site local), plus
// "this network" and the reserved 240.0.0.0/4, the IPv4-compatible ::/96 and the
// local-use NAT64 prefix.
var blockedPrefixes = func() []netip.Prefix {
	var prefixes []netip.Prefix
	for _, p := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/96", "64:ff9b:1::/48", "100::/64", "2001:db8::/32", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		prefixes = append(prefixes, netip.MustParsePrefix(p))
	}
	return prefixes
}()

// nat64Prefix and sixToFourPrefix carry an IPv4 address inside an IPv6 one (RFC 6052,
// RFC 3056): such an address is blocked when the IPv4 address it carries is.
var (
	nat64Prefix     = netip.MustParsePrefix("64:ff9b::/96")
	sixToFourPrefix = netip.MustParsePrefix("2002::/16")
)

// Blocked reports whether a connection to ip is refused.
func Blocked(ip netip.Addr) bool {
	if ip.Zone() != "" {
		// Scoped to one link: never a public address (and netip.Prefix never matches it).
		return true
	}
	ip = ip.Unmap()
	if ip.Is6() {
		b := ip.As16()
		switch {
		case nat64Prefix.Contains(ip):
			return Blocked(netip.AddrFrom4([4]byte(b[12:16])))
		case sixToFourPrefix.Contains(ip):
			return Blocked(netip.AddrFrom4([4]byte(b[2:6])))
		}
	}
	for _, p := range blockedPrefixes {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// Control is a net.Dialer Control that refuses to connect to the addresses Blocked names.
// It runs on every connection, once the name is resolved: for every redirect and every
// address a name resolves to, so DNS cannot lead a client to a blocked one.
func Control(_, address string, _ syscall.RawConn) error {
	addrPort, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: %q", ErrBlocked, address)
	}
	if Blocked(addrPort.Addr()) {
		return fmt.Errorf("refusing to connect to %s: %w", addrPort.Addr(), ErrBlocked)
	}
	return nil
}

// Dialer is a dialer that connects to public addresses only.
func Dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, Control: Control}
}
