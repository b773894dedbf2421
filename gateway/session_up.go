package gateway

import (
	"errors"
	"strings"
	"unicode/utf8"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

// onRegister assigns a topic id to a name the client will publish on (§6.5).
func (s *session) onRegister(m *mqttsn.Register) {
	id, err := s.reg.Register(m.TopicName)
	rc := mqttsn.Accepted
	switch {
	case errors.Is(err, topicmap.ErrExhausted):
		rc = mqttsn.RejectedCongestion // A3: the session stays
	case err != nil:
		rc = mqttsn.RejectedNotSupported
	}
	if err != nil {
		s.logDebug().Err(err).Str("topic", m.TopicName).Msg("REGISTER refused")
		id = 0
	}
	s.send(&mqttsn.RegAck{TopicID: id, MsgID: m.MsgID, ReturnCode: rc})
}

// onPublish forwards a client's PUBLISH. QoS 1 and 2 are acknowledged to
// the client only once the broker acknowledged them (end-to-end QoS).
func (s *session) onPublish(m *mqttsn.Publish) {
	topic, ok := s.reg.Lookup(topicmap.Kind(m.TopicIDType), m.TopicID)
	if !ok {
		// A4: unknown id → PUBACK 0x02 for QoS 0/1/2, QoS −1 dropped;
		// the session stays.
		s.g.stats.unknownTopicID.Add(1)
		if m.QoS == mqttsn.QoSMinus1 {
			return
		}
		s.send(&mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.RejectedInvalidTopicID})
		return
	}
	if m.QoS == mqttsn.QoSMinus1 {
		// From a connected client QoS −1 means QoS 0.
		m.QoS = mqttsn.QoS0
	}
	key := pendingKey{t: mqttsn.TypePublish, msgID: m.MsgID}
	switch m.QoS {
	case mqttsn.QoS1:
		if s.upPending.has(key) {
			return // a retransmission: the PUBACK follows the broker's
		}
	case mqttsn.QoS2:
		if sent, dup := s.qos2In[m.MsgID]; dup {
			// A5: forwarded once; a retransmission gets PUBREC again
			// once the broker has the message.
			if sent {
				s.send(&mqttsn.PubRec{MsgID: m.MsgID})
			}
			return
		}
		if len(s.qos2In) >= maxQoS2InFlow {
			s.send(&mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.RejectedCongestion})
			return
		}
	}
	o := op{
		kind:    opPublish,
		msg:     Message{Topic: topic, Payload: m.Data, QoS: byte(m.QoS), Retain: m.Retain},
		msgID:   m.MsgID,
		topicID: m.TopicID,
	}
	if !s.request(o) {
		if m.QoS == mqttsn.QoS0 {
			s.g.stats.uplinkDropped.Add(1)
		} else {
			s.send(&mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.RejectedCongestion})
		}
		return
	}
	switch m.QoS {
	case mqttsn.QoS1:
		s.upPending.add(key)
	case mqttsn.QoS2:
		if s.qos2In == nil {
			s.qos2In = make(map[uint16]bool)
		}
		s.qos2In[m.MsgID] = false
	}
}

func (s *session) onPublishResult(r resPublish) {
	s.outstanding.Add(-1)
	p := &r.pub
	if p.epoch != s.epoch {
		// The client reconnected meanwhile: no answer to a former
		// connection, but the QoS 2 record follows the broker's answer,
		// so that the client's retransmission and PUBREL are answered.
		if p.qos == 2 {
			if _, ok := s.qos2In[p.msgID]; ok {
				if r.err == nil {
					s.qos2In[p.msgID] = true
				} else {
					delete(s.qos2In, p.msgID)
				}
			}
		}
		return
	}
	if r.err == nil {
		s.g.stats.publishUp.Add(1)
	} else {
		s.logDebug().Err(r.err).Str("topic", p.topic).Uint8("qos", p.qos).Msg("broker did not take a PUBLISH")
	}
	switch p.qos {
	case 1:
		s.upPending.remove(pendingKey{t: mqttsn.TypePublish, msgID: p.msgID})
		s.send(&mqttsn.PubAck{TopicID: p.topicID, MsgID: p.msgID, ReturnCode: returnCode(r.err)})
	case 2:
		if r.err != nil {
			delete(s.qos2In, p.msgID)
			s.send(&mqttsn.PubAck{TopicID: p.topicID, MsgID: p.msgID, ReturnCode: returnCodeOf(r.err)})
			return
		}
		s.qos2In[p.msgID] = true
		s.send(&mqttsn.PubRec{MsgID: p.msgID})
	}
}

// onPubRel completes an uplink QoS 2 exchange; PUBCOMP answers a repeated
// PUBREL too.
func (s *session) onPubRel(m *mqttsn.PubRel) {
	if sent, ok := s.qos2In[m.MsgID]; ok && !sent {
		return // PUBREL before our PUBREC: the broker has not answered yet
	}
	delete(s.qos2In, m.MsgID)
	s.send(&mqttsn.PubComp{MsgID: m.MsgID})
}

