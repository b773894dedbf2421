package snclient

import (
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

const testKey = "0123456789abcdef"

// dtlsGateway is a scripted MQTT-SN gateway behind a pion/dtls listener
// with PSK and connection IDs. It reports where every datagram came from,
// and the associations that ended with a close_notify.
type dtlsGateway struct {
	addr   netip.AddrPort
	from   chan netip.AddrPort // each datagram's source address
	closed chan netip.AddrPort // associations the client closed, by their address
}

// fakeDTLSGateway starts a dtlsGateway on 127.0.0.1 that answers with script
// and closes it in t's cleanup.
func fakeDTLSGateway(t *testing.T, script func(b []byte) [][]byte) *dtlsGateway {
	t.Helper()
	l, err := dtls.ListenWithOptions("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)},
		dtls.WithPSK(func([]byte) ([]byte, error) { return []byte(testKey), nil }),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(8)),
	)
	if err != nil {
		t.Fatalf("dtls listen: %v", err)
	}
	g := &dtlsGateway{
		addr:   l.Addr().(*net.UDPAddr).AddrPort(),
		from:   make(chan netip.AddrPort, 100),
		closed: make(chan netip.AddrPort, 10),
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return // closed
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			wg.Go(func() { g.serve(t, conn, script) })
		}
	})
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return g
}

// serve runs one association: every datagram is answered by script.
func (g *dtlsGateway) serve(t *testing.T, conn net.Conn, script func(b []byte) [][]byte) {
	defer conn.Close()
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if errors.Is(err, io.EOF) {
				select {
				case g.closed <- conn.RemoteAddr().(*net.UDPAddr).AddrPort():
				default:
				}
			}
			return // closed, or a failed handshake
		}
		select {
		case g.from <- conn.RemoteAddr().(*net.UDPAddr).AddrPort():
		default:
		}
		for _, r := range script(buf[:n]) {
			if _, err := conn.Write(r); err != nil {
				t.Logf("fake DTLS gateway: %v", err)
			}
		}
	}
}

// lastFrom returns the source of the latest datagram, waiting for one.
func (g *dtlsGateway) lastFrom(t *testing.T) netip.AddrPort {
	t.Helper()
	var last netip.AddrPort
	select {
	case last = <-g.from:
	case <-time.After(wait):
		t.Fatal("the fake DTLS gateway received nothing")
	}
	for {
		select {
		case last = <-g.from:
		default:
			return last
		}
	}
}

func pskOpts(key string, extra ...dtls.ClientOption) []dtls.ClientOption {
	return append([]dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		dtls.WithPSKIdentityHint([]byte("sensor-1")),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
	}, extra...)
}

// The exchanges work over DTLS as over UDP, timeouts included.
func TestDTLSExchanges(t *testing.T) {
	g := fakeDTLSGateway(t, gateway)
	c := DialDTLS(t, g.addr, pskOpts(testKey)...)
	if got := c.LocalAddr(); !got.Addr().Is4() || !got.Addr().IsLoopback() || got.Port() == 0 {
		t.Errorf("LocalAddr() = %v, want an IPv4 loopback address", got)
	}
	if st := c.DTLSState(); st.CipherSuiteID != dtls.TLS_PSK_WITH_AES_128_CCM_8 {
		t.Errorf("DTLSState().CipherSuiteID = %v", st.CipherSuiteID)
	}
	c.Connect("c1", true, 60)
	if id := c.Register("a/b"); id != 7 {
		t.Errorf("Register = %d, want 7", id)
	}
	if p := Expect[*mqttsn.Publish](t, c, wait); string(p.Data) != "early" {
		t.Errorf("set-aside PUBLISH = %s", Describe(p))
	}
	if id, q := c.Subscribe("s/#", mqttsn.QoS1); id != 9 || q != mqttsn.QoS1 {
		t.Errorf("Subscribe = %d, q%s; want 9, q1", id, q)
	}
	if rc := c.PublishQoS1(7, mqttsn.TopicIDNormal, []byte("q1")); rc != mqttsn.Accepted {
		t.Errorf("PublishQoS1 = %v", rc)
	}
	if rc := c.PublishQoS2(7, mqttsn.TopicIDNormal, []byte("q2")); rc != mqttsn.Accepted {
		t.Errorf("PublishQoS2 = %v", rc)
	}
	c.Disconnect()
	c.ExpectNothing(50 * time.Millisecond)
	if _, err := c.Recv(10 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Recv of nothing: %v, want os.ErrDeadlineExceeded", err)
	}
	// The association survives a read timeout.
	c.Send(&mqttsn.PingReq{})
	if _, err := c.Recv(wait); !errors.Is(err, mqttsn.ErrMalformed) {
		t.Errorf("Recv of a malformed datagram: %v, want ErrMalformed", err)
	}
	if from := g.lastFrom(t); from != c.LocalAddr() {
		t.Errorf("the gateway saw %v, want %v", from, c.LocalAddr())
	}
}

