package gateway

import (
	"context"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

// state is where a session stands: MQTT-SN 1.2 §6.14 (Figure 4) for the
// client's states, plus the gateway's own steps before CONNACK.
//
//	        CONNECT                       WILLTOPIC      WILLMSG
//	new ──────────────► willTopic ─────────────► willMsg ──────────┐
//	 │ (no Will)              │ (empty WILLTOPIC, A22)              │
//	 └────────────────────────┴──────────────► connecting ◄─────────┘
//	                                                │ broker CONNACK
//	                                                ▼
//	     CONNECT (from new, disconnected,        active ◄────────────────┐
//	     active: restarts the connection)           │ DISCONNECT(Duration)│ CONNECT
//	                                                ▼                     │ (resume, A1)
//	                         ┌──────────────────► asleep ─────────────────┤
//	      PINGRESP after the │  PINGREQ(ClientId)  │  ▲ DISCONNECT(Duration)│
//	      flush completes    └──── awake ◄─────────┘  └── again (A10)     │
//	                                 └────────────────────────────────────┘
//
//	active, asleep, awake ── DISCONNECT ──► disconnected (CleanSession=0: kept
//	                                        until SessionExpiry or the next CONNECT)
//	active, awake ── keep-alive expiry, retries exhausted ──► lost ┐
//	asleep ── sleep timer expiry ─────────────────────────► lost ┼► disconnected or gone
//	any ── upstream connection lost ──────────────────────────────┘
//
// "lost" is not a state of its own: it is the path that drops the upstream
// connection without DISCONNECT, so that the broker publishes the Will.
type state uint8

const (
	stateNew state = iota
	stateWillTopic
	stateWillMsg
	stateConnecting
	stateActive
	stateAsleep
	stateAwake
	stateDisconnected
	stateGone
)

var stateNames = [...]string{"new", "will-topic", "will-msg", "connecting", "active", "asleep", "awake", "disconnected", "gone"}

func (s state) String() string { return stateNames[s] }

// Capacities of a session's queues. The inbox drops when full (the client
// retransmits); the upstream request queue answers congestion when full.
const (
	inboxSize     = 8
	controlSize   = 8
	opsSize       = 32
	qos0Headroom  = 16 // downlink QoS 0 messages queued beside the Receive Maximum
	maxQoS2InFlow = 64 // uplink QoS 2 exchanges awaiting PUBREL
)

// session is one client's state. Exactly one goroutine at a time, the
// session's owner, touches it; everything else sends it events through its
// channels and wakes it with kick (or handles them itself with runHere).
//
// No goroutine stays with a session while nothing happens: the owner
// handles what waits and lets go of the session (it parks). A datagram
// from the client and a broker's acknowledgement are handled at once on
// the goroutine that read them, when no other owns the session (runHere):
// the common message costs no goroutine hand-off. Other events start a
// goroutine for as long as they take (kick). A sleeping or idle client so
// costs its state, not a goroutine.
type session struct {
	// The fields a client's message touches come first, in five cache
	// lines: at tens of thousands of messages a second over many sessions,
	// each line a message touches is a likely cache miss. A session (over
	// 512 octets) is allocated 8 octets after a cache line's start, behind
	// the allocator's type header; the lines below count from there, and
	// TestSessionLayout checks them. Line 1: ownership, counts and state.
	runMu          sync.Mutex   // guards running
	queued         atomic.Int32 // events in inbox, control and tick: raised before each send (see offer), lowered after each receive; and deliveryMark
	stopping       atomic.Bool  // stop was called: quit is closed
	replaced       atomic.Bool  // another client now owns this session's address
	outstanding    atomic.Int32 // client requests queued upstream, bounded by opsSize; the worker ends QoS 0 PUBLISHes itself
	running        bool         // the session has an owner (see claim, park)
	state          state        // owned by run, as everything from here on but where said
	workerIdle     bool         // the upstream worker may end when idle (asleep, disconnected)
	armedKeepAlive bool         // armedFor is a keep-alive deadline, which rearm may leave early
	connected      bool         // an upstream connection is up (or being opened)
	g              *Gateway
	deliveries     chan *Delivery // handler's channel (nil without a handler), here so that parking does not load the handler
	reg            *topicmap.Registry

	// Line 2: the deadlines and what holds deliveries back.
	out         *outbound   // the one gateway-initiated exchange in flight
	willUpdate  *willUpdate // a WILLTOPICUPD/WILLMSGUPD waiting for its upstream reconnect
	epoch       uint64      // bumped by every CONNECT: results of older requests are stale
	keepAlive   time.Duration
	keepAliveAt time.Time // an active client is lost if silent until then
	queueBytes  int       // the size of queue (see there)

	// Line 3.
	inbox chan inbound // datagrams from the client, dropped when full
	// queue holds broker messages taken from the connection and not yet
	// sent: the sleep buffer while the client is asleep, a short backlog
	// otherwise. Bounded by SleepMaxMessages and SleepMaxBytes; beyond, the
	// messages stay in the connection (and, for QoS 1/2, with the broker).
	queue    []delivery
	armedFor time.Time
	connGen  uint64 // bumped by every upstream connect: deliveries of older connections are stale

	// Line 4: the client's address; line 5: the upstream requests.
	peer peer
	opq  opQueue

	clientID string
	control  chan any      // CONNECT routing, upstream results and losses
	tick     chan struct{} // the timer fired
	quit     chan struct{} // closed by stop
	loopDone chan struct{} // closed when run stops reading its channels for good
	quitOnce sync.Once
	owner    string          // the authenticated identity that owns the session; guarded by g.mu
	ctx      context.Context // cancelled when the session ends; bounds upstream requests
	cancel   context.CancelFunc

	handler *connHandler // the handler of generation connGen, if a connection was opened

	cleanSession bool
	everActive   bool // the session has been connected once: it has state worth keeping
	will         *Will
	pendingWill  *Will           // WILLTOPIC received, WILLMSG awaited
	subs         map[string]byte // filter → granted QoS
	upPending    pendingSet      // client requests waiting for the broker
	qos2In       map[uint16]bool // uplink QoS 2 MsgIds before PUBREL; true once PUBREC was sent
	nextMsgID    uint16

	sleepFor time.Duration // the sleep timer: Duration × SleepTolerance
	sleepAt  time.Time     // an asleep client is lost if silent until then
	expireAt time.Time     // a persisted session is discarded then
	timer    *time.Timer   // fires timerFired at armedFor
	wbuf     []byte        // encoding buffer for replies
}

// inbound is a datagram from the client with the address it came from.
type inbound struct {
	from peer
	msg  mqttsn.Message
}

// pendingKey names a client request waiting for the broker, to recognise
// the client's retransmissions of it.
type pendingKey struct {
	t     mqttsn.Type
	msgID uint16
}

// pendingSet holds the client requests waiting for the broker, at most
// opsSize of them (a request is added only once queued upstream, and the
// set is emptied when the client connects again): a slice searched in
// order, which for so few is cheaper than a map's hashing and the cache
// lines its groups take.
type pendingSet []pendingKey

// has reports whether k is pending.
func (p pendingSet) has(k pendingKey) bool {
	for _, q := range p {
		if q == k {
			return true
		}
	}
	return false
}

// add records k, which is not pending yet.
func (p *pendingSet) add(k pendingKey) { *p = append(*p, k) }

// remove forgets k, if it is pending.
func (p *pendingSet) remove(k pendingKey) {
	s := *p
	for i, q := range s {
		if q == k {
			s[i] = s[len(s)-1]
			*p = s[:len(s)-1]
			return
		}
	}
}

// delivery is a broker message with the generation of the upstream
// connection it came from.
type delivery struct {
	*Delivery
	gen uint64
}

// size is what a delivery counts against SleepMaxBytes.
func (d *delivery) size() int { return len(d.Topic) + len(d.Payload) }

// outKind is the kind of gateway-initiated exchange in flight.
type outKind uint8

const (
	outWillTopicReq outKind = iota
	outWillMsgReq
	outRegister
	outPublish
	outPubRel
)

func (k outKind) String() string {
	return [...]string{"WILLTOPICREQ", "WILLMSGREQ", "REGISTER", "PUBLISH", "PUBREL"}[k]
}

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
	t         mqttsn.Type       // WILLTOPICUPD or WILLMSGUPD: which response to send
	prev      *Will             // the Will before the update, restored if the broker refuses
	started   bool              // the reconnect has been queued
	restoring bool              // this reconnect puts prev back after a refusal
	refusal   mqttsn.ReturnCode // restoring: the broker's answer to the update, for the client
}

