package gateway

import (
	"context"
	"errors"
	"fmt"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// opKind is the kind of an upstream request.
type opKind uint8

const (
	opConnect opKind = iota
	opPublish
	opSubscribe
	opUnsubscribe
	opDisconnect // clean: MQTT DISCONNECT, no Will
	opDrop       // lost: close without DISCONNECT, the broker publishes the Will
)

// op is one request for a session's upstream worker. The worker runs them
// one after another, in the order the session queued them, so that a
// client's messages reach the broker in the order it sent them.
type op struct {
	kind  opKind
	epoch uint64 // the session's epoch when queued

	params  ConnectParams // opConnect
	handler *connHandler  // opConnect: receives the new connection's messages

	msg     Message // opPublish
	msgID   uint16  // the client's MsgId, for the answer
	topicID uint16  // the client's TopicId, for the answer

	endSession bool // opDisconnect: discard the broker session too

	filter   string // opSubscribe, opUnsubscribe
	qos      byte   // opSubscribe
	internal bool   // opUnsubscribe issued by the gateway itself (A13): no UNSUBACK
}

// Results of upstream requests, reported on the session's control channel.
type (
	resConnect struct {
		epoch uint64
		gen   uint64
		err   error
	}
	resPublish struct {
		pub published
		err error
	}
	resSubscribe struct {
		op      op
		granted byte
		err     error
	}
	resUnsubscribe struct {
		op  op
		err error
	}
	evLost struct {
		gen uint64
		err error
	}
)

// opQueue is the session's queue of upstream requests and the home of its
// worker. It never blocks the session: the session bounds the requests it
// queues on the client's behalf itself (congestion beyond opsSize), and
// connection life-cycle requests must never be lost.
//
// The worker goroutine is started by the first request and lives while the
// session is active; while the client sleeps (idleExit) it ends as soon as
// the queue is empty, leaving the upstream connection in conn, and the next
// request starts a new one. A sleeping client so costs no worker goroutine,
// and an active one never starts a goroutine per message.
type opQueue struct {
	// What tryInline looks at first (a session's message touches them).
	mu       sync.Mutex
	closed   bool // the session has ended: run what is queued, then close conn
	running  bool // a worker goroutine is running
	idleExit bool // the worker ends when the queue is empty
	waiting  bool // the running worker waits for requests
	idleConn Conn // the running worker's connection while it waits for requests (see tryInline)
	items    []op

	conn   Conn // the upstream connection while no worker holds it
	start  func()
	done   sync.WaitGroup // the running worker
	signal chan struct{}
}

// init readies the queue, whose worker is start.
func (q *opQueue) init(start func()) {
	q.start, q.signal = start, make(chan struct{}, 1)
}

// wake makes sure a worker runs or will look at the queue again. q.mu is held.
func (q *opQueue) wakeLocked() {
	if !q.running {
		q.running = true
		q.done.Add(1)
		go q.start()
		return
	}
	select {
	case q.signal <- struct{}{}:
	default:
	}
}

func (q *opQueue) push(o op) {
	q.mu.Lock()
	q.items = append(q.items, o)
	q.wakeLocked()
	q.mu.Unlock()
}

// setIdleExit lets the worker end when it has nothing to do (true), or keeps
// it waiting for requests (false).
func (q *opQueue) setIdleExit(v bool) {
	q.mu.Lock()
	q.idleExit = v
	if v && q.running {
		q.wakeLocked()
	}
	q.mu.Unlock()
}

// close ends the queue: a worker runs what is queued, closes the connection
// if still open, and ends; done is released then.
func (q *opQueue) close() {
	q.mu.Lock()
	q.closed = true
	if q.running || q.conn != nil || len(q.items) > 0 {
		q.wakeLocked()
	}
	q.mu.Unlock()
}

// next waits for requests and returns them all. ok is false when the worker
// is to end: the queue closed (last is set) or idle with idleExit.
func (q *opQueue) next(buf []op, conn Conn) (items []op, ok, last bool) {
	for {
		q.mu.Lock()
		if len(q.items) > 0 {
			items = append(buf[:0], q.items...)
			clear(q.items)
			q.items = q.items[:0]
			q.mu.Unlock()
			return items, true, false
		}
		if q.closed || q.idleExit {
			q.running = false
			last = q.closed
			if !last {
				q.conn = conn
			}
			q.mu.Unlock()
			return nil, false, last
		}
		q.idleConn, q.waiting = conn, true // for tryInline
		q.mu.Unlock()
		<-q.signal
		q.mu.Lock()
		q.idleConn, q.waiting = nil, false
		q.mu.Unlock()
	}
}

// tryInline runs f in the caller's goroutine on the connection of a
// worker that waits with nothing queued, so that what f writes follows
// everything the worker wrote, and returns what f reports; it returns
// false when the worker is busy, not running or has no connection. Only
// the session's owner, the one that queues requests, calls it: nothing
// is queued while f runs.
func (q *opQueue) tryInline(f func(Conn) bool) bool {
	q.mu.Lock()
	if !q.waiting || len(q.items) > 0 || q.closed || q.idleConn == nil {
		q.mu.Unlock()
		return false
	}
	conn := q.idleConn
	q.mu.Unlock()
	return f(conn)
}

// worker runs the session's upstream requests. It holds the upstream
// connection while it runs; when the queue closes it closes the connection
// if the requests left it open.
func (s *session) worker() {
	q := &s.opq
	defer q.done.Done()
	q.mu.Lock()
	conn := q.conn
	q.conn = nil
	q.mu.Unlock()
	var buf []op
	for {
		items, ok, last := q.next(buf, conn)
		if !ok {
			if last && conn != nil {
				conn.Disconnect(false)
			}
			return
		}
		buf = items
		for i := range items {
			conn = s.safeExec(conn, items[i])
		}
	}
}

// safeExec is exec with a panic turned into a failed request, so that the
// session never waits for a result that will not come.
func (s *session) safeExec(conn Conn, o op) (next Conn) {
	defer func() {
		r := recover()
		if r == nil {
			return
		}
		s.logError().Str("panic", fmt.Sprint(r)).Bytes("stack", debug.Stack()).Msg("upstream request crashed")
		err := errors.New("upstream request crashed")
		switch o.kind {
		case opConnect:
			s.report(resConnect{epoch: o.epoch, gen: o.handler.gen, err: err})
		case opPublish:
			s.report(resPublish{pub: o.published(), err: err})
		case opSubscribe:
			s.report(resSubscribe{op: o, err: err})
		case opUnsubscribe:
			s.report(resUnsubscribe{op: o, err: err})
		}
		if conn != nil {
			conn.Drop()
		}
		next = nil
	}()
	return s.exec(conn, o)
}

// exec runs one request on conn and returns the connection to use next.
func (s *session) exec(conn Conn, o op) Conn {
	cfg := &s.g.cfg
	switch o.kind {
	case opConnect:
		if conn != nil {
			conn.Disconnect(false)
		}
		ctx, cancel := context.WithTimeout(s.ctx, cfg.UpstreamTimeout)
		c, err := s.g.up.Connect(ctx, o.params, o.handler)
		cancel()
		s.report(resConnect{epoch: o.epoch, gen: o.handler.gen, err: err})
		if err != nil {
			return nil
		}
		return c
	case opDisconnect:
		if conn != nil {
			conn.Disconnect(o.endSession)
		}
		return nil
	case opDrop:
		if conn != nil {
			conn.Drop()
		}
		return nil
	case opPublish:
		s.publish(conn, o)
		return conn
	}
	ctx, cancel := context.WithTimeout(s.ctx, cfg.UpstreamTimeout)
	defer cancel()
	switch o.kind {
	case opSubscribe:
		var granted byte
		err := errNotConnected
		if conn != nil {
			granted, err = conn.Subscribe(ctx, o.filter, o.qos)
		}
		s.report(resSubscribe{op: o, granted: granted, err: err})
	case opUnsubscribe:
		err := errNotConnected
		if conn != nil {
			err = conn.Unsubscribe(ctx, o.filter)
		}
		s.report(resUnsubscribe{op: o, err: err})
	}
	return conn
}

// publish forwards a client's message. A QoS 0 message is done once
// written: the worker ends it itself, the session need not be woken. The
// outcome of a QoS 1 or 2 message comes later, from the connection's
// reader, and goes to the session; the worker does not wait for it.
func (s *session) publish(conn Conn, o op) {
	if conn == nil {
		s.report(resPublish{pub: o.published(), err: errNotConnected})
		return
	}
	if o.msg.QoS == 0 {
		if err := conn.Publish(s.ctx, o.msg, nil); err != nil {
			s.report(resPublish{pub: o.published(), err: err})
			return
		}
		s.qos0Published()
		return
	}
	done := s.publishDone(o)
	if err := conn.Publish(s.ctx, o.msg, done); err != nil {
		done(err)
	}
}

// published is what the answer to a client's PUBLISH needs of its request.
type published struct {
	epoch   uint64
	topic   string // for the log
	msgID   uint16
	topicID uint16
	qos     byte
}

func (o *op) published() published {
	return published{epoch: o.epoch, topic: o.msg.Topic, msgID: o.msgID, topicID: o.topicID, qos: o.msg.QoS}
}

// publishDone returns what tells the session the outcome of a QoS 1 or 2
// publication. A success comes from the connection's reader, which handles
// it itself when the session is free; a failure may come from any goroutine
// (a timer, the worker closing the connection) and is only queued.
func (s *session) publishDone(o op) func(error) {
	p := o.published()
	return func(err error) {
		if err == nil {
			s.publishAcked(p)
			return
		}
		s.report(resPublish{pub: p, err: err})
	}
}

// publishInline writes a client's message from the session's owner,
// without the worker, when the worker waits with nothing queued and the
// connection takes the message without waiting: one goroutine hand-off
// less per message. It reports false when the worker must publish it.
func (s *session) publishInline(o op) bool {
	return s.opq.tryInline(func(c Conn) bool {
		if o.msg.QoS == 0 {
			if !c.TryPublish(o.msg, nil) {
				return false
			}
			s.qos0Published()
			return true
		}
		return c.TryPublish(o.msg, s.publishDone(o))
	})
}

// qos0Published ends a client's QoS 0 PUBLISH once written: nothing
// answers it, the session need not hear of it.
func (s *session) qos0Published() {
	s.g.stats.publishUp.Add(1)
	s.outstanding.Add(-1)
}

// connHandler passes one upstream connection's messages and loss to its
// session, tagged with the connection's generation. The session closes
// stale when it stops caring about the connection.
type connHandler struct {
	s     *session
	gen   uint64
	ch    chan *Delivery // Receive Maximum + qos0Headroom: QoS 1/2 never wait on QoS 0
	stale chan struct{}
	qos0  atomic.Int32 // QoS 0 messages in ch
}

// Deliver queues a broker message for the session and, on paho's routing
// goroutine, handles it there if the session is free. QoS 1 and 2 wait for
// room (the broker's Receive Maximum bounds them) unless the connection has
// gone stale; QoS 0 is dropped and counted when the session is not keeping
// up.
func (h *connHandler) Deliver(m *Delivery) {
	if m.QoS == 0 {
		if h.qos0.Add(1) <= qos0Headroom {
			select {
			case h.ch <- m:
				h.s.noteDelivery()
				h.s.runHere()
				return
			default:
			}
		}
		h.qos0.Add(-1)
		h.s.g.stats.downlinkDropped.Add(1)
		return
	}
	select {
	case h.ch <- m:
		h.s.noteDelivery()
		h.s.runHere()
	case <-h.stale:
	case <-h.s.loopDone:
	}
}

// Lost reports the connection's loss to the session.
func (h *connHandler) Lost(err error) { h.s.report(evLost{gen: h.gen, err: err}) }
