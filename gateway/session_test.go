package gateway_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/broker"
	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// A8: a client silent for 1.5 × its keep-alive is lost; the upstream
// connection is dropped without DISCONNECT, so the broker publishes the Will.
func TestKeepAliveExpiryPublishesWill(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "will/#", 1)
		c := g.client(t)
		c.ConnectWithWill("ka-1", true, 1, "will/ka-1", mqttsn.QoS1, false, []byte("lost"))
		start := time.Now()
		m := obs.Expect(wait)
		if m.Topic != "will/ka-1" || string(m.Payload) != "lost" {
			t.Fatalf("Will: %s %q", m.Topic, m.Payload)
		}
		if el := time.Since(start); el < time.Second {
			t.Fatalf("Will after %v, before 1.5 × keep-alive", el)
		}
		waitStats(t, g, "the client lost", func(s gatewayStats) bool { return s.Lost == 1 && s.Sessions == 0 })
	})
}

// Pinging keeps the client alive past its keep-alive, and the keep-alive
// counts from the last message: silent after the pings, the client is lost
// 1.5 × keep-alive later (the timer, armed at connect, fires early and is
// armed again for the moved deadline).
func TestPingKeepsClientAlive(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "will/#", 1)
		c := g.client(t)
		c.ConnectWithWill("ka-2", true, 1, "will/ka-2", mqttsn.QoS1, false, []byte("lost"))
		var last time.Time
		for range 5 {
			time.Sleep(500 * time.Millisecond)
			last = time.Now()
			c.Send(&mqttsn.PingReq{})
			snclient.Expect[*mqttsn.PingResp](t, c, wait)
		}
		obs.ExpectNone(10 * time.Millisecond)
		if m := obs.Expect(wait); string(m.Payload) != "lost" {
			t.Fatalf("Will: %s %q", m.Topic, m.Payload)
		}
		if el := time.Since(last); el < 1400*time.Millisecond {
			t.Fatalf("lost %v after the last PINGREQ, before 1.5 × keep-alive", el)
		}
	})
}

// DISCONNECT is answered with DISCONNECT and the Will is not published.
func TestDisconnectDiscardsWill(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "will/#", 1)
		c := g.client(t)
		c.ConnectWithWill("dc-1", true, 1, "will/dc-1", mqttsn.QoS1, false, []byte("lost"))
		c.Disconnect()
		obs.ExpectNone(2 * time.Second) // past 1.5 × keep-alive
		st := waitStats(t, g, "the session gone", func(s gatewayStats) bool { return s.Sessions == 0 })
		if st.Disconnects != 1 || st.Lost != 0 {
			t.Fatalf("stats %+v", st)
		}
		// The address has no session now: a PUBLISH gets DISCONNECT.
		c.Send(&mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: 1, MsgID: 1})
		snclient.Expect[*mqttsn.Disconnect](t, c, wait)
	})
}

// A22: an empty WILLTOPIC clears the Will: no WILLMSGREQ, CONNACK follows.
func TestEmptyWillTopicSkipsWillMsg(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		c := g.client(t)
		c.Send(&mqttsn.Connect{Will: true, CleanSession: true, Duration: 60, ClientID: "will-1"})
		snclient.Expect[*mqttsn.WillTopicReq](t, c, wait)
		c.Send(&mqttsn.WillTopic{})
		if ack := snclient.Expect[*mqttsn.ConnAck](t, c, wait); ack.ReturnCode != mqttsn.Accepted {
			t.Fatalf("CONNACK %v", ack.ReturnCode)
		}
		c.Send(&mqttsn.WillMsg{Message: []byte("ignored")})
		c.ExpectNothing(quiet)
	})
}

// Will prompts are gateway-initiated requests: retransmitted, then lost.
func TestWillTopicReqRetransmitted(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		c := g.client(t)
		c.Send(&mqttsn.Connect{Will: true, CleanSession: true, Duration: 60, ClientID: "will-2"})
		for range 1 + testRetries {
			snclient.Expect[*mqttsn.WillTopicReq](t, c, wait)
		}
		waitStats(t, g, "the client lost", func(s gatewayStats) bool { return s.Lost == 1 && s.Sessions == 0 })
	})
}