func newSession(g *Gateway, clientID string, p peer) *session {
	ctx, cancel := context.WithCancel(context.Background())
	s := &session{
		g:        g,
		clientID: clientID,
		inbox:    make(chan inbound, inboxSize),
		control:  make(chan any, controlSize),
		tick:     make(chan struct{}, 1),
		quit:     make(chan struct{}),
		loopDone: make(chan struct{}),
		ctx:      ctx,
		cancel:   cancel,
		peer:     p,
		reg:      topicmap.NewRegistry(g.cfg.Predefined, g.cfg.MaxTopics),
	}
	s.opq.init(s.worker)
	s.timer = time.AfterFunc(time.Hour, s.timerFired)
	s.timer.Stop()
	return s
}

// Log events about the session, with its ClientId. (A logger of its own,
// zerolog's With, would cost every session half a kilobyte.)
func (s *session) logDebug() *zerolog.Event { return s.g.log.Debug().Str("client", s.clientID) }
func (s *session) logInfo() *zerolog.Event  { return s.g.log.Info().Str("client", s.clientID) }
func (s *session) logWarn() *zerolog.Event  { return s.g.log.Warn().Str("client", s.clientID) }
func (s *session) logError() *zerolog.Event { return s.g.log.Error().Str("client", s.clientID) }

