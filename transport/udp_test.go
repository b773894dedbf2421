package transport

import (
	"bytes"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"
)

// waitTimeout bounds every wait in these tests; loopback answers in microseconds.
const waitTimeout = 5 * time.Second

// loopbacks are the addresses every socket test runs on.
var loopbacks = []struct{ name, addr string }{
	{"ipv4", "127.0.0.1:0"},
	{"ipv6", "[::1]:0"},
}

// forEachLoopback runs f once per loopback family, skipping IPv6 with a reason
// when ::1 cannot be bound.
func forEachLoopback(t *testing.T, f func(t *testing.T, addr string)) {
	t.Helper()
	for _, lb := range loopbacks {
		t.Run(lb.name, func(t *testing.T) {
			skipWithoutLoopback(t, lb.addr)
			f(t, lb.addr)
		})
	}
}

// skipWithoutLoopback skips tb if addr cannot be bound (IPv6 disabled, for
// example in some containers).
func skipWithoutLoopback(tb testing.TB, addr string) {
	tb.Helper()
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		tb.Skipf("cannot bind %s, skipping (no IPv6 loopback?): %v", addr, err)
	}
	_ = pc.Close()
}

// listen opens a listener and closes it when the test ends.
func listen(tb testing.TB, addr string, opts UDPOptions) *UDPListener {
	tb.Helper()
	l, err := ListenUDP(addr, opts)
	if err != nil {
		tb.Fatalf("ListenUDP(%q): %v", addr, err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	return l
}

// startServe runs l.Serve(h) on its own goroutine. At cleanup it closes l and
// fails the test unless Serve returns nil promptly, so no test leaks a loop.
func startServe(tb testing.TB, l *UDPListener, h Handler) {
	tb.Helper()
	done := startServeFunc(func() error { return l.Serve(h) })
	tb.Cleanup(func() {
		_ = l.Close()
		waitServe(tb, done)
	})
}

// startServeFunc runs serve on its own goroutine and returns its result channel.
func startServeFunc(serve func() error) <-chan error {
	done := make(chan error, 1)
	go func() { done <- serve() }()
	return done
}

// waitServe fails tb unless Serve's result arrives on done, nil, in time.
func waitServe(tb testing.TB, done <-chan error) {
	tb.Helper()
	select {
	case err := <-done:
		if err != nil {
			tb.Errorf("Serve returned %v, want nil", err)
		}
	case <-time.After(waitTimeout):
		tb.Errorf("Serve did not return within %v after Close", waitTimeout)
	}
}

// dial returns a client socket connected to the listener, closed at cleanup.
func dial(tb testing.TB, to netip.AddrPort) *net.UDPConn {
	tb.Helper()
	c, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(to))
	if err != nil {
		tb.Fatalf("dial %s: %v", to, err)
	}
	tb.Cleanup(func() { _ = c.Close() })
	if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		tb.Fatalf("set read deadline: %v", err)
	}
	return c
}

// localAddrPort returns c's local address as the listener reports peers.
func localAddrPort(c *net.UDPConn) netip.AddrPort {
	return unmap(c.LocalAddr().(*net.UDPAddr).AddrPort())
}

// waitStats fails tb unless l's counters reach want within waitTimeout.
func waitStats(tb testing.TB, l *UDPListener, want UDPStats) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		got := l.Stats()
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			tb.Errorf("Stats() = %+v, want %+v", got, want)
			return
		}
		time.Sleep(time.Millisecond)
	}
}

// echo is a handler that sends every datagram back to its sender.
func echo(t *testing.T) Handler {
	return func(s Sender, from netip.AddrPort, b []byte) {
		if err := s.WriteTo(b, from); err != nil {
			t.Errorf("echo WriteTo(%s): %v", from, err)
		}
	}
}

func TestListenUDPLocalAddr(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		l := listen(t, addr, UDPOptions{})
		got := l.LocalAddr()
		want := netip.MustParseAddrPort(addr).Addr()
		if got.Addr() != want || got.Port() == 0 {
			t.Errorf("LocalAddr() = %s, want %s with a non-zero port", got, want)
		}
		if l.maxDatagram != DefaultMaxDatagram {
			t.Errorf("default MaxDatagram = %d, want %d", l.maxDatagram, DefaultMaxDatagram)
		}
	})
}

