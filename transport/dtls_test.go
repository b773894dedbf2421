package transport

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
	"github.com/pion/dtls/v3/pkg/protocol/recordlayer"
)

// testPSK is the key of every "sensor-…" identity in these tests.
const testPSK = "0123456789abcdef"

// errUnknownIdentity is what pskFor returns for an identity it does not know.
var errUnknownIdentity = errors.New("unknown identity")

// pskFor knows every identity that starts with "sensor-".
func pskFor(identity string) ([]byte, error) {
	if strings.HasPrefix(identity, "sensor-") {
		return []byte(testPSK), nil
	}
	return nil, errUnknownIdentity
}

// listenDTLS opens a DTLS listener and closes it when the test ends.
func listenDTLS(tb testing.TB, addr string, opts DTLSOptions) *DTLSListener {
	tb.Helper()
	l, err := ListenDTLS(addr, opts)
	if err != nil {
		tb.Fatalf("ListenDTLS(%q): %v", addr, err)
	}
	tb.Cleanup(func() { _ = l.Close() })
	return l
}

// serveDTLS runs l.Serve(h) on its own goroutine. At cleanup it closes l and
// fails the test unless Serve returns nil promptly.
func serveDTLS(tb testing.TB, l *DTLSListener, h Handler) {
	tb.Helper()
	done := startServeFunc(func() error { return l.Serve(h) })
	tb.Cleanup(func() {
		_ = l.Close()
		waitServe(tb, done)
	})
}

// received is one datagram as a handler saw it.
type received struct {
	s    Sender
	from netip.AddrPort
	b    []byte
}

// recordingEcho returns a handler that echoes every datagram through its
// Sender and reports it on the returned channel (dropping reports that do
// not fit, as a handler must not block).
func recordingEcho(tb testing.TB) (Handler, <-chan received) {
	ch := make(chan received, 1024)
	return func(s Sender, from netip.AddrPort, b []byte) {
		select {
		case ch <- received{s, from, bytes.Clone(b)}:
		default:
		}
		if err := s.WriteTo(b, from); err != nil && !errors.Is(err, net.ErrClosed) {
			tb.Errorf("WriteTo: %v", err)
		}
	}, ch
}

// nextReceived waits for the next datagram a recordingEcho handler saw.
func nextReceived(tb testing.TB, ch <-chan received) received {
	tb.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(waitTimeout):
		tb.Fatal("timed out waiting for the handler")
		return received{}
	}
}

// handshakeFailure is one OnHandshakeError call.
type handshakeFailure struct {
	peer netip.AddrPort
	err  error
}

// failureRecorder collects OnHandshakeError calls.
type failureRecorder struct{ ch chan handshakeFailure }

func newFailureRecorder() *failureRecorder {
	return &failureRecorder{ch: make(chan handshakeFailure, 4096)}
}

// record is the OnHandshakeError callback.
func (r *failureRecorder) record(peer netip.AddrPort, err error) {
	select {
	case r.ch <- handshakeFailure{peer, err}:
	default:
	}
}

// waitFor returns the error reported for peer, failing tb if none comes in time.
func (r *failureRecorder) waitFor(tb testing.TB, peer netip.AddrPort) error {
	tb.Helper()
	deadline := time.After(waitTimeout)
	for {
		select {
		case f := <-r.ch:
			if f.peer == peer {
				return f.err
			}
			tb.Logf("handshake failure for another peer %s: %v", f.peer, f.err)
		case <-deadline:
			tb.Fatalf("no OnHandshakeError call for %s within %v", peer, waitTimeout)
			return nil
		}
	}
}

// loopbackFor returns the loopback address with port 0 in server's family.
func loopbackFor(server netip.AddrPort) string {
	if server.Addr().Is6() {
		return "[::1]:0"
	}
	return "127.0.0.1:0"
}

// clientSocket opens an unconnected client socket on loopback in the
// server's family, closed at cleanup.
func clientSocket(tb testing.TB, server netip.AddrPort) *net.UDPConn {
	tb.Helper()
	pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(loopbackFor(server))))
	if err != nil {
		tb.Fatalf("client socket: %v", err)
	}
	tb.Cleanup(func() { _ = pc.Close() })
	return pc
}

// pskClient returns pion client options for a PSK identity and key.
func pskClient(identity, key string, suite dtls.CipherSuiteID, extra ...dtls.ClientOption) []dtls.ClientOption {
	return append([]dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(suite),
	}, extra...)
}

// certClient returns pion client options for a certificate handshake that
// verifies the server's certificate for the server's IP address.
func certClient(pki *testPKI, server netip.AddrPort, suite dtls.CipherSuiteID, certs ...tls.Certificate) []dtls.ClientOption {
	opts := []dtls.ClientOption{
		dtls.WithRootCAs(pki.roots),
		dtls.WithServerName(server.Addr().String()),
		dtls.WithCipherSuites(suite),
	}
	if len(certs) > 0 {
		opts = append(opts, dtls.WithCertificates(certs...))
	}
	return opts
}

// dialDTLS runs a pion client handshake over pc within timeout. The client
// is closed at cleanup; pion closes pc with it.
func dialDTLS(tb testing.TB, pc net.PacketConn, server netip.AddrPort, timeout time.Duration, opts ...dtls.ClientOption) (*dtls.Conn, error) {
	tb.Helper()
	c, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(server), opts...)
	if err != nil {
		tb.Fatalf("dtls client: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		return nil, err
	}
	tb.Cleanup(func() { _ = c.Close() })
	return c, nil
}

// mustDial is dialDTLS that fails tb on error.
func mustDial(tb testing.TB, pc net.PacketConn, server netip.AddrPort, opts ...dtls.ClientOption) *dtls.Conn {
	tb.Helper()
	c, err := dialDTLS(tb, pc, server, waitTimeout, opts...)
	if err != nil {
		tb.Fatalf("handshake with %s: %v", server, err)
	}
	return c
}

// roundTrip sends msg and expects it back within timeout.
func roundTrip(c *dtls.Conn, msg []byte, timeout time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	if _, err := c.Write(msg); err != nil {
		return fmt.Errorf("client write: %w", err)
	}
	buf := make([]byte, 2048)
	n, err := c.Read(buf)
	if err != nil {
		return fmt.Errorf("client read: %w", err)
	}
	if !bytes.Equal(buf[:n], msg) {
		return fmt.Errorf("echo = %q, want %q", buf[:n], msg)
	}
	return nil
}

