package snclient

import (
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// The exchanges below send a request and wait for its answer, failing the
// test when the answer is missing, refused (where the method returns no
// return code) or of the wrong kind. While they wait, they set aside the
// messages a gateway sends on its own initiative (PUBLISH, REGISTER,
// ADVERTISE): those can legitimately arrive before the answer, e.g. a PUBLISH
// to the client's own subscription before the PUBACK. Recv and Expect return
// them afterwards, in order, and ExpectNothing fails while any is left.

// Connect connects with CONNECT (no Will) and fails the test unless the
// gateway answers CONNACK accepted.
func (c *Client) Connect(clientID string, cleanSession bool, keepAlive uint16) {
	c.tb.Helper()
	c.Send(&mqttsn.Connect{CleanSession: cleanSession, Duration: keepAlive, ClientID: clientID})
	c.connAck(clientID)
}

// ConnectWithWill connects with a Will: CONNECT, WILLTOPICREQ, WILLTOPIC,
// WILLMSGREQ, WILLMSG, CONNACK. It fails the test unless the gateway prompts
// for both and answers CONNACK accepted.
func (c *Client) ConnectWithWill(clientID string, cleanSession bool, keepAlive uint16,
	willTopic string, willQoS mqttsn.QoS, willRetain bool, willMsg []byte) {
	c.tb.Helper()
	c.Send(&mqttsn.Connect{Will: true, CleanSession: cleanSession, Duration: keepAlive, ClientID: clientID})
	c.await("WILLTOPICREQ", isA[*mqttsn.WillTopicReq])
	c.Send(&mqttsn.WillTopic{QoS: willQoS, Retain: willRetain, Topic: willTopic})
	c.await("WILLMSGREQ", isA[*mqttsn.WillMsgReq])
	c.Send(&mqttsn.WillMsg{Message: willMsg})
	c.connAck(clientID)
}

// connAck waits for a CONNACK and fails the test unless it accepts.
func (c *Client) connAck(clientID string) {
	c.tb.Helper()
	ack := c.await("CONNACK", isA[*mqttsn.ConnAck]).(*mqttsn.ConnAck)
	if ack.ReturnCode != mqttsn.Accepted {
		c.tb.Fatalf("snclient: CONNECT %q refused: %s", clientID, Describe(ack))
	}
}

// Register registers topic with REGISTER and returns the topic id of the
// REGACK. It fails the test unless the REGACK has the same MsgId, accepts,
// and gives an id other than 0.
func (c *Client) Register(topic string) uint16 {
	c.tb.Helper()
	id := c.NextMsgID()
	c.Send(&mqttsn.Register{MsgID: id, TopicName: topic})
	ack := c.await("REGACK", func(m mqttsn.Message) bool {
		a, ok := m.(*mqttsn.RegAck)
		return ok && a.MsgID == id
	}).(*mqttsn.RegAck)
	if ack.ReturnCode != mqttsn.Accepted || ack.TopicID == 0 {
		c.tb.Fatalf("snclient: REGISTER %q refused: %s", topic, Describe(ack))
	}
	return ack.TopicID
}

// Subscribe subscribes to the topic name or filter topic (TopicIdType
// normal) with the requested qos and returns the SUBACK's topic id (0 for a
// filter with wildcards) and granted QoS. It fails the test unless the SUBACK
// has the same MsgId and accepts.
func (c *Client) Subscribe(topic string, qos mqttsn.QoS) (topicID uint16, granted mqttsn.QoS) {
	c.tb.Helper()
	id := c.NextMsgID()
	c.Send(&mqttsn.Subscribe{QoS: qos, TopicIDType: mqttsn.TopicIDNormal, MsgID: id, TopicName: topic})
	ack := c.await("SUBACK", func(m mqttsn.Message) bool {
		a, ok := m.(*mqttsn.SubAck)
		return ok && a.MsgID == id
	}).(*mqttsn.SubAck)
	if ack.ReturnCode != mqttsn.Accepted {
		c.tb.Fatalf("snclient: SUBSCRIBE %q q%s refused: %s", topic, qos, Describe(ack))
	}
	return ack.TopicID, ack.QoS
}

// PublishQoS0 sends a QoS 0 PUBLISH of payload to topicID, of type typ.
func (c *Client) PublishQoS0(topicID uint16, typ mqttsn.TopicIDType, payload []byte) {
	c.tb.Helper()
	c.Send(&mqttsn.Publish{QoS: mqttsn.QoS0, TopicIDType: typ, TopicID: topicID, Data: payload})
}

// PublishQoS1 sends a QoS 1 PUBLISH of payload to topicID, of type typ, and
// returns the return code of the PUBACK with the same MsgId. It fails the
// test if no such PUBACK arrives.
func (c *Client) PublishQoS1(topicID uint16, typ mqttsn.TopicIDType, payload []byte) mqttsn.ReturnCode {
	c.tb.Helper()
	id := c.NextMsgID()
	c.Send(&mqttsn.Publish{QoS: mqttsn.QoS1, TopicIDType: typ, TopicID: topicID, MsgID: id, Data: payload})
	ack := c.await("PUBACK", func(m mqttsn.Message) bool {
		a, ok := m.(*mqttsn.PubAck)
		return ok && a.MsgID == id
	}).(*mqttsn.PubAck)
	return ack.ReturnCode
}

// PublishQoS2 sends a QoS 2 PUBLISH of payload to topicID, of type typ, and
// completes the exchange: PUBREC, PUBREL, PUBCOMP, all with the same MsgId;
// it then returns mqttsn.Accepted. A gateway that refuses the PUBLISH answers
// PUBACK instead of PUBREC, and PublishQoS2 returns that PUBACK's return
// code. It fails the test on any other answer, or an accepting PUBACK.
func (c *Client) PublishQoS2(topicID uint16, typ mqttsn.TopicIDType, payload []byte) mqttsn.ReturnCode {
	c.tb.Helper()
	id := c.NextMsgID()
	c.Send(&mqttsn.Publish{QoS: mqttsn.QoS2, TopicIDType: typ, TopicID: topicID, MsgID: id, Data: payload})
	switch m := c.await("PUBREC", func(m mqttsn.Message) bool {
		switch a := m.(type) {
		case *mqttsn.PubRec:
			return a.MsgID == id
		case *mqttsn.PubAck:
			return a.MsgID == id
		}
		return false
	}).(type) {
	case *mqttsn.PubAck:
		if m.ReturnCode == mqttsn.Accepted {
			c.tb.Fatalf("snclient: QoS 2 PUBLISH answered by an accepting %s, want PUBREC", Describe(m))
		}
		return m.ReturnCode
	}
	c.Send(&mqttsn.PubRel{MsgID: id})
	c.await("PUBCOMP", func(m mqttsn.Message) bool {
		a, ok := m.(*mqttsn.PubComp)
		return ok && a.MsgID == id
	})
	return mqttsn.Accepted
}

// Disconnect sends DISCONNECT (without a sleep duration) and fails the test
// unless the gateway answers DISCONNECT.
func (c *Client) Disconnect() {
	c.tb.Helper()
	c.Send(&mqttsn.Disconnect{})
	c.await("DISCONNECT", isA[*mqttsn.Disconnect])
}

// isA reports whether m is a T.
func isA[T mqttsn.Message](m mqttsn.Message) bool {
	_, ok := m.(T)
	return ok
}

// await receives until a message for which answer is true arrives and
// returns it, setting aside unsolicited messages (see above). It fails the
// test on any other message, a malformed datagram, or nothing within the
// client's timeout.
func (c *Client) await(what string, answer func(mqttsn.Message) bool) mqttsn.Message {
	c.tb.Helper()
	deadline := time.Now().Add(c.timeout)
	for {
		left := time.Until(deadline)
		if left <= 0 {
			c.tb.Fatalf("snclient: no %s within %v", what, c.timeout)
		}
		m, err := c.read(left)
		if err != nil {
			c.tb.Fatalf("snclient: waiting for %s: %v", what, err)
		}
		if answer(m) {
			return m
		}
		if !unsolicited(m) {
			c.tb.Fatalf("snclient: waiting for %s, got %s", what, Describe(m))
		}
		c.pending = append(c.pending, m)
	}
}

// unsolicited reports whether m is a message a gateway sends on its own
// initiative, rather than as an answer.
func unsolicited(m mqttsn.Message) bool {
	switch m.(type) {
	case *mqttsn.Publish, *mqttsn.Register, *mqttsn.Advertise:
		return true
	}
	return false
}