func TestListenUDPErrors(t *testing.T) {
	tests := []struct {
		name  string
		addr  string
		opts  UDPOptions
		wants []string // substrings of the error
	}{
		{"port out of range", "127.0.0.1:99999", UDPOptions{}, []string{`"127.0.0.1:99999"`}},
		{"not an address", "no port here", UDPOptions{}, []string{`"no port here"`}},
		{"max datagram negative", "127.0.0.1:0", UDPOptions{MaxDatagram: -1}, []string{`"127.0.0.1:0"`, "MaxDatagram -1"}},
		{"max datagram too large", "127.0.0.1:0", UDPOptions{MaxDatagram: 70000}, []string{"MaxDatagram 70000"}},
		{
			"all option problems at once", "127.0.0.1:0",
			UDPOptions{MaxDatagram: -1, ReadBuffer: -2, WriteBuffer: -3},
			[]string{"MaxDatagram -1", "ReadBuffer -2", "WriteBuffer -3"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ListenUDP(tt.addr, tt.opts)
			if err == nil {
				_ = l.Close()
				t.Fatalf("ListenUDP(%q, %+v) succeeded, want an error", tt.addr, tt.opts)
			}
			for _, w := range tt.wants {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %s", err, w)
				}
			}
		})
	}
}

func TestListenUDPAddressInUse(t *testing.T) {
	a := listen(t, "127.0.0.1:0", UDPOptions{})
	_, err := ListenUDP(a.LocalAddr().String(), UDPOptions{})
	if err == nil {
		t.Fatalf("second ListenUDP on %s succeeded, want an error", a.LocalAddr())
	}
	if !strings.Contains(err.Error(), a.LocalAddr().String()) {
		t.Errorf("error %q does not name the address %s", err, a.LocalAddr())
	}
}

func TestEchoRoundTrip(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		l := listen(t, addr, UDPOptions{})
		startServe(t, l, echo(t))
		c := dial(t, l.LocalAddr())

		const n = 10
		buf := make([]byte, 2048)
		for i := range n {
			msg := fmt.Appendf(nil, "ping %d", i)
			if _, err := c.Write(msg); err != nil {
				t.Fatalf("client write: %v", err)
			}
			m, err := c.Read(buf)
			if err != nil {
				t.Fatalf("client read: %v", err)
			}
			if !bytes.Equal(buf[:m], msg) {
				t.Fatalf("echo = %q, want %q", buf[:m], msg)
			}
		}
		// The reply can reach the client before WriteTo has counted it.
		waitStats(t, l, UDPStats{Received: n, Sent: n})
	})
}

// TestManyClientsSourceAddresses sends from several sockets at once and checks
// that every datagram arrives, once, with its sender's address.
func TestManyClientsSourceAddresses(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		const clients, perClient = 4, 32
		// A larger receive buffer keeps the kernel from dropping a burst
		// while the race detector slows the reader down.
		l := listen(t, addr, UDPOptions{ReadBuffer: 1 << 20})

		var (
			mu   sync.Mutex
			seen = make(map[string]netip.AddrPort)
			dups int
			all  = make(chan struct{})
		)
		startServe(t, l, func(_ Sender, from netip.AddrPort, b []byte) {
			mu.Lock()
			defer mu.Unlock()
			key := string(b) // copies: b is reused by the next read
			if _, ok := seen[key]; ok {
				dups++
			}
			seen[key] = from
			if len(seen) == clients*perClient {
				close(all)
			}
		})

		conns := make([]*net.UDPConn, clients)
		for i := range conns {
			conns[i] = dial(t, l.LocalAddr())
		}
		var wg sync.WaitGroup
		for i, c := range conns {
			wg.Go(func() {
				for j := range perClient {
					if _, err := fmt.Fprintf(c, "client %d seq %d", i, j); err != nil {
						t.Errorf("client %d write: %v", i, err)
						return
					}
				}
			})
		}
		wg.Wait()

		select {
		case <-all:
		case <-time.After(waitTimeout):
			mu.Lock()
			t.Fatalf("received %d distinct datagrams, want %d (stats %+v)", len(seen), clients*perClient, l.Stats())
		}
		mu.Lock()
		defer mu.Unlock()
		if dups != 0 {
			t.Errorf("%d duplicate datagrams", dups)
		}
		for i, c := range conns {
			want := localAddrPort(c)
			for j := range perClient {
				key := fmt.Sprintf("client %d seq %d", i, j)
				if got := seen[key]; got != want {
					t.Errorf("%q came from %s, want %s", key, got, want)
				}
			}
		}
		if got := l.Stats().Received; got != clients*perClient {
			t.Errorf("Stats().Received = %d, want %d", got, clients*perClient)
		}
	})
}

