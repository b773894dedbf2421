package fleet

import (
	"errors"
	"net"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// fakeGateway answers the requests a fleet sends: CONNECT, SUBSCRIBE,
// DISCONNECT and PINGREQ. With dropFirst it ignores the first CONNECT from
// each address, so that every sensor has to retry.
type fakeGateway struct {
	conn      *net.UDPConn
	dropFirst bool
	refuse    bool // answer CONNECT with CONNACK rejected (not supported)

	mu       sync.Mutex
	seen     map[netip.AddrPort]bool
	sleeping map[netip.AddrPort]uint16
	subs     map[netip.AddrPort]string
	pings    int
}

func startFake(t *testing.T, dropFirst, refuse bool) *fakeGateway {
	t.Helper()
	c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort("127.0.0.1:0")))
	if err != nil {
		t.Fatal(err)
	}
	g := &fakeGateway{conn: c, dropFirst: dropFirst, refuse: refuse,
		seen: map[netip.AddrPort]bool{}, sleeping: map[netip.AddrPort]uint16{}, subs: map[netip.AddrPort]string{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		g.serve()
	}()
	t.Cleanup(func() {
		_ = c.Close()
		<-done
	})
	return g
}

func (g *fakeGateway) addr() netip.AddrPort {
	return g.conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

func (g *fakeGateway) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := g.conn.ReadFromUDPAddrPort(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err != nil {
			continue
		}
		m, err := mqttsn.Decode(buf[:n])
		if err != nil {
			continue
		}
		var reply mqttsn.Message
		g.mu.Lock()
		switch m := m.(type) {
		case *mqttsn.Connect:
			if g.dropFirst && !g.seen[from] {
				g.seen[from] = true
				break
			}
			reply = &mqttsn.ConnAck{ReturnCode: mqttsn.Accepted}
			if g.refuse {
				reply = &mqttsn.ConnAck{ReturnCode: mqttsn.RejectedNotSupported}
			}
		case *mqttsn.Subscribe:
			g.subs[from] = m.TopicName
			reply = &mqttsn.SubAck{QoS: m.QoS, TopicID: 1, MsgID: m.MsgID}
		case *mqttsn.Disconnect:
			g.sleeping[from] = m.Duration
			reply = &mqttsn.Disconnect{}
		case *mqttsn.PingReq:
			g.pings++
			reply = &mqttsn.PingResp{}
		}
		g.mu.Unlock()
		if reply != nil {
			b, _ := reply.AppendBinary(nil)
			_, _ = g.conn.WriteToUDPAddrPort(b, from)
		}
	}
}

func waitSetup(t *testing.T, f *Fleet) {
	t.Helper()
	select {
	case <-f.SetupDone():
	case <-time.After(10 * time.Second):
		t.Fatalf("setup not done: %+v", f.Stats())
	}
}

// Every sensor connects (retrying the CONNECT the gateway ignored),
// subscribes to its own topic and goes to sleep.
func TestSleepingFleetRetriesConnect(t *testing.T) {
	g := startFake(t, true, false)
	const n = 50
	f, err := Start(Config{Gateway: g.addr(), Sensors: n, TopicPrefix: "cmd/", SubscribeQoS: mqttsn.QoS1,
		Sleep: 3600, Concurrency: 8, Timeout: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitSetup(t, f)
	st := f.Close()
	if st.Ready != n || st.Failed != 0 || st.Retries != n {
		t.Fatalf("stats %+v; want %d ready, %d retries", st, n, n)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.sleeping) != n || len(g.subs) != n {
		t.Fatalf("%d asleep, %d subscribed; want %d", len(g.sleeping), len(g.subs), n)
	}
	for from, topic := range g.subs {
		if g.sleeping[from] != 3600 || len(topic) <= len("cmd/") || topic[:4] != "cmd/" {
			t.Fatalf("%v: topic %q, sleep %d", from, topic, g.sleeping[from])
		}
	}
}

// Awake sensors ping on schedule and count the answers.
func TestPingingFleet(t *testing.T) {
	g := startFake(t, false, false)
	const n = 20
	f, err := Start(Config{Gateway: g.addr(), Sensors: n, KeepAlive: 1, PingInterval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	waitSetup(t, f)
	time.Sleep(300 * time.Millisecond)
	st := f.Close()
	if st.Ready != n || st.PingResps < 2*n || st.PingTimeouts != 0 || st.PingGaveUp != 0 {
		t.Fatalf("stats %+v; want %d ready, at least %d PINGRESPs", st, n, 2*n)
	}
}

// A refused CONNECT fails the sensor at once, with the reason recorded.
func TestRefusedConnect(t *testing.T) {
	g := startFake(t, false, true)
	f, err := Start(Config{Gateway: g.addr(), Sensors: 3, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	waitSetup(t, f)
	st := f.Close()
	if st.Failed != 3 || st.Ready != 0 || st.FirstError == "" {
		t.Fatalf("stats %+v", st)
	}
}

func TestConfigChecked(t *testing.T) {
	for _, cfg := range []Config{
		{Gateway: netip.MustParseAddrPort("192.0.2.1:1883"), Sensors: 1},
		{Gateway: netip.MustParseAddrPort("127.0.0.1:0"), Sensors: 1},
		{Gateway: netip.MustParseAddrPort("127.0.0.1:1883"), Sensors: 0},
	} {
		if _, err := Start(cfg); err == nil {
			t.Errorf("Start(%+v) accepted", cfg)
		}
	}
}
