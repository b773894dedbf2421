package transport

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync/atomic"
	"time"
)

// DefaultMaxDatagram is the MaxDatagram used when UDPOptions leaves it zero.
const DefaultMaxDatagram = 1500

// maxUDPPayload bounds MaxDatagram: no UDP datagram carries more than this.
const maxUDPPayload = 65535

// Backoff after consecutive read errors, so that an error that repeats (it
// should not happen on a healthy socket) cannot spin the read loop at full
// speed. The first error in a row is retried at once.
const (
	minReadErrorDelay = 5 * time.Millisecond
	maxReadErrorDelay = time.Second
)

// UDPOptions configures a UDP listener. The zero value is usable.
type UDPOptions struct {
	// MaxDatagram is the largest datagram accepted, in bytes; larger ones are
	// dropped and counted. Zero means DefaultMaxDatagram.
	MaxDatagram int

	// ReadBuffer is the socket receive buffer (SO_RCVBUF) in bytes; zero keeps
	// the OS default. The kernel may cap it (Linux: net.core.rmem_max) without
	// an error, and Linux reports back twice the requested value.
	ReadBuffer int

	// WriteBuffer is the socket send buffer (SO_SNDBUF) in bytes; zero keeps
	// the OS default. The kernel may cap it (Linux: net.core.wmem_max).
	WriteBuffer int
}

// validate reports every problem with o at once.
func (o UDPOptions) validate() error {
	var errs []error
	if o.MaxDatagram < 0 || o.MaxDatagram > maxUDPPayload {
		errs = append(errs, fmt.Errorf("MaxDatagram %d out of range [0, %d]", o.MaxDatagram, maxUDPPayload))
	}
	if o.ReadBuffer < 0 {
		errs = append(errs, fmt.Errorf("ReadBuffer %d is negative", o.ReadBuffer))
	}
	if o.WriteBuffer < 0 {
		errs = append(errs, fmt.Errorf("WriteBuffer %d is negative", o.WriteBuffer))
	}
	return errors.Join(errs...)
}

// UDPStats is a snapshot of a UDP listener's counters since it was opened.
type UDPStats struct {
	Received        uint64 // datagrams handed to the handler
	OversizeDropped uint64 // datagrams dropped for being larger than MaxDatagram
	ReadErrors      uint64 // failed reads, other than the one that ends Serve after Close
	Sent            uint64 // datagrams written by WriteTo
	SendErrors      uint64 // WriteTo calls that failed
}

// UDPListener reads and writes datagrams on one UDP socket.
//
// Create it with ListenUDP, run Serve on one goroutine, and Close it to end
// Serve. All other methods are safe for concurrent use.
type UDPListener struct {
	conn        *net.UDPConn
	raw         *rawSender // nil where net's write is used (see rawSender)
	local       netip.AddrPort
	maxDatagram int

	serving atomic.Bool
	closed  atomic.Bool
	done    chan struct{} // closed by Close

	received        atomic.Uint64
	oversizeDropped atomic.Uint64
	readErrors      atomic.Uint64
	sent            atomic.Uint64
	sendErrors      atomic.Uint64
}

// Interface check: the UDP listener is a Sender.
var _ Sender = (*UDPListener)(nil)

// ListenUDP binds one UDP socket on addr and returns a listener for it.
//
// addr is a host:port as for net.ListenPacket, for example "127.0.0.1:0",
// "[::1]:0" or ":1883". As with net.ListenPacket, a wildcard host (":1883",
// "0.0.0.0:1883", "[::]:1883") gives a dual-stack socket where the OS supports
// one, and LocalAddr then reports [::]. The listener does not read until Serve
// is called.
func ListenUDP(addr string, opts UDPOptions) (*UDPListener, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("transport: udp listen on %q: %w", addr, err)
	}
	if opts.MaxDatagram == 0 {
		opts.MaxDatagram = DefaultMaxDatagram
	}

	conn, local, err := openSocket("udp", addr, opts.ReadBuffer, opts.WriteBuffer)
	if err != nil {
		return nil, err
	}
	return &UDPListener{
		conn:        conn,
		raw:         newRawSender(conn),
		local:       local,
		maxDatagram: opts.MaxDatagram,
		done:        make(chan struct{}),
	}, nil
}

// openSocket binds the UDP socket of a kind ("udp", "dtls") of listener on
// addr, sets its buffer sizes (0 keeps the OS default) and returns it with
// its bound, unmapped address.
func openSocket(kind, addr string, readBuffer, writeBuffer int) (*net.UDPConn, netip.AddrPort, error) {
	fail := func(err error) (*net.UDPConn, netip.AddrPort, error) {
		return nil, netip.AddrPort{}, fmt.Errorf("transport: %s listen on %q: %w", kind, addr, err)
	}
	var lc net.ListenConfig
	pc, err := lc.ListenPacket(context.Background(), "udp", addr)
	if err != nil {
		return fail(err)
	}
	conn, ok := pc.(*net.UDPConn)
	if !ok {
		// Not reachable with network "udp"; guards against a surprise anyway.
		_ = pc.Close()
		return fail(fmt.Errorf("unexpected connection type %T", pc))
	}
	if readBuffer > 0 {
		if err := conn.SetReadBuffer(readBuffer); err != nil {
			_ = conn.Close()
			return fail(fmt.Errorf("set read buffer to %d: %w", readBuffer, err))
		}
	}
	if writeBuffer > 0 {
		if err := conn.SetWriteBuffer(writeBuffer); err != nil {
			_ = conn.Close()
			return fail(fmt.Errorf("set write buffer to %d: %w", writeBuffer, err))
		}
	}
	var local netip.AddrPort
	if ua, ok := conn.LocalAddr().(*net.UDPAddr); ok {
		local = unmap(ua.AddrPort())
	}
	return conn, local, nil
}