// TestOversizeDropped checks that a datagram one byte over MaxDatagram (and a
// much larger one) is dropped and counted, while MaxDatagram bytes and an
// empty datagram pass whole.
func TestOversizeDropped(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		const max = 100
		l := listen(t, addr, UDPOptions{MaxDatagram: max})
		got := make(chan []byte, 8)
		startServe(t, l, func(_ Sender, _ netip.AddrPort, b []byte) {
			got <- bytes.Clone(b)
		})
		c := dial(t, l.LocalAddr())

		fill := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
		send := [][]byte{fill(max + 1), fill(max), {}, fill(60000), []byte("end")}
		for _, b := range send {
			if _, err := c.Write(b); err != nil {
				t.Fatalf("client write of %d bytes: %v", len(b), err)
			}
		}
		for _, want := range [][]byte{fill(max), {}, []byte("end")} {
			select {
			case b := <-got:
				if !bytes.Equal(b, want) {
					t.Fatalf("handler got %d bytes %.10q…, want %d bytes %.10q…", len(b), b, len(want), want)
				}
			case <-time.After(waitTimeout):
				t.Fatalf("timed out waiting for the %d-byte datagram (stats %+v)", len(want), l.Stats())
			}
		}
		want := UDPStats{Received: 3, OversizeDropped: 2}
		if s := l.Stats(); s != want {
			t.Errorf("Stats() = %+v, want %+v", s, want)
		}
	})
}

func TestCloseEndsServe(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		l, err := ListenUDP(addr, UDPOptions{})
		if err != nil {
			t.Fatal(err)
		}
		started := make(chan struct{})
		done := startServeFunc(func() error {
			close(started)
			return l.Serve(func(Sender, netip.AddrPort, []byte) {})
		})
		<-started
		time.Sleep(10 * time.Millisecond) // let Serve block in the read

		start := time.Now()
		if err := l.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		waitServe(t, done)
		if d := time.Since(start); d > time.Second {
			t.Errorf("Serve took %v to return after Close", d)
		}
		if err := l.Close(); err != nil {
			t.Errorf("second Close: %v, want nil", err)
		}
		if err := l.Serve(func(Sender, netip.AddrPort, []byte) {}); err != nil {
			t.Errorf("Serve after Close = %v, want nil", err)
		}

		err = l.WriteTo([]byte("late"), l.LocalAddr())
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("WriteTo after Close = %v, want an error wrapping net.ErrClosed", err)
		}
		if s := l.Stats(); s.SendErrors != 1 || s.ReadErrors != 0 {
			t.Errorf("Stats() = %+v, want SendErrors 1 and ReadErrors 0", s)
		}
	})
}

func TestCloseConcurrentIsIdempotent(t *testing.T) {
	l := listen(t, "127.0.0.1:0", UDPOptions{})
	startServe(t, l, func(Sender, netip.AddrPort, []byte) {})
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			if err := l.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
	}
	wg.Wait()
}

func TestCloseFromHandler(t *testing.T) {
	l, err := ListenUDP("127.0.0.1:0", UDPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	done := startServeFunc(func() error {
		return l.Serve(func(Sender, netip.AddrPort, []byte) {
			if err := l.Close(); err != nil {
				t.Errorf("Close from handler: %v", err)
			}
		})
	})
	c := dial(t, l.LocalAddr())
	if _, err := c.Write([]byte("stop")); err != nil {
		t.Fatal(err)
	}
	waitServe(t, done)
}

func TestServeArguments(t *testing.T) {
	l := listen(t, "127.0.0.1:0", UDPOptions{})
	if err := l.Serve(nil); err == nil {
		t.Error("Serve(nil) succeeded, want an error")
	}
	startServe(t, l, func(Sender, netip.AddrPort, []byte) {})
	// The failed Serve(nil) must not have claimed the listener: the
	// goroutine started here does. Wait until it has.
	deadline := time.Now().Add(waitTimeout)
	for !l.serving.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	err := l.Serve(func(Sender, netip.AddrPort, []byte) {})
	if err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Serve = %v, want an error saying Serve was already called", err)
	}
}

