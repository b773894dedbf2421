package main

import (
	"errors"
	"math/rand/v2"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// A sensor is one simulated device: a sans-IO state machine driven by its
// own goroutine (see driver.go), which feeds it the messages its link
// received (handle) and wakes it when its next deadline passes (tick).
// Everything a sensor sends goes through its link.
//
//	        ┌──────── backoff ◄────────── lost (retries exhausted, DISCONNECT from the gateway)
//	        ▼                                        ▲
//	      idle ──CONNECT──► connecting ──CONNACK──► setup (REGISTER, SUBSCRIBE) ──► active
//	                            ▲                                                   │ awake time over
//	                            │ CONNECT (resume, to publish)          DISCONNECT(Duration)
//	                            │                                                   ▼
//	      waking ◄──PINGREQ(ClientId)── asleep ◄──────────DISCONNECT───────────── sleeping
//	        │                             ▲
//	        └───────────PINGRESP──────────┘ (nothing to publish)
//
// Retransmission (§6.13): every request the sensor sends is repeated after
// the group's retry_interval, with DUP set on a PUBLISH, up to max_retries
// times; then the sensor considers the connection lost, counts a QoS 1/2
// message it was sending as failed, and connects again after a back-off
// that doubles from reconnect_min to reconnect_max.
//
// Refusals (§5.3.10): a REGACK or SUBACK with "rejected: congestion" makes
// the sensor send that request again after a back-off (see refusal); any
// other return code gives that request up until the next connection (a
// refused subscription: the sensor goes active without it). Neither ends
// the connection. Each refusal is counted as rejected.
//
// What survives a reconnect (§6.3): with clean_session = false the
// gateway keeps the session, so the sensor keeps the state of its QoS 2
// exchanges in both directions: an uplink publication the gateway PUBREC'd
// goes on with PUBREL, and a command whose PUBREC it sent is still known
// when the gateway sends it again. With clean_session = true both sides
// start afresh; see retryLater for the uplink QoS 2 case.
//
// Readings that fall due while the sensor cannot publish (not connected,
// or far behind its schedule) are not sent late: they are counted as
// skipped. A sleeping sensor takes no readings while it sleeps.

// state is where a sensor is in its life cycle.
type state uint8

const (
	stIdle       state = iota // not connected; tries at phaseEnd
	stConnecting              // CONNECT sent, waiting for the Will prompts and CONNACK
	stSetup                   // REGISTER and SUBSCRIBE
	stActive                  // connected: publishes, answers, pings
	stSleeping                // DISCONNECT(Duration) sent
	stAsleep                  // wakes at phaseEnd
	stWaking                  // PINGREQ(ClientId) sent, taking buffered messages until PINGRESP
	stLeaving                 // final DISCONNECT sent
	stDone                    // finished
)

var stateNames = [...]string{"idle", "connecting", "setup", "active", "sleeping", "asleep", "waking", "leaving", "done"}

// String returns the state's name.
func (s state) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "invalid"
}

// connected reports whether the gateway holds a session for a sensor in s.
func (s state) connected() bool {
	return s >= stSetup && s <= stLeaving
}

// opKind is the kind of control request a sensor waits an answer to.
type opKind uint8

const (
	opNone opKind = iota
	opConnect
	opRegister
	opSubscribe
	opPing
	opSleep
	opWake
	opLeave
)

// ctlOp is the one control request in flight (§6: one at a time).
type ctlOp struct {
	kind     opKind
	msgID    uint16
	pkt      []byte
	deadline time.Time
	retries  int
}

// pubOp is one QoS 1/2 publication in flight.
type pubOp struct {
	seq      uint64
	msgID    uint16
	payload  []byte
	stage    uint8     // 0: waiting for PUBACK/PUBREC; 1: PUBREL sent, waiting for PUBCOMP
	waiting  bool      // not on the wire: waits for a topic id or a connection
	dup      bool      // sent before: the next PUBLISH carries DUP
	deadline time.Time // next retransmission, or resend after congestion
	retries  int
}

// link is how a sensor reaches the gateway.
type link interface {
	// send writes one datagram.
	send(b []byte) error
	// redial prepares a fresh association before a CONNECT that follows a
	// lost connection (a new DTLS handshake); plain UDP keeps its socket.
	redial() error
	// close releases the socket; the link's reader stops.
	close()
}

// refusal is the state of a request the gateway refused with a return
// code (REGISTER, SUBSCRIBE). Congestion (0x01) means "wait and try again":
// the request goes out again at at, after a back-off that doubles from
// retry_interval up to reconnect_max. Any other code means the gateway
// will not do it: the request is given up until the next connection.
type refusal struct {
	at     time.Time     // not before; zero: now
	wait   time.Duration // the next back-off
	gaveUp bool
}

// refused records return code rc at now.
func (r *refusal) refused(now time.Time, rc mqttsn.ReturnCode, g *Group) {
	if rc != mqttsn.RejectedCongestion {
		r.gaveUp = true
		return
	}
	if r.wait <= 0 {
		r.wait = g.RetryInterval
	}
	r.at = now.Add(r.wait)
	r.wait = min(2*r.wait, max(g.ReconnectMax, g.RetryInterval))
}

