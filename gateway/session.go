package gateway

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

// state is where a session stands (MQTT-SN 1.2 §6.14 for the client's
// view; the prompting and connecting steps are the gateway's own).
//
//	        CONNECT                       WILLTOPIC      WILLMSG
//	new ──────────────► willTopic ─────────────► willMsg ──────────┐
//	 │ (no Will)              │ (empty WILLTOPIC, A22)              │
//	 └────────────────────────┴──────────────► connecting ◄─────────┘
//	                                                │ broker CONNACK
//	                                                ▼
//	     CONNECT (any state) ─── restarts ───►   active
//	                                                │ DISCONNECT, keep-alive
//	                                                │ expiry, retries exhausted,
//	                                                │ upstream lost
//	                                                ▼
//	                        disconnected (CleanSession=0: kept until
//	                        SessionExpiry or the next CONNECT)  or  gone
type state uint8

const (
	stateNew state = iota
	stateWillTopic
	stateWillMsg
	stateConnecting
	stateActive
	stateDisconnected
	stateGone
)

var stateNames = [...]string{"new", "will-topic", "will-msg", "connecting", "active", "disconnected", "gone"}

func (s state) String() string { return stateNames[s] }

// Capacities of a session's queues. The inbox drops when full (the client
// retransmits); the upstream request queue answers congestion when full.
const (
	inboxSize     = 32
	controlSize   = 8
	opsSize       = 32
	qos0Headroom  = 32 // downlink QoS 0 messages queued beside the Receive Maximum
	maxQoS2InFlow = 64 // uplink QoS 2 exchanges awaiting PUBREL
)

// session is one client's state. Exactly one goroutine, run, touches it;
// everything else sends it events through its channels.
type session struct {
	g        *Gateway
	clientID string
	log      zerolog.Logger

	inbox      chan mqttsn.Message // datagrams from the client, dropped when full
	control    chan any            // CONNECT routing, upstream results and losses
	deliveries chan delivery       // messages from the broker
	opq        *opQueue            // requests for the upstream worker
	quit       chan struct{}       // closed by stop
	loopDone   chan struct{}       // closed when run stops reading its channels
	quitOnce   sync.Once
	ctx        context.Context // cancelled when the session ends; bounds upstream requests
	cancel     context.CancelFunc

	// Owned by run.
	state        state
	peer         peer
	epoch        uint64       // bumped by every CONNECT: results of older requests are stale
	connGen      uint64       // bumped by every upstream connect: deliveries of older connections are stale
	handler      *connHandler // the handler of generation connGen, if a connection was opened
	connected    bool         // an upstream connection is up (or being opened)
	cleanSession bool
	everActive   bool // the session has been connected once: it has state worth keeping
	keepAlive    time.Duration
	will         *Will
	pendingWill  *Will // WILLTOPIC received, WILLMSG awaited
	reg          *topicmap.Registry
	subs         map[string]byte         // filter → granted QoS
	upPending    map[pendingKey]struct{} // client requests waiting for the broker
	outstanding  int                     // client requests queued upstream, bounded by opsSize
	qos2In       map[uint16]bool         // uplink QoS 2 MsgIds before PUBREL; true once PUBREC was sent
	out          *outbound               // the one gateway-initiated exchange in flight
	nextMsgID    uint16
	willUpdate   *willUpdate // a WILLTOPICUPD/WILLMSGUPD waiting for its upstream reconnect

	keepAliveAt time.Time // the client is lost if silent until then
	expireAt    time.Time // a persisted session is discarded then
	timer       *time.Timer
	armedFor    time.Time
	wbuf        []byte // encoding buffer for replies
}

// pendingKey names a client request waiting for the broker, to recognise
// the client's retransmissions of it.
type pendingKey struct {
	t     mqttsn.Type
	msgID uint16
}

// delivery is a broker message with the generation of the upstream
// connection it came from.
type delivery struct {
	*Delivery
	gen uint64
}