// kick makes sure an owner will look at the session's channels:
// everything that sends the session an event calls it (or runHere) after
// sending.
func (s *session) kick() {
	if s.claim() {
		go s.run()
	}
}

// claim makes the caller the session's owner and reports true, unless
// another owner runs it: that one sees every event sent before claim.
func (s *session) claim() bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.running {
		return false
	}
	s.running = true
	return true
}

// runHere is kick handling the events on the caller's goroutine, without a
// hand-off, when no other owner runs the session. Only goroutines that may
// do a session's work run it: they do not hold a lock the session takes,
// and the session never waits for them (the transports' readers, the
// upstream connection's reader).
func (s *session) runHere() {
	if s.claim() {
		s.loop(true, nil)
	}
}

// timerFired runs on the timer's goroutine when the deadline armed comes.
func (s *session) timerFired() {
	offer(s, s.tick, struct{}{})
	s.kick()
}

// offer puts v in ch, one of the session's inbox, control and tick, unless
// ch is full, and reports whether it did. The count of queued events is
// raised before the send (and lowered again if ch is full), so that it
// is never below the number of events in the three channels (nor below
// 0): an owner that sees it at 0 has nothing before the event it brings,
// and one that parks leaves nothing behind. (It may count, for a moment,
// an event whose send is under way; the owner then waits for it in loop's
// select.)
func offer[T any](s *session, ch chan T, v T) bool {
	s.queued.Add(1)
	select {
	case ch <- v:
		return true
	default:
		s.queued.Add(-1)
		return false
	}
}

// deliveryMark is a bit of session.queued apart from its count of events:
// a broker message may wait in the delivery channel (see noteDelivery).
// The count never carries into it, and never goes below 0 (whose
// two's complement would have the bit set): every lowering follows a
// receive of what a raise counted, or undoes the raise.
const deliveryMark = 1 << 30

// nothingQueued reports whether no event waits in inbox, control or tick.
func (s *session) nothingQueued() bool { return s.queued.Load()&^deliveryMark == 0 }

