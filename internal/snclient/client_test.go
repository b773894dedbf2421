package snclient

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

const wait = 2 * time.Second

// fakeGateway listens on the loopback address of network ("udp4" or
// "udp6") and answers each datagram it receives with the datagrams script
// returns for it. It is closed in t's cleanup.
func fakeGateway(t *testing.T, network string, script func(b []byte) [][]byte) netip.AddrPort {
	t.Helper()
	ip := net.IPv4(127, 0, 0, 1)
	if network == "udp6" {
		ip = net.IPv6loopback
	}
	conn, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		t.Skipf("no %s loopback: %v", network, err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, maxDatagram)
		for {
			n, from, err := conn.ReadFromUDPAddrPort(buf)
			if err != nil {
				return // closed
			}
			for _, r := range script(buf[:n]) {
				if _, err := conn.WriteToUDPAddrPort(r, from); err != nil {
					t.Errorf("fake gateway: %v", err)
				}
			}
		}
	})
	t.Cleanup(func() { _ = conn.Close(); wg.Wait() })
	return conn.LocalAddr().(*net.UDPAddr).AddrPort()
}

// enc encodes messages for a script.
func enc(ms ...mqttsn.Message) [][]byte {
	var out [][]byte
	for _, m := range ms {
		b, err := m.AppendBinary(nil)
		if err != nil {
			panic(err)
		}
		out = append(out, b)
	}
	return out
}

// gateway is a scripted MQTT-SN gateway that knows just enough to answer the
// exchanges. Before a REGACK it sends an unsolicited PUBLISH.
func gateway(b []byte) [][]byte {
	m, err := mqttsn.Decode(b)
	if err != nil {
		return nil
	}
	switch m := m.(type) {
	case *mqttsn.Connect:
		if m.Will {
			return enc(&mqttsn.WillTopicReq{})
		}
		return enc(&mqttsn.ConnAck{})
	case *mqttsn.WillTopic:
		return enc(&mqttsn.WillMsgReq{})
	case *mqttsn.WillMsg:
		return enc(&mqttsn.ConnAck{})
	case *mqttsn.Register:
		return enc(&mqttsn.Publish{TopicID: 3, Data: []byte("early")}, &mqttsn.RegAck{TopicID: 7, MsgID: m.MsgID})
	case *mqttsn.Subscribe:
		return enc(&mqttsn.SubAck{QoS: min(m.QoS, mqttsn.QoS1), TopicID: 9, MsgID: m.MsgID})
	case *mqttsn.Publish:
		switch {
		case m.TopicID == 99:
			return enc(&mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.RejectedInvalidTopicID})
		case m.QoS == mqttsn.QoS1:
			return enc(&mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID})
		case m.QoS == mqttsn.QoS2:
			return enc(&mqttsn.PubRec{MsgID: m.MsgID})
		}
	case *mqttsn.PubRel:
		return enc(&mqttsn.PubComp{MsgID: m.MsgID})
	case *mqttsn.Disconnect:
		return enc(&mqttsn.Disconnect{})
	case *mqttsn.PingReq:
		return [][]byte{{0x03, 0x0C, 0x00}} // a PUBLISH too short to decode
	}
	return nil
}