// outKind is the kind of gateway-initiated exchange in flight.
type outKind uint8

const (
	outWillTopicReq outKind = iota
	outWillMsgReq
	outRegister
	outPublish
	outPubRel
)

// outbound is a gateway-initiated request awaiting the client's answer,
// retransmitted every RetryInterval up to MaxRetries times.
type outbound struct {
	kind       outKind
	msgID      uint16
	topicID    uint16
	topicType  mqttsn.TopicIDType
	d          *delivery // the broker message being delivered (register, publish, pubrel)
	retries    int
	retryAt    time.Time
	reassigned bool // the client refused the id once (PUBACK 0x02) and got a new one
}

// willUpdate is a Will update to apply by reconnecting upstream (A6).
type willUpdate struct {
	t mqttsn.Type // WILLTOPICUPD or WILLMSGUPD: which response to send
}

func newSession(g *Gateway, clientID string, p peer) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		g:          g,
		clientID:   clientID,
		log:        g.log.With().Str("client", clientID).Logger(),
		inbox:      make(chan mqttsn.Message, inboxSize),
		control:    make(chan any, controlSize),
		deliveries: make(chan delivery, g.cfg.ReceiveMaximum+qos0Headroom),
		opq:        newOpQueue(),
		quit:       make(chan struct{}),
		loopDone:   make(chan struct{}),
		ctx:        ctx,
		cancel:     cancel,
		peer:       p,
		reg:        topicmap.NewRegistry(g.cfg.Predefined, g.cfg.MaxTopics),
	}
	return s
}

// post queues a message from the client; a full inbox drops it.
func (s *session) post(m mqttsn.Message) {
	select {
	case s.inbox <- m:
	default:
		s.g.stats.inboxFull.Add(1)
	}
}

// postControl queues an event from the dispatcher without blocking; the
// client retransmits a CONNECT that is dropped.
func (s *session) postControl(ev any) {
	select {
	case s.control <- ev:
	default:
		s.g.stats.inboxFull.Add(1)
	}
}

// report queues an event that must not be lost (an upstream result or
// loss), waiting until the session takes it or has ended.
func (s *session) report(ev any) {
	select {
	case s.control <- ev:
	case <-s.loopDone:
	}
}

// stop asks the session to end: the client gets DISCONNECT and the upstream
// connection is closed cleanly.
func (s *session) stop() { s.quitOnce.Do(func() { close(s.quit) }) }

// Events on the control channel.
type (
	evConnect struct {
		peer peer
		msg  *mqttsn.Connect
	}
	evReplaced struct{} // another client connected from this session's address
)

// run is the session's goroutine.
func (s *session) run() {
	s.timer = time.NewTimer(time.Hour)
	s.timer.Stop()
	workerDone := make(chan struct{})
	go s.worker(workerDone)
	defer func() {
		if r := recover(); r != nil {
			s.log.Error().Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).Msg("session crashed; dropping it")
			if s.connected {
				s.request(op{kind: opDrop})
			}
		}
		close(s.loopDone)
		s.opq.close()
		s.cancel()
		<-workerDone
		s.timer.Stop()
		s.g.forget(s, s.peer)
		s.g.sessions.Done()
	}()
	for s.state != stateGone {
		var dl chan delivery
		if s.state == stateActive && s.out == nil && s.willUpdate == nil {
			dl = s.deliveries
		}
		select {
		case m := <-s.inbox:
			s.onMessage(m)
		case ev := <-s.control:
			s.onControl(ev)
		case d := <-dl:
			s.onDelivery(d)
		case <-s.timer.C:
			s.armedFor = time.Time{}
			s.onTimer(time.Now())
		case <-s.quit:
			s.shutdown()
		}
		s.rearm()
	}
}