// waiting reports whether an event waits in one of the session's
// channels; runMu is held. dl is the delivery channel the loop takes from
// (nil when it takes none). (The count of queued events, beside runMu,
// spares looking at three channels, each a cache miss, for every message;
// see offer. The delivery channel's length, another miss, is looked at
// only while deliveryMark is set.)
func (s *session) waiting(dl chan *Delivery) bool {
	q := s.queued.Load()
	if q&^deliveryMark > 0 || s.stopping.Load() {
		return true
	}
	if dl == nil || q&deliveryMark == 0 {
		return false
	}
	// Cleared before the channel is looked at. A sender whose mark comes
	// after the clear leaves it set: this owner's next park sees it, or,
	// if this one parks, the sender's own claim succeeds and its park does.
	// A message whose mark came before the clear is seen by the look.
	// (With dl nil the mark is left alone, for the first park after the
	// session can take messages again.)
	s.queued.And(^deliveryMark)
	if len(dl) > 0 {
		s.queued.Or(deliveryMark)
		return true
	}
	return false
}

// noteDelivery sets deliveryMark: a broker message was sent to the
// session's delivery channel. The sender calls it after the send and
// before it claims the session (runHere), so that an owner that parks
// meanwhile looks at the channel.
func (s *session) noteDelivery() { s.queued.Or(deliveryMark) }

// keepAliveSilence is how long the client may stay silent before it is
// lost: its keep-alive times KeepAliveTolerance.
func (s *session) keepAliveSilence() time.Duration {
	return time.Duration(float64(s.keepAlive) * KeepAliveTolerance)
}

// park lets go of the session if no event waits, and reports whether the
// owner must stop. A sender's claim that comes after this finds the session
// free; one that came before found it owned, and park sees its event.
func (s *session) park(dl chan *Delivery) bool {
	s.runMu.Lock()
	defer s.runMu.Unlock()
	if s.waiting(dl) {
		return false
	}
	s.running = false
	return true
}

// post hands a message from the client to the session: it handles it on
// the caller's goroutine if the session is free, and queues it otherwise; a
// full inbox drops it (the client retransmits).
func (s *session) post(from peer, m mqttsn.Message) {
	in := inbound{from: from, msg: m}
	if s.claim() {
		if s.nothingQueued() { // nothing came before it
			s.loop(true, func() { s.onMessage(in) })
			return
		}
		s.queueInbound(in)
		s.loop(true, nil)
		return
	}
	if s.queueInbound(in) {
		s.runHere() // the owner may have parked meanwhile
	}
}

// queueInbound puts a message from the client in the inbox unless it is
// full, and reports whether it did.
func (s *session) queueInbound(in inbound) bool {
	if offer(s, s.inbox, in) {
		return true
	}
	s.g.stats.inboxFull.Add(1)
	return false
}

// postControl queues an event from the dispatcher without blocking; the
// client retransmits a CONNECT or PINGREQ that is dropped.
func (s *session) postControl(ev any) {
	if offer(s, s.control, ev) {
		s.kick()
		return
	}
	s.g.stats.inboxFull.Add(1)
}

// report queues an event that must not be lost (an upstream result or
// loss), waiting until the session takes it or has ended.
func (s *session) report(ev any) {
	if offer(s, s.control, ev) {
		s.kick()
		return
	}
	s.kick()        // a full channel: make sure someone empties it
	s.queued.Add(1) // as offer does
	select {
	case s.control <- ev:
		s.kick()
	case <-s.loopDone:
		s.queued.Add(-1)
	}
}

// publishAcked tells the session that the broker acknowledged a QoS 1 or 2
// PUBLISH. It runs on the upstream connection's reader and handles the
// answer there if the session is free, as post does.
func (s *session) publishAcked(p published) {
	if s.claim() {
		if s.nothingQueued() {
			s.loop(true, func() { s.onPublishResult(resPublish{pub: p}) })
			return
		}
		if !offer(s, s.control, any(resPublish{pub: p})) {
			go s.report(resPublish{pub: p}) // waits for room the loop below makes
		}
		s.loop(true, nil)
		return
	}
	s.report(resPublish{pub: p})
}

// replace tells the session that another client took its address. The flag
// survives a full control channel.
func (s *session) replace() {
	s.replaced.Store(true)
	s.postControl(evReplaced{})
}

// stop asks the session to end: the client gets DISCONNECT and the upstream
// connection is closed cleanly.
func (s *session) stop() {
	s.quitOnce.Do(func() {
		s.stopping.Store(true)
		close(s.quit)
		s.kick()
	})
}