// A6: WILLTOPICUPD and WILLMSGUPD change the Will the broker holds.
func TestWillUpdate(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "will/#", 1)
		c := g.client(t)
		c.ConnectWithWill("will-3", true, 1, "will/old", mqttsn.QoS0, false, []byte("old"))
		c.Subscribe("cmd/will-3", mqttsn.QoS1)

		c.Send(&mqttsn.WillTopicUpd{QoS: mqttsn.QoS1, Topic: "will/new"})
		if r := snclient.Expect[*mqttsn.WillTopicResp](t, c, wait); r.ReturnCode != mqttsn.Accepted {
			t.Fatalf("WILLTOPICRESP %v", r.ReturnCode)
		}
		c.Send(&mqttsn.WillMsgUpd{Message: []byte("new")})
		if r := snclient.Expect[*mqttsn.WillMsgResp](t, c, wait); r.ReturnCode != mqttsn.Accepted {
			t.Fatalf("WILLMSGRESP %v", r.ReturnCode)
		}
		// The subscription survived the upstream reconnect.
		obs.Publish("cmd/will-3", []byte("still"), 1, false)
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if string(p.Data) != "still" {
			t.Fatalf("after the Will update: %+v", p)
		}
		c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})

		// Go silent: the new Will, not the old one, is published.
		m := obs.Expect(wait)
		if m.Topic != "will/new" || string(m.Payload) != "new" {
			t.Fatalf("Will: %s %q", m.Topic, m.Payload)
		}
		obs.ExpectNone(quiet)
	})
}

// A second CONNECT with the same ClientId from another address takes the
// session over; the old address gets nothing more.
func TestTakeover(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		old := g.client(t)
		old.Connect("to-1", false, 60)
		old.Subscribe("cmd/to-1", mqttsn.QoS1)

		c := g.client(t)
		c.Connect("to-1", false, 60)
		waitStats(t, g, "the takeover", func(s gatewayStats) bool { return s.Takeovers == 1 })
		obs.Publish("cmd/to-1", []byte("here"), 1, false)
		reg := snclient.Expect[*mqttsn.Register](t, c, wait)
		c.Send(&mqttsn.RegAck{TopicID: reg.TopicID, MsgID: reg.MsgID})
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		if string(p.Data) != "here" {
			t.Fatalf("new address got %+v", p)
		}
		c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
		old.ExpectNothing(quiet)
		// The old address has no session any more.
		old.Send(&mqttsn.PingReq{})
		snclient.Expect[*mqttsn.Disconnect](t, old, wait)
	})
}

// CleanSession=1 drops registrations and subscriptions of the previous
// connection; CleanSession=0 keeps registrations (A3).
func TestCleanSession(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("cs-1", false, 60)
		id := c.Register("sensors/cs-1")
		c.Subscribe("cmd/cs-1", mqttsn.QoS0)
		c.Disconnect()

		c.Connect("cs-1", false, 60)
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("kept")); rc != mqttsn.Accepted {
			t.Fatalf("registration lost over CleanSession=0: %v", rc)
		}
		c.Disconnect()

		c.Connect("cs-1", true, 60)
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("gone")); rc != mqttsn.RejectedInvalidTopicID {
			t.Fatalf("registration kept over CleanSession=1: %v", rc)
		}
		obs.Publish("cmd/cs-1", []byte("x"), 0, false)
		c.ExpectNothing(quiet)
	})
}