// answered ends the REGISTER or SUBSCRIBE exchange (kind) that an answer
// with msgID and rc closes, and reports whether the gateway accepted the
// request. An answer to no such exchange is counted as unexpected; a
// refusal is counted and recorded in ref for the retry.
func (s *sensor) answered(now time.Time, kind opKind, msgID uint16, rc mqttsn.ReturnCode, ref *refusal) bool {
	if s.ctl.kind != kind || msgID != s.ctl.msgID {
		s.env.fleet.unexpected.Add(1)
		return false
	}
	s.ctl = ctlOp{}
	if rc != mqttsn.Accepted {
		s.up.rejected.Add(1)
		ref.refused(now, rc, s.g)
		return false
	}
	*ref = refusal{}
	return true
}

// ready reports whether the request may go out at now.
func (r *refusal) ready(now time.Time) bool { return !r.gaveUp && !now.Before(r.at) }

// env is what a sensor shares with the rest of the run.
type env struct {
	clk   clock
	fleet *fleetCounters
	// nonce is the run's nonce, in every uplink payload (see payload.go);
	// cmdNonce the one in its commands' payloads (nonce + "/cmd"), so that
	// neither direction's messages count as the other's.
	nonce, cmdNonce string
	// upLat is the uplink latency by the publications' QoS (the observer
	// records it); downLat the command latency by command QoS (sensors).
	upLat, downLat *latencies
}

// newEnv returns the environment of a run with the nonce nonce.
func newEnv(nonce string) *env {
	return &env{clk: newClock(), fleet: new(fleetCounters), nonce: nonce, cmdNonce: nonce + "/cmd", upLat: newLatencies(), downLat: newLatencies()}
}

// sensor is one simulated device. Only its driver goroutine touches it.
type sensor struct {
	g        *Group
	env      *env
	link     link
	clientID string
	prefix   string // payload prefix
	topic    string // topic name (registered) or short name
	cmdTopic string
	will     string
	interval time.Duration

	up   *uplinkCounters
	seen *uplinkSeen
	down *downlink
	rng  *rand.Rand

	state      state
	ctl        ctlOp
	regRef     refusal // the REGISTER of the publish topic
	subRef     refusal // the SUBSCRIBE of the command topic
	pubs       []*pubOp
	spare      []*pubOp
	nextID     uint16
	seq        uint64
	topicID    uint16
	topicOK    bool
	cmdID      uint16
	cmdOK      bool
	registered map[uint16]bool // topic ids the gateway REGISTERed or SUBACKed
	rx2        map[uint16]bool // QoS 2 downlink MsgIds waiting for PUBREL

	// connects and connectFailures are the sensor's own counts (the
	// fleet's add up all sensors); written by its goroutine, read by the
	// report after it stopped.
	connects, connectFailures uint64

	nextPub    time.Time
	lastTx     time.Time
	phaseEnd   time.Time // idle: next connect; active: end of the awake time; asleep: wake-up
	awakeEnd   time.Time // sleeping groups: the end of the last awake time
	backoff    time.Duration
	resuming   bool
	stopping   bool // no new publications
	leaving    bool // shutting down
	value      float64
	unfinished []uint64 // seqs of QoS 1/2 publications in flight at shutdown

	buf    []byte
	pbuf   []byte
	pubMsg mqttsn.Publish
}

// newSensor returns sensor number n of group g, not started.
func newSensor(g *Group, e *env, n int, l link, seed uint64) *sensor {
	id := expand(g.ClientID, n, g.IDWidth, "")
	s := &sensor{
		g:          g,
		env:        e,
		link:       l,
		clientID:   id,
		prefix:     payloadPrefix(id, e.nonce),
		topic:      expand(g.Topic, n, g.IDWidth, id),
		cmdTopic:   expand(g.CommandTopic, n, g.IDWidth, id),
		interval:   g.PublishInterval(),
		up:         new(uplinkCounters),
		seen:       new(uplinkSeen),
		down:       new(downlink),
		rng:        rand.New(rand.NewPCG(seed, uint64(n))),
		registered: map[uint16]bool{},
		rx2:        map[uint16]bool{},
		backoff:    g.ReconnectMin,
		value:      20,
		buf:        make([]byte, 0, 256),
	}
	if g.WillTopic != "" {
		s.will = expand(g.WillTopic, n, g.IDWidth, id)
	}
	s.value += s.rng.Float64() * 5
	return s
}

// start begins the sensor's life at at (the ramp's slot for it).
func (s *sensor) start(now, at time.Time) {
	s.phaseEnd = at
	s.nextPub = at
	if s.interval > 0 {
		s.nextPub = at.Add(time.Duration(s.rng.Int64N(int64(s.interval))))
	}
	if s.g.QoS == mqttsn.QoSMinus1 {
		// QoS -1: no connection; the sensor publishes from the start.
		if err := s.link.redial(); err != nil {
			s.connectFailed()
			s.setState(stDone)
			return
		}
		s.topicID, s.topicOK = s.fixedTopicID(s.g.TopicType, s.topic, s.g.TopicID)
		s.setState(stActive)
	}
	s.pump(now)
}