// readUntil reads echoes until msg arrives, skipping others.
func readUntil(c *dtls.Conn, msg string, timeout time.Duration) error {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		n, err := c.Read(buf)
		if err != nil {
			return fmt.Errorf("waiting for %q: %w", msg, err)
		}
		if string(buf[:n]) == msg {
			return nil
		}
	}
}

// mustRoundTrip is roundTrip that fails tb.
func mustRoundTrip(tb testing.TB, c *dtls.Conn, msg string) {
	tb.Helper()
	if err := roundTrip(c, []byte(msg), waitTimeout); err != nil {
		tb.Fatalf("round trip %q: %v", msg, err)
	}
}

// waitDTLS fails tb unless cond holds for l's stats within waitTimeout.
func waitDTLS(tb testing.TB, l *DTLSListener, what string, cond func(DTLSStats) bool) DTLSStats {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for {
		s := l.Stats()
		if cond(s) {
			return s
		}
		if time.Now().After(deadline) {
			tb.Fatalf("stats never reached %s: %+v", what, s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitDone fails tb unless a's Done channel closes in time.
func waitDone(tb testing.TB, a Association) {
	tb.Helper()
	select {
	case <-a.Done():
	case <-time.After(waitTimeout):
		tb.Fatalf("association %s did not end", a.Key())
	}
}

// asAssociation fails tb unless s is an Association.
func asAssociation(tb testing.TB, s Sender) Association {
	tb.Helper()
	a, ok := s.(Association)
	if !ok {
		tb.Fatalf("Sender %T is not an Association", s)
	}
	return a
}

// rawClientHello returns one UDP datagram with a DTLS 1.2 ClientHello
// offering the PSK CCM_8 suite and the given cookie.
func rawClientHello(tb testing.TB, cookie []byte) []byte {
	tb.Helper()
	ch := &handshake.MessageClientHello{
		Version:            protocol.Version1_2,
		Cookie:             cookie,
		CipherSuiteIDs:     []uint16{uint16(dtls.TLS_PSK_WITH_AES_128_CCM_8)},
		CompressionMethods: []*protocol.CompressionMethod{protocol.CompressionMethods()[0]},
	}
	if err := ch.Random.Populate(); err != nil {
		tb.Fatal(err)
	}
	rec := &recordlayer.RecordLayer{
		Header:  recordlayer.Header{Version: protocol.Version1_2},
		Content: &handshake.Handshake{Message: ch},
	}
	b, err := rec.Marshal()
	if err != nil {
		tb.Fatalf("marshal ClientHello: %v", err)
	}
	return b
}

// isHelloVerifyRequest reports whether b is a record carrying a
// HelloVerifyRequest with a cookie.
func isHelloVerifyRequest(b []byte) bool {
	var rec recordlayer.RecordLayer
	if err := rec.Unmarshal(b); err != nil {
		return false
	}
	hs, ok := rec.Content.(*handshake.Handshake)
	if !ok || rec.Header.Epoch != 0 {
		return false
	}
	hvr, ok := hs.Message.(*handshake.MessageHelloVerifyRequest)
	return ok && hs.Header.Type == handshake.TypeHelloVerifyRequest && len(hvr.Cookie) > 0
}

// checkRoutes fails tb if a route leads to a peer that is gone, or to a peer
// that does not know it (see releaseAddrLocked).
func checkRoutes(tb testing.TB, l *DTLSListener) {
	tb.Helper()
	l.mu.Lock()
	defer l.mu.Unlock()
	for a, p := range l.byAddr {
		if _, ok := l.peers[p]; !ok || p.addr != a {
			tb.Errorf("address route %s leads to a stale peer (key %s, addr %s, open %v)", a, p.key, p.addr, ok)
		}
	}
	for c, p := range l.byCID {
		if _, ok := l.peers[p]; !ok || p.cid != c {
			tb.Errorf("CID route %x leads to a stale peer (key %s, open %v)", c, p.key, ok)
		}
	}
	if n := len(l.peers); n != l.handshakes+l.assocs {
		tb.Errorf("%d peers, but %d handshakes and %d associations", n, l.handshakes, l.assocs)
	}
}

// waitGoroutines waits until no more than base goroutines run, and dumps
// them all if that does not happen.
func waitGoroutines(tb testing.TB, base int) {
	tb.Helper()
	deadline := time.Now().Add(waitTimeout)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			tb.Fatalf("%d goroutines, want at most %d as before the test:\n%s", runtime.NumGoroutine(), base, buf[:n])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestDTLSOptionsValidate(t *testing.T) {
	pki := newTestPKI(t)
	rsaLike := tls.Certificate{Certificate: pki.server.Certificate, PrivateKey: "not a key"}
	tests := []struct {
		name string
		opts DTLSOptions
		want []string // substrings of the error; nil means valid
	}{
		{"psk", DTLSOptions{PSK: pskFor}, nil},
		{"certificates", DTLSOptions{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.roots, RequireClientCert: true}, nil},
		{"nothing", DTLSOptions{}, []string{"neither PSK nor Certificates"}},
		{"all at once", DTLSOptions{
			MaxDatagram: MaxDTLSDatagram + 1, ReadBuffer: -1, PSK: pskFor, ClientCAs: pki.roots,
			RequireClientCert: true, HandshakeTimeout: -1, MaxHandshakes: -1, IdleTimeout: -1,
		}, []string{"MaxDatagram", "ReadBuffer", "ClientCAs is set but Certificates is empty", "HandshakeTimeout", "MaxHandshakes", "IdleTimeout"}},
		{"require without CAs", DTLSOptions{Certificates: []tls.Certificate{pki.server}, RequireClientCert: true}, []string{"RequireClientCert needs ClientCAs"}},
		{"bad key", DTLSOptions{Certificates: []tls.Certificate{rsaLike}}, []string{"Certificates[0]", "crypto.Signer"}},
		{"empty certificate", DTLSOptions{Certificates: []tls.Certificate{{}}}, []string{"Certificates[0]: no certificate"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := ListenDTLS("127.0.0.1:0", tt.opts)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("ListenDTLS: %v", err)
				}
				_ = l.Close()
				return
			}
			if err == nil {
				_ = l.Close()
				t.Fatal("ListenDTLS succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

// TestDTLSPSKEcho connects PSK clients with both PSK suites and echoes
// through the association's Sender.
func TestDTLSPSKEcho(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		for _, suite := range []dtls.CipherSuiteID{dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256} {
			t.Run(suite.String(), func(t *testing.T) {
				l := listenDTLS(t, addr, DTLSOptions{PSK: pskFor})
				h, got := recordingEcho(t)
				serveDTLS(t, l, h)
				pc := clientSocket(t, l.LocalAddr())
				c := mustDial(t, pc, l.LocalAddr(), pskClient("sensor-1", testPSK, suite)...)

				const n = 5
				for i := range n {
					mustRoundTrip(t, c, fmt.Sprintf("ping %d", i))
				}
				first := nextReceived(t, got)
				a := asAssociation(t, first.s)
				want := localAddrPort(pc)
				if first.from != want || a.Key() != want || a.RemoteAddr() != want {
					t.Errorf("handler key %s, Key() %s, RemoteAddr() %s; want the client's address %s", first.from, a.Key(), a.RemoteAddr(), want)
				}
				if a.LocalAddr() != l.LocalAddr() {
					t.Errorf("LocalAddr() = %s, want %s", a.LocalAddr(), l.LocalAddr())
				}
				if id := a.Identity(); id.PSKIdentity != "sensor-1" || id.CertCommonName != "" || id.Empty() {
					t.Errorf("Identity() = %+v, want PSKIdentity sensor-1 only", id)
				}
				for i := 1; i < n; i++ {
					if r := nextReceived(t, got); r.s != first.s || r.from != want {
						t.Errorf("datagram %d came with Sender %p key %s, want %p %s", i, r.s, r.from, first.s, want)
					}
				}
				waitDTLS(t, l, "5 echoes", func(s DTLSStats) bool {
					return s.HandshakesOK == 1 && s.Associations == 1 && s.Received == n && s.Sent == n &&
						s.HandshakesInProgress == 0 && s.HandshakesFailed == 0
				})
				checkRoutes(t, l)
			})
		}
	})
}

// TestDTLSHelloVerifyRequest sends a raw ClientHello and checks that the
// server answers with a stateless-style cookie challenge rather than a
// ServerHello, and that the abandoned handshake is reported when it times out.
func TestDTLSHelloVerifyRequest(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		rec := newFailureRecorder()
		l := listenDTLS(t, addr, DTLSOptions{PSK: pskFor, HandshakeTimeout: 300 * time.Millisecond, OnHandshakeError: rec.record})
		serveDTLS(t, l, func(Sender, netip.AddrPort, []byte) { t.Error("handler called") })
		c := dial(t, l.LocalAddr())

		// Garbage and records other than a ClientHello start nothing.
		for _, junk := range [][]byte{{1, 2, 3}, bytes.Repeat([]byte{0xfe}, 40), append([]byte{23, 0xfe, 0xfd}, make([]byte, 30)...)} {
			if _, err := c.Write(junk); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := c.Write(rawClientHello(t, nil)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("no reply to the ClientHello: %v", err)
		}
		if !isHelloVerifyRequest(buf[:n]) {
			t.Fatalf("reply is not a HelloVerifyRequest with a cookie: % x", buf[:n])
		}
		if buf[0] != contentTypeHandshake || buf[recordHeaderLen] != byte(handshake.TypeHelloVerifyRequest) {
			t.Errorf("reply record type %d, handshake type %d; want 22 and 3", buf[0], buf[recordHeaderLen])
		}

		err = rec.waitFor(t, localAddrPort(c))
		if !errors.Is(err, context.DeadlineExceeded) || !strings.Contains(err.Error(), "before the peer completed the cookie exchange") {
			t.Errorf("reported error %q, want a timeout before the cookie exchange", err)
		}
		waitDTLS(t, l, "one failed handshake", func(s DTLSStats) bool {
			return s.HandshakesStarted == 1 && s.HandshakesFailed == 1 && s.HandshakesInProgress == 0 &&
				s.UnroutedDropped == 3 && s.Associations == 0
		})
		checkRoutes(t, l)
	})
}

// TestDTLSMaxHandshakesCap checks that a ClientHello beyond MaxHandshakes gets
// no answer and is counted, and that the slot frees when a handshake ends.
func TestDTLSMaxHandshakesCap(t *testing.T) {
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, MaxHandshakes: 2, HandshakeTimeout: 2 * time.Second})
	serveDTLS(t, l, func(Sender, netip.AddrPort, []byte) {})
	hello := func(c *net.UDPConn, wantReply bool) {
		t.Helper()
		if _, err := c.Write(rawClientHello(t, nil)); err != nil {
			t.Fatal(err)
		}
		wait := 200 * time.Millisecond
		if wantReply {
			wait = waitTimeout
		}
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2048)
		n, err := c.Read(buf)
		switch {
		case wantReply && err != nil:
			t.Fatalf("no HelloVerifyRequest: %v", err)
		case wantReply && !isHelloVerifyRequest(buf[:n]):
			t.Fatalf("reply is not a HelloVerifyRequest: % x", buf[:n])
		case !wantReply && err == nil:
			t.Fatalf("got a %d-byte reply beyond the cap", n)
		}
	}
	a, b, c := dial(t, l.LocalAddr()), dial(t, l.LocalAddr()), dial(t, l.LocalAddr())
	hello(a, true)
	hello(b, true)
	hello(c, false)
	s := l.Stats()
	if s.HandshakesStarted != 2 || s.HandshakesDropped != 1 || s.HandshakesInProgress != 2 {
		t.Fatalf("Stats() = %+v, want 2 started, 2 in progress, 1 dropped", s)
	}
	waitDTLS(t, l, "slots free after the timeout", func(s DTLSStats) bool { return s.HandshakesInProgress == 0 })
	checkRoutes(t, l)
	hello(c, true)
}

// TestDTLSWrongPSKFails uses a known identity with the wrong key. The server
// cannot decrypt the client's Finished, drops it like any forged record, and
// the handshake ends at HandshakeTimeout with a report for the client.
func TestDTLSWrongPSKFails(t *testing.T) {
	rec := newFailureRecorder()
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, HandshakeTimeout: time.Second, OnHandshakeError: rec.record})
	serveDTLS(t, l, func(Sender, netip.AddrPort, []byte) { t.Error("handler called") })
	pc := clientSocket(t, l.LocalAddr())
	peer := localAddrPort(pc)
	_, err := dialDTLS(t, pc, l.LocalAddr(), 1500*time.Millisecond, pskClient("sensor-1", "the wrong key!!!", dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	if err == nil {
		t.Fatal("handshake with the wrong key succeeded")
	}
	serverErr := rec.waitFor(t, peer)
	t.Logf("client: %v; server: %v", err, serverErr)
	if !strings.Contains(serverErr.Error(), peer.String()) || !strings.Contains(serverErr.Error(), "after the cookie exchange") {
		t.Errorf("server error %q should name the peer and the stage", serverErr)
	}
	waitDTLS(t, l, "one failed handshake", func(s DTLSStats) bool {
		return s.HandshakesFailed == 1 && s.HandshakesOK == 0 && s.HandshakesInProgress == 0 && s.Associations == 0
	})
}

// TestDTLSUnknownIdentityFails checks that an identity the PSK callback does
// not know fails at once on both sides.
func TestDTLSUnknownIdentityFails(t *testing.T) {
	rec := newFailureRecorder()
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, OnHandshakeError: rec.record})
	serveDTLS(t, l, func(Sender, netip.AddrPort, []byte) { t.Error("handler called") })
	pc := clientSocket(t, l.LocalAddr())
	peer := localAddrPort(pc)
	start := time.Now()
	_, err := dialDTLS(t, pc, l.LocalAddr(), waitTimeout, pskClient("intruder", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	if err == nil {
		t.Fatal("handshake with an unknown identity succeeded")
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("client failed after %v; the server should abort at once", d)
	}
	serverErr := rec.waitFor(t, peer)
	if !errors.Is(serverErr, errUnknownIdentity) || !strings.Contains(serverErr.Error(), `"intruder"`) {
		t.Errorf("server error %q should wrap the PSK callback's error and name the identity", serverErr)
	}
	waitDTLS(t, l, "one failed handshake", func(s DTLSStats) bool {
		return s.HandshakesFailed == 1 && s.HandshakesOK == 0 && s.HandshakesInProgress == 0
	})
}

// TestDTLSCertificateIdentity connects certificate clients: the identity comes
// from the verified client certificate, or is empty without one when client
// certificates are optional.
func TestDTLSCertificateIdentity(t *testing.T) {
	pki := newTestPKI(t)
	forEachLoopback(t, func(t *testing.T, addr string) {
		for _, suite := range []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256} {
			t.Run(suite.String(), func(t *testing.T) {
				l := listenDTLS(t, addr, DTLSOptions{
					Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.roots, RequireClientCert: true,
				})
				h, got := recordingEcho(t)
				serveDTLS(t, l, h)
				c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), certClient(pki, l.LocalAddr(), suite, pki.client)...)
				mustRoundTrip(t, c, "hello")
				id := asAssociation(t, nextReceived(t, got).s).Identity()
				if id.CertCommonName != "sensor-1" || len(id.CertDNSNames) != 1 || id.CertDNSNames[0] != "sensor-1.example" || id.PSKIdentity != "" {
					t.Errorf("Identity() = %+v, want CN sensor-1 and DNS name sensor-1.example", id)
				}
			})
		}
		t.Run("optional client certificate", func(t *testing.T) {
			l := listenDTLS(t, addr, DTLSOptions{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.roots})
			h, got := recordingEcho(t)
			serveDTLS(t, l, h)
			c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), certClient(pki, l.LocalAddr(), dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8)...)
			mustRoundTrip(t, c, "hello")
			if id := asAssociation(t, nextReceived(t, got).s).Identity(); !id.Empty() {
				t.Errorf("Identity() = %+v, want empty without a client certificate", id)
			}
		})
	})
}

