//go:build !386

package transport

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"testing"
	"time"
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
		var to syscall.RawSockaddrInet6
		_, ok := sockaddr(&to, netip.MustParseAddrPort(tc.addr), tc.inet6)
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
		got := sockaddrToAddrPort((*syscall.RawSockaddrAny)(unsafe.Pointer(&to)))
		if got.String() != tc.want {
			t.Errorf("%s (inet6 %v): decoded as %s, want %s", tc.addr, tc.inet6, got, tc.want)
		}
	}
}

// TestWriteToAfterClose: a datagram goes out while the listener is open,
// and never after Close, even through a socket that got the closed one's
// descriptor number.
func TestWriteToAfterClose(t *testing.T) {
	fd := func(c *net.UDPConn) (fd uintptr) {
		raw, err := c.SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.Control(func(d uintptr) { fd = d })
		return fd
	}
	dst, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	to := dst.LocalAddr().(*net.UDPAddr).AddrPort()

	l, err := ListenUDP("127.0.0.1:0", UDPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if l.raw == nil {
		t.Fatal("no raw sender on a UDP socket")
	}
	if err := l.WriteTo([]byte("first"), to); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 16)
	_ = dst.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := dst.Read(got); err != nil || string(got[:n]) != "first" {
		t.Fatalf("read %q, %v; want \"first\"", got[:n], err)
	}

	closedFD := fd(l.conn)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	next, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // most likely the descriptor just closed
	if err != nil {
		t.Fatal(err)
	}
	defer next.Close()
	if fd(next) != closedFD {
		t.Logf("the new socket got descriptor %d, not the closed %d: only the refusal is checked", fd(next), closedFD)
	}
	if err := l.WriteTo([]byte("stray"), to); !errors.Is(err, net.ErrClosed) {
		t.Errorf("WriteTo after Close = %v, want an error wrapping net.ErrClosed", err)
	}
	_ = dst.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := dst.Read(got); n > 0 {
		t.Errorf("received %q after Close, sent through the socket that reused the descriptor", got[:n])
	}
}

// TestWriteToDuringClose: datagrams sent from several goroutines while the
// listener closes, and while a new socket takes the closed descriptor's
// number, all come from the listener's own address.
func TestWriteToDuringClose(t *testing.T) {
	dst, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	_ = dst.SetReadBuffer(4 << 20)
	to := dst.LocalAddr().(*net.UDPAddr).AddrPort()
	for round := range 20 {
		l, err := ListenUDP("127.0.0.1:0", UDPOptions{})
		if err != nil {
			t.Fatal(err)
		}
		from := l.LocalAddr()
		var wg sync.WaitGroup
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for l.WriteTo([]byte("x"), to) == nil {
				}
			}()
		}
		time.Sleep(time.Millisecond)
		_ = l.Close()
		next, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}) // most likely the closed descriptor
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(time.Millisecond)
		_ = next.Close()
		wg.Wait()
		buf := make([]byte, 16)
		for {
			_ = dst.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			_, src, err := dst.ReadFromUDPAddrPort(buf)
			if err != nil {
				break
			}
			if src != from {
				t.Fatalf("round %d: a datagram from %s, not the listener's %s: sent through a socket that reused its descriptor", round, src, from)
			}
		}
	}
}