// rearm points the timer at the earliest deadline.
func (s *session) rearm() {
	var next time.Time
	consider := func(t time.Time) {
		if !t.IsZero() && (next.IsZero() || t.Before(next)) {
			next = t
		}
	}
	switch s.state {
	case stateDisconnected:
		consider(s.expireAt)
	case stateGone:
	default:
		consider(s.keepAliveAt)
		if s.out != nil {
			consider(s.out.retryAt)
		}
	}
	if next.Equal(s.armedFor) {
		return
	}
	s.timer.Stop()
	s.armedFor = next
	if !next.IsZero() {
		s.timer.Reset(time.Until(next))
	}
}

func (s *session) onTimer(now time.Time) {
	switch s.state {
	case stateDisconnected:
		if !s.expireAt.IsZero() && !now.Before(s.expireAt) {
			s.log.Debug().Msg("persisted session expired")
			s.g.stats.expired.Add(1)
			s.state = stateGone
		}
		return
	case stateGone:
		return
	}
	if !s.keepAliveAt.IsZero() && !now.Before(s.keepAliveAt) {
		s.lose("keep-alive expired")
		return
	}
	if s.out != nil && !now.Before(s.out.retryAt) {
		if s.out.retries >= s.g.cfg.MaxRetries {
			s.lose(fmt.Sprintf("no answer to %s after %d retransmissions", s.out.kind, s.out.retries))
			return
		}
		s.out.retries++
		s.g.stats.retransmissions.Add(1)
		s.sendOutbound(true)
	}
}

func (k outKind) String() string {
	return [...]string{"WILLTOPICREQ", "WILLMSGREQ", "REGISTER", "PUBLISH", "PUBREL"}[k]
}

// send encodes m into the session's buffer and writes it to the client.
func (s *session) send(m mqttsn.Message) {
	b, err := m.AppendBinary(s.wbuf[:0])
	if err != nil {
		s.log.Error().Err(err).Msg("cannot encode reply")
		return
	}
	s.wbuf = b
	if err := s.peer.via.WriteTo(b, s.peer.addr); err != nil {
		s.log.Debug().Err(err).Msg("send failed")
	}
}

// request queues an upstream request. Requests made for the client
// (publish, subscribe, unsubscribe) are bounded: request reports false when
// opsSize of them are outstanding, for the caller to answer congestion.
// Connection life-cycle requests are always queued.
func (s *session) request(o op) bool {
	o.epoch = s.epoch
	switch o.kind {
	case opPublish, opSubscribe, opUnsubscribe:
		if s.outstanding >= opsSize {
			return false
		}
		s.outstanding++
	}
	s.opq.push(o)
	return true
}

func (s *session) onControl(ev any) {
	switch ev := ev.(type) {
	case evConnect:
		s.onConnect(ev)
	case evReplaced:
		if s.state != stateDisconnected {
			s.lose("another client connected from its address")
		}
	case resConnect:
		s.onConnectResult(ev)
	case resPublish:
		s.onPublishResult(ev)
	case resSubscribe:
		s.onSubscribeResult(ev)
	case resUnsubscribe:
		s.onUnsubscribeResult(ev)
	case evLost:
		if ev.gen == s.connGen && s.connected {
			s.onUpstreamLost(ev.err)
		}
	}
}

// onMessage handles a datagram from the client.
func (s *session) onMessage(m mqttsn.Message) {
	if s.state == stateDisconnected || s.state == stateGone || s.state == stateNew {
		s.unexpected(m)
		return
	}
	if s.keepAlive > 0 {
		s.keepAliveAt = time.Now().Add(s.keepAlive * 3 / 2)
	}
	switch m := m.(type) {
	case *mqttsn.WillTopic:
		s.onWillTopic(m)
	case *mqttsn.WillMsg:
		s.onWillMsg(m)
	case *mqttsn.PingReq:
		s.send(&mqttsn.PingResp{})
	case *mqttsn.Disconnect:
		s.onDisconnect(m)
	default:
		if s.state != stateActive {
			s.unexpected(m)
			return
		}
		s.onActiveMessage(m)
	}
}

