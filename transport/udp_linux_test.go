package transport

import (
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
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
