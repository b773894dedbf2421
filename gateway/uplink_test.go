package gateway_test

import (
	"bytes"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// sensor --PUBLISH q1 (registered id)--> gw --PUBLISH q1--> broker
// broker --PUBACK--> gw --PUBACK--> sensor; the observer sees it once.
func TestUplinkQoS0And1And2(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 2)
		c := g.client(t)
		c.Connect("up-1", true, 60)
		id := c.Register("sensors/t1")

		c.PublishQoS0(id, mqttsn.TopicIDNormal, []byte("q0"))
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("q1")); rc != mqttsn.Accepted {
			t.Fatalf("PUBACK %v", rc)
		}
		c.PublishQoS2(id, mqttsn.TopicIDNormal, []byte("q2"))

		for i, want := range []struct {
			payload string
			qos     byte
		}{{"q0", 0}, {"q1", 1}, {"q2", 2}} {
			m := obs.Expect(wait)
			if m.Topic != "sensors/t1" || string(m.Payload) != want.payload || m.QoS != want.qos {
				t.Errorf("message %d: got %s %q QoS %d, want sensors/t1 %q QoS %d", i, m.Topic, m.Payload, m.QoS, want.payload, want.qos)
			}
		}
		obs.ExpectNone(quiet)
	})
}

// Predefined ids and short names need no REGISTER (§6.7).
func TestUplinkPredefinedAndShortTopics(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "#", 1)
		c := g.client(t)
		c.Connect("up-2", true, 60)

		if rc := c.PublishQoS1(7, mqttsn.TopicIDPredefined, []byte("alert")); rc != mqttsn.Accepted {
			t.Fatalf("predefined: PUBACK %v", rc)
		}
		ab, _ := mqttsn.ShortTopicID("ab")
		if rc := c.PublishQoS1(ab, mqttsn.TopicIDShort, []byte("short")); rc != mqttsn.Accepted {
			t.Fatalf("short: PUBACK %v", rc)
		}
		for _, want := range []string{"sensors/alerts alert", "ab short"} {
			m := obs.Expect(wait)
			if got := m.Topic + " " + string(m.Payload); got != want {
				t.Errorf("got %q, want %q", got, want)
			}
		}
	})
}

// A4: an unknown topic id gets PUBACK 0x02 whatever the QoS, and the session stays.
func TestUplinkUnknownTopicID(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 1)
		c := g.client(t)
		c.Connect("up-3", true, 60)

		if rc := c.PublishQoS1(0x4242, mqttsn.TopicIDNormal, []byte("x")); rc != mqttsn.RejectedInvalidTopicID {
			t.Fatalf("QoS 1 to an unknown id: PUBACK %v, want %v", rc, mqttsn.RejectedInvalidTopicID)
		}
		c.Send(&mqttsn.Publish{QoS: mqttsn.QoS0, TopicID: 0x4243, Data: []byte("y")})
		ack := snclient.Expect[*mqttsn.PubAck](t, c, wait)
		if ack.TopicID != 0x4243 || ack.ReturnCode != mqttsn.RejectedInvalidTopicID {
			t.Fatalf("QoS 0 to an unknown id: %+v", ack)
		}
		if rc := c.PublishQoS1(99, mqttsn.TopicIDPredefined, []byte("z")); rc != mqttsn.RejectedInvalidTopicID {
			t.Fatalf("unknown predefined id: PUBACK %v", rc)
		}
		// QoS −1 to an unknown id is dropped without an answer (A4).
		c.Send(&mqttsn.Publish{QoS: mqttsn.QoSMinus1, TopicIDType: mqttsn.TopicIDPredefined, TopicID: 98, Data: []byte("w")})
		c.ExpectNothing(quiet)
		obs.ExpectNone(10 * time.Millisecond)

		id := c.Register("sensors/still-here")
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("ok")); rc != mqttsn.Accepted {
			t.Fatalf("after the refusals: PUBACK %v", rc)
		}
		if m := obs.Expect(wait); string(m.Payload) != "ok" {
			t.Fatalf("got %q", m.Payload)
		}
	})
}

