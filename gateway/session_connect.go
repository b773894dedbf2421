package gateway

import (
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// onConnect handles a CONNECT routed to this session: a new connection, a
// reconnection from the same address, a takeover from another address, the
// resumption of a persisted session, or a sleeping client's resumption (A1).
// Except for the last, whatever the session was doing is abandoned and the
// connection starts over with the CONNECT's flags (§6.3).
func (s *session) onConnect(ev evConnect) {
	m := ev.msg
	if s.state == stateConnecting && ev.peer == s.peer && !m.Will && m.CleanSession == s.cleanSession {
		// A retransmitted CONNECT while the broker has not answered yet.
		return
	}
	if s.state == stateAsleep || s.state == stateAwake {
		if ev.peer != s.peer {
			if !ev.sameOwner && !s.g.cfg.AllowAddressChange {
				s.refuseMove(ev.peer, "CONNECT")
				return
			}
			s.move(ev.peer)
		}
		s.g.claim(s, ev.owner)
		s.resume(m)
		return
	}
	s.g.claim(s, ev.owner)
	if ev.peer != s.peer {
		if s.state != stateDisconnected && s.state != stateNew {
			s.g.stats.takeovers.Add(1)
			s.logInfo().Stringer("from", s.peer).Stringer("to", ev.peer).Msg("session taken over by a new address")
		}
		s.g.bind(s, s.peer, ev.peer)
		s.peer = ev.peer
	} else if s.state == stateDisconnected {
		s.g.bind(s, s.peer, ev.peer)
	}
	if s.connected {
		// A new MQTT-SN connection is a new upstream connection: the old
		// one ends cleanly (the client is evidently alive: no Will).
		s.request(op{kind: opDisconnect})
		s.connected = false
	}
	s.epoch++
	s.retireConn()
	s.out = nil
	s.willUpdate = nil
	s.pendingWill = nil
	s.upPending = nil
	s.dropQueue() // the old connection's; the broker sends them again
	s.expireAt = time.Time{}

	s.cleanSession = m.CleanSession
	if m.CleanSession {
		s.reg.Reset()
		s.subs = nil
		s.will = nil
		s.qos2In = nil
	} else {
		// Registrations survive (A3), but the client may not remember
		// them: announce each id again before the first PUBLISH on it.
		s.reg.UnconfirmAll()
	}
	s.keepAlive = time.Duration(m.Duration) * time.Second
	s.keepAliveAt = time.Time{}
	if s.keepAlive > 0 {
		s.keepAliveAt = time.Now().Add(s.keepAliveSilence())
	}
	s.logDebug().Stringer("peer", s.peer).Bool("clean_session", m.CleanSession).Bool("will", m.Will).
		Uint16("keep_alive", m.Duration).Msg("CONNECT")
	if m.Will {
		s.state = stateWillTopic
		s.startOutbound(&outbound{kind: outWillTopicReq})
		return
	}
	s.connectUpstream()
}

// onWillTopic handles WILLTOPIC during Will prompting. An empty WILLTOPIC
// clears the Will and skips WILLMSGREQ (A22).
func (s *session) onWillTopic(m *mqttsn.WillTopic) {
	if s.state != stateWillTopic {
		s.unexpected(m)
		return
	}
	if m.Topic == "" {
		s.will = nil
		s.connectUpstream()
		return
	}
	s.pendingWill = &Will{Topic: m.Topic, QoS: byte(m.QoS), Retain: m.Retain}
	s.state = stateWillMsg
	s.startOutbound(&outbound{kind: outWillMsgReq})
}

// onWillMsg completes Will prompting. A WILLMSG at any other time (after an
// empty WILLTOPIC, say) is ignored (A22).
func (s *session) onWillMsg(m *mqttsn.WillMsg) {
	if s.state != stateWillMsg || s.pendingWill == nil {
		s.unexpected(m)
		return
	}
	w := s.pendingWill
	w.Message = m.Message
	s.will, s.pendingWill = w, nil
	s.connectUpstream()
}

// connectUpstream opens the client's upstream connection; CONNACK follows
// the broker's answer.
func (s *session) connectUpstream() {
	s.out = nil
	s.state = stateConnecting
	s.connected = true
	s.openConn(s.connectParams())
}

// willUpdateGrace is the broker session expiry of a CleanSession=1 client:
// long enough to survive the reconnect of a Will update.
const willUpdateGrace = time.Minute

func (s *session) connectParams() ConnectParams {
	p := ConnectParams{ClientID: s.clientID, CleanStart: s.cleanSession, Will: s.will}
	if !s.cleanSession {
		p.SessionExpiry = s.g.cfg.SessionExpiry
	}
	p.SessionExpiry = max(p.SessionExpiry, willUpdateGrace)
	return p
}

// keepsBrokerSession reports whether the broker session is to outlive the
// client's DISCONNECT.
func (s *session) keepsBrokerSession() bool {
	return !s.cleanSession && s.g.cfg.SessionExpiry > 0
}

// onConnectResult answers the client's CONNECT (or its Will update) with
// the broker's verdict.
func (s *session) onConnectResult(r resConnect) {
	if r.epoch != s.epoch || r.gen != s.connGen {
		return // superseded by a later CONNECT; the worker closed that connection
	}
	if s.willUpdate != nil {
		s.onWillUpdateResult(r)
		return
	}
	if s.state != stateConnecting {
		return
	}
	if r.err != nil {
		rc := returnCodeOf(r.err)
		s.logWarn().Err(r.err).Stringer("return_code", rc).Msg("broker refused the connection")
		s.g.stats.connectsRefused.Add(1)
		s.connected = false
		s.send(&mqttsn.ConnAck{ReturnCode: rc})
		s.endConnection()
		return
	}
	s.state = stateActive
	s.everActive = true
	s.g.stats.connects.Add(1)
	s.logInfo().Stringer("peer", s.peer).Bool("clean_session", s.cleanSession).
		Stringer("keep_alive", s.keepAlive).Bool("will", s.will != nil).Msg("client connected")
	s.send(&mqttsn.ConnAck{ReturnCode: mqttsn.Accepted})
}

// onDisconnect handles the client's DISCONNECT. With a sleep Duration from
// an active, asleep or awake client it puts the client to sleep (§6.14;
// Duration 0 is a plain DISCONNECT, A10). Otherwise it is answered with
// DISCONNECT and the upstream connection is closed cleanly, so the broker
// discards the Will.
func (s *session) onDisconnect(m *mqttsn.Disconnect) {
	if d, ok := m.SleepDuration(); ok {
		switch s.state {
		case stateActive, stateAsleep, stateAwake:
			s.goToSleep(d)
			return
		}
	}
	s.logInfo().Msg("client disconnected")
	s.g.stats.disconnects.Add(1)
	s.send(&mqttsn.Disconnect{})
	if s.connected {
		s.request(op{kind: opDisconnect, endSession: !s.keepsBrokerSession()})
	}
	s.endConnection()
}

// onWillTopicUpd replaces or (empty) deletes the Will. In transparent mode
// the Will lives in the broker's connection, so the gateway reconnects
// upstream with the new Will, resuming the broker session (A6), and answers
// once the broker accepted it.
func (s *session) onWillTopicUpd(m *mqttsn.WillTopicUpd) {
	prev := s.will
	if m.Topic == "" {
		s.will = nil
	} else {
		w := &Will{Topic: m.Topic, QoS: byte(m.QoS), Retain: m.Retain}
		if s.will != nil {
			w.Message = s.will.Message
		}
		s.will = w
	}
	s.updateWill(mqttsn.TypeWillTopicUpd, prev)
}

// onWillMsgUpd replaces the Will message; without a Will topic there is no
// Will to change, which is answered 0x03.
func (s *session) onWillMsgUpd(m *mqttsn.WillMsgUpd) {
	if s.will == nil {
		s.send(&mqttsn.WillMsgResp{ReturnCode: mqttsn.RejectedNotSupported})
		return
	}
	prev := s.will
	w := *s.will
	w.Message = m.Message
	s.will = &w
	s.updateWill(mqttsn.TypeWillMsgUpd, prev)
}

// updateWill schedules a reconnect upstream with the current Will, keeping
// the broker session. It starts once no gateway-initiated exchange is in
// flight (pump), so that no delivery is cut in half, and downlink delivery
// pauses until it is done. A later update supersedes one not yet answered.
func (s *session) updateWill(t mqttsn.Type, prev *Will) {
	if u := s.willUpdate; u != nil && !u.restoring {
		prev = u.prev // the Will the broker last accepted
	}
	s.willUpdate = &willUpdate{t: t, prev: prev}
}

// startWillUpdate opens the new upstream connection for a Will update.
func (s *session) startWillUpdate() {
	s.willUpdate.started = true
	p := s.connectParams()
	p.CleanStart = false
	s.openConn(p)
}

// onWillUpdateResult answers the Will update. When the broker refused the
// new Will, the session goes on with the previous Will (A6: never end the
// session for it): the client gets the refusal once the connection with
// the previous Will is back, so that what is published to it after the
// answer finds it connected; only if that cannot be restored either is the
// upstream connection lost.
func (s *session) onWillUpdateResult(r resConnect) {
	u := s.willUpdate
	s.willUpdate = nil
	if u.restoring {
		s.answerWillUpdate(u.t, u.refusal)
		if r.err != nil {
			s.onUpstreamLost(r.err)
		}
		return
	}
	if r.err == nil {
		s.answerWillUpdate(u.t, mqttsn.Accepted)
		return
	}
	s.logInfo().Err(r.err).Msg("broker refused the updated Will; keeping the previous one")
	s.will = u.prev
	s.willUpdate = &willUpdate{t: u.t, restoring: true, started: true, refusal: returnCodeOf(r.err)}
	p := s.connectParams()
	p.CleanStart = false
	s.openConn(p)
}

// answerWillUpdate answers a WILLTOPICUPD or WILLMSGUPD with rc.
func (s *session) answerWillUpdate(t mqttsn.Type, rc mqttsn.ReturnCode) {
	if t == mqttsn.TypeWillTopicUpd {
		s.send(&mqttsn.WillTopicResp{ReturnCode: rc})
	} else {
		s.send(&mqttsn.WillMsgResp{ReturnCode: rc})
	}
}
