package gateway_test

import (
	"testing"

	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// A CONNECT sent right after DISCONNECT reaches a new session even while the
// old one is still closing its broker connection.
func TestReconnectRightAfterDisconnect(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		c := g.client(t)
		for range 15 {
			c.Connect("rc-1", true, 60)
			c.Disconnect()
		}
	})
}

// The broker is acknowledged for a QoS 2 delivery once the client sent
// PUBREC: a reconnect before PUBCOMP does not bring the message again.
func TestDownlinkQoS2AcknowledgedAtPubRec(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		obs := g.observer(t, "", 0)
		c := g.client(t)
		c.Connect("q2-1", false, 60)
		c.Subscribe("cmd/q2-1", mqttsn.QoS2)
		obs.Publish("cmd/q2-1", []byte("once"), 2, false)
		p := snclient.Expect[*mqttsn.Publish](t, c, wait)
		c.Send(&mqttsn.PubRec{MsgID: p.MsgID})
		snclient.Expect[*mqttsn.PubRel](t, c, wait)

		c.Connect("q2-1", false, 60) // reconnect before PUBCOMP
		obs.Publish("cmd/q2-1", []byte("next"), 2, false)
		for {
			m, err := c.Recv(wait)
			if err != nil {
				t.Fatal(err)
			}
			if r, ok := m.(*mqttsn.Register); ok {
				c.Send(&mqttsn.RegAck{TopicID: r.TopicID, MsgID: r.MsgID})
				continue
			}
			p, ok := m.(*mqttsn.Publish)
			if !ok {
				continue // a retransmitted PUBREL of the old connection
			}
			if string(p.Data) != "next" {
				t.Fatalf("delivered again after PUBREC: %s", snclient.Describe(p))
			}
			break
		}
	})
}

// A SUBSCRIBE whose short name is not a topic ("+", "#", NUL) is refused
// with SUBACK 0x02 and never reaches the broker, which would close the
// connection; the session goes on.
func TestSubscribeInvalidShortName(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startGateway(t, url, nil)
		c := g.client(t)
		c.Connect("sub-bad", true, 60)
		bad, _ := mqttsn.ShortTopicID("a+")
		c.Send(&mqttsn.Subscribe{TopicIDType: mqttsn.TopicIDShort, TopicID: bad, MsgID: 5})
		if sa := snclient.Expect[*mqttsn.SubAck](t, c, wait); sa.ReturnCode != mqttsn.RejectedInvalidTopicID {
			t.Fatalf("SUBACK %+v", sa)
		}
		c.Send(&mqttsn.Subscribe{TopicName: "a/#/b", MsgID: 6})
		if sa := snclient.Expect[*mqttsn.SubAck](t, c, wait); sa.ReturnCode != mqttsn.RejectedNotSupported {
			t.Fatalf("SUBACK for a bad filter %+v", sa)
		}
		id := c.Register("sensors/sub-bad")
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("ok")); rc != mqttsn.Accepted {
			t.Fatalf("after the refusals: %v", rc)
		}
		if st := g.Stats(); st.UpstreamLost != 0 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A Will update the broker refuses is answered with its return code and the
// session goes on with the previous Will (A6). mochi refuses a Will with an
// empty message, which is what a WILLTOPICUPD without a Will message makes.
func TestWillUpdateRefusedKeepsSession(t *testing.T) {
	g := startGateway(t, "tcp://"+startEmbedded(t), nil)
	obs := g.observer(t, "", 0)
	c := g.client(t)
	c.Connect("wu-1", true, 60)
	c.Subscribe("cmd/wu-1", mqttsn.QoS1)
	c.Send(&mqttsn.WillTopicUpd{Topic: "will/wu-1"})
	if r := snclient.Expect[*mqttsn.WillTopicResp](t, c, wait); r.ReturnCode == mqttsn.Accepted {
		t.Fatalf("WILLTOPICRESP accepted; mochi has started accepting empty Will messages, so this test needs another refusal")
	}
	obs.Publish("cmd/wu-1", []byte("alive"), 1, false)
	p := snclient.Expect[*mqttsn.Publish](t, c, wait)
	if string(p.Data) != "alive" {
		t.Fatalf("after the refused update: %+v", p)
	}
	c.Send(&mqttsn.PubAck{TopicID: p.TopicID, MsgID: p.MsgID})
	if st := g.Stats(); st.UpstreamLost != 0 || st.Sessions != 1 {
		t.Fatalf("stats %+v", st)
	}
}