// fixedTopicID returns the id of a predefined or short topic.
func (s *sensor) fixedTopicID(t TopicType, name string, id uint16) (uint16, bool) {
	switch t {
	case TopicPredefined:
		return id, true
	case TopicShort:
		return mqttsn.ShortTopicID(name)
	}
	return 0, false
}

// setState moves to st, keeping the count of connected sensors.
func (s *sensor) setState(st state) {
	if s.g.QoS != mqttsn.QoSMinus1 {
		was, is := s.state.connected(), st.connected()
		switch {
		case is && !was:
			s.env.fleet.connected.Add(1)
		case was && !is:
			s.env.fleet.connected.Add(-1)
		}
	}
	s.state = st
}

// connectFailed counts a CONNECT that failed (refused, unanswered, not
// encodable) or an association that could not be set up.
func (s *sensor) connectFailed() {
	s.connectFailures++
	s.env.fleet.connectFailures.Add(1)
}

// stopUplink ends new publications; what is in flight finishes. Readings
// that fell due while the sensor could not publish are counted skipped.
func (s *sensor) stopUplink(now time.Time) {
	if s.state != stActive || !s.topicOK {
		s.skipMissed(now, false)
	}
	s.stopping = true
	s.pump(now)
}

// skipMissed counts the readings that fell due from nextPub up to now while
// the sensor could not publish, and moves nextPub on. For a sleeping group
// only readings of an awake time count: when the last one ended before
// now, those up to its end. publishNow: the sensor publishes one reading
// at once, which is not counted.
func (s *sensor) skipMissed(now time.Time, publishNow bool) {
	if !s.g.Publishes || s.interval <= 0 || s.stopping || s.g.QoS == mqttsn.QoSMinus1 {
		return
	}
	end := now
	if s.g.Sleep > 0 && s.awakeEnd.Before(now) {
		end, publishNow = s.awakeEnd, false // zero before the first awake time: nothing was due
	}
	d := end.Sub(s.nextPub)
	var n uint64
	switch {
	case publishNow && d > s.interval:
		n = uint64(d / s.interval) // due at nextPub, +interval, … up to now; the last one goes now
	case !publishNow && d >= 0:
		n = uint64(d/s.interval) + 1
		if end.Equal(s.awakeEnd) && d%s.interval == 0 {
			n-- // one due exactly at the end of the awake time is not (pubDue)
		}
	}
	if n > 0 {
		s.up.skipped.Add(n)
		s.nextPub = now
	}
}

// shutdown ends the sensor: QoS 1/2 publications still in flight are
// recorded as unfinished, and a connected sensor says DISCONNECT.
func (s *sensor) shutdown(now time.Time) {
	s.stopping, s.leaving = true, true
	s.unfinish()
	if s.g.QoS == mqttsn.QoSMinus1 || !s.state.connected() {
		s.setState(stDone)
		return
	}
	s.ctl = ctlOp{}
	s.setState(stLeaving)
	s.request(now, opLeave, &mqttsn.Disconnect{}, 0)
}

// abandon ends the sensor at once, without a word to the gateway: the
// run's hard stop. QoS 1/2 publications in flight are recorded as
// unfinished.
func (s *sensor) abandon() {
	s.stopping, s.leaving = true, true
	s.unfinish()
	s.ctl = ctlOp{}
	s.setState(stDone)
}

// unfinish moves the publications in flight to unfinished.
func (s *sensor) unfinish() {
	for _, p := range s.pubs {
		s.unfinished = append(s.unfinished, p.seq)
		s.up.inFlight.Add(-1)
	}
	s.pubs = s.pubs[:0]
}

// giveUp ends a sensor that cannot go on because a message it must send
// does not encode (a request of kind): the error is counted, what it had
// in flight fails, and a connected sensor says DISCONNECT without waiting.
// Retrying would fail the same way.
func (s *sensor) giveUp(now time.Time, kind opKind) {
	s.env.fleet.encodeErrors.Add(1)
	if kind == opConnect {
		s.connectFailed()
	}
	for i := len(s.pubs) - 1; i >= 0; i-- {
		s.failPub(i)
	}
	s.ctl = ctlOp{}
	if s.state.connected() && kind != opLeave {
		s.reply(now, &mqttsn.Disconnect{})
	}
	s.stopping, s.leaving = true, true
	s.setState(stDone)
}

// done reports whether the sensor has finished.
func (s *sensor) done() bool { return s.state == stDone }

// nextDeadline returns when tick must run next (zero: nothing scheduled).
func (s *sensor) nextDeadline() time.Time {
	var d time.Time
	at := func(t time.Time) {
		if !t.IsZero() && (d.IsZero() || t.Before(d)) {
			d = t
		}
	}
	if s.ctl.kind != opNone {
		at(s.ctl.deadline)
	}
	switch s.state {
	case stIdle, stAsleep:
		at(s.phaseEnd)
	case stActive, stSetup:
		if s.ctl.kind == opNone && s.regPending() {
			at(s.regRef.at)
		}
		if s.state == stSetup && s.ctl.kind == opNone && s.subPending() {
			at(s.subRef.at)
		}
		for _, p := range s.pubs {
			at(p.deadline)
		}
		if s.state == stActive && s.canPublish() && s.pubDue() {
			at(s.nextPub)
		}
		if s.state == stActive && s.g.Sleep > 0 && len(s.pubs) == 0 && s.ctl.kind == opNone {
			at(s.phaseEnd)
		}
		if s.g.QoS != mqttsn.QoSMinus1 && s.g.KeepAlive > 0 && s.ctl.kind == opNone {
			at(s.lastTx.Add(s.g.KeepAlive))
		}
	}
	return d
}