// TestDTLSRequireClientCert checks that a certificate handshake without a
// client certificate, or with one from an unknown CA, fails and is reported.
func TestDTLSRequireClientCert(t *testing.T) {
	pki := newTestPKI(t)
	tests := []struct {
		name  string
		certs []tls.Certificate
	}{
		{"no certificate", nil},
		{"untrusted CA", []tls.Certificate{pki.stranger}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := newFailureRecorder()
			l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{
				Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.roots, RequireClientCert: true,
				OnHandshakeError: rec.record,
			})
			serveDTLS(t, l, func(Sender, netip.AddrPort, []byte) { t.Error("handler called") })
			pc := clientSocket(t, l.LocalAddr())
			peer := localAddrPort(pc)
			_, err := dialDTLS(t, pc, l.LocalAddr(), waitTimeout, certClient(pki, l.LocalAddr(), dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, tt.certs...)...)
			if err == nil {
				t.Fatal("handshake succeeded")
			}
			t.Logf("client: %v; server: %v", err, rec.waitFor(t, peer))
			waitDTLS(t, l, "one failed handshake", func(s DTLSStats) bool {
				return s.HandshakesFailed == 1 && s.HandshakesOK == 0 && s.Associations == 0
			})
		})
	}
}

// muteConn is a client socket that can be made to swallow writes, like a
// sensor that loses power without a word.
type muteConn struct {
	*net.UDPConn
	mute atomic.Bool
}