// onSubscribe subscribes upstream; SUBACK carries the broker's granted QoS
// and the topic id per decision A11.
func (s *session) onSubscribe(m *mqttsn.Subscribe) {
	key := pendingKey{t: mqttsn.TypeSubscribe, msgID: m.MsgID}
	if s.upPending.has(key) {
		return
	}
	filter, topicID, rc := s.resolveFilter(m.TopicIDType, m.TopicName, m.TopicID, true)
	if _, known := s.subs[filter]; rc == mqttsn.Accepted && !known && len(s.subs) >= s.g.cfg.MaxTopics {
		rc = mqttsn.RejectedCongestion // subscriptions are bounded like topic ids
	}
	if rc != mqttsn.Accepted {
		s.send(&mqttsn.SubAck{MsgID: m.MsgID, ReturnCode: rc})
		return
	}
	if !s.request(op{kind: opSubscribe, filter: filter, qos: byte(m.QoS), msgID: m.MsgID, topicID: topicID}) {
		s.send(&mqttsn.SubAck{MsgID: m.MsgID, ReturnCode: mqttsn.RejectedCongestion})
		return
	}
	s.upPending.add(key)
}

func (s *session) onSubscribeResult(r resSubscribe) {
	s.outstanding.Add(-1)
	if r.op.epoch != s.epoch {
		return
	}
	s.upPending.remove(pendingKey{t: mqttsn.TypeSubscribe, msgID: r.op.msgID})
	if r.err != nil {
		s.logInfo().Err(r.err).Str("filter", r.op.filter).Msg("broker refused a SUBSCRIBE")
		s.send(&mqttsn.SubAck{MsgID: r.op.msgID, ReturnCode: returnCodeOf(r.err)})
		return
	}
	if s.subs == nil {
		s.subs = make(map[string]byte)
	}
	s.subs[r.op.filter] = r.granted
	s.reg.Unreject(r.op.filter)
	s.send(&mqttsn.SubAck{QoS: mqttsn.QoS(r.granted), TopicID: r.op.topicID, MsgID: r.op.msgID})
}

// onUnsubscribe removes a subscription upstream.
func (s *session) onUnsubscribe(m *mqttsn.Unsubscribe) {
	key := pendingKey{t: mqttsn.TypeUnsubscribe, msgID: m.MsgID}
	if s.upPending.has(key) {
		return
	}
	filter, _, rc := s.resolveFilter(m.TopicIDType, m.TopicName, m.TopicID, false)
	if rc != mqttsn.Accepted {
		// UNSUBACK has no return code: an unknown id unsubscribes nothing.
		s.send(&mqttsn.UnsubAck{MsgID: m.MsgID})
		return
	}
	if !s.request(op{kind: opUnsubscribe, filter: filter, msgID: m.MsgID}) {
		return // no way to say congestion in UNSUBACK; the client retransmits
	}
	s.upPending.add(key)
}

func (s *session) onUnsubscribeResult(r resUnsubscribe) {
	s.outstanding.Add(-1)
	if r.op.epoch != s.epoch {
		return
	}
	if r.err != nil {
		s.logInfo().Err(r.err).Str("filter", r.op.filter).Msg("broker refused an UNSUBSCRIBE")
	} else {
		delete(s.subs, r.op.filter)
	}
	if r.op.internal {
		return
	}
	s.upPending.remove(pendingKey{t: mqttsn.TypeUnsubscribe, msgID: r.op.msgID})
	s.send(&mqttsn.UnsubAck{MsgID: r.op.msgID})
}

// resolveFilter turns a SUBSCRIBE's or UNSUBSCRIBE's topic into an MQTT
// filter and the TopicId for SUBACK (A11: 0 for wildcards and short names,
// the id for a predefined topic, the assigned id for a plain name).
func (s *session) resolveFilter(typ mqttsn.TopicIDType, name string, id uint16, assign bool) (string, uint16, mqttsn.ReturnCode) {
	switch typ {
	case mqttsn.TopicIDPredefined:
		topic, ok := s.g.cfg.Predefined.Topic(id)
		if !ok {
			return "", 0, mqttsn.RejectedInvalidTopicID
		}
		return topic, id, mqttsn.Accepted
	case mqttsn.TopicIDShort:
		name := mqttsn.ShortTopic(id)
		if _, ok := topicmap.ShortID(name); !ok {
			return "", 0, mqttsn.RejectedInvalidTopicID // "+", "#" or NUL: not a topic
		}
		return name, 0, mqttsn.Accepted
	}
	if !validFilter(name) {
		return "", 0, mqttsn.RejectedNotSupported
	}
	if strings.ContainsAny(name, "+#") || !assign {
		return name, 0, mqttsn.Accepted
	}
	if _, short := topicmap.ShortID(name); short {
		return name, 0, mqttsn.Accepted // published to the client in the short form (A12)
	}
	tid, err := s.reg.Register(name)
	switch {
	case errors.Is(err, topicmap.ErrExhausted):
		return "", 0, mqttsn.RejectedCongestion
	case err != nil:
		return "", 0, mqttsn.RejectedNotSupported
	}
	return name, tid, mqttsn.Accepted
}

// validFilter checks an MQTT topic filter: non-empty, "#" only as the last
// level, "+" and "#" only as whole levels.
func validFilter(f string) bool {
	if f == "" || strings.ContainsRune(f, 0) || !utf8.ValidString(f) {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		switch {
		case l == "#" && i != len(levels)-1:
			return false
		case l != "#" && l != "+" && strings.ContainsAny(l, "+#"):
			return false
		}
	}
	return true
}

// returnCode is Accepted for nil, else the error's return code (A20).
func returnCode(err error) mqttsn.ReturnCode {
	if err == nil {
		return mqttsn.Accepted
	}
	return returnCodeOf(err)
}