func (s *sensor) qos0() bool { return s.g.QoS == mqttsn.QoS0 || s.g.QoS == mqttsn.QoSMinus1 }

func (s *sensor) canPublish() bool { return s.g.Publishes && !s.stopping && s.topicOK }

// regPending reports whether the publish topic still needs a REGISTER that
// has not been given up.
func (s *sensor) regPending() bool {
	return s.g.Topic != "" && s.g.TopicType == TopicRegistered && !s.topicOK && s.g.QoS != mqttsn.QoSMinus1 && !s.regRef.gaveUp
}

// subPending reports whether the command topic still needs a SUBSCRIBE
// that has not been given up.
func (s *sensor) subPending() bool {
	return s.cmdTopic != "" && !s.cmdOK && !s.subRef.gaveUp
}

// tick handles every deadline that has passed.
func (s *sensor) tick(now time.Time) {
	if s.ctl.kind != opNone && !now.Before(s.ctl.deadline) {
		if s.ctl.retries >= s.g.MaxRetries {
			s.ctlFailed(now)
		} else {
			s.ctl.retries++
			s.ctl.deadline = now.Add(s.g.RetryInterval)
			s.write(now, s.ctl.pkt)
		}
	}
	if s.state == stActive || s.state == stSetup {
		for i := 0; i < len(s.pubs); i++ {
			p := s.pubs[i]
			if p.deadline.IsZero() || now.Before(p.deadline) {
				continue
			}
			if p.waiting { // resend after congestion
				p.deadline = time.Time{}
				s.sendPub(now, p)
				continue
			}
			if p.retries >= s.g.MaxRetries {
				s.failPub(i)
				s.lost(now)
				return
			}
			p.retries++
			p.dup = true
			s.up.retrans.Add(1)
			s.sendPub(now, p)
		}
	}
	s.pump(now)
}

// ctlFailed handles a control request whose retries are exhausted.
func (s *sensor) ctlFailed(now time.Time) {
	kind := s.ctl.kind
	s.ctl = ctlOp{}
	switch kind {
	case opConnect:
		s.connectFailed()
		s.retryLater(now)
	case opLeave:
		s.setState(stDone)
	default:
		s.lost(now)
	}
}

// lost handles a connection the sensor considers lost: it connects again
// after a back-off, resending what it had in flight (DUP) once connected.
func (s *sensor) lost(now time.Time) {
	s.ctl = ctlOp{}
	if s.leaving {
		s.setState(stDone)
		return
	}
	if s.state.connected() || s.state == stConnecting {
		s.env.fleet.reconnects.Add(1)
	}
	s.retryLater(now)
}

// retryLater goes back to idle for the current back-off, and doubles it.
//
// What the sensor keeps for the next connection depends on clean_session.
// With false the gateway keeps the session (docs/spec-interpretation.md,
// A5: its record of the QoS 2 exchanges survives a reconnect), so the
// sensor keeps its side too: a publication the gateway PUBREC'd goes on
// with PUBREL, one it had not goes out again as PUBLISH (DUP, same MsgId),
// and the QoS 2 commands waiting for PUBREL (rx2) and the topic ids the
// gateway registered stay known. With true the new session knows nothing
// of them: a publication past PUBREC is settled and counted acknowledged,
// because this gateway sends PUBREC only once the broker has the message
// ("End-to-end acknowledgement"), and a PUBREL in a new session would
// complete nothing; publications before PUBREC go out again as PUBLISH
// (DUP), and rx2 and the registered ids are forgotten.
func (s *sensor) retryLater(now time.Time) {
	if s.leaving {
		s.setState(stDone)
		return
	}
	s.setState(stIdle)
	s.resuming = false
	if s.g.TopicType == TopicRegistered {
		s.topicOK = false
	}
	s.cmdOK = false
	s.regRef, s.subRef = refusal{}, refusal{}
	s.down.ready.Store(false)
	persist := !s.g.CleanSession
	if !persist {
		clear(s.registered)
		clear(s.rx2)
	}
	for i := 0; i < len(s.pubs); {
		p := s.pubs[i]
		if p.stage == 1 && !persist {
			s.up.acked.Add(1)
			s.removePub(i)
			continue
		}
		if !p.waiting && p.stage == 0 {
			p.dup = true
		}
		p.waiting, p.deadline, p.retries = true, time.Time{}, 0
		i++
	}
	d := s.backoff/2 + time.Duration(s.rng.Int64N(int64(s.backoff/2)+1))
	s.phaseEnd = now.Add(d)
	s.backoff = min(2*s.backoff, s.g.ReconnectMax)
}