// LocalAddr returns the address the socket is bound to, with the port the OS
// chose if addr asked for port 0.
func (l *UDPListener) LocalAddr() netip.AddrPort { return l.local }

// Serve reads datagrams and calls h for each one until Close is called, then
// returns nil.
//
// Serve blocks in the socket read; h runs on the calling goroutine and must
// follow the rules of [Handler]. Datagrams larger than MaxDatagram are
// dropped and counted, not passed to h. A read error other than the closing
// of the socket is counted and the loop goes on (with a short, growing pause
// if errors repeat). Called after Close, Serve returns nil at once. Otherwise
// it returns an error if h is nil or if Serve was called before: there is one
// read loop per socket. A panic in h propagates out of Serve.
func (l *UDPListener) Serve(h Handler) error {
	if read := rawReader(l.conn); read != nil {
		return l.serve(h, read)
	}
	return l.serve(h, l.conn.ReadFromUDPAddrPort)
}

// readFunc reads one datagram; it is the socket read, or a stand-in in tests.
type readFunc func(b []byte) (int, netip.AddrPort, error)

// serve is Serve with the read call injected.
func (l *UDPListener) serve(h Handler, read readFunc) error {
	if h == nil {
		return fmt.Errorf("transport: udp serve on %s: nil handler", l.local)
	}
	if l.closed.Load() {
		return nil
	}
	if !l.serving.CompareAndSwap(false, true) {
		return fmt.Errorf("transport: udp serve on %s: Serve already called", l.local)
	}

	// One extra byte makes an oversize datagram visible: the kernel silently
	// truncates a datagram to the buffer it is read into.
	buf := make([]byte, l.maxDatagram+1)
	var s Sender = l
	return readLoop(buf, l.maxDatagram, read, &l.closed, l.done, &l.readErrors, &l.oversizeDropped,
		func(b []byte, from netip.AddrPort) {
			l.received.Add(1)
			h(s, from, b)
		})
}

// readLoop reads datagrams into buf with read until the socket is closed
// (closed set or net.ErrClosed; then it returns nil), drops and counts those
// longer than limit, counts read errors and paces repeated ones, and hands
// every other datagram, with its unmapped source, to deliver. b aliases buf.
func readLoop(buf []byte, limit int, read readFunc, closed *atomic.Bool, done <-chan struct{},
	readErrors, oversize *atomic.Uint64, deliver func(b []byte, from netip.AddrPort)) error {
	var pacer errorPacer
	for {
		n, from, err := read(buf)
		if err != nil {
			if closed.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			readErrors.Add(1)
			if !pacer.failed(done) {
				return nil
			}
			continue
		}
		pacer.reset()
		if n > limit {
			oversize.Add(1)
			continue
		}
		deliver(buf[:n], unmap(from))
	}
}

// errorPacer paces a read loop through repeated read errors: the first
// error in a row is retried at once, the next ones after a pause that
// doubles from minReadErrorDelay up to maxReadErrorDelay, so that an error
// that repeats cannot spin the loop.
type errorPacer struct {
	inRow int
	delay time.Duration
}

// failed records a read error and pauses if errors repeat; it reports false
// if done was closed meanwhile.
func (p *errorPacer) failed(done <-chan struct{}) bool {
	p.inRow++
	if p.inRow == 1 {
		return true
	}
	p.delay = min(max(2*p.delay, minReadErrorDelay), maxReadErrorDelay)
	t := time.NewTimer(p.delay)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}

// reset records a successful read.
func (p *errorPacer) reset() { p.inRow, p.delay = 0, 0 }

// errNotRaw: a datagram the raw sender leaves to net's own write (see
// rawSender.send).
var errNotRaw = errors.New("not for a raw send")

// WriteTo sends b as one datagram to addr. It is safe for concurrent use,
// does not retain b and does not allocate on success.
//
// addr may be an IPv4 address or its IPv4-mapped IPv6 form. After Close,
// WriteTo returns an error that wraps net.ErrClosed. Every failure is counted
// in SendErrors.
func (l *UDPListener) WriteTo(b []byte, addr netip.AddrPort) error {
	err := errNotRaw
	if l.raw != nil {
		err = l.raw.send(b, addr)
	}
	if err == errNotRaw {
		_, err = l.conn.WriteToUDPAddrPort(b, addr)
	}
	if err != nil {
		l.sendErrors.Add(1)
		return fmt.Errorf("transport: %w", err)
	}
	l.sent.Add(1)
	return nil
}

// Close closes the socket, which makes Serve return nil. It does not wait for
// Serve to return, so a handler may call it; it waits only for a WriteTo
// already in its system call, which does not block. Calls after the first
// return nil.
func (l *UDPListener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(l.done)
	if l.raw != nil {
		l.raw.retire() // no straight send to the descriptor once closed
	}
	if err := l.conn.Close(); err != nil {
		return fmt.Errorf("transport: udp close on %s: %w", l.local, err)
	}
	return nil
}

// Stats returns a snapshot of the listener's counters. The counters are read
// one by one, so a snapshot taken under traffic need not be consistent across
// fields.
func (l *UDPListener) Stats() UDPStats {
	return UDPStats{
		Received:        l.received.Load(),
		OversizeDropped: l.oversizeDropped.Load(),
		ReadErrors:      l.readErrors.Load(),
		Sent:            l.sent.Load(),
		SendErrors:      l.sendErrors.Load(),
	}
}

// unmap turns an IPv4-mapped IPv6 address into the plain IPv4 address.
func unmap(ap netip.AddrPort) netip.AddrPort {
	if ap.Addr().Is4In6() {
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return ap
}