// Rebind moves the client to a new port. With a connection ID the
// association follows it; without, its records reach no association.
func TestDTLSRebind(t *testing.T) {
	for _, cid := range []bool{true, false} {
		name := "without connection id"
		if cid {
			name = "with connection id"
		}
		t.Run(name, func(t *testing.T) {
			g := fakeDTLSGateway(t, gateway)
			var extra []dtls.ClientOption
			if cid {
				extra = append(extra, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
			}
			c := DialDTLS(t, g.addr, pskOpts(testKey, extra...)...)
			c.Connect("c1", true, 60)
			if got := c.SendsConnectionID(); got != cid {
				t.Fatalf("SendsConnectionID() = %v", got)
			}
			before := c.LocalAddr()
			if from := g.lastFrom(t); from != before {
				t.Fatalf("the gateway saw %v, want %v", from, before)
			}
			c.Rebind()
			after := c.LocalAddr()
			if after == before || !after.Addr().IsLoopback() {
				t.Fatalf("after Rebind: LocalAddr() %v, before %v", after, before)
			}
			// pion moves the association after it delivered the record
			// from the new address: the first one must need no answer.
			c.PublishQoS0(7, mqttsn.TopicIDNormal, []byte("moved"))
			if !cid {
				c.Send(&mqttsn.PingReq{})
				c.ExpectNothing(200 * time.Millisecond)
				select {
				case from := <-g.from:
					t.Fatalf("the gateway received a datagram from %v", from)
				default:
				}
				return
			}
			if rc := c.PublishQoS1(7, mqttsn.TopicIDNormal, []byte("after")); rc != mqttsn.Accepted {
				t.Fatalf("PublishQoS1 after Rebind = %v", rc)
			}
			if from := g.lastFrom(t); from != after {
				t.Errorf("the gateway saw %v, want the new address %v", from, after)
			}
		})
	}
}

// Close sends close_notify, and a new client can handshake from the same
// address; Vanish sends nothing.
func TestDTLSCloseRedialVanish(t *testing.T) {
	g := fakeDTLSGateway(t, gateway)
	c1 := DialDTLS(t, g.addr, pskOpts(testKey)...)
	c1.Connect("c1", true, 60)
	addr := c1.LocalAddr()
	c1.Close()
	select {
	case got := <-g.closed:
		if got != addr {
			t.Fatalf("close_notify from %v, want %v", got, addr)
		}
	case <-time.After(wait):
		t.Fatal("no close_notify")
	}

	c2 := DialDTLSFrom(t, addr, g.addr, pskOpts(testKey)...)
	if got := c2.LocalAddr(); got != addr {
		t.Fatalf("DialDTLSFrom(%v): LocalAddr() %v", addr, got)
	}
	c2.Connect("c1", true, 60)
	c2.Vanish()
	select {
	case got := <-g.closed:
		t.Fatalf("close_notify from %v after Vanish", got)
	case <-time.After(200 * time.Millisecond):
	}
}

// A handshake with the wrong key fails within the timeout, and the
// DTLS-only methods fail the test on a UDP client.
func TestDTLSFailures(t *testing.T) {
	g := fakeDTLSGateway(t, gateway)
	start := time.Now()
	c, err := HandshakeDTLS(t, netip.AddrPort{}, g.addr, 300*time.Millisecond, pskOpts("the wrong key!!!")...)
	if err == nil || c != nil {
		t.Fatalf("HandshakeDTLS with the wrong key: %v, %v", c, err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("the failed handshake took %v", d)
	}

	udp := fakeGateway(t, "udp4", gateway)
	for _, tc := range []struct {
		name, want string
		fn         func(tb testing.TB)
	}{
		{"not loopback", "loopback", func(tb testing.TB) {
			DialDTLS(tb, netip.MustParseAddrPort("192.0.2.1:5684"), pskOpts(testKey)...)
		}},
		{"rebind udp", "Rebind: not a DTLS client", func(tb testing.TB) { Dial(tb, udp).Rebind() }},
		{"vanish udp", "Vanish: not a DTLS client", func(tb testing.TB) { Dial(tb, udp).Vanish() }},
		{"state udp", "DTLSState: not a DTLS client", func(tb testing.TB) { Dial(tb, udp).DTLSState() }},
		{"cid udp", "SendsConnectionID: not a DTLS client", func(tb testing.TB) { Dial(tb, udp).SendsConnectionID() }},
	} {
		if got := fails(t, tc.fn); !strings.Contains(got, tc.want) {
			t.Errorf("%s: failed with %q, want it to contain %q", tc.name, got, tc.want)
		}
	}
}
