package snclient

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// DTLS clients. DialDTLS runs a pion/dtls client handshake with a gateway's
// DTLS listener and returns a Client with the same API as one from Dial:
// every MQTT-SN message is one DTLS record. The client's UDP socket can move
// to a new port in the middle of the association (Rebind), like a sensor
// behind a NAT that rebinds, and the client can vanish without a word
// (Vanish), like a sensor that loses power.

// DefaultHandshakeTimeout bounds DialDTLS's handshake.
const DefaultHandshakeTimeout = 5 * time.Second

// DialDTLS opens a UDP socket on loopback with a port the system picks and
// runs a DTLS client handshake with the gateway at gw, configured by opts
// (PSK or certificates, cipher suites, connection IDs). It fails the test if
// the handshake does not complete within DefaultHandshakeTimeout. The client
// is closed, with a close_notify alert, in tb's cleanup.
func DialDTLS(tb testing.TB, gw netip.AddrPort, opts ...dtls.ClientOption) *Client {
	tb.Helper()
	return DialDTLSFrom(tb, netip.AddrPort{}, gw, opts...)
}

// DialDTLSFrom is DialDTLS from the local address local, e.g. the address of
// a client that has just been closed, to handshake again from the same
// address. The zero AddrPort, or port 0, lets the system pick.
func DialDTLSFrom(tb testing.TB, local, gw netip.AddrPort, opts ...dtls.ClientOption) *Client {
	tb.Helper()
	c, err := HandshakeDTLS(tb, local, gw, DefaultHandshakeTimeout, opts...)
	if err != nil {
		tb.Fatalf("snclient: DTLS handshake with %v: %v", gw, err)
	}
	return c
}

