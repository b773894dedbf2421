//go:build !386

package transport

import (
	"net/netip"
	"syscall"
	"testing"
	"unsafe"
)

// The raw send path encodes a destination as the kernel's socket address
// and the raw read path decodes one: both ways give the address back, for
// an IPv4 socket and an IPv6 (dual-stack) one.
func TestRawSocketAddresses(t *testing.T) {
	for _, tc := range []struct {
		addr  string
		inet6 bool
		want  string // "" for refused: left to net's own write
	}{
		{"192.0.2.7:1884", false, "192.0.2.7:1884"},
		{"[::ffff:192.0.2.7]:1884", false, "192.0.2.7:1884"},
		{"[2001:db8::1]:1884", false, ""},
		{"192.0.2.7:65535", true, "[::ffff:192.0.2.7]:65535"},
		{"[2001:db8::1]:1", true, "[2001:db8::1]:1"},
		{"[fe80::1%7]:1884", true, "[fe80::1%7]:1884"},
		{"[fe80::1%eth0]:1884", true, ""},
	} {
		var c sendCall
		ok := c.address(netip.MustParseAddrPort(tc.addr), tc.inet6)
		if !ok {
			if tc.want != "" {
				t.Errorf("%s (inet6 %v): refused, want %s", tc.addr, tc.inet6, tc.want)
			}
			continue
		}
		if tc.want == "" {
			t.Errorf("%s (inet6 %v): accepted, want it left to net", tc.addr, tc.inet6)
			continue
		}
		got := sockaddrToAddrPort((*syscall.RawSockaddrAny)(unsafe.Pointer(&c.to)))
		if got.String() != tc.want {
			t.Errorf("%s (inet6 %v): decoded as %s, want %s", tc.addr, tc.inet6, got, tc.want)
		}
	}
}
