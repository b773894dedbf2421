package gateway

import (
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Sleeping clients (MQTT-SN 1.2 §6.14; decisions A1, A2, A8–A10, A19).
//
// A client goes to sleep with DISCONNECT(Duration). The upstream connection
// stays open (the upstream adapter keeps it alive with MQTT PINGREQs), and
// broker messages collect in the session's queue, REGISTERs and all,
// because a gateway REGISTER is made only when its PUBLISH is sent (A19).
// PINGREQ wakes the client: the queue is delivered with full QoS handshakes
// and PINGRESP follows once every exchange of the flush has completed; then
// the client sleeps again. No message within the sleep timer means the
// client is lost.

// goToSleep answers DISCONNECT(Duration) from an active, asleep or awake
// client; a repeated one is answered again and restarts the timer (A10).
// An exchange in flight is paused and sent again at the next wake-up.
func (s *session) goToSleep(d uint16) {
	s.send(&mqttsn.Disconnect{})
	if s.state != stateAsleep {
		s.logDebug().Uint16("duration", d).Msg("client asleep")
	}
	s.state = stateAsleep
	s.sleepFor = time.Duration(float64(time.Duration(d)*time.Second) * s.g.cfg.SleepTolerance)
	s.sleepAt = time.Now().Add(s.sleepFor)
	s.keepAliveAt = time.Time{}
	s.g.stats.sleeps.Add(1)
}

// wakeUp starts a wake-up's flush: the exchange paused by the sleep first,
// then the queue (pump). An empty queue gets PINGRESP at once.
func (s *session) wakeUp() {
	s.state = stateAwake
	s.sleepAt = time.Time{}
	s.g.stats.wakeUps.Add(1)
	if s.out != nil {
		s.out.retries = 0
		s.sendOutbound(true)
	}
	// pump, run after every event, delivers the queue and sends PINGRESP.
}

// finishFlush ends a wake-up: PINGRESP, and asleep again with the sleep
// timer restarted.
func (s *session) finishFlush() {
	s.send(&mqttsn.PingResp{})
	s.state = stateAsleep
	s.sleepAt = time.Now().Add(s.sleepFor)
}

// onWake handles a PINGREQ carrying this session's ClientId from an address
// that has no session. A sleeping client may move there when the peer
// authenticated as the session's owner, or when the configuration allows
// address changes (A9); anyone else gets DISCONNECT.
func (s *session) onWake(p peer, sameOwner bool) {
	switch s.state {
	case stateActive, stateAsleep, stateAwake:
	default:
		send(p, &mqttsn.Disconnect{}) // no connection to wake: CONNECT first
		return
	}
	if p == s.peer {
		s.onMessage(inbound{from: p, msg: &mqttsn.PingReq{ClientID: s.clientID}})
		return
	}
	if (s.state != stateAsleep && s.state != stateAwake) || !(sameOwner || s.g.cfg.AllowAddressChange) {
		s.refuseMove(p, "PINGREQ")
		return
	}
	s.move(p)
	if s.state == stateAsleep {
		s.wakeUp()
	}
}

// move makes p the session's address. Nothing is sent to the old one again.
func (s *session) move(p peer) {
	s.logInfo().Stringer("from", s.peer).Stringer("to", p).Msg("sleeping client moved to a new address")
	s.g.stats.moves.Add(1)
	s.g.bind(s, s.peer, p)
	s.peer = p
}

// refuseMove answers a wake-up or CONNECT from a new address that may not
// take the session over: DISCONNECT to that address, the session stays.
func (s *session) refuseMove(p peer, what string) {
	s.logWarn().Stringer("session_peer", s.peer).Stringer("from", p).Str("message", what).
		Msg("refused a sleeping session's ClientId from a new address (not its authenticated owner, and sleep.allow_address_change is off)")
	s.g.stats.movesRefused.Add(1)
	send(p, &mqttsn.Disconnect{})
}

// resume handles CONNECT from an asleep or awake client (A1): CONNACK at
// once, flags ignored, the upstream session kept, the queue delivered.
func (s *session) resume(m *mqttsn.Connect) {
	s.state = stateActive
	s.sleepAt = time.Time{}
	s.keepAlive = time.Duration(m.Duration) * time.Second
	s.keepAliveAt = time.Time{}
	if s.keepAlive > 0 {
		s.keepAliveAt = time.Now().Add(s.keepAliveSilence())
	}
	s.g.stats.resumes.Add(1)
	s.logDebug().Msg("sleeping client resumed with CONNECT")
	s.send(&mqttsn.ConnAck{ReturnCode: mqttsn.Accepted})
	if s.out != nil {
		s.out.retries = 0
		s.sendOutbound(true)
	}
}