// TestConcurrentWriteTo writes from several goroutines through one listener
// while another reads its stats; run it with -race.
func TestConcurrentWriteTo(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		const writers, perWriter = 8, 32
		recv := listen(t, addr, UDPOptions{ReadBuffer: 1 << 20})
		send := listen(t, addr, UDPOptions{})

		var (
			mu   sync.Mutex
			seen = make(map[string]bool)
			bad  []string
			all  = make(chan struct{})
		)
		startServe(t, recv, func(_ Sender, from netip.AddrPort, b []byte) {
			mu.Lock()
			defer mu.Unlock()
			if from != send.LocalAddr() {
				bad = append(bad, fmt.Sprintf("%q from %s", b, from))
			}
			seen[string(b)] = true
			if len(seen) == writers*perWriter {
				close(all)
			}
		})
		// The sender's own read loop runs too, as in the gateway.
		startServe(t, send, func(Sender, netip.AddrPort, []byte) {})

		stop := make(chan struct{})
		var statsWG sync.WaitGroup
		statsWG.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
					_ = send.Stats()
				}
			}
		})
		var wg sync.WaitGroup
		for i := range writers {
			wg.Go(func() {
				buf := make([]byte, 0, 64)
				for j := range perWriter {
					buf = fmt.Appendf(buf[:0], "writer %d seq %d", i, j)
					if err := send.WriteTo(buf, recv.LocalAddr()); err != nil {
						t.Errorf("WriteTo: %v", err)
						return
					}
				}
			})
		}
		wg.Wait()
		close(stop)
		statsWG.Wait()

		select {
		case <-all:
		case <-time.After(waitTimeout):
			mu.Lock()
			t.Fatalf("received %d distinct datagrams, want %d (receiver stats %+v)", len(seen), writers*perWriter, recv.Stats())
		}
		mu.Lock()
		defer mu.Unlock()
		if len(bad) > 0 {
			t.Errorf("datagrams from the wrong source: %v", bad)
		}
		if s := send.Stats(); s.Sent != writers*perWriter || s.SendErrors != 0 {
			t.Errorf("sender Stats() = %+v, want Sent %d and no SendErrors", s, writers*perWriter)
		}
	})
}

// TestWriteToMappedAddress sends to the IPv4-mapped form of an IPv4 peer
// through an IPv4 socket.
func TestWriteToMappedAddress(t *testing.T) {
	l := listen(t, "127.0.0.1:0", UDPOptions{})
	c := dial(t, l.LocalAddr())
	peer := localAddrPort(c)
	mapped := netip.AddrPortFrom(netip.AddrFrom16(peer.Addr().As16()), peer.Port())
	if !mapped.Addr().Is4In6() {
		t.Fatalf("test setup: %s is not IPv4-mapped", mapped)
	}
	if err := l.WriteTo([]byte("hello"), mapped); err != nil {
		t.Fatalf("WriteTo(%s): %v", mapped, err)
	}
	buf := make([]byte, 64)
	n, err := c.Read(buf)
	if err != nil {
		t.Fatalf("client read: %v", err)
	}
	if string(buf[:n]) != "hello" {
		t.Errorf("client got %q, want %q", buf[:n], "hello")
	}
}

func TestWriteToInvalidAddress(t *testing.T) {
	l := listen(t, "127.0.0.1:0", UDPOptions{})
	if err := l.WriteTo([]byte("x"), netip.AddrPort{}); err == nil {
		t.Fatal("WriteTo(zero AddrPort) succeeded, want an error")
	}
	if s := l.Stats(); s.SendErrors != 1 || s.Sent != 0 {
		t.Errorf("Stats() = %+v, want SendErrors 1 and Sent 0", s)
	}
}

// step is one scripted result of a stand-in read.
type step struct {
	data []byte
	from netip.AddrPort
	err  error
}