// Events on the control channel.
type (
	evConnect struct {
		peer      peer
		msg       *mqttsn.Connect
		owner     string // the peer's identity ("" for none), claimed if the CONNECT is accepted
		sameOwner bool   // the peer authenticated as the session's owner
	}
	evWake struct { // PINGREQ with this session's ClientId from an address without a session
		peer      peer
		sameOwner bool
	}
	evReplaced struct{} // another client connected from this session's address
)

// inlineBudget bounds the events runHere handles on the caller's
// goroutine: beyond, the session gets a goroutine of its own, so that a
// busy client does not hold up the transport's reader for long.
const inlineBudget = 8

// run is the session's goroutine: it handles events until the session
// ends or nothing waits. Only kick starts it.
func (s *session) run() { s.loop(false, nil) }

// loop handles events as the session's owner until the session ends or
// nothing waits (the owner parks). first, if not nil, handles the event
// the caller brought, which no queued event precedes. inline: the owner is
// runHere's caller (or post's, or publishAcked's), who handles at most
// inlineBudget events and never finishes the session: it hands both to a
// goroutine of the session's own (run), which waits for the session's
// upstream worker to end.
func (s *session) loop(inline bool, first func()) {
	parked := false // after park, the session belongs to the next owner
	defer func() {
		if r := recover(); r != nil {
			s.logError().Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).Msg("session crashed; dropping it")
			if s.connected {
				s.request(op{kind: opDrop})
			}
			s.state = stateGone
		}
		switch {
		case parked:
		case inline:
			go s.run() // still the owner: running stays set
		default:
			s.finish()
		}
	}()
	n := 0
	if first != nil {
		first()
		s.settle()
		n++
	}
	for ; s.state != stateGone; n++ {
		var dl chan *Delivery
		if s.canTake() {
			dl = s.deliveries
		}
		if s.park(dl) {
			parked = true
			return
		}
		if inline && n >= inlineBudget {
			return
		}
		select {
		case in := <-s.inbox:
			s.queued.Add(-1)
			s.onMessage(in)
		case ev := <-s.control:
			s.queued.Add(-1)
			s.onControl(ev)
		case d := <-dl:
			s.take(d)
		case <-s.tick:
			s.queued.Add(-1)
			s.armedFor, s.armedKeepAlive = time.Time{}, false
			s.onTimer(time.Now())
		case <-s.quit:
			s.shutdown()
		}
		s.settle()
	}
}

// settle does what follows every event: the loss of the client's address
// to another, delivery of what is queued, the timer, and whether the
// upstream worker may end when idle.
func (s *session) settle() {
	if s.replaced.Swap(false) && s.state != stateDisconnected && s.state != stateGone {
		s.lose("another client connected from its address")
	}
	s.pump()
	s.rearm()
	if idle := s.state == stateAsleep || s.state == stateDisconnected; idle != s.workerIdle {
		s.workerIdle = idle
		s.opq.setIdleExit(idle)
	}
}

// finish releases an ended session: it leaves the gateway, its upstream
// worker ends, and what was posted meanwhile is handed back.
func (s *session) finish() {
	close(s.loopDone)
	s.g.forget(s, s.peer)
	s.handBack()
	s.opq.close()
	s.cancel()
	s.opq.done.Wait()
	s.timer.Stop()
	s.g.sessions.Done()
}

// handBack re-dispatches what was posted to the session after it stopped
// reading and before it left the gateway's maps: a CONNECT goes to a new
// session, a wake-up finds none.
func (s *session) handBack() {
	for {
		select {
		case ev := <-s.control:
			s.queued.Add(-1)
			switch ev := ev.(type) {
			case evConnect:
				s.g.connect(ev.peer, ev.msg)
			case evWake:
				send(ev.peer, &mqttsn.Disconnect{})
			}
		default:
			return
		}
	}
}

