package gateway_test

import (
	"fmt"
	"testing"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// A plain name subscription gets its topic id in SUBACK (A11) and the
// broker's granted QoS; downlink QoS 0, 1 and 2 follow in order.
func TestSubscribeByNameDownlinkQoS012(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-1", true, 60)
		id, granted := c.Subscribe("cmd/down-1", mqttsn.QoS2)
		if id == 0 || granted != mqttsn.QoS2 {
			t.Fatalf("SUBACK id %d granted %v", id, granted)
		}
		obs.Publish("cmd/down-1", []byte("a"), 0, false)
		obs.Publish("cmd/down-1", []byte("b"), 1, false)
		obs.Publish("cmd/down-1", []byte("c"), 2, false)

		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.QoS != mqttsn.QoS0 || p.TopicID != id || string(p.Data) != "a" {
			t.Fatalf("first: %+v", p)
		}
		p = snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.QoS != mqttsn.QoS1 || p.TopicID != id || string(p.Data) != "b" || p.MsgID == 0 {
			t.Fatalf("second: %+v", p)
		}
		c.Send(&mqttsn.PubAck{TopicID: id, MsgID: p.MsgID})
		p = snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.QoS != mqttsn.QoS2 || string(p.Data) != "c" || p.MsgID == 0 {
			t.Fatalf("third: %+v", p)
		}
		c.Send(&mqttsn.PubRec{MsgID: p.MsgID})
		rel := snclient.Expect[*mqttsn.PubRel](t, c, wait)
		if rel.MsgID != p.MsgID {
			t.Fatalf("PUBREL %d for PUBLISH %d", rel.MsgID, p.MsgID)
		}
		c.Send(&mqttsn.PubComp{MsgID: p.MsgID})
		c.ExpectNothing(quiet)
	})
}

// Downlink order: many messages at QoS 1 arrive one at a time, in the
// broker's order, each after the previous was acknowledged.
func TestDownlinkOrder(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-2", true, 60)
		id, _ := c.Subscribe("cmd/down-2", mqttsn.QoS1)
		const n = 30
		// Publish returns once mochi has fanned the message out: a message
		// fanned out at the very moment the throttled client's
		// acknowledgement returns its quota could overtake the ones mochi
		// parked (gateway/broker's OnQosComplete), and this test is about
		// the gateway's order.
		for i := range n {
			obs.Publish("cmd/down-2", []byte(fmt.Sprint(i)), 1, false)
		}
		var got []string
		var last *mqttsn.Publish
		for len(got) < n {
			p := snclient.Expect[*mqttsn.Publish](t, c, wait)
			if last != nil && p.DUP && p.MsgID == last.MsgID {
				continue // our acknowledgement crossed a retransmission
			}
			got = append(got, string(p.Data))
			if p.TopicID != id {
				t.Fatalf("%+v", p)
			}
			c.Send(&mqttsn.PubAck{TopicID: id, MsgID: p.MsgID})
			last = p
		}
		for i := range n {
			if got[i] != fmt.Sprint(i) {
				t.Fatalf("received out of order: %v", got)
			}
		}
	})
}

// A wildcard subscription gets TopicId 0 (A11); each new matching topic is
// REGISTERed before its first PUBLISH (§6.5), which waits for REGACK.
func TestWildcardSubscriptionRegistersTopics(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-3", true, 60)
		id, _ := c.Subscribe("dev/down-3/+", mqttsn.QoS1)
		if id != 0 {
			t.Fatalf("wildcard SUBACK TopicId %d, want 0", id)
		}
		obs.Publish("dev/down-3/temp", []byte("21"), 1, false)
		reg := snclient.Expect[*mqttsn.Register](t, c, wait)
		if reg.TopicName != "dev/down-3/temp" || reg.TopicID == 0 || reg.MsgID == 0 {
			t.Fatalf("REGISTER %+v", reg)
		}
		c.ExpectNothing(testRetry / 2) // no PUBLISH before REGACK (and no retransmission yet)
		c.Send(&mqttsn.RegAck{TopicID: reg.TopicID, MsgID: reg.MsgID})
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.TopicID != reg.TopicID || p.TopicIDType != mqttsn.TopicIDNormal || string(p.Data) != "21" {
			t.Fatalf("PUBLISH %+v", p)
		}
		c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})

		// The same topic again: no second REGISTER.
		obs.Publish("dev/down-3/temp", []byte("22"), 1, false)
		p = snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.TopicID != reg.TopicID || string(p.Data) != "22" {
			t.Fatalf("second PUBLISH %+v", p)
		}
		c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
	})
}