// HandshakeDTLS is DialDTLSFrom with a handshake timeout that returns the
// handshake's error instead of failing the test, for handshakes meant to
// fail. It still fails the test if it cannot open the socket.
func HandshakeDTLS(tb testing.TB, local, gw netip.AddrPort, timeout time.Duration, opts ...dtls.ClientOption) (*Client, error) {
	tb.Helper()
	gw = netip.AddrPortFrom(gw.Addr().Unmap(), gw.Port())
	if !gw.Addr().IsLoopback() || gw.Port() == 0 {
		tb.Fatalf("snclient: gateway address %v: tests send to a loopback address and a port only", gw)
	}
	if !local.IsValid() {
		local = loopbackFor(gw)
	}
	local = netip.AddrPortFrom(local.Addr().Unmap(), local.Port())
	if !local.Addr().IsLoopback() {
		tb.Fatalf("snclient: local address %v: tests use loopback addresses only", local)
	}
	sock, err := listenUDP(local)
	if err != nil {
		tb.Fatalf("snclient: DTLS client socket on %v: %v", local, err)
	}
	pc := &movableConn{sock: sock, local: loopbackFor(gw)}
	conn, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(gw), opts...)
	if err != nil {
		_ = pc.Close()
		tb.Fatalf("snclient: DTLS client for %v: %v", gw, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := conn.HandshakeContext(ctx); err != nil {
		_ = conn.Close() // closes pc too
		return nil, err
	}
	c := &Client{tb: tb, conn: &dtlsSocket{conn: conn, pc: pc}, gw: gw, timeout: DefaultTimeout, buf: make([]byte, maxDatagram)}
	tb.Cleanup(c.Close)
	return c, nil
}

// listenUDP opens an unconnected UDP socket on local. A port just released
// by a closed socket may take a moment to become free again.
func listenUDP(local netip.AddrPort) (*net.UDPConn, error) {
	var err error
	for range 50 {
		var sock *net.UDPConn
		if sock, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(local)); err == nil || local.Port() == 0 {
			return sock, err
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, err
}

// loopbackFor returns the loopback address, port 0, of gw's family.
func loopbackFor(gw netip.AddrPort) netip.AddrPort {
	if gw.Addr().Is6() {
		return netip.AddrPortFrom(netip.IPv6Loopback(), 0)
	}
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
}

// asDTLS returns c's DTLS socket, failing the test if c is not a DTLS client.
func (c *Client) asDTLS(what string) *dtlsSocket {
	c.tb.Helper()
	d, ok := c.conn.(*dtlsSocket)
	if !ok {
		c.tb.Fatalf("snclient: %s: not a DTLS client", what)
	}
	return d
}

// DTLSState returns the state of a DTLS client's association: the
// negotiated cipher suite, connection IDs, identity hint and so on. It fails
// the test for a client that is not a DTLS client.
func (c *Client) DTLSState() dtls.State {
	c.tb.Helper()
	st, ok := c.asDTLS("DTLSState").conn.ConnectionState()
	if !ok {
		c.tb.Fatalf("snclient: no DTLS connection state")
	}
	return st
}

// SendsConnectionID reports whether the client has sent a datagram that
// starts with a connection-ID record (RFC 9146 tls12_cid): true once the
// gateway gave it a connection ID and it has sent an MQTT-SN message. It
// fails the test for a client that is not a DTLS client.
func (c *Client) SendsConnectionID() bool {
	c.tb.Helper()
	return c.asDTLS("SendsConnectionID").pc.sentCID.Load()
}

// Rebind moves a DTLS client to a new UDP socket on a port the system picks
// and closes the old one, as a NAT rebinding moves a sensor: the
// association goes on from the new address, and whatever the gateway still
// sends to the old one is lost. It fails the test for a client that is not
// a DTLS client.
func (c *Client) Rebind() {
	c.tb.Helper()
	if err := c.asDTLS("Rebind").pc.rebind(); err != nil {
		c.tb.Fatalf("snclient: rebind: %v", err)
	}
}

// Vanish closes a DTLS client without a close_notify alert reaching the
// gateway, as a sensor that loses power: the gateway's association stays
// open until something replaces it. It fails the test for a client that is
// not a DTLS client.
func (c *Client) Vanish() {
	c.tb.Helper()
	c.asDTLS("Vanish").pc.mute()
	c.Close()
}

// dtlsSocket is a pion DTLS connection as a Client's socket.
type dtlsSocket struct {
	conn *dtls.Conn
	pc   *movableConn
}

func (d *dtlsSocket) Write(b []byte) (int, error) { return d.conn.Write(b) }

// Read returns the next decrypted datagram. pion's read timeout wraps
// context.DeadlineExceeded; the Client expects os.ErrDeadlineExceeded.
func (d *dtlsSocket) Read(b []byte) (int, error) {
	n, err := d.conn.Read(b)
	if err != nil {
		if ne, ok := errors.AsType[net.Error](err); ok && ne.Timeout() {
			return n, fmt.Errorf("%w: %w", os.ErrDeadlineExceeded, err)
		}
	}
	return n, err
}

func (d *dtlsSocket) SetReadDeadline(t time.Time) error { return d.conn.SetReadDeadline(t) }

// LocalAddr returns the client's current address.
func (d *dtlsSocket) LocalAddr() net.Addr { return d.pc.LocalAddr() }

// Close sends close_notify (unless muted) and closes the socket.
func (d *dtlsSocket) Close() error { return d.conn.Close() }

// contentTypeCID is the record type of a DTLS 1.2 record with a connection
// ID (RFC 9146 §4, tls12_cid).
const contentTypeCID = 25

// movableConn is the net.PacketConn a DTLS client runs over: one UDP socket
// at a time, which rebind swaps for a new one on a new port without pion
// noticing.
type movableConn struct {
	local   netip.AddrPort // where rebind opens the new socket
	sentCID atomic.Bool    // a datagram starting with a tls12_cid record was sent

	mu            sync.Mutex
	sock          *net.UDPConn
	closed        bool
	muted         bool
	readDeadline  time.Time
	writeDeadline time.Time
}

var _ net.PacketConn = (*movableConn)(nil)

func (m *movableConn) current() (*net.UDPConn, bool, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.sock, m.closed, m.muted
}

// ReadFrom reads from the current socket; a read cut short by rebind
// closing the old socket goes on with the new one.
func (m *movableConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		sock, closed, _ := m.current()
		if closed {
			return 0, nil, net.ErrClosed
		}
		n, addr, err := sock.ReadFrom(b)
		if err != nil && errors.Is(err, net.ErrClosed) {
			if now, closed, _ := m.current(); now != sock && !closed {
				continue
			}
		}
		return n, addr, err
	}
}

// WriteTo sends from the current socket, or drops b when muted.
func (m *movableConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	sock, closed, muted := m.current()
	switch {
	case closed:
		return 0, net.ErrClosed
	case muted:
		return len(b), nil
	}
	if len(b) > 0 && b[0] == contentTypeCID {
		m.sentCID.Store(true)
	}
	return sock.WriteTo(b, addr)
}

// rebind opens a new socket and closes the old one.
func (m *movableConn) rebind() error {
	sock, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(m.local))
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		_ = sock.Close()
		return net.ErrClosed
	}
	_ = sock.SetReadDeadline(m.readDeadline)
	_ = sock.SetWriteDeadline(m.writeDeadline)
	old := m.sock
	m.sock = sock
	m.mu.Unlock()
	return old.Close()
}

// mute makes writes vanish.
func (m *movableConn) mute() {
	m.mu.Lock()
	m.muted = true
	m.mu.Unlock()
}

func (m *movableConn) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.closed {
		return nil
	}
	m.closed = true
	return m.sock.Close()
}

// LocalAddr returns the current socket's address.
func (m *movableConn) LocalAddr() net.Addr {
	sock, _, _ := m.current()
	return sock.LocalAddr()
}

func (m *movableConn) SetDeadline(t time.Time) error {
	return errors.Join(m.SetReadDeadline(t), m.SetWriteDeadline(t))
}

func (m *movableConn) SetReadDeadline(t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.readDeadline = t
	return m.sock.SetReadDeadline(t)
}

func (m *movableConn) SetWriteDeadline(t time.Time) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.writeDeadline = t
	return m.sock.SetWriteDeadline(t)
}