// pump does whatever the state allows now: connect, set up, publish, sleep,
// wake, ping.
func (s *sensor) pump(now time.Time) {
	switch s.state {
	case stIdle:
		if !now.Before(s.phaseEnd) && !s.leaving {
			s.connect(now, false)
		}
	case stAsleep:
		if !now.Before(s.phaseEnd) {
			s.env.fleet.wakeUps.Add(1)
			s.setState(stWaking)
			s.request(now, opWake, &mqttsn.PingReq{ClientID: s.clientID}, 0)
		}
	case stSetup:
		s.setup(now)
	case stActive:
		s.pumpActive(now)
	}
}

// connect sends CONNECT; resume is a sleeping sensor becoming active.
func (s *sensor) connect(now time.Time, resume bool) {
	if !resume {
		if err := s.link.redial(); err != nil {
			if !errors.Is(err, errStopped) {
				s.connectFailed()
			}
			s.retryLater(now)
			return
		}
	}
	s.resuming = resume
	if !resume {
		s.setState(stConnecting)
	} else {
		s.state = stConnecting // still connected as far as the count goes
		s.env.fleet.connected.Add(-1)
	}
	s.request(now, opConnect, &mqttsn.Connect{
		Will:         s.will != "",
		CleanSession: s.g.CleanSession,
		Duration:     uint16(s.g.KeepAlive / time.Second),
		ClientID:     s.clientID,
	}, 0)
}

// setup registers the topic and subscribes, one request at a time, then
// becomes active. A request the gateway refused with congestion waits for
// its back-off (the sensor pings meanwhile); one it refused otherwise is
// given up.
func (s *sensor) setup(now time.Time) {
	if s.ctl.kind != opNone {
		return
	}
	waiting := false
	if s.g.Topic != "" && !s.topicOK {
		if s.g.TopicType != TopicRegistered {
			s.topicID, s.topicOK = s.fixedTopicID(s.g.TopicType, s.topic, s.g.TopicID)
		} else if s.regPending() {
			if s.regRef.ready(now) {
				s.register(now)
				return
			}
			waiting = true
		}
	}
	if s.subPending() {
		if s.subRef.ready(now) {
			s.subscribe(now)
			return
		}
		waiting = true
	}
	if waiting {
		if s.g.KeepAlive > 0 && !now.Before(s.lastTx.Add(s.g.KeepAlive)) {
			s.request(now, opPing, &mqttsn.PingReq{}, 0)
		}
		return
	}
	s.becomeActive(now, false)
}

// subscribe sends SUBSCRIBE for the command topic.
func (s *sensor) subscribe(now time.Time) {
	sub := &mqttsn.Subscribe{QoS: s.g.CommandQoS, TopicIDType: s.g.CommandTopicType.wire(), MsgID: s.newID()}
	switch s.g.CommandTopicType {
	case TopicRegistered:
		sub.TopicName = s.cmdTopic
	case TopicPredefined:
		sub.TopicID = s.g.CommandTopicID
	case TopicShort:
		sub.TopicID, _ = mqttsn.ShortTopicID(s.cmdTopic)
	}
	s.request(now, opSubscribe, sub, sub.MsgID)
}

// becomeActive starts (or resumes) the active phase; afterSleep: the
// sensor resumes from a planned sleep, in which no reading was due.
func (s *sensor) becomeActive(now time.Time, afterSleep bool) {
	if !afterSleep {
		s.skipMissed(now, true)
	}
	s.setState(stActive)
	s.backoff = s.g.ReconnectMin
	if s.g.Sleep > 0 {
		s.phaseEnd = now.Add(s.g.Awake)
		s.awakeEnd = s.phaseEnd
	}
	if s.nextPub.Before(now.Add(-s.interval)) {
		s.nextPub = now
	}
	for _, p := range s.pubs {
		if p.waiting && p.deadline.IsZero() {
			s.sendPub(now, p)
		}
	}
	s.pumpActive(now)
}

// pumpActive publishes what is due, then sleeps, pings or leaves.
func (s *sensor) pumpActive(now time.Time) {
	if s.ctl.kind == opNone && s.regPending() && s.regRef.ready(now) {
		s.register(now)
		if s.state != stActive {
			return
		}
	}
	if s.canPublish() {
		for range 64 { // catch up at most this many at once
			if now.Before(s.nextPub) || !s.pubDue() {
				break
			}
			s.publish(now)
			if s.state != stActive {
				return
			}
			next := s.nextPub.Add(s.jittered(s.interval))
			if s.interval == 0 {
				next = now // back to back
			} else if behind := now.Sub(next); behind > 10*s.interval {
				s.up.skipped.Add(uint64(behind / s.interval)) // too far behind: do not burst
				next = now
			}
			s.nextPub = next
		}
	}
	if s.ctl.kind != opNone || s.state != stActive {
		return
	}
	if s.g.Sleep > 0 && !now.Before(s.phaseEnd) && len(s.pubs) == 0 {
		d := (s.g.Sleep + s.g.Jitter + time.Second - 1) / time.Second // the parser keeps it ≤ 65535
		s.setState(stSleeping)
		s.request(now, opSleep, &mqttsn.Disconnect{HasDuration: true, Duration: uint16(min(d, 65535))}, 0)
		return
	}
	if s.g.QoS != mqttsn.QoSMinus1 && s.g.KeepAlive > 0 && !now.Before(s.lastTx.Add(s.g.KeepAlive)) {
		s.request(now, opPing, &mqttsn.PingReq{}, 0)
	}
}