func (m *muteConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if m.mute.Load() {
		return len(b), nil
	}
	return m.UDPConn.WriteTo(b, addr)
}

// TestDTLSRehandshakeReplaces reboots a client: it forgets its association
// silently and handshakes again from the same address. The new handshake gets
// a new Sender with the same key, and the old association is closed.
func TestDTLSRehandshakeReplaces(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		l := listenDTLS(t, addr, DTLSOptions{PSK: pskFor})
		h, got := recordingEcho(t)
		serveDTLS(t, l, h)

		pc1 := &muteConn{UDPConn: clientSocket(t, l.LocalAddr())}
		peer := localAddrPort(pc1.UDPConn)
		c1 := mustDial(t, pc1, l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		mustRoundTrip(t, c1, "before")
		old := asAssociation(t, nextReceived(t, got).s)

		pc1.mute.Store(true)
		_ = c1.Close() // no close_notify reaches the server; closes the socket
		var pc2 *net.UDPConn
		var err error
		for range 50 { // the port is free once pc1 is closed
			if pc2, err = net.ListenUDP("udp", net.UDPAddrFromAddrPort(peer)); err == nil {
				break
			}
			time.Sleep(10 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("rebind %s: %v", peer, err)
		}
		t.Cleanup(func() { _ = pc2.Close() })
		if s := l.Stats(); s.Associations != 1 {
			t.Fatalf("Associations = %d before the new handshake, want the old one open", s.Associations)
		}

		c2 := mustDial(t, pc2, l.LocalAddr(), pskClient("sensor-2", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		mustRoundTrip(t, c2, "after")
		r := nextReceived(t, got)
		now := asAssociation(t, r.s)
		if now == old {
			t.Fatal("the new handshake kept the old Sender")
		}
		if r.from != peer || now.Key() != peer || old.Key() != peer {
			t.Errorf("keys: handler %s, new %s, old %s; want %s", r.from, now.Key(), old.Key(), peer)
		}
		if id := now.Identity(); id.PSKIdentity != "sensor-2" {
			t.Errorf("new Identity() = %+v, want sensor-2", id)
		}
		waitDone(t, old)
		if err := old.WriteTo([]byte("late"), peer); !errors.Is(err, net.ErrClosed) {
			t.Errorf("old WriteTo = %v, want an error wrapping net.ErrClosed", err)
		}
		waitDTLS(t, l, "one replaced association", func(s DTLSStats) bool {
			return s.HandshakesOK == 2 && s.Replaced == 1 && s.Associations == 1
		})
		mustRoundTrip(t, c2, "still there")
		checkRoutes(t, l)
	})
}

// udpRelay forwards datagrams between a client and a server through an
// outgoing socket that can be swapped for one on a new port, like a NAT that
// rebinds.
type udpRelay struct {
	tb     testing.TB
	front  *net.UDPConn
	server netip.AddrPort
	wg     sync.WaitGroup

	mu     sync.Mutex
	back   *net.UDPConn
	client netip.AddrPort
	closed bool
}

// newUDPRelay starts a relay to server and returns it; clients talk to
// r.front's address.
func newUDPRelay(tb testing.TB, server netip.AddrPort) *udpRelay {
	tb.Helper()
	r := &udpRelay{tb: tb, front: clientSocket(tb, server), server: server}
	r.rebind()
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := r.front.ReadFromUDPAddrPort(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			r.client = from
			back := r.back
			r.mu.Unlock()
			_, _ = back.WriteToUDPAddrPort(buf[:n], r.server)
		}
	})
	tb.Cleanup(func() {
		r.mu.Lock()
		r.closed = true
		_ = r.back.Close()
		r.mu.Unlock()
		_ = r.front.Close()
		r.wg.Wait()
	})
	return r
}

