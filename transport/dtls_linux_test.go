//go:build amd64 || arm64 || arm || 386 || riscv64 || ppc64le || s390x

package transport

import (
	"context"
	"errors"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// soReusePort is SO_REUSEPORT on Linux for the architectures this file
// builds on; package syscall does not define it, and x/sys is not a
// dependency of this package.
const soReusePort = 0xf

// reusePort is a ListenConfig that lets two sockets bind the same address and
// port, so a test can send from an established client's address.
func reusePort() net.ListenConfig {
	return net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, soReusePort, 1)
		}); err != nil {
			return err
		}
		return serr
	}}
}

// TestDTLSSpoofedClientHelloKeepsAssociation sends a ClientHello from the
// address of an established association, as an off-path attacker who spoofs
// the source could. The new handshake never passes the cookie exchange, so
// (RFC 6347 §4.2.8) the association keeps its records meanwhile, is not
// replaced, and the stray handshake times out and is reported.
func TestDTLSSpoofedClientHelloKeepsAssociation(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		rec := newFailureRecorder()
		l := listenDTLS(t, addr, DTLSOptions{PSK: pskFor, HandshakeTimeout: 500 * time.Millisecond, OnHandshakeError: rec.record})
		h, got := recordingEcho(t)
		serveDTLS(t, l, h)

		lc := reusePort()
		pc, err := lc.ListenPacket(context.Background(), "udp", loopbackFor(l.LocalAddr()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = pc.Close() })
		peer := localAddrPort(pc.(*net.UDPConn))
		c := mustDial(t, pc, l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		mustRoundTrip(t, c, "before")
		a := asAssociation(t, nextReceived(t, got).s)

		spoof, err := lc.ListenPacket(context.Background(), "udp", peer.String())
		if err != nil {
			t.Fatalf("second socket on %s: %v", peer, err)
		}
		_, err = spoof.WriteTo(rawClientHello(t, nil), net.UDPAddrFromAddrPort(l.LocalAddr()))
		_ = spoof.Close() // so that replies to peer reach the client's socket only
		if err != nil {
			t.Fatal(err)
		}
		waitDTLS(t, l, "the spoofed handshake started", func(s DTLSStats) bool { return s.HandshakesStarted == 2 })

		for _, msg := range []string{"during 1", "during 2", "during 3"} {
			mustRoundTrip(t, c, msg)
			if r := nextReceived(t, got); r.s != a {
				t.Fatalf("%q reached another Sender", msg)
			}
		}
		if err := rec.waitFor(t, peer); !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("spoofed handshake ended with %v, want a timeout", err)
		}
		select {
		case <-a.Done():
			t.Fatal("the association was closed by a spoofed ClientHello")
		default:
		}
		mustRoundTrip(t, c, "after")
		if r := nextReceived(t, got); r.s != a {
			t.Fatal("the association was replaced")
		}
		if s := l.Stats(); s.Replaced != 0 || s.Associations != 1 || s.HandshakesFailed != 1 {
			t.Errorf("Stats() = %+v, want 1 association, none replaced, 1 failed handshake", s)
		}
		checkRoutes(t, l)
	})
}