// register sends REGISTER for the group's topic.
func (s *sensor) register(now time.Time) {
	id := s.newID()
	s.request(now, opRegister, &mqttsn.Register{MsgID: id, TopicName: s.topic}, id)
}

// pubDue reports whether the window and the awake time allow the
// publication scheduled at nextPub.
func (s *sensor) pubDue() bool {
	if !s.qos0() && len(s.pubs) >= s.g.Window {
		return false
	}
	return s.g.Sleep == 0 || s.nextPub.Before(s.phaseEnd)
}

// jittered returns d moved by up to ±jitter, never below 0.
func (s *sensor) jittered(d time.Duration) time.Duration {
	if s.g.Jitter <= 0 {
		return d
	}
	d += time.Duration(s.rng.Int64N(int64(2*s.g.Jitter)+1)) - s.g.Jitter
	return max(d, 0)
}

// publish sends the next reading. Its seq is announced (up.maxSeq) before
// it leaves, so that the observer never sees a seq it does not know of.
// A QoS 0/-1 reading that could not be written gives its seq to the next
// one, so that the seqs sent are always 1..seq.
func (s *sensor) publish(now time.Time) {
	seq := s.seq + 1
	s.up.maxSeq.Store(seq)
	s.value += s.rng.NormFloat64() * 0.05
	ts := s.env.clk.micros(now)
	if s.qos0() {
		s.pbuf = appendPayload(s.pbuf[:0], s.prefix, seq, ts, s.value, true, s.g.PayloadSize)
		s.pubMsg = mqttsn.Publish{QoS: s.g.QoS, Retain: s.g.Retain, TopicIDType: s.g.TopicType.wire(), TopicID: s.topicID, Data: s.pbuf}
		var err error
		if s.buf, err = s.pubMsg.AppendBinary(s.buf[:0]); err != nil {
			s.env.fleet.encodeErrors.Add(1)
			return
		}
		if s.write(now, s.buf) {
			s.seq = seq
			s.up.sent.Add(1)
		}
		return
	}
	s.seq = seq
	var p *pubOp
	if n := len(s.spare); n > 0 {
		p = s.spare[n-1]
		s.spare = s.spare[:n-1]
	} else {
		p = new(pubOp)
	}
	*p = pubOp{seq: s.seq, payload: appendPayload(p.payload[:0], s.prefix, s.seq, ts, s.value, true, s.g.PayloadSize)}
	s.pubs = append(s.pubs, p)
	s.up.inFlight.Add(1)
	s.sendPub(now, p)
}

// sendPub (re)sends a QoS 1/2 publication: the PUBLISH, or the PUBREL of
// one the gateway has received.
func (s *sensor) sendPub(now time.Time, p *pubOp) {
	if s.state != stActive || (p.stage == 0 && !s.topicOK) {
		p.waiting = true
		return
	}
	p.waiting = false
	p.deadline = now.Add(s.g.RetryInterval)
	if p.stage == 1 {
		s.reply(now, &mqttsn.PubRel{MsgID: p.msgID})
		return
	}
	if p.msgID == 0 || !p.dup {
		p.msgID = s.newID()
	}
	s.pubMsg = mqttsn.Publish{DUP: p.dup, QoS: s.g.QoS, Retain: s.g.Retain, TopicIDType: s.g.TopicType.wire(), TopicID: s.topicID, MsgID: p.msgID, Data: p.payload}
	var err error
	if s.buf, err = s.pubMsg.AppendBinary(s.buf[:0]); err != nil {
		s.env.fleet.encodeErrors.Add(1) // the retries run out: failed
		return
	}
	s.write(now, s.buf)
	p.dup = true // a retransmission carries DUP
}

// failPub drops publication i as failed: a loss unless it arrived anyway.
func (s *sensor) failPub(i int) {
	s.up.failed.Add(1)
	s.removePub(i)
}

func (s *sensor) removePub(i int) {
	p := s.pubs[i]
	s.pubs = append(s.pubs[:i], s.pubs[i+1:]...)
	s.spare = append(s.spare, p)
	s.up.inFlight.Add(-1)
}

// findPub returns the index of the publication with msgID at stage.
func (s *sensor) findPub(msgID uint16, stage uint8) int {
	for i, p := range s.pubs {
		if p.msgID == msgID && !p.waiting && p.stage == stage {
			return i
		}
	}
	return -1
}

// newID returns a MsgId not in use by another exchange.
func (s *sensor) newID() uint16 {
	for {
		s.nextID++
		if s.nextID == 0 {
			continue
		}
		if s.ctl.kind != opNone && s.ctl.msgID == s.nextID {
			continue
		}
		inUse := false
		for _, p := range s.pubs {
			if p.msgID == s.nextID {
				inUse = true
				break
			}
		}
		if !inUse {
			return s.nextID
		}
	}
}