// frontAddr is where clients send.
func (r *udpRelay) frontAddr() netip.AddrPort { return localAddrPort(r.front) }

// backAddr is the address the server sees.
func (r *udpRelay) backAddr() netip.AddrPort {
	r.mu.Lock()
	defer r.mu.Unlock()
	return localAddrPort(r.back)
}

// rebind moves the relay's server side to a new socket (a new source port)
// and closes the old one.
func (r *udpRelay) rebind() {
	back, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(loopbackFor(r.server))))
	if err != nil {
		r.tb.Fatalf("relay socket: %v", err)
	}
	r.mu.Lock()
	old := r.back
	r.back = back
	r.mu.Unlock()
	if old != nil {
		_ = old.Close()
	}
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				return
			}
			r.mu.Lock()
			client := r.client
			r.mu.Unlock()
			_, _ = r.front.WriteToUDPAddrPort(buf[:n], client)
		}
	})
}

// TestDTLSConnectionIDPortChange moves a client to a new source port in the
// middle of its association. With connection IDs on both sides it goes on
// with the same Sender and key and no new handshake; otherwise its records
// from the new port reach no association.
func TestDTLSConnectionIDPortChange(t *testing.T) {
	tests := []struct {
		name      string
		serverCID bool
		clientCID bool
		continues bool
	}{
		{"cid", true, true, true},
		{"server without cid", false, true, false},
		{"client without cid", true, false, false},
	}
	forEachLoopback(t, func(t *testing.T, addr string) {
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				l := listenDTLS(t, addr, DTLSOptions{PSK: pskFor, ConnectionID: tt.serverCID})
				h, got := recordingEcho(t)
				serveDTLS(t, l, h)
				relay := newUDPRelay(t, l.LocalAddr())
				var extra []dtls.ClientOption
				if tt.clientCID {
					// Like a constrained client: it sends the server's CID
					// but does not ask for one back.
					extra = append(extra, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
				}
				c := mustDial(t, clientSocket(t, relay.frontAddr()), relay.frontAddr(),
					pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8, extra...)...)
				mustRoundTrip(t, c, "before")
				first := nextReceived(t, got)
				a := asAssociation(t, first.s)
				key := relay.backAddr()
				if first.from != key {
					t.Fatalf("handler key %s, want the relay's address %s", first.from, key)
				}

				relay.rebind()
				moved := relay.backAddr()
				if !tt.continues {
					if err := roundTrip(c, []byte("lost"), 500*time.Millisecond); err == nil {
						t.Fatal("the moved client's datagram reached its old association")
					}
					waitDTLS(t, l, "the moved datagram dropped", func(s DTLSStats) bool {
						return s.UnroutedDropped >= 1 && s.HandshakesStarted == 1 && s.Received == 1
					})
					select {
					case r := <-got:
						t.Fatalf("handler got %q after the move", r.b)
					default:
					}
					checkRoutes(t, l)
					return
				}
				// pion hands a record to Read before it switches the peer
				// address to the record's source (conn.go, handleIncomingPacket),
				// so the echo of the first record after the move can still go
				// to the old address. The client retransmits, as a sensor would.
				var err error
				for attempt := 1; attempt <= 3; attempt++ {
					if err = roundTrip(c, []byte("after"), time.Second); err == nil {
						if attempt > 1 {
							t.Logf("echo after the move needed %d attempts", attempt)
						}
						break
					}
				}
				if err != nil {
					t.Fatalf("round trip after the move: %v (stats %+v)", err, l.Stats())
				}
				r := nextReceived(t, got)
				if r.s != first.s || r.from != key {
					t.Errorf("after the move: Sender %p key %s, want the same %p %s", r.s, r.from, first.s, key)
				}
				// No retransmission needed any more (a late echo of a
				// retransmitted "after" may still be on its way: skip it).
				if _, err := c.Write([]byte("settled")); err != nil {
					t.Fatal(err)
				}
				if err := readUntil(c, "settled", waitTimeout); err != nil {
					t.Fatal(err)
				}
				if a.Key() != key || a.RemoteAddr() != moved {
					t.Errorf("Key() %s RemoteAddr() %s, want %s and %s", a.Key(), a.RemoteAddr(), key, moved)
				}
				waitDTLS(t, l, "one address change, no new handshake", func(s DTLSStats) bool {
					return s.HandshakesStarted == 1 && s.AddressChanges == 1 && s.Received >= 3 && s.Associations == 1
				})
				// Answers initiated by the gateway follow the peer as well.
				if err := a.WriteTo([]byte("push"), key); err != nil {
					t.Fatal(err)
				}
				buf := make([]byte, 64)
				n, err := c.Read(buf)
				if err != nil || string(buf[:n]) != "push" {
					t.Fatalf("client read %q, %v; want push", buf[:n], err)
				}
				checkRoutes(t, l)
			})
		}
	})
}

