package gateway_test

import (
	"bytes"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// testForwarder plays a forwarder (§5.5): one UDP socket relaying the frames
// of several wireless nodes, each wrapped with its node id.
type testForwarder struct {
	t    *testing.T
	conn *net.UDPConn
	buf  []byte
}

func newForwarder(t *testing.T, gw netip.AddrPort) *testForwarder {
	conn, err := net.DialUDP("udp", nil, net.UDPAddrFromAddrPort(gw))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &testForwarder{t: t, conn: conn, buf: make([]byte, 2048)}
}

// send relays m from node.
func (f *testForwarder) send(node []byte, m mqttsn.Message) {
	f.t.Helper()
	b, err := (&mqttsn.Encapsulated{NodeID: node, Message: m}).AppendBinary(nil)
	if err != nil {
		f.t.Fatal(err)
	}
	f.sendRaw(b)
}

func (f *testForwarder) sendRaw(b []byte) {
	f.t.Helper()
	if _, err := f.conn.Write(b); err != nil {
		f.t.Fatal(err)
	}
}

// recv returns the next frame from the gateway: it must be wrapped.
func (f *testForwarder) recv() (node []byte, m mqttsn.Message) {
	f.t.Helper()
	_ = f.conn.SetReadDeadline(time.Now().Add(wait))
	n, err := f.conn.Read(f.buf)
	if err != nil {
		f.t.Fatalf("forwarder: %v", err)
	}
	msg, err := mqttsn.Decode(f.buf[:n])
	if err != nil {
		f.t.Fatalf("forwarder: % x: %v", f.buf[:n], err)
	}
	e, ok := msg.(*mqttsn.Encapsulated)
	if !ok {
		f.t.Fatalf("forwarder got an unwrapped %s", snclient.Describe(msg))
	}
	if e.Radius != 0 {
		f.t.Errorf("reply with radius %d, want 0", e.Radius)
	}
	return e.NodeID, e.Message
}

// expect returns the next frame, which must be a T for node.
func expectFrom[T mqttsn.Message](f *testForwarder, node []byte) T {
	f.t.Helper()
	got, m := f.recv()
	if !bytes.Equal(got, node) {
		f.t.Fatalf("frame for node %x, want %x: %s", got, node, snclient.Describe(m))
	}
	t, ok := m.(T)
	if !ok {
		f.t.Fatalf("node %x got %s", node, snclient.Describe(m))
	}
	return t
}

// SEARCHGW is answered with GWINFO carrying the gateway's GwId and no GwAdd,
// unicast to the sender (§6.1, A18).
func TestSearchGW(t *testing.T) {
	g := startGateway(t, "tcp://"+startEmbedded(t), func(c *gateway.Config) { c.GatewayID = 7 })
	c := g.client(t)
	c.Send(&mqttsn.SearchGW{Radius: 1})
	info := snclient.Expect[*mqttsn.GwInfo](t, c, wait)
	if info.GwID != 7 || len(info.GwAdd) != 0 {
		t.Fatalf("GWINFO %+v", info)
	}
}

// Two nodes behind one forwarder are two clients: each connects, publishes
// QoS 1 and receives downlink under its own node id (A17).
func TestForwarderNodes(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "fwd/#", 1)
		f := newForwarder(t, g.addr)
		nodes := [][]byte{{0x1a, 0x2b}, {0x00, 0x13, 0xa2, 0x00, 0x40, 0xa1, 0xb2, 0xc3}}
		for i, node := range nodes {
			id := string(rune('a' + i))
			f.send(node, &mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "node-" + id})
			if ack := expectFrom[*mqttsn.ConnAck](f, node); ack.ReturnCode != mqttsn.Accepted {
				t.Fatalf("node %x CONNACK %v", node, ack.ReturnCode)
			}
			f.send(node, &mqttsn.Subscribe{QoS: mqttsn.QoS1, TopicName: "fwd/cmd/" + id, MsgID: 1})
			expectFrom[*mqttsn.SubAck](f, node)
			f.send(node, &mqttsn.Register{MsgID: 2, TopicName: "fwd/up/" + id})
			ra := expectFrom[*mqttsn.RegAck](f, node)
			f.send(node, &mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: ra.TopicID, MsgID: 3, Data: []byte("from " + id)})
			if pa := expectFrom[*mqttsn.PubAck](f, node); pa.ReturnCode != mqttsn.Accepted || pa.MsgID != 3 {
				t.Fatalf("node %x PUBACK %+v", node, pa)
			}
			if m := obs.Expect(wait); m.Topic != "fwd/up/"+id || string(m.Payload) != "from "+id {
				t.Fatalf("observer got %s %q", m.Topic, m.Payload)
			}
		}
		for i, node := range nodes {
			id := string(rune('a' + i))
			obs.Publish("fwd/cmd/"+id, []byte("to "+id), 1, false)
			p := expectFrom[*mqttsn.Publish](f, node)
			if string(p.Data) != "to "+id {
				t.Fatalf("node %x got %q", node, p.Data)
			}
			f.send(node, &mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
		}
		if st := g.Stats(); st.Sessions != 2 || st.Encapsulated == 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// Malformed wrappers are dropped and counted without an answer; with
// forwarders off, even valid ones are.
func TestForwarderBadFrames(t *testing.T) {
	g := startGateway(t, "tcp://"+startEmbedded(t), nil)
	f := newForwarder(t, g.addr)
	for _, b := range [][]byte{
		{0x02, 0xfe, 0x02, 0x16},                                     // wrapper Length below 3
		{0x05, 0xfe, 0x81, 0x1a, 0x2b, 0x02, 0x16},                   // reserved Ctrl bits
		{0x05, 0xfe, 0x00, 0x1a, 0x2b, 0x04, 0x16},                   // inner message truncated
		{0x04, 0xfe, 0x00, 0x01, 0x05, 0xfe, 0x00, 0x01, 0x02, 0x16}, // nested
	} {
		f.sendRaw(b)
	}
	waitStats(t, g, "4 malformed wrappers", func(s gatewayStats) bool { return s.Malformed == 4 })
	_ = f.conn.SetReadDeadline(time.Now().Add(quiet))
	if n, err := f.conn.Read(f.buf); err == nil {
		t.Fatalf("answered a malformed wrapper: % x", f.buf[:n])
	}

	off := startGateway(t, "tcp://"+startEmbedded(t), func(c *gateway.Config) { c.AcceptForwarders = false })
	f2 := newForwarder(t, off.addr)
	f2.send([]byte{1}, &mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "off"})
	waitStats(t, off, "the refused frame counted", func(s gatewayStats) bool { return s.Malformed == 1 && s.Sessions == 0 })
}
