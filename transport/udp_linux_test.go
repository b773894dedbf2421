package transport

import (
	"net/netip"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"unsafe"
)

// sysctlInt reads an integer from /proc/sys.
func sysctlInt(tb testing.TB, path string) int {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Skipf("cannot read %s, skipping: %v", path, err)
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		tb.Skipf("cannot parse %s, skipping: %v", path, err)
	}
	return n
}

// sockoptInt reads an integer SOL_SOCKET option from l's socket.
func sockoptInt(tb testing.TB, l *UDPListener, opt int) int {
	tb.Helper()
	rc, err := l.conn.SyscallConn()
	if err != nil {
		tb.Fatalf("SyscallConn: %v", err)
	}
	var v int
	var gerr error
	if err := rc.Control(func(fd uintptr) {
		v, gerr = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, opt)
	}); err != nil {
		tb.Fatalf("Control: %v", err)
	}
	if gerr != nil {
		tb.Fatalf("getsockopt: %v", gerr)
	}
	return v
}

// TestSocketBufferOptions checks that ReadBuffer and WriteBuffer reach the
// socket. Linux stores (and reports) twice the requested size, capped by
// net.core.rmem_max / wmem_max without an error, so a cap below the request
// skips the case.
func TestSocketBufferOptions(t *testing.T) {
	const requested = 1 << 20
	tests := []struct {
		name   string
		sysctl string
		opt    int
		opts   UDPOptions
	}{
		{"ReadBuffer", "/proc/sys/net/core/rmem_max", syscall.SO_RCVBUF, UDPOptions{ReadBuffer: requested}},
		{"WriteBuffer", "/proc/sys/net/core/wmem_max", syscall.SO_SNDBUF, UDPOptions{WriteBuffer: requested}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if limit := sysctlInt(t, tt.sysctl); limit < requested {
				t.Skipf("%s is %d, below the %d bytes requested: the kernel would cap the buffer", tt.sysctl, limit, requested)
			}
			def := sockoptInt(t, listen(t, "127.0.0.1:0", UDPOptions{}), tt.opt)
			got := sockoptInt(t, listen(t, "127.0.0.1:0", tt.opts), tt.opt)
			t.Logf("%s: requested %d, kernel reports %d (OS default %d)", tt.name, requested, got, def)
			if got < requested {
				t.Errorf("%s: kernel reports %d, want at least the %d requested", tt.name, got, requested)
			}
		})
	}
}

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