// A13: a client that refuses a gateway REGISTER for a wildcard match does
// not get that message, nor later ones on the topic; other topics still come.
func TestRegisterRefusedDropsWildcardTopic(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-4", true, 60)
		c.Subscribe("dev/down-4/#", mqttsn.QoS1)

		obs.Publish("dev/down-4/noisy", []byte("1"), 1, false)
		reg := snclient.Expect[*mqttsn.Register](t, c, wait)
		c.Send(&mqttsn.RegAck{TopicID: reg.TopicID, MsgID: reg.MsgID, ReturnCode: mqttsn.RejectedNotSupported})
		obs.Publish("dev/down-4/noisy", []byte("2"), 1, false)
		obs.Publish("dev/down-4/wanted", []byte("3"), 1, false)
		reg = snclient.Expect[*mqttsn.Register](t, c, wait)
		if reg.TopicName != "dev/down-4/wanted" {
			t.Fatalf("REGISTER for %q, want dev/down-4/wanted", reg.TopicName)
		}
		c.Send(&mqttsn.RegAck{TopicID: reg.TopicID, MsgID: reg.MsgID})
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if string(p.Data) != "3" {
			t.Fatalf("got %q, want the wanted topic's message", p.Data)
		}
		c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
		waitStats(t, g, "two dropped deliveries", func(s gatewayStats) bool { return s.DownlinkDropped == 2 })
	})
}

// Predefined and short-name subscriptions: SUBACK carries the predefined id
// and 0 for a short name (A11); PUBLISH uses the matching TopicIdType.
func TestSubscribePredefinedAndShort(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-5", true, 60)

		c.Send(&mqttsn.Subscribe{QoS: mqttsn.QoS1, TopicIDType: mqttsn.TopicIDPredefined, TopicID: 8, MsgID: 40})
		sa := snclient.Expect[*mqttsn.SubAck](t, c, wait)
		if sa.TopicID != 8 || sa.MsgID != 40 || sa.ReturnCode != mqttsn.Accepted {
			t.Fatalf("predefined SUBACK %+v", sa)
		}
		zz, _ := mqttsn.ShortTopicID("zz")
		c.Send(&mqttsn.Subscribe{QoS: mqttsn.QoS0, TopicIDType: mqttsn.TopicIDShort, TopicID: zz, MsgID: 41})
		sa = snclient.Expect[*mqttsn.SubAck](t, c, wait)
		if sa.TopicID != 0 || sa.MsgID != 41 || sa.ReturnCode != mqttsn.Accepted {
			t.Fatalf("short SUBACK %+v", sa)
		}
		c.Send(&mqttsn.Subscribe{QoS: mqttsn.QoS0, TopicIDType: mqttsn.TopicIDPredefined, TopicID: 999, MsgID: 42})
		if sa = snclient.Expect[*mqttsn.SubAck](t, c, wait); sa.ReturnCode != mqttsn.RejectedInvalidTopicID {
			t.Fatalf("unknown predefined SUBACK %+v", sa)
		}

		obs.Publish("cmd/all", []byte("p"), 0, false)
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.TopicIDType != mqttsn.TopicIDPredefined || p.TopicID != 8 || string(p.Data) != "p" {
			t.Fatalf("predefined PUBLISH %+v", p)
		}
		obs.Publish("zz", []byte("s"), 0, false)
		p = snclient.Expect[*mqttsn.Publish](t, c, wait)
		if p.TopicIDType != mqttsn.TopicIDShort || p.TopicID != zz || string(p.Data) != "s" {
			t.Fatalf("short PUBLISH %+v", p)
		}
	})
}

// UNSUBSCRIBE ends delivery.
func TestUnsubscribe(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-6", true, 60)
		c.Subscribe("cmd/down-6", mqttsn.QoS0)
		c.Send(&mqttsn.Unsubscribe{TopicName: "cmd/down-6", MsgID: 50})
		if ua := snclient.Expect[*mqttsn.UnsubAck](t, c, wait); ua.MsgID != 50 {
			t.Fatalf("UNSUBACK %+v", ua)
		}
		obs.Publish("cmd/down-6", []byte("gone"), 0, false)
		c.ExpectNothing(quiet)
	})
}