// request sends a control request and waits for its answer. A request
// that does not encode (e.g. a ClientId too long for a CONNECT) would fail
// the same way on every retry: the sensor gives up (giveUp) instead of
// waiting for an answer that cannot come. Callers set the state the
// request leads to before calling, so that giving up has the last word.
func (s *sensor) request(now time.Time, kind opKind, m mqttsn.Message, msgID uint16) {
	pkt, err := m.AppendBinary(s.ctl.pkt[:0])
	if err != nil {
		s.giveUp(now, kind)
		return
	}
	s.ctl = ctlOp{kind: kind, msgID: msgID, pkt: pkt, deadline: now.Add(s.g.RetryInterval)}
	s.write(now, pkt)
}

// reply sends an answer that needs no answer itself.
func (s *sensor) reply(now time.Time, m mqttsn.Message) {
	var err error
	if s.buf, err = m.AppendBinary(s.buf[:0]); err != nil {
		s.env.fleet.encodeErrors.Add(1)
		return
	}
	s.write(now, s.buf)
}

// write sends one datagram and notes the time (keep-alive).
func (s *sensor) write(now time.Time, b []byte) bool {
	s.lastTx = now
	if err := s.link.send(b); err != nil {
		s.env.fleet.sendErrors.Add(1)
		return false
	}
	return true
}

// handle handles one message from the gateway.
func (s *sensor) handle(now time.Time, m mqttsn.Message) {
	if s.state == stDone || s.state == stIdle || s.g.QoS == mqttsn.QoSMinus1 {
		if s.g.QoS == mqttsn.QoSMinus1 {
			if pa, ok := m.(*mqttsn.PubAck); ok && pa.ReturnCode != mqttsn.Accepted {
				s.up.rejected.Add(1)
			}
		}
		s.env.fleet.unexpected.Add(1)
		return
	}
	if s.state == stWaking && s.ctl.kind == opWake {
		// §6.14: T_retry restarts on every message of the flush.
		s.ctl.deadline = now.Add(s.g.RetryInterval)
	}
	switch m := m.(type) {
	case *mqttsn.WillTopicReq:
		if s.state == stConnecting && s.ctl.kind == opConnect {
			s.ctl.deadline = now.Add(s.g.RetryInterval)
			s.reply(now, &mqttsn.WillTopic{QoS: s.g.WillQoS, Retain: s.g.WillRetain, Topic: s.will})
		}
	case *mqttsn.WillMsgReq:
		if s.state == stConnecting && s.ctl.kind == opConnect {
			s.ctl.deadline = now.Add(s.g.RetryInterval)
			s.reply(now, &mqttsn.WillMsg{Message: []byte(s.g.WillMessage)})
		}
	case *mqttsn.ConnAck:
		s.onConnAck(now, m)
	case *mqttsn.RegAck:
		if !s.answered(now, opRegister, m.MsgID, m.ReturnCode, &s.regRef) {
			break
		}
		s.topicID, s.topicOK = m.TopicID, true
		s.resendWaiting(now)
	case *mqttsn.SubAck:
		if !s.answered(now, opSubscribe, m.MsgID, m.ReturnCode, &s.subRef) {
			break
		}
		s.cmdOK = true
		switch s.g.CommandTopicType {
		case TopicRegistered:
			s.cmdID = m.TopicID
			if m.TopicID != 0 {
				s.registered[m.TopicID] = true
			}
		case TopicPredefined:
			s.cmdID = s.g.CommandTopicID
		}
		s.down.ready.Store(true)
	case *mqttsn.PingResp:
		switch s.ctl.kind {
		case opPing:
			s.ctl = ctlOp{}
		case opWake:
			s.ctl = ctlOp{}
			if s.g.Publishes && !s.stopping {
				s.connect(now, true)
			} else {
				s.setState(stAsleep)
				s.phaseEnd = now.Add(s.jittered(s.g.Sleep))
			}
		default:
			s.env.fleet.unexpected.Add(1)
		}
	case *mqttsn.Disconnect:
		switch s.ctl.kind {
		case opSleep:
			s.ctl = ctlOp{}
			s.env.fleet.sleeps.Add(1)
			s.setState(stAsleep)
			s.phaseEnd = now.Add(s.jittered(s.g.Sleep))
		case opLeave:
			s.ctl = ctlOp{}
			s.setState(stDone)
		default:
			// The gateway ended the session (or has none for us).
			s.lost(now)
		}
	case *mqttsn.PingReq:
		s.reply(now, &mqttsn.PingResp{})
	case *mqttsn.Register:
		s.registered[m.TopicID] = true
		s.reply(now, &mqttsn.RegAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.Accepted})
	case *mqttsn.Publish:
		s.onPublish(now, m)
	case *mqttsn.PubRel:
		delete(s.rx2, m.MsgID)
		s.reply(now, &mqttsn.PubComp{MsgID: m.MsgID})
	case *mqttsn.PubAck:
		s.onPubAck(now, m)
	case *mqttsn.PubRec:
		if i := s.findPub(m.MsgID, 0); i >= 0 && s.g.QoS == mqttsn.QoS2 {
			p := s.pubs[i]
			p.stage, p.retries = 1, 0
			s.sendPub(now, p)
		} else if i := s.findPub(m.MsgID, 1); i >= 0 {
			s.sendPub(now, s.pubs[i]) // our PUBREL was lost
		} else {
			s.env.fleet.unexpected.Add(1)
		}
	case *mqttsn.PubComp:
		if i := s.findPub(m.MsgID, 1); i >= 0 {
			s.up.acked.Add(1)
			s.removePub(i)
		} else {
			s.env.fleet.unexpected.Add(1)
		}
	default:
		s.env.fleet.unexpected.Add(1)
	}
	s.pump(now)
}