// TestDTLSMoveAwayFromPendingHandshake starts a cookie-less handshake from a
// CID association's address and then moves the association's peer to a new
// port. The peer has proved it is elsewhere, so the pending handshake is not
// its replacement: it keeps the old address, the association goes on, and
// no route is left to either once the stray handshake times out.
func TestDTLSMoveAwayFromPendingHandshake(t *testing.T) {
	rec := newFailureRecorder()
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, ConnectionID: true, HandshakeTimeout: 500 * time.Millisecond, OnHandshakeError: rec.record})
	h, got := recordingEcho(t)
	serveDTLS(t, l, h)
	relay := newUDPRelay(t, l.LocalAddr())
	c := mustDial(t, clientSocket(t, relay.frontAddr()), relay.frontAddr(),
		pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))...)
	mustRoundTrip(t, c, "before")
	a := asAssociation(t, nextReceived(t, got).s)
	old := relay.backAddr()

	relay.mu.Lock()
	_, err := relay.back.WriteToUDPAddrPort(rawClientHello(t, nil), l.LocalAddr())
	relay.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	waitDTLS(t, l, "a handshake beside the association", func(s DTLSStats) bool { return s.HandshakesInProgress == 1 })

	relay.rebind()
	if _, err := c.Write([]byte("moved")); err != nil {
		t.Fatal(err)
	}
	if r := nextReceived(t, got); r.s != a || string(r.b) != "moved" {
		t.Fatalf("handler got %q from another Sender", r.b)
	}
	waitDTLS(t, l, "the move", func(s DTLSStats) bool { return s.AddressChanges == 1 })
	l.mu.Lock()
	pending := l.byAddr[old]
	handedOver := pending != nil && pending != a && pending.replaces == nil
	l.mu.Unlock()
	if !handedOver {
		t.Errorf("the old address %s should route to the pending handshake, which no longer replaces the association", old)
	}
	if err := rec.waitFor(t, old); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stray handshake ended with %v, want a timeout", err)
	}
	if err := readUntil(c, "moved", waitTimeout); err != nil {
		t.Fatal(err)
	}
	mustRoundTrip(t, c, "after")
	waitDTLS(t, l, "the stray handshake gone", func(s DTLSStats) bool {
		return s.HandshakesInProgress == 0 && s.Associations == 1 && s.Replaced == 0
	})
	checkRoutes(t, l)
	l.mu.Lock()
	routes := len(l.byAddr)
	l.mu.Unlock()
	if routes != 1 {
		t.Errorf("%d address routes, want only the association's new address", routes)
	}
}