// A downlink PUBLISH the client does not acknowledge is retransmitted with
// DUP every RetryInterval; after MaxRetries the client is lost and the broker
// publishes its Will. The broker was never acknowledged, so a CleanSession=0
// reconnect gets the message again.
func TestDownlinkRetransmissionThenLost(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "will/#", 1)
		c := g.client(t)
		c.ConnectWithWill("down-7", false, 60, "will/down-7", mqttsn.QoS1, false, []byte("bye"))
		id, _ := c.Subscribe("cmd/down-7", mqttsn.QoS1)
		obs.Publish("cmd/down-7", []byte("do it"), 1, false)

		first := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if first.DUP {
			t.Fatalf("first transmission has DUP: %+v", first)
		}
		for i := range testRetries {
			p := snclient.Expect[*mqttsn.Publish](t, c, wait)
			if !p.DUP || p.MsgID != first.MsgID || string(p.Data) != "do it" {
				t.Fatalf("retransmission %d: %+v", i+1, p)
			}
		}
		if m := obs.Expect(wait); m.Topic != "will/down-7" || string(m.Payload) != "bye" {
			t.Fatalf("Will: %s %q", m.Topic, m.Payload)
		}
		waitStats(t, g, "the client lost", func(s gatewayStats) bool { return s.Lost == 1 })

		c2 := g.client(t)
		c2.Connect("down-7", false, 60)
		reg := snclient.Expect[*mqttsn.Register](t, c2, wait)
		if reg.TopicName != "cmd/down-7" || reg.TopicID != id {
			t.Fatalf("REGISTER after resume %+v (id %d before)", reg, id)
		}
		c2.Send(&mqttsn.RegAck{TopicID: reg.TopicID, MsgID: reg.MsgID})
		p := snclient.Expect[*mqttsn.Publish](t, c2, wait)
		if string(p.Data) != "do it" {
			t.Fatalf("redelivered %+v", p)
		}
		c2.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
	})
}

// The gateway's REGISTER and PUBREL are retransmitted like its PUBLISH;
// a client that never completes them is lost.
func TestRegisterAndPubRelRetransmitted(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("down-8", true, 60)
		c.Subscribe("dev/down-8/#", mqttsn.QoS2)
		obs.Publish("dev/down-8/a", []byte("x"), 2, false)

		reg := snclient.Expect[*mqttsn.Register](t, c, wait)
		again := snclient.Expect[*mqttsn.Register](t, c, wait)
		if again.MsgID != reg.MsgID || again.TopicID != reg.TopicID {
			t.Fatalf("retransmitted REGISTER %+v, first %+v", again, reg)
		}
		c.Send(&mqttsn.RegAck{TopicID: reg.TopicID, MsgID: reg.MsgID})
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		c.Send(&mqttsn.PubRec{MsgID: p.MsgID})
		for range 1 + testRetries {
			if rel := snclient.Expect[*mqttsn.PubRel](t, c, wait); rel.MsgID != p.MsgID {
				t.Fatalf("PUBREL %d for PUBLISH %d", rel.MsgID, p.MsgID)
			}
		}
		waitStats(t, g, "the client lost", func(s gatewayStats) bool { return s.Lost == 1 })
	})
}

// §6.5: a broker message that does not fit the largest datagram is not
// sent; it is acknowledged upstream and counted.
func TestDownlinkTooLargeDropped(t *testing.T) {
	g := startGateway(t, "tcp://"+startEmbedded(t), func(c *gateway.Config) { c.MaxDatagram = 100 })
	obs := g.observer(t, "", 0)
	c := g.client(t)
	c.Connect("down-9", true, 60)
	id, _ := c.Subscribe("cmd/down-9", mqttsn.QoS1)
	obs.Publish("cmd/down-9", make([]byte, 94), 1, false) // 101 octets as PUBLISH
	obs.Publish("cmd/down-9", make([]byte, 93), 1, false) // 100 octets: fits
	p := snclient.Expect[*mqttsn.Publish](t, c, wait)
	if len(p.Data) != 93 || p.TopicID != id {
		t.Fatalf("got %d octets on %d", len(p.Data), p.TopicID)
	}
	c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
	waitStats(t, g, "the large message dropped", func(s gatewayStats) bool { return s.DownlinkDropped == 1 })
}
