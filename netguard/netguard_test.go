package netguard

import (
	"net/netip"
	"testing"
)

// TestBlocked: the addresses connections are refused to.
func TestBlocked(t *testing.T) {
	for address, blocked := range map[string]bool{
		"8.8.8.8": false, "1.1.1.1": false, "2606:4700:4700::1111": false,
		"64:ff9b::808:808": false, // NAT64 of a public address
		"127.0.0.1":        true, "10.1.2.3": true, "172.16.0.1": true, "192.168.1.1": true, "169.254.169.254": true,
		"100.64.0.1": true, "0.0.0.0": true, "0.1.2.3": true, "224.0.0.1": true, "255.255.255.255": true, "198.18.0.1": true,
		"::": true, "::1": true, "::ffff:127.0.0.1": true, "::127.0.0.1": true, "fe80::1": true, "fe80::1%eth0": true,
		"fd00::1": true, "ff02::1": true, "64:ff9b::7f00:1": true, "64:ff9b::a9fe:a9fe": true, "2002:a00:1::": true,
		"64:ff9b:1::1": true,
	} {
		if got := Blocked(netip.MustParseAddr(address)); got != blocked {
			t.Errorf("Blocked(%s) = %v, want %v", address, got, blocked)
		}
	}
	if err := Control("tcp", "[::1]:443", nil); err == nil {
		t.Error("[::1]:443 allowed")
	}
	if err := Control("tcp", "8.8.8.8:443", nil); err != nil {
		t.Errorf("8.8.8.8:443 refused: %v", err)
	}
}