// TestDTLSConcurrentHandshakes runs 200 handshakes at once, each followed by
// one round trip.
func TestDTLSConcurrentHandshakes(t *testing.T) {
	const clients = 200
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, ReadBuffer: 1 << 20})
	h, _ := recordingEcho(t)
	serveDTLS(t, l, h)

	conns := make([]*net.UDPConn, clients)
	for i := range conns {
		conns[i] = clientSocket(t, l.LocalAddr())
	}
	start := time.Now()
	var wg sync.WaitGroup
	var failed atomic.Int32
	for i, pc := range conns {
		wg.Go(func() {
			id := fmt.Sprintf("sensor-%d", i)
			c, err := dialDTLS(t, pc, l.LocalAddr(), 60*time.Second, pskClient(id, testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
			if err == nil {
				err = roundTrip(c, []byte(id), 30*time.Second)
			}
			if err != nil {
				failed.Add(1)
				t.Errorf("client %d: %v", i, err)
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	s := l.Stats()
	t.Logf("%d concurrent handshakes and round trips in %v (%.0f handshakes/s); stats %+v", clients, d, clients/d.Seconds(), s)
	if failed.Load() > 0 {
		t.FailNow()
	}
	if s.HandshakesOK != clients || s.Associations != clients || s.HandshakesDropped != 0 || s.Received != clients {
		t.Errorf("Stats() = %+v, want %d handshakes, associations and datagrams, none dropped", s, clients)
	}
	if d > 60*time.Second {
		t.Errorf("took %v, want under 60 s", d)
	}
	checkRoutes(t, l)
}

// TestDTLSHandshakeFloodKeepsEstablished floods the listener with ClientHellos
// from many source ports, far beyond MaxHandshakes, while an established
// client keeps echoing.
func TestDTLSHandshakeFloodKeepsEstablished(t *testing.T) {
	const (
		maxHandshakes = 16
		floodSize     = 2000
		senders       = 4
	)
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{
		PSK: pskFor, MaxHandshakes: maxHandshakes, HandshakeTimeout: 500 * time.Millisecond, ReadBuffer: 1 << 20,
	})
	h, _ := recordingEcho(t)
	serveDTLS(t, l, h)
	c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	mustRoundTrip(t, c, "warm up")

	hello := rawClientHello(t, nil)
	var sent atomic.Int64
	floodDone := make(chan struct{})
	var wg sync.WaitGroup
	for range senders {
		wg.Go(func() {
			server := net.UDPAddrFromAddrPort(l.LocalAddr())
			for sent.Add(1) <= floodSize {
				// A fresh socket per ClientHello: a new source port each.
				pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
				if err != nil {
					t.Errorf("flood socket: %v", err)
					return
				}
				_, _ = pc.WriteTo(hello, server)
				_ = pc.Close()
			}
		})
	}
	go func() { wg.Wait(); close(floodDone) }()

	start := time.Now()
	var trips int
	var worst time.Duration
	for flooding := true; flooding; {
		select {
		case <-floodDone:
			flooding = false
		default:
		}
		t0 := time.Now()
		if err := roundTrip(c, fmt.Appendf(nil, "trip %d", trips), 2*time.Second); err != nil {
			t.Fatalf("round trip %d during the flood: %v (stats %+v)", trips, err, l.Stats())
		}
		worst = max(worst, time.Since(t0))
		trips++
	}
	s := l.Stats()
	t.Logf("flood of %d ClientHellos in %v: %d round trips, worst %v; stats %+v", floodSize, time.Since(start), trips, worst, s)
	if s.HandshakesDropped < floodSize/2 {
		t.Errorf("HandshakesDropped = %d, want most of the %d ClientHellos dropped at the cap", s.HandshakesDropped, floodSize)
	}
	if got := s.HandshakesStarted + s.HandshakesDropped; got > floodSize+1 {
		t.Errorf("started + dropped = %d, more than the %d ClientHellos sent", got, floodSize+1)
	}
	if s.HandshakesInProgress > maxHandshakes {
		t.Errorf("HandshakesInProgress = %d, above MaxHandshakes %d", s.HandshakesInProgress, maxHandshakes)
	}
	// Once the flood's handshakes have timed out, new clients get in again.
	waitDTLS(t, l, "flood handshakes timed out", func(s DTLSStats) bool { return s.HandshakesInProgress == 0 })
	checkRoutes(t, l)
	c2 := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient("sensor-2", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	mustRoundTrip(t, c2, "after the flood")
}

// TestDTLSOversizeDropped checks MaxDatagram on decrypted datagrams and the
// raw limit on datagrams before decryption.
func TestDTLSOversizeDropped(t *testing.T) {
	const max = 100
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, MaxDatagram: max})
	got := make(chan []byte, 8)
	serveDTLS(t, l, func(_ Sender, _ netip.AddrPort, b []byte) { got <- bytes.Clone(b) })
	c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	// pion keeps only one record that arrives before its server side has
	// marked the handshake complete; wait for that before sending a burst.
	if _, err := c.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	select {
	case b := <-got:
		if string(b) != "first" {
			t.Fatalf("handler got %q, want first", b)
		}
	case <-time.After(waitTimeout):
		t.Fatalf("timed out waiting for the first datagram (stats %+v)", l.Stats())
	}

	fill := func(n int) []byte { return bytes.Repeat([]byte{'x'}, n) }
	for _, b := range [][]byte{fill(max + 1), fill(max), fill(1000), []byte("end")} {
		if _, err := c.Write(b); err != nil {
			t.Fatalf("client write of %d bytes: %v", len(b), err)
		}
	}
	for _, want := range [][]byte{fill(max), []byte("end")} {
		select {
		case b := <-got:
			if !bytes.Equal(b, want) {
				t.Fatalf("handler got %d bytes, want %d", len(b), len(want))
			}
		case <-time.After(waitTimeout):
			t.Fatalf("timed out waiting for the %d-byte datagram (stats %+v)", len(want), l.Stats())
		}
	}
	raw := dial(t, l.LocalAddr())
	if _, err := raw.Write(fill(DefaultMaxDatagram + dtlsRecordOverhead + 1)); err != nil {
		t.Fatal(err)
	}
	waitDTLS(t, l, "three oversize datagrams", func(s DTLSStats) bool { return s.OversizeDropped == 3 && s.Received == 3 })
}

// TestDTLSAssociationClose ends associations from either side.
func TestDTLSAssociationClose(t *testing.T) {
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor})
	h, got := recordingEcho(t)
	serveDTLS(t, l, h)

	t.Run("by the gateway", func(t *testing.T) {
		c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		mustRoundTrip(t, c, "hi")
		a := asAssociation(t, nextReceived(t, got).s)
		if err := a.Close(); err != nil {
			t.Fatalf("Close: %v", err)
		}
		waitDone(t, a)
		if err := a.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
		// The client got a close_notify.
		if err := c.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
			t.Errorf("client Read after the server closed = %v, want io.EOF", err)
		}
		if err := a.WriteTo([]byte("late"), a.Key()); !errors.Is(err, net.ErrClosed) {
			t.Errorf("WriteTo after Close = %v, want net.ErrClosed", err)
		}
		waitDTLS(t, l, "no association", func(s DTLSStats) bool { return s.Associations == 0 })
		checkRoutes(t, l)
	})
	t.Run("by the client", func(t *testing.T) {
		c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
		mustRoundTrip(t, c, "hi")
		a := asAssociation(t, nextReceived(t, got).s)
		_ = c.Close()
		waitDone(t, a)
		waitDTLS(t, l, "no association", func(s DTLSStats) bool { return s.Associations == 0 })
		checkRoutes(t, l)
		l.mu.Lock()
		n := len(l.byAddr) + len(l.byCID)
		l.mu.Unlock()
		if n != 0 {
			t.Errorf("%d routes left with no peer", n)
		}
	})
}