func TestExchanges(t *testing.T) {
	for _, network := range []string{"udp4", "udp6"} {
		t.Run(network, func(t *testing.T) {
			c := Dial(t, fakeGateway(t, network, gateway))
			if got := c.LocalAddr(); !got.Addr().IsLoopback() || got.Addr().Is6() != (network == "udp6") || got.Port() == 0 {
				t.Errorf("LocalAddr() = %v, want a %s loopback address", got, network)
			}
			c.Connect("c1", true, 60)
			c.ConnectWithWill("c1", false, 60, "will/t", mqttsn.QoS1, true, []byte("bye"))
			if id := c.Register("a/b"); id != 7 {
				t.Errorf("Register = %d, want 7", id)
			}
			if p := Expect[*mqttsn.Publish](t, c, wait); string(p.Data) != "early" {
				t.Errorf("set-aside PUBLISH = %s", Describe(p))
			}
			if id, q := c.Subscribe("s/#", mqttsn.QoS2); id != 9 || q != mqttsn.QoS1 {
				t.Errorf("Subscribe = %d, q%s; want 9, q1", id, q)
			}
			c.PublishQoS0(7, mqttsn.TopicIDNormal, []byte("q0"))
			if rc := c.PublishQoS1(7, mqttsn.TopicIDNormal, []byte("q1")); rc != mqttsn.Accepted {
				t.Errorf("PublishQoS1 = %v", rc)
			}
			if rc := c.PublishQoS1(99, mqttsn.TopicIDNormal, nil); rc != mqttsn.RejectedInvalidTopicID {
				t.Errorf("PublishQoS1 to an unknown id = %v", rc)
			}
			if rc := c.PublishQoS2(mustShort("ab"), mqttsn.TopicIDShort, []byte("q2")); rc != mqttsn.Accepted {
				t.Errorf("PublishQoS2 = %v", rc)
			}
			if rc := c.PublishQoS2(99, mqttsn.TopicIDNormal, nil); rc != mqttsn.RejectedInvalidTopicID {
				t.Errorf("PublishQoS2 to an unknown id = %v", rc)
			}
			c.Disconnect()
			c.ExpectNothing(50 * time.Millisecond)

			c.Send(&mqttsn.PingReq{})
			_, err := c.Recv(wait)
			if !errors.Is(err, mqttsn.ErrMalformed) || !strings.Contains(err.Error(), "030c00") {
				t.Errorf("Recv of a malformed datagram: %v, want ErrMalformed and its hex 030c00", err)
			}
			if _, err := c.Recv(10 * time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("Recv of nothing: %v, want os.ErrDeadlineExceeded", err)
			}
		})
	}
}

func mustShort(s string) uint16 {
	id, ok := mqttsn.ShortTopicID(s)
	if !ok {
		panic(s)
	}
	return id
}

// recordingTB records the first Fatalf and ends the goroutine, as the real
// one does.
type recordingTB struct {
	testing.TB
	fatal string
}

func (r *recordingTB) Helper() {}
func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

// fails runs fn with a recordingTB and returns what it failed with.
func fails(t *testing.T, fn func(tb testing.TB)) string {
	r := &recordingTB{TB: t}
	done := make(chan struct{})
	go func() { defer close(done); fn(r) }()
	<-done
	return r.fatal
}

func TestFailures(t *testing.T) {
	gw := fakeGateway(t, "udp4", gateway)
	for _, tc := range []struct {
		name, want string
		fn         func(tb testing.TB)
	}{
		{"not loopback", "loopback", func(tb testing.TB) {
			Dial(tb, netip.MustParseAddrPort("192.0.2.1:1884"))
		}},
		{"wrong type", "want *mqttsn.PubAck, got CONNACK{ReturnCode:", func(tb testing.TB) {
			c := Dial(tb, gw)
			c.Send(&mqttsn.Connect{ClientID: "x"})
			Expect[*mqttsn.PubAck](tb, c, wait)
		}},
		{"nothing", "want *mqttsn.ConnAck: snclient: nothing from", func(tb testing.TB) {
			Expect[*mqttsn.ConnAck](tb, Dial(tb, gw), 10*time.Millisecond)
		}},
		{"unexpected answer", "waiting for REGACK, got SUBACK", func(tb testing.TB) {
			c := Dial(tb, gw)
			c.Send(&mqttsn.Subscribe{MsgID: 1, TopicName: "x"})
			c.Register("x")
		}},
		{"something", "want nothing within 1s, got CONNACK", func(tb testing.TB) {
			c := Dial(tb, gw)
			c.Send(&mqttsn.Connect{ClientID: "x"})
			c.ExpectNothing(time.Second)
		}},
		{"set aside", "want nothing, have PUBLISH", func(tb testing.TB) {
			c := Dial(tb, gw)
			c.Register("x")
			c.ExpectNothing(time.Millisecond)
		}},
	} {
		if got := fails(t, tc.fn); !strings.Contains(got, tc.want) {
			t.Errorf("%s: failed with %q, want it to contain %q", tc.name, got, tc.want)
		}
	}
}

func TestNextMsgID(t *testing.T) {
	var c Client
	c.msgID.Store(65533)
	var got []uint16
	for range 3 {
		got = append(got, c.NextMsgID())
	}
	if got[0] != 65534 || got[1] != 65535 || got[2] != 1 {
		t.Errorf("NextMsgID = %v, want [65534 65535 1]", got)
	}
}
