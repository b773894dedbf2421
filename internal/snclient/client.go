// Package snclient is a raw MQTT-SN 1.2 client over UDP for tests: it sends
// and receives mqttsn messages, and runs the common exchanges (CONNECT,
// REGISTER, SUBSCRIBE, PUBLISH, DISCONNECT) failing the test on an
// unexpected answer. It is built on the mqttsn codec only, so that it shares
// no logic with the gateway it tests.
//
// A Client talks to one gateway address on loopback. Its methods that can
// fail the test call Fatalf on the testing.TB given to Dial, and so must be
// called from the test's own goroutine. Send, SendRaw and NextMsgID may be
// called from any goroutine; receiving (Recv, Expect, ExpectNothing and the
// exchanges) is for one goroutine at a time.
package snclient

import (
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// DefaultTimeout is how long the exchanges (Connect, Register, ...) wait for
// each answer, unless SetTimeout changes it.
const DefaultTimeout = 5 * time.Second

// maxDatagram is the receive buffer: larger than any UDP payload.
const maxDatagram = 1 << 16

// socket is what a Client sends and receives datagrams on: a UDP socket
// connected to the gateway (Dial), or a DTLS connection to it (DialDTLS).
// LocalAddr returns a *net.UDPAddr.
type socket interface {
	Write(b []byte) (int, error)
	Read(b []byte) (int, error) // a timeout wraps os.ErrDeadlineExceeded
	SetReadDeadline(t time.Time) error
	LocalAddr() net.Addr
	Close() error
}

// Client is a raw MQTT-SN client on a UDP socket connected to one gateway.
type Client struct {
	tb      testing.TB
	conn    socket
	gw      netip.AddrPort
	timeout time.Duration
	msgID   atomic.Uint32
	close   sync.Once

	// Receive side, used by one goroutine at a time.
	buf     []byte
	pending []mqttsn.Message // unsolicited messages an exchange set aside, oldest first
}

// Dial opens a UDP socket on loopback (127.0.0.1, or ::1 when gw is IPv6)
// with a port the system picks, connected to the gateway at gw, and closes
// it in tb's cleanup. gw must be a loopback address.
func Dial(tb testing.TB, gw netip.AddrPort) *Client {
	tb.Helper()
	gw = netip.AddrPortFrom(gw.Addr().Unmap(), gw.Port())
	if !gw.Addr().IsLoopback() || gw.Port() == 0 {
		tb.Fatalf("snclient: gateway address %v: tests send to a loopback address and a port only", gw)
	}
	local := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0)
	if gw.Addr().Is6() {
		local = netip.AddrPortFrom(netip.IPv6Loopback(), 0)
	}
	conn, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(local), net.UDPAddrFromAddrPort(gw))
	if err != nil {
		tb.Fatalf("snclient: dial %v: %v", gw, err)
	}
	c := &Client{tb: tb, conn: conn, gw: gw, timeout: DefaultTimeout, buf: make([]byte, maxDatagram)}
	tb.Cleanup(c.Close)
	return c
}