// rearm makes the timer fire no later than the earliest deadline of the
// state.
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
	case stateAsleep:
		consider(s.sleepAt) // nothing is sent to a sleeping radio
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
	keepAlive := next.Equal(s.keepAliveAt)
	if keepAlive && s.armedKeepAlive && !s.armedFor.IsZero() && next.After(s.armedFor) {
		// The keep-alive deadline moves with every message: the timer
		// fires early, once per keep-alive period, finds nothing due and
		// is armed again then, instead of being moved every message.
		return
	}
	s.timer.Stop()
	s.armedFor, s.armedKeepAlive = next, keepAlive
	if !next.IsZero() {
		s.timer.Reset(time.Until(next))
	}
}

func (s *session) onTimer(now time.Time) {
	switch s.state {
	case stateDisconnected:
		if !s.expireAt.IsZero() && !now.Before(s.expireAt) {
			s.logDebug().Msg("persisted session expired")
			s.g.stats.expired.Add(1)
			s.state = stateGone
		}
		return
	case stateAsleep:
		if !now.Before(s.sleepAt) {
			s.lose("sleep timer expired")
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

// send encodes m into the session's buffer and writes it to the client.
func (s *session) send(m mqttsn.Message) {
	b, err := s.peer.encode(s.wbuf[:0], m)
	if err != nil {
		s.logError().Err(err).Msg("cannot encode reply")
		return
	}
	s.wbuf = b
	if err := s.peer.via.WriteTo(b, s.peer.addr); err != nil {
		s.logDebug().Err(err).Msg("send failed")
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
		if s.outstanding.Load() >= opsSize {
			return false
		}
		s.outstanding.Add(1)
	}
	if o.kind == opPublish && s.publishInline(o) {
		return true
	}
	s.opq.push(o)
	return true
}

func (s *session) onControl(ev any) {
	switch ev := ev.(type) {
	case evConnect:
		s.onConnect(ev)
	case evWake:
		s.onWake(ev.peer, ev.sameOwner)
	case evReplaced:
		// handled through s.replaced after every event
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
func (s *session) onMessage(in inbound) {
	m := in.msg
	if in.from != s.peer {
		// Sent from the address the session had before a takeover or a
		// move, and routed before the move: not this connection's.
		s.unexpected(m)
		return
	}
	switch s.state {
	case stateDisconnected, stateGone:
		// Routed just before the session let go of the address: answer as
		// if there were no session (a request gets DISCONNECT).
		s.g.noSession(in.from, m)
		return
	case stateNew:
		s.unexpected(m)
		return
	case stateAsleep:
		// An asleep client only wakes, sleeps again or leaves (§6.14).
		switch m := m.(type) {
		case *mqttsn.PingReq:
			s.wakeUp()
		case *mqttsn.Disconnect:
			s.onDisconnect(m)
		default:
			s.unexpected(m)
		}
		return
	}
	if s.keepAlive > 0 && s.state != stateAwake {
		s.keepAliveAt = time.Now().Add(s.keepAliveSilence())
	}
	switch m := m.(type) {
	case *mqttsn.WillTopic:
		s.onWillTopic(m)
	case *mqttsn.WillMsg:
		s.onWillMsg(m)
	case *mqttsn.PingReq:
		if s.state != stateAwake { // awake: the PINGRESP ends the flush
			s.send(&mqttsn.PingResp{})
		}
	case *mqttsn.Disconnect:
		s.onDisconnect(m)
	default:
		if s.state != stateActive && s.state != stateAwake {
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
	if e := s.logDebug(); e.Enabled() {
		e.Stringer("type", m.Type()).Stringer("state", s.state).Msg("dropped unexpected message")
	}
}

// lose ends a session whose client stopped answering: the upstream
// connection is dropped without DISCONNECT so the broker publishes the Will
// (A8). Nothing the gateway held for the client was acknowledged to the
// broker, so a CleanSession=0 reconnect gets it again.
func (s *session) lose(reason string) {
	s.logInfo().Str("reason", reason).Stringer("peer", s.peer).Msg("client lost")
	s.g.stats.lost.Add(1)
	if s.connected {
		s.request(op{kind: opDrop})
	}
	s.endConnection()
}

// onUpstreamLost ends a session whose broker connection dropped: the client
// is told with DISCONNECT.
func (s *session) onUpstreamLost(err error) {
	s.logWarn().Err(err).Msg("upstream connection lost; disconnecting the client")
	s.g.stats.upstreamLost.Add(1)
	s.connected = false
	s.send(&mqttsn.Disconnect{})
	s.endConnection()
}

// endConnection leaves the connected states: a CleanSession=0 session is
// kept (registrations, subscriptions, Will) until SessionExpiry or the next
// CONNECT; any other ends. Buffered messages are released unacknowledged.
func (s *session) endConnection() {
	s.connected = false
	s.retireConn()
	s.out = nil
	s.willUpdate = nil
	s.pendingWill = nil
	s.upPending = nil
	s.dropQueue()
	s.keepAliveAt, s.sleepAt = time.Time{}, time.Time{}
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
		s.handler, s.deliveries = nil, nil
	}
}

// openConn queues the opening of a new upstream connection, with a fresh
// channel for its deliveries.
func (s *session) openConn(p ConnectParams) {
	s.retireConn()
	s.handler = &connHandler{
		s:     s,
		gen:   s.connGen,
		ch:    make(chan *Delivery, s.g.cfg.ReceiveMaximum+qos0Headroom),
		stale: make(chan struct{}),
	}
	s.deliveries = s.handler.ch
	s.request(op{kind: opConnect, params: p, handler: s.handler})
}

// dropQueue releases the queued broker messages unacknowledged: the broker
// delivers them again if the session resumes.
func (s *session) dropQueue() {
	s.g.stats.queued.Add(-int64(len(s.queue)))
	s.queue, s.queueBytes = nil, 0
}

// canTake reports whether the session takes broker messages now: while the
// client is connected and the queue has room.
func (s *session) canTake() bool {
	if s.deliveries == nil {
		return false
	}
	switch s.state {
	case stateActive, stateAsleep, stateAwake:
		return len(s.queue) < s.g.cfg.SleepMaxMessages && s.queueBytes < s.g.cfg.SleepMaxBytes
	}
	return false
}

// take queues a broker message. While the client sleeps, QoS 0 is dropped
// (and counted) unless SleepBufferQoS0.
func (s *session) take(m *Delivery) {
	d := delivery{Delivery: m, gen: s.handler.gen}
	if d.QoS == 0 {
		s.handler.qos0.Add(-1)
		if s.state == stateAsleep && !s.g.cfg.SleepBufferQoS0 {
			s.dropDelivery(&d, "QoS 0 for a sleeping client")
			return
		}
	}
	s.queue = append(s.queue, d)
	s.queueBytes += d.size()
	s.g.stats.queued.Add(1)
}

// takeWaiting moves the broker messages waiting in the connection into the
// queue, as far as it has room, and reports whether it took any.
func (s *session) takeWaiting() bool {
	took := false
	for s.canTake() {
		select {
		case d := <-s.deliveries:
			s.take(d)
			took = true
		default:
			return took
		}
	}
	return took
}

// pump sends queued broker messages while the client can receive them,
// starts a pending Will update once nothing is in flight, and ends a
// wake-up's flush with PINGRESP when everything has been delivered.
func (s *session) pump() {
	for {
		for s.out == nil && s.willUpdate == nil && (s.state == stateActive || s.state == stateAwake) && len(s.queue) > 0 {
			d := s.queue[0]
			s.queue[0] = delivery{}
			s.queue = s.queue[1:]
			s.queueBytes -= d.size()
			s.g.stats.queued.Add(-1)
			if len(s.queue) == 0 {
				s.queue = nil
			}
			s.onDelivery(d)
		}
		if s.out == nil && s.willUpdate != nil && !s.willUpdate.started && (s.state == stateActive || s.state == stateAwake) {
			s.startWillUpdate() // deliveries resume with its result
		}
		if s.state != stateAwake || s.out != nil || len(s.queue) > 0 {
			return
		}
		// Messages that arrived during the flush join it (§6.14).
		if !s.takeWaiting() {
			s.finishFlush()
			return
		}
	}
}

// nextID returns the next gateway MsgId, never 0 (A5).
func (s *session) nextID() uint16 {
	s.nextMsgID++
	if s.nextMsgID == 0 {
		s.nextMsgID = 1
	}
	return s.nextMsgID
}
