package gateway_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/rs/zerolog"
	"golang.org/x/net/ipv4"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// groupListener joins a multicast group on the loopback interface, on a
// free port, and returns the socket and the group's address. Where the
// kernel cannot do multicast on lo the test is skipped with the reason;
// under CI=true the test adds the route first and fails if that fails.
func groupListener(t *testing.T) (*net.UDPConn, netip.AddrPort) {
	t.Helper()
	lo, err := net.InterfaceByName("lo")
	if err != nil {
		t.Skipf("no loopback interface named lo: %v", err)
	}
	conn, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	group := netip.AddrPortFrom(netip.MustParseAddr("225.1.1.1"), uint16(conn.LocalAddr().(*net.UDPAddr).Port))
	join := func() error {
		return ipv4.NewPacketConn(conn).JoinGroup(lo, &net.UDPAddr{IP: group.Addr().AsSlice()})
	}
	if err := join(); err != nil {
		if os.Getenv("CI") != "true" {
			t.Skipf("cannot join a multicast group on lo (%v); under CI=true the test adds the route 224.0.0.0/4 dev lo", err)
		}
		if out, rerr := exec.Command("ip", "route", "add", "224.0.0.0/4", "dev", "lo").CombinedOutput(); rerr != nil {
			t.Fatalf("join: %v; adding the multicast route: %v: %s", err, rerr, out)
		}
		if err := join(); err != nil {
			t.Fatalf("join after adding the route: %v", err)
		}
	}
	return conn, group
}

// recvGroup reads the next datagram sent to the group.
func recvGroup(t *testing.T, conn *net.UDPConn) mqttsn.Message {
	t.Helper()
	buf := make([]byte, 512)
	_ = conn.SetReadDeadline(time.Now().Add(wait))
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("nothing on the group: %v", err)
	}
	m, err := mqttsn.Decode(buf[:n])
	if err != nil {
		t.Fatalf("% x on the group: %v", buf[:n], err)
	}
	return m
}

// ADVERTISE goes to the group on the loopback interface at once and then on
// the interval, with the GwId and the interval as Duration (§6.1).
func TestAdvertise(t *testing.T) {
	conn, group := groupListener(t)
	g := startGateway(t, "tcp://"+startEmbedded(t), func(c *gateway.Config) { c.GatewayID = 9 })
	m, err := transport.DialMulticast(group, netip.MustParseAddr("127.0.0.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); g.Advertise(ctx, m.Send, time.Second) }()
	defer func() { cancel(); <-done }()

	start := time.Now()
	for i := range 2 {
		a, ok := recvGroup(t, conn).(*mqttsn.Advertise)
		if !ok || a.GwID != 9 || a.Duration != 1 {
			t.Fatalf("ADVERTISE %d: %+v", i, a)
		}
	}
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Fatalf("two ADVERTISE within %v, before the interval", el)
	}
}

// With reply_multicast GWINFO goes to the group, after the random delay,
// and not to the sender; SEARCHGWs arriving meanwhile share one answer.
func TestSearchGWMulticastReply(t *testing.T) {
	conn, group := groupListener(t)
	g := startGateway(t, "tcp://"+startEmbedded(t), func(c *gateway.Config) {
		c.GatewayID = 4
		c.GWInfoDelayMax = 300 * time.Millisecond
	})
	m, err := transport.DialMulticast(group, netip.MustParseAddr("127.0.0.1"), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	g.SetGWInfoMulticast(m.Send)

	c := g.client(t)
	for range 3 {
		c.Send(&mqttsn.SearchGW{Radius: 0})
	}
	info, ok := recvGroup(t, conn).(*mqttsn.GwInfo)
	if !ok || info.GwID != 4 {
		t.Fatalf("GWINFO on the group: %+v", info)
	}
	_ = conn.SetReadDeadline(time.Now().Add(quiet))
	if n, err := conn.Read(make([]byte, 64)); err == nil {
		t.Fatalf("a second GWINFO (%d octets) for SEARCHGWs that shared one answer", n)
	}
	c.ExpectNothing(10 * time.Millisecond)
	if st := g.Stats(); st.Searches != 3 {
		t.Fatalf("stats %+v", st)
	}
}

// An ADVERTISE sender closed under the advertiser (the gateway shutting
// down) ends it quietly: no warning, no further attempt.
func TestAdvertiseEndsWhenSenderCloses(t *testing.T) {
	var logs bytes.Buffer
	g, err := gateway.New(gateway.Config{}, noUpstream{}, zerolog.New(&logs).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	m, err := transport.DialMulticast(netip.MustParseAddrPort("225.1.1.1:1884"), netip.MustParseAddr("127.0.0.1"), 1)
	if err != nil {
		t.Skipf("no multicast socket here: %v", err)
	}
	_ = m.Close()
	done := make(chan struct{})
	go func() { defer close(done); g.Advertise(context.Background(), m.Send, time.Hour) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the advertiser went on after its sender closed")
	}
	if logs.Len() > 0 {
		t.Errorf("logged: %s", logs.String())
	}
}

// noUpstream is an Upstream for tests that never connect.
type noUpstream struct{}

func (noUpstream) Connect(context.Context, gateway.ConnectParams, gateway.ConnHandler) (gateway.Conn, error) {
	return nil, errors.New("no upstream in this test")
}