// onConnAck completes a CONNECT.
func (s *sensor) onConnAck(now time.Time, m *mqttsn.ConnAck) {
	if s.ctl.kind != opConnect {
		s.env.fleet.unexpected.Add(1)
		return
	}
	s.ctl = ctlOp{}
	if m.ReturnCode != mqttsn.Accepted {
		s.connectFailed()
		if s.resuming {
			s.env.fleet.connected.Add(1) // connect counted it out; retryLater counts it again
			s.state = stSetup
		}
		s.retryLater(now)
		return
	}
	s.connects++
	s.env.fleet.connects.Add(1)
	if s.resuming {
		s.resuming = false
		s.env.fleet.connected.Add(1)
		s.state = stActive
		s.becomeActive(now, true)
		return
	}
	s.setState(stSetup)
	if s.g.CleanSession {
		clear(s.rx2) // a new session: the gateway forgot the exchanges too
	}
	s.setup(now)
}

// onPubAck handles PUBACK: the end of a QoS 1 publication, or a rejection
// of a publication of any QoS.
func (s *sensor) onPubAck(now time.Time, m *mqttsn.PubAck) {
	if m.ReturnCode != mqttsn.Accepted {
		s.up.rejected.Add(1)
	}
	if m.ReturnCode == mqttsn.RejectedInvalidTopicID && s.g.TopicType == TopicRegistered && m.TopicID == s.topicID {
		s.topicOK = false // register again before the next PUBLISH
	}
	i := s.findPub(m.MsgID, 0)
	if i < 0 {
		if m.ReturnCode == mqttsn.Accepted {
			s.env.fleet.unexpected.Add(1)
		}
		return
	}
	p := s.pubs[i]
	switch m.ReturnCode {
	case mqttsn.Accepted:
		if s.g.QoS != mqttsn.QoS1 {
			s.env.fleet.unexpected.Add(1)
			return
		}
		s.up.acked.Add(1)
		s.removePub(i)
	case mqttsn.RejectedInvalidTopicID, mqttsn.RejectedCongestion:
		if p.retries >= s.g.MaxRetries {
			s.failPub(i)
			return
		}
		p.retries++
		p.dup, p.msgID = false, 0 // a new exchange
		p.waiting = true
		p.deadline = time.Time{}
		if m.ReturnCode == mqttsn.RejectedCongestion {
			p.deadline = now.Add(s.g.RetryInterval)
		} else if s.topicOK {
			s.sendPub(now, p)
		}
	default:
		s.failPub(i)
	}
}

// resendWaiting sends the publications that waited for a topic id.
func (s *sensor) resendWaiting(now time.Time) {
	if s.state != stActive {
		return
	}
	for _, p := range s.pubs {
		if p.waiting && p.deadline.IsZero() {
			s.sendPub(now, p)
		}
	}
}

// onPublish receives a command: acknowledges it as its QoS requires and
// records it once.
func (s *sensor) onPublish(now time.Time, m *mqttsn.Publish) {
	known := true
	switch m.TopicIDType {
	case mqttsn.TopicIDNormal:
		known = s.registered[m.TopicID] || (s.cmdOK && m.TopicID == s.cmdID && s.cmdID != 0)
	case mqttsn.TopicIDPredefined:
		known = s.cmdOK && s.g.CommandTopicType == TopicPredefined && m.TopicID == s.g.CommandTopicID
	}
	if !known {
		if m.QoS == mqttsn.QoS1 || m.QoS == mqttsn.QoS2 {
			s.reply(now, &mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.RejectedInvalidTopicID})
		}
		s.env.fleet.unexpected.Add(1)
		return
	}
	switch m.QoS {
	case mqttsn.QoS1:
		s.record(now, m.Data)
		s.reply(now, &mqttsn.PubAck{TopicID: m.TopicID, MsgID: m.MsgID, ReturnCode: mqttsn.Accepted})
	case mqttsn.QoS2:
		if !s.rx2[m.MsgID] {
			s.rx2[m.MsgID] = true
			s.record(now, m.Data)
		}
		s.reply(now, &mqttsn.PubRec{MsgID: m.MsgID})
	default:
		s.record(now, m.Data)
	}
}

// record counts a command's delivery by its sequence number. A command of
// another run (its nonce), for another sensor, or with a seq the observer
// never handed out is counted stale and otherwise ignored.
func (s *sensor) record(now time.Time, data []byte) {
	p, ok := parsePayload(data)
	if !ok || string(p.id) != s.clientID || string(p.run) != s.env.cmdNonce || p.seq > s.down.next.Load() {
		s.down.stale.Add(1)
		return
	}
	if s.down.set.add(p.seq) {
		s.down.received.Add(1)
		s.env.downLat.of(s.g.CommandQoS).Record(s.env.clk.since(now, p.ts))
	}
}