// TestDTLSIdleTimeout: an association that carries nothing for IdleTimeout
// is closed, with a close_notify, and counted; one whose peer keeps sending,
// and one that only the gateway keeps sending to, outlive several
// IdleTimeouts.
func TestDTLSIdleTimeout(t *testing.T) {
	const idle = time.Second
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor, IdleTimeout: idle})
	h, got := recordingEcho(t)
	serveDTLS(t, l, h)
	dial := func(identity string) *dtls.Conn {
		return mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient(identity, testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	}

	quiet := dial("sensor-1")
	mustRoundTrip(t, quiet, "once")
	quietAssoc := asAssociation(t, nextReceived(t, got).s)
	busy := dial("sensor-2")
	mustRoundTrip(t, busy, "0")
	busyAssoc := asAssociation(t, nextReceived(t, got).s)
	listening := dial("sensor-3")
	mustRoundTrip(t, listening, "subscribed")
	listeningAssoc := asAssociation(t, nextReceived(t, got).s)

	for i, start := 1, time.Now(); time.Since(start) < 3*idle; i++ {
		time.Sleep(idle / 5)
		mustRoundTrip(t, busy, fmt.Sprint(i))
		if err := listeningAssoc.WriteTo([]byte("command"), listeningAssoc.Key()); err != nil {
			t.Fatalf("send to the listening sensor: %v", err)
		}
	}
	select {
	case <-quietAssoc.Done():
	default:
		t.Fatalf("an association silent for 3×IdleTimeout is still open: %+v", l.Stats())
	}
	for name, a := range map[string]Association{"sending": busyAssoc, "sent to": listeningAssoc} {
		select {
		case <-a.Done():
			t.Errorf("the association %s was closed", name)
		default:
		}
	}
	if err := quiet.SetReadDeadline(time.Now().Add(waitTimeout)); err != nil {
		t.Fatal(err)
	}
	if _, err := quiet.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
		t.Errorf("silent client's Read = %v, want io.EOF (close_notify)", err)
	}
	waitDTLS(t, l, "one association closed for idleness", func(s DTLSStats) bool {
		return s.IdleClosed == 1 && s.Associations == 2 && s.ReadErrors == 0
	})
	checkRoutes(t, l)
}

// TestDTLSCloseEndsServe closes a listener with established associations and
// a handshake in progress: Serve returns, every association ends, its client
// hears a close_notify, and no goroutine is left behind.
func TestDTLSCloseEndsServe(t *testing.T) {
	forEachLoopback(t, func(t *testing.T, addr string) {
		base := runtime.NumGoroutine()
		func() {
			l, err := ListenDTLS(addr, DTLSOptions{PSK: pskFor})
			if err != nil {
				t.Fatal(err)
			}
			h, got := recordingEcho(t)
			done := startServeFunc(func() error { return l.Serve(h) })

			var clients []*dtls.Conn
			var assocs []Association
			for i := range 3 {
				pc, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(loopbackFor(l.LocalAddr()))))
				if err != nil {
					t.Fatal(err)
				}
				c, err := dialDTLS(t, pc, l.LocalAddr(), waitTimeout, pskClient(fmt.Sprintf("sensor-%d", i), testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
				if err != nil {
					t.Fatal(err)
				}
				mustRoundTrip(t, c, "hi")
				clients = append(clients, c)
				assocs = append(assocs, asAssociation(t, nextReceived(t, got).s))
			}
			raw, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(l.LocalAddr()))
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.Write(rawClientHello(t, nil)); err != nil {
				t.Fatal(err)
			}
			waitDTLS(t, l, "a handshake in progress", func(s DTLSStats) bool { return s.HandshakesInProgress == 1 })

			start := time.Now()
			if err := l.Close(); err != nil {
				t.Fatalf("Close: %v", err)
			}
			waitServe(t, done)
			if d := time.Since(start); d > time.Second {
				t.Errorf("Serve took %v to return after Close", d)
			}
			for _, a := range assocs {
				select {
				case <-a.Done():
				default:
					t.Errorf("association %s still open after Serve returned", a.Key())
				}
			}
			for _, c := range clients {
				if _, err := c.Read(make([]byte, 64)); !errors.Is(err, io.EOF) {
					t.Errorf("client Read after Close = %v, want io.EOF", err)
				}
				_ = c.Close()
			}
			if s := l.Stats(); s.Associations != 0 || s.HandshakesInProgress != 0 || s.HandshakesFailed != 0 {
				t.Errorf("Stats() after Close = %+v, want nothing open and no failure reported", s)
			}
			if err := l.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if err := l.Serve(h); err != nil {
				t.Errorf("Serve after Close = %v, want nil", err)
			}
		}()
		waitGoroutines(t, base)
	})
}

// TestDTLSCloseFromHandler closes the listener from inside a handler.
func TestDTLSCloseFromHandler(t *testing.T) {
	l, err := ListenDTLS("127.0.0.1:0", DTLSOptions{PSK: pskFor})
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
	c := mustDial(t, clientSocket(t, l.LocalAddr()), l.LocalAddr(), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	if _, err := c.Write([]byte("stop")); err != nil {
		t.Fatal(err)
	}
	waitServe(t, done)
}

func TestDTLSServeArguments(t *testing.T) {
	l := listenDTLS(t, "127.0.0.1:0", DTLSOptions{PSK: pskFor})
	if err := l.Serve(nil); err == nil {
		t.Error("Serve(nil) succeeded, want an error")
	}
	serveDTLS(t, l, func(Sender, netip.AddrPort, []byte) {})
	deadline := time.Now().Add(waitTimeout)
	for !l.serving.Load() && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if err := l.Serve(func(Sender, netip.AddrPort, []byte) {}); err == nil || !strings.Contains(err.Error(), "already") {
		t.Errorf("second Serve = %v, want an error saying Serve was already called", err)
	}
}

func TestClientHelloHasCookie(t *testing.T) {
	withCookie := rawClientHello(t, []byte("cookie"))
	without := rawClientHello(t, nil)
	if !isClientHello(withCookie) || !isClientHello(without) {
		t.Fatal("isClientHello does not recognise a ClientHello")
	}
	if !clientHelloHasCookie(withCookie) {
		t.Error("cookie not found")
	}
	if clientHelloHasCookie(without) {
		t.Error("cookie found in a cookie-less ClientHello")
	}
	// Truncated: cannot tell, so it must not count as a fresh ClientHello.
	if !clientHelloHasCookie(without[:recordHeaderLen+handshakeHeaderLen+10]) {
		t.Error("truncated ClientHello treated as cookie-less")
	}
}
