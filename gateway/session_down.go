package gateway

import (
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

// onDelivery starts delivering a broker message to the client. Deliveries
// are taken one at a time, only while no other gateway-initiated exchange is
// in flight, so they reach the client in the broker's order and the broker
// holds the rest (its Receive Maximum).
func (s *session) onDelivery(d delivery) {
	if d.gen != s.connGen {
		return // from a connection that has ended; the broker will deliver it again
	}
	if s.reg.Rejected(d.Topic) {
		s.dropDelivery(&d, "the client refused this topic (A13)")
		return
	}
	if wireLen(5+len(d.Payload)) > s.g.cfg.MaxDatagram || wireLen(4+len(d.Topic)) > s.g.cfg.MaxDatagram {
		// §6.5: what does not fit the network is dropped.
		s.dropDelivery(&d, "larger than the largest datagram")
		return
	}
	kind, id, confirmed, err := s.reg.Assign(d.Topic)
	if err != nil {
		s.dropDelivery(&d, err.Error())
		return
	}
	if kind == topicmap.KindNormal && !confirmed {
		// A12/§6.5: REGISTER first, PUBLISH after the client's REGACK.
		s.startOutbound(&outbound{kind: outRegister, topicID: id, msgID: s.nextID(), d: &d})
		return
	}
	s.publishDown(&d, mqttsn.TopicIDType(kind), id, false)
}

// publishDown sends a broker message as PUBLISH; QoS 1 and 2 wait for the
// client's acknowledgement before the broker is acknowledged.
func (s *session) publishDown(d *delivery, typ mqttsn.TopicIDType, id uint16, reassigned bool) {
	s.g.stats.publishDown.Add(1)
	if d.QoS == 0 {
		s.send(&mqttsn.Publish{QoS: mqttsn.QoS0, Retain: d.Retain, TopicIDType: typ, TopicID: id, Data: d.Payload})
		return
	}
	s.startOutbound(&outbound{kind: outPublish, topicType: typ, topicID: id, msgID: s.nextID(), d: d, reassigned: reassigned})
}

// dropDelivery gives up on a broker message: it is acknowledged upstream
// (the broker must not send it again) and counted.
func (s *session) dropDelivery(d *delivery, reason string) {
	s.g.stats.downlinkDropped.Add(1)
	if e := s.logDebug(); e.Enabled() {
		e.Str("topic", d.Topic).Str("reason", reason).Msg("dropped a broker message")
	}
	if d.Ack != nil {
		d.Ack()
	}
}

// startOutbound sends a gateway-initiated request and arms its retransmission.
func (s *session) startOutbound(o *outbound) {
	s.out = o
	s.sendOutbound(false)
}

// sendOutbound (re)sends the request in flight; a retransmitted PUBLISH
// carries DUP.
func (s *session) sendOutbound(again bool) {
	o := s.out
	o.retryAt = time.Now().Add(s.g.cfg.RetryInterval)
	switch o.kind {
	case outWillTopicReq:
		s.send(&mqttsn.WillTopicReq{})
	case outWillMsgReq:
		s.send(&mqttsn.WillMsgReq{})
	case outRegister:
		s.send(&mqttsn.Register{TopicID: o.topicID, MsgID: o.msgID, TopicName: o.d.Topic})
	case outPublish:
		s.send(&mqttsn.Publish{
			DUP: again, QoS: mqttsn.QoS(o.d.QoS), Retain: o.d.Retain,
			TopicIDType: o.topicType, TopicID: o.topicID, MsgID: o.msgID, Data: o.d.Payload,
		})
	case outPubRel:
		s.send(&mqttsn.PubRel{MsgID: o.msgID})
	}
}

// finishOutbound completes the exchange in flight and acknowledges its
// broker message.
func (s *session) finishOutbound() {
	o := s.out
	s.out = nil
	if o.d != nil && o.d.Ack != nil {
		o.d.Ack()
	}
}

// onRegAck answers the gateway's REGISTER. A refusal drops that message; for
// a plain subscription the gateway also unsubscribes upstream, for a
// wildcard one it remembers the topic and drops later matches (A13).
func (s *session) onRegAck(m *mqttsn.RegAck) {
	o := s.out
	if o == nil || o.kind != outRegister || o.msgID != m.MsgID {
		s.unexpected(m)
		return
	}
	if m.ReturnCode == mqttsn.Accepted {
		s.reg.Confirm(o.topicID)
		s.out = nil
		s.publishDown(o.d, mqttsn.TopicIDNormal, o.topicID, o.reassigned)
		return
	}
	topic := o.d.Topic
	s.reg.Remove(o.topicID)
	if _, plain := s.subs[topic]; plain {
		s.request(op{kind: opUnsubscribe, filter: topic, internal: true})
	} else {
		s.reg.Reject(topic)
	}
	s.out = nil
	s.dropDelivery(o.d, "the client refused the REGISTER: "+m.ReturnCode.String())
}

// onPubAck completes a QoS 1 delivery, or refuses a delivery of any QoS.
// A refusal for an invalid topic id makes the gateway forget the id and
// deliver once more under a freshly registered one (§6.6).
func (s *session) onPubAck(m *mqttsn.PubAck) {
	o := s.out
	if o == nil || o.kind != outPublish || o.msgID != m.MsgID {
		s.unexpected(m)
		return
	}
	switch {
	case m.ReturnCode == mqttsn.Accepted && o.d.QoS == 1:
		s.finishOutbound()
	case m.ReturnCode == mqttsn.RejectedInvalidTopicID && o.topicType == mqttsn.TopicIDNormal && !o.reassigned:
		s.reg.Remove(o.topicID)
		s.out = nil
		_, id, _, err := s.reg.Assign(o.d.Topic)
		if err != nil {
			s.dropDelivery(o.d, err.Error())
			return
		}
		s.startOutbound(&outbound{kind: outRegister, topicID: id, msgID: s.nextID(), d: o.d, reassigned: true})
	case m.ReturnCode != mqttsn.Accepted:
		s.out = nil
		s.dropDelivery(o.d, "the client refused the PUBLISH: "+m.ReturnCode.String())
	default:
		s.unexpected(m) // PUBACK 0x00 for a QoS 2 PUBLISH
	}
}

// onPubRec moves a QoS 2 delivery to PUBREL; a repeated PUBREC gets the
// PUBREL again.
func (s *session) onPubRec(m *mqttsn.PubRec) {
	o := s.out
	switch {
	case o != nil && o.kind == outPublish && o.d.QoS == 2 && o.msgID == m.MsgID:
		// The client owns the message now: acknowledge the broker, so
		// that an exchange cut short later (a takeover, a Will update)
		// cannot make the broker deliver it a second time.
		if o.d.Ack != nil {
			o.d.Ack()
			o.d.Ack = nil
		}
		o.kind = outPubRel
		o.retries = 0
		s.sendOutbound(false)
	case o != nil && o.kind == outPubRel && o.msgID == m.MsgID:
		s.sendOutbound(true)
	default:
		s.unexpected(m)
	}
}

// onPubComp completes a QoS 2 delivery.
func (s *session) onPubComp(m *mqttsn.PubComp) {
	o := s.out
	if o == nil || o.kind != outPubRel || o.msgID != m.MsgID {
		s.unexpected(m)
		return
	}
	s.finishOutbound()
}

// wireLen is the size of a message whose variable part is n octets.
func wireLen(n int) int {
	if n+2 <= 0xFF {
		return n + 2
	}
	return n + 4
}