// A5: a QoS 2 PUBLISH sent again (DUP) before PUBREL is forwarded once,
// and the retransmission is answered with PUBREC.
func TestUplinkQoS2DuplicateForwardedOnce(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 2)
		c := g.client(t)
		c.Connect("up-4", true, 60)
		id := c.Register("sensors/q2")

		p := &mqttsn.Publish{QoS: mqttsn.QoS2, TopicID: id, MsgID: 77, Data: []byte("once")}
		c.Send(p)
		rec := snclient.Expect[*mqttsn.PubRec](t, c, wait)
		if rec.MsgID != 77 {
			t.Fatalf("PUBREC for %d", rec.MsgID)
		}
		p.DUP = true
		c.Send(p)
		if rec := snclient.Expect[*mqttsn.PubRec](t, c, wait); rec.MsgID != 77 {
			t.Fatalf("second PUBREC for %d", rec.MsgID)
		}
		c.Send(&mqttsn.PubRel{MsgID: 77})
		if comp := snclient.Expect[*mqttsn.PubComp](t, c, wait); comp.MsgID != 77 {
			t.Fatalf("PUBCOMP for %d", comp.MsgID)
		}
		if m := obs.Expect(wait); string(m.Payload) != "once" || m.QoS != 2 {
			t.Fatalf("got %q QoS %d", m.Payload, m.QoS)
		}
		obs.ExpectNone(quiet)
	})
}

// Messages from one client reach the broker in the order it sent them,
// QoS 0 and 1 mixed.
func TestUplinkOrderPerClient(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "order/#", 1)
		c := g.client(t)
		c.Connect("up-5", true, 60)
		id := c.Register("order/x")
		const n = 60
		for i := range n {
			payload := []byte(fmt.Sprint(i))
			if i%3 == 0 {
				if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, payload); rc != mqttsn.Accepted {
					t.Fatalf("PUBACK %v", rc)
				}
			} else {
				c.PublishQoS0(id, mqttsn.TopicIDNormal, payload)
			}
		}
		for i := range n {
			m := obs.Expect(wait)
			if !bytes.Equal(m.Payload, []byte(fmt.Sprint(i))) {
				t.Fatalf("message %d: got %q", i, m.Payload)
			}
		}
	})
}

// A16: QoS −1 from an address without a session, to a predefined id or a
// short name, reaches the broker at QoS 0; a normal id is malformed there.
func TestQoSMinus1(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "#", 0)
		c := g.client(t)
		c.Send(&mqttsn.Publish{QoS: mqttsn.QoSMinus1, TopicIDType: mqttsn.TopicIDPredefined, TopicID: 7, Data: []byte("m1")})
		tp, _ := mqttsn.ShortTopicID("tp")
		c.Send(&mqttsn.Publish{QoS: mqttsn.QoSMinus1, TopicIDType: mqttsn.TopicIDShort, TopicID: tp, Data: []byte("m2")})
		c.Send(&mqttsn.Publish{QoS: mqttsn.QoSMinus1, TopicIDType: mqttsn.TopicIDPredefined, TopicID: 999, Data: []byte("lost")})
		for _, want := range []string{"sensors/alerts m1", "tp m2"} {
			m := obs.Expect(wait)
			if got := m.Topic + " " + string(m.Payload); got != want || m.QoS != 0 {
				t.Errorf("got %q QoS %d, want %q QoS 0", got, m.QoS, want)
			}
		}
		obs.ExpectNone(quiet)
		c.ExpectNothing(quiet)
		waitStats(t, g, "the unknown id counted", func(s gatewayStats) bool { return s.QoSMinus1Dropped == 1 && s.QoSMinus1 == 2 })
	})
}

// A16: qos_minus1.allowed_senders limits who may publish without a
// connection; others are dropped and counted.
func TestQoSMinus1AllowedSenders(t *testing.T) {
	g := startGateway(t, "tcp://"+startEmbedded(t), func(c *gateway.Config) {
		c.QoSMinus1Senders = []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}
	})
	obs := g.observer(t, "#", 0)
	c := g.client(t)
	c.Send(&mqttsn.Publish{QoS: mqttsn.QoSMinus1, TopicIDType: mqttsn.TopicIDPredefined, TopicID: 7, Data: []byte("no")})
	waitStats(t, g, "the refused QoS -1 counted", func(s gatewayStats) bool { return s.QoSMinus1Dropped == 1 })
	obs.ExpectNone(quiet)
}