// scriptedRead returns the steps in order, then reads from l's socket.
func scriptedRead(l *UDPListener, steps ...step) readFunc {
	return func(b []byte) (int, netip.AddrPort, error) {
		if len(steps) == 0 {
			return l.conn.ReadFromUDPAddrPort(b)
		}
		s := steps[0]
		steps = steps[1:]
		return copy(b, s.data), s.from, s.err
	}
}

// TestReadErrorsCountedAndLoopContinues injects transient read errors, and a
// datagram from an IPv4-mapped address, ahead of real socket reads.
func TestReadErrorsCountedAndLoopContinues(t *testing.T) {
	l := listen(t, "127.0.0.1:0", UDPOptions{})
	transient := errors.New("transient")
	mapped := netip.MustParseAddrPort("[::ffff:192.0.2.7]:4000")
	read := scriptedRead(l,
		step{err: transient},
		step{err: transient},
		step{err: transient},
		step{data: []byte("mapped"), from: mapped},
		step{err: transient},
	)

	type datagram struct {
		from netip.AddrPort
		b    string
	}
	got := make(chan datagram, 4)
	done := startServeFunc(func() error {
		return l.serve(func(_ Sender, from netip.AddrPort, b []byte) {
			got <- datagram{from, string(b)}
		}, read)
	})
	t.Cleanup(func() { _ = l.Close(); waitServe(t, done) })

	c := dial(t, l.LocalAddr())
	if _, err := c.Write([]byte("real")); err != nil {
		t.Fatal(err)
	}
	want := []datagram{
		{netip.MustParseAddrPort("192.0.2.7:4000"), "mapped"},
		{localAddrPort(c), "real"},
	}
	for _, w := range want {
		select {
		case d := <-got:
			if d != w {
				t.Errorf("handler got %+v, want %+v", d, w)
			}
		case <-time.After(waitTimeout):
			t.Fatalf("timed out waiting for %+v (stats %+v)", w, l.Stats())
		}
	}
	if s := l.Stats(); s.ReadErrors != 4 || s.Received != 2 {
		t.Errorf("Stats() = %+v, want ReadErrors 4 and Received 2", s)
	}
}

// TestCloseInterruptsErrorBackoff checks that a loop pausing after repeated
// read errors still ends promptly on Close.
func TestCloseInterruptsErrorBackoff(t *testing.T) {
	l, err := ListenUDP("127.0.0.1:0", UDPOptions{})
	if err != nil {
		t.Fatal(err)
	}
	failing := func([]byte) (int, netip.AddrPort, error) {
		return 0, netip.AddrPort{}, errors.New("persistent")
	}
	done := startServeFunc(func() error {
		return l.serve(func(Sender, netip.AddrPort, []byte) {}, failing)
	})
	// 5+10+20+40+80+160+320 ms of pauses: the loop is in a long pause by now.
	deadline := time.Now().Add(waitTimeout)
	for l.Stats().ReadErrors < 8 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := l.Stats().ReadErrors; n < 8 {
		t.Fatalf("ReadErrors = %d after %v, want at least 8", n, waitTimeout)
	}
	if n := l.Stats().ReadErrors; n > 20 {
		t.Errorf("ReadErrors = %d: the loop does not back off", n)
	}
	start := time.Now()
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	waitServe(t, done)
	if d := time.Since(start); d > 200*time.Millisecond {
		t.Errorf("Serve took %v to return after Close during a backoff pause", d)
	}
}

// TestReceivePathDoesNotAllocate measures one echo round trip over real
// loopback sockets: listener read, handler call and WriteTo, plus the client's
// own write and read.
func TestReceivePathDoesNotAllocate(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		l := listen(t, addr, UDPOptions{})
		startServe(t, l, echo(t))
		c := dial(t, l.LocalAddr())
		msg := []byte("0123456789abcdef")
		buf := make([]byte, 64)
		var ioErr error
		allocs := testing.AllocsPerRun(500, func() {
			if _, err := c.Write(msg); err != nil {
				ioErr = err
				return
			}
			if _, err := c.Read(buf); err != nil {
				ioErr = err
			}
		})
		if ioErr != nil {
			t.Fatalf("client I/O: %v", ioErr)
		}
		if allocs != 0 {
			t.Errorf("echo round trip allocates %.2f times, want 0", allocs)
		}
	})
}