func (s *session) onActiveMessage(m mqttsn.Message) {
	switch m := m.(type) {
	case *mqttsn.Publish:
		s.onPublish(m)
	case *mqttsn.PubRel:
		s.onPubRel(m)
	case *mqttsn.Register:
		s.onRegister(m)
	case *mqttsn.RegAck:
		s.onRegAck(m)
	case *mqttsn.PubAck:
		s.onPubAck(m)
	case *mqttsn.PubRec:
		s.onPubRec(m)
	case *mqttsn.PubComp:
		s.onPubComp(m)
	case *mqttsn.Subscribe:
		s.onSubscribe(m)
	case *mqttsn.Unsubscribe:
		s.onUnsubscribe(m)
	case *mqttsn.WillTopicUpd:
		s.onWillTopicUpd(m)
	case *mqttsn.WillMsgUpd:
		s.onWillMsgUpd(m)
	default:
		s.unexpected(m)
	}
}

// unexpected counts and drops a valid message the session has no use for
// in its state (a REGACK nobody asked for, a PUBLISH before CONNACK, ...).
func (s *session) unexpected(m mqttsn.Message) {
	s.g.stats.unexpected.Add(1)
	if e := s.log.Debug(); e.Enabled() {
		e.Stringer("type", m.Type()).Stringer("state", s.state).Msg("dropped unexpected message")
	}
}

// lose ends a session whose client stopped answering: the upstream
// connection is dropped without DISCONNECT so the broker publishes the Will
// (A8).
func (s *session) lose(reason string) {
	s.log.Info().Str("reason", reason).Stringer("peer", s.peer).Msg("client lost")
	s.g.stats.lost.Add(1)
	if s.connected {
		s.request(op{kind: opDrop})
	}
	s.endConnection()
}

// onUpstreamLost ends a session whose broker connection dropped: the client
// is told with DISCONNECT.
func (s *session) onUpstreamLost(err error) {
	s.log.Warn().Err(err).Msg("upstream connection lost; disconnecting the client")
	s.g.stats.upstreamLost.Add(1)
	s.connected = false
	s.send(&mqttsn.Disconnect{})
	s.endConnection()
}

// endConnection leaves the connected states: a CleanSession=0 session is
// kept (registrations, subscriptions, Will) until SessionExpiry or the next
// CONNECT; any other ends.
func (s *session) endConnection() {
	s.connected = false
	s.retireConn()
	s.out = nil
	s.willUpdate = nil
	s.pendingWill = nil
	s.upPending = nil
	s.keepAliveAt = time.Time{}
	s.g.unbind(s, s.peer)
	if !s.keepsBrokerSession() || !s.everActive {
		s.state = stateGone
		return
	}
	s.state = stateDisconnected
	s.expireAt = time.Now().Add(s.g.cfg.SessionExpiry)
}

// shutdown ends the session because the gateway is closing.
func (s *session) shutdown() {
	if s.state != stateDisconnected && s.state != stateNew {
		s.send(&mqttsn.Disconnect{})
	}
	if s.connected {
		s.request(op{kind: opDisconnect, endSession: !s.keepsBrokerSession()})
	}
	s.state = stateGone
}

// retireConn makes the current upstream connection's deliveries stale.
func (s *session) retireConn() {
	s.connGen++
	if s.handler != nil {
		close(s.handler.stale)
		s.handler = nil
	}
}

// openConn queues the opening of a new upstream connection.
func (s *session) openConn(p ConnectParams) {
	s.retireConn()
	s.handler = &connHandler{s: s, gen: s.connGen, stale: make(chan struct{})}
	s.request(op{kind: opConnect, params: p, handler: s.handler})
}

// nextID returns the next gateway MsgId, never 0 (A5).
func (s *session) nextID() uint16 {
	s.nextMsgID++
	if s.nextMsgID == 0 {
		s.nextMsgID = 1
	}
	return s.nextMsgID
}