// Refusals: keep-alive 0 (A7) and an over-long ClientId (A15) get CONNACK
// 0x03; a full gateway gets 0x01. None of them creates a session.
func TestConnectRefusals(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, func(c *gateway.Config) { c.MaxClients = 1; c.MaxClientIDLength = 8 })
		c := g.client(t)
		c.Send(&mqttsn.Connect{CleanSession: true, Duration: 0, ClientID: "ka-zero"})
		if ack := snclient.Expect[*mqttsn.ConnAck](t, c, wait); ack.ReturnCode != mqttsn.RejectedNotSupported {
			t.Fatalf("keep-alive 0: %v", ack.ReturnCode)
		}
		c.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "much-too-long"})
		if ack := snclient.Expect[*mqttsn.ConnAck](t, c, wait); ack.ReturnCode != mqttsn.RejectedNotSupported {
			t.Fatalf("long ClientId: %v", ack.ReturnCode)
		}
		if st := g.Stats(); st.Sessions != 0 {
			t.Fatalf("refused CONNECTs left %d sessions", st.Sessions)
		}
		c.SendRaw([]byte{0x06, 0x04, 0x04, 0x01, 0x00, 0x3c}) // CONNECT with an empty ClientId (A15)
		if ack := snclient.Expect[*mqttsn.ConnAck](t, c, wait); ack.ReturnCode != mqttsn.RejectedNotSupported {
			t.Fatalf("empty ClientId: %v", ack.ReturnCode)
		}
		c.Connect("first", true, 60)
		c2 := g.client(t)
		c2.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "second"})
		if ack := snclient.Expect[*mqttsn.ConnAck](t, c2, wait); ack.ReturnCode != mqttsn.RejectedCongestion {
			t.Fatalf("gateway full: %v", ack.ReturnCode)
		}
	})
}

// Garbage is counted and dropped, without a reply and without disturbing a
// connected client; messages before CONNECT get DISCONNECT.
func TestBadInput(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 1)
		c := g.client(t)
		c.Connect("bad-1", true, 60)
		id := c.Register("sensors/bad")

		junk := g.client(t)
		for _, b := range [][]byte{{}, {0x02}, {0x01, 0x00}, {0x05, 0x18}, {0x02, 0x03}, {0x03, 0x17, 0x00}, {0x05, 0xfe, 0x01, 0x02, 0x16}} {
			junk.SendRaw(b)
			c.SendRaw(b)
		}
		junk.ExpectNothing(quiet)
		waitStats(t, g, "14 malformed datagrams", func(s gatewayStats) bool { return s.Malformed == 14 })

		junk.Send(&mqttsn.Register{MsgID: 1, TopicName: "a"})
		snclient.Expect[*mqttsn.Disconnect](t, junk, wait)
		junk.Send(&mqttsn.PubAck{TopicID: 1, MsgID: 1})
		junk.ExpectNothing(quiet)

		c.Send(&mqttsn.RegAck{TopicID: 1, MsgID: 999}) // nobody asked
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("fine")); rc != mqttsn.Accepted {
			t.Fatalf("PUBACK %v", rc)
		}
		if m := obs.Expect(wait); string(m.Payload) != "fine" {
			t.Fatalf("got %q", m.Payload)
		}
	})
}

// When the broker connection drops, the client is told with DISCONNECT.
func TestUpstreamLost(t *testing.T) {
	b, err := broker.Start("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	closed := false
	t.Cleanup(func() {
		if !closed {
			_ = b.Close()
		}
	})
	g := startGateway(t, "tcp://"+b.Addr().String(), nil)
	c := g.client(t)
	c.Connect("ul-1", true, 60)
	closed = true
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	snclient.Expect[*mqttsn.Disconnect](t, c, wait)
	waitStats(t, g, "the session gone", func(s gatewayStats) bool { return s.UpstreamLost == 1 && s.Sessions == 0 })

	// A broker that is not there: CONNACK 0x01 (A20).
	c.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "ul-2"})
	if ack := snclient.Expect[*mqttsn.ConnAck](t, c, 2*wait); ack.ReturnCode != mqttsn.RejectedCongestion {
		t.Fatalf("CONNACK %v with the broker gone", ack.ReturnCode)
	}
}

// Close ends every session: clients get DISCONNECT.
func TestGatewayCloseDisconnectsClients(t *testing.T) {
	url := "tcp://" + startEmbedded(t)
	g := startGateway(t, url, nil)
	c := g.client(t)
	c.Connect("close-1", true, 60)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.Close(ctx); err != nil {
		t.Fatal(err)
	}
	snclient.Expect[*mqttsn.Disconnect](t, c, wait)
}

func startEmbedded(t *testing.T) string {
	b, err := broker.Start("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b.Addr().String()
}