// LocalAddr returns the client's own address, as the gateway sees it.
func (c *Client) LocalAddr() netip.AddrPort {
	return c.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// Gateway returns the address the client sends to.
func (c *Client) Gateway() netip.AddrPort {
	return c.gw
}

// SetTimeout sets how long the exchanges wait for each answer (DefaultTimeout
// at first).
func (c *Client) SetTimeout(d time.Duration) {
	c.timeout = d
}

// Close closes the socket, as a client that vanishes would. Later sends fail
// the test. Dial registers it with the test's cleanup; calling it again does
// nothing.
func (c *Client) Close() {
	c.close.Do(func() { _ = c.conn.Close() })
}

// NextMsgID returns the next MsgId from the client's counter: 1, 2, ...,
// 65535, 1, ...; never 0.
func (c *Client) NextMsgID() uint16 {
	for {
		if id := uint16(c.msgID.Add(1)); id != 0 {
			return id
		}
	}
}

// Send encodes m and sends it as one datagram. It fails the test if m cannot
// be encoded or sent.
func (c *Client) Send(m mqttsn.Message) {
	c.tb.Helper()
	b, err := m.AppendBinary(nil)
	if err != nil {
		c.tb.Fatalf("snclient: encode %s: %v", Describe(m), err)
	}
	c.SendRaw(b)
}

// SendRaw sends b as one datagram, as it is. It fails the test if b cannot be
// sent.
func (c *Client) SendRaw(b []byte) {
	c.tb.Helper()
	if _, err := c.conn.Write(b); err != nil {
		c.tb.Fatalf("snclient: send %d octets to %v: %v", len(b), c.gw, err)
	}
}

// Recv returns the next message from the gateway, waiting at most timeout.
// A datagram that does not decode is an error wrapping mqttsn.ErrMalformed
// that shows its octets in hex; nothing within timeout is an error wrapping
// os.ErrDeadlineExceeded. Messages an exchange set aside (see Connect) come
// first.
func (c *Client) Recv(timeout time.Duration) (mqttsn.Message, error) {
	if len(c.pending) > 0 {
		m := c.pending[0]
		c.pending[0] = nil
		c.pending = c.pending[1:]
		return m, nil
	}
	return c.read(timeout)
}

// read receives and decodes one datagram from the socket.
func (c *Client) read(timeout time.Duration) (mqttsn.Message, error) {
	if err := c.conn.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, fmt.Errorf("snclient: receive from %v: %w", c.gw, err)
	}
	n, err := c.conn.Read(c.buf)
	if err != nil {
		if errors.Is(err, os.ErrDeadlineExceeded) {
			return nil, fmt.Errorf("snclient: nothing from %v within %v: %w", c.gw, timeout, err)
		}
		return nil, fmt.Errorf("snclient: receive from %v: %w", c.gw, err)
	}
	m, err := mqttsn.Decode(c.buf[:n])
	if err != nil {
		return nil, fmt.Errorf("snclient: datagram of %d octets from %v (%s): %w", n, c.gw, hex.EncodeToString(c.buf[:n]), err)
	}
	return m, nil
}

// Expect returns the next message from the gateway and fails the test unless
// it arrives within timeout and is a T, e.g. Expect[*mqttsn.ConnAck].
func Expect[T mqttsn.Message](tb testing.TB, c *Client, timeout time.Duration) T {
	tb.Helper()
	var want T
	m, err := c.Recv(timeout)
	if err != nil {
		tb.Fatalf("snclient: want %T: %v", want, err)
	}
	got, ok := m.(T)
	if !ok {
		tb.Fatalf("snclient: want %T, got %s", want, Describe(m))
	}
	return got
}

// ExpectNothing fails the test if a datagram arrives within d, or if an
// exchange set a message aside that nobody has received yet.
func (c *Client) ExpectNothing(d time.Duration) {
	c.tb.Helper()
	if len(c.pending) > 0 {
		c.tb.Fatalf("snclient: want nothing, have %s (set aside during an exchange)", Describe(c.pending[0]))
	}
	m, err := c.read(d)
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
	case err != nil:
		c.tb.Fatalf("snclient: want nothing within %v: %v", d, err)
	default:
		c.tb.Fatalf("snclient: want nothing within %v, got %s", d, Describe(m))
	}
}

// Describe formats m for a failure message, e.g.
// "PUBACK{TopicID:1 MsgID:7 ReturnCode:accepted}".
func Describe(m mqttsn.Message) string {
	if m == nil {
		return "<nil>"
	}
	v := reflect.ValueOf(m)
	if v.Kind() == reflect.Pointer && !v.IsNil() {
		return fmt.Sprintf("%s%+v", m.Type(), v.Elem())
	}
	return fmt.Sprintf("%s %+v", m.Type(), m)
}
