package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"
	"github.com/eclipse/paho.golang/paho/session"
)

// connState is the paho session state of one broker connection. It
// replaces paho's in-memory state, which is built to carry a session over
// reconnections: it copies every outgoing QoS 1/2 PUBLISH into a store and
// starts a goroutine per PUBLISH to watch the connection. The gateway opens
// a new paho client for every connection and leaves the session itself to
// the broker, so none of that is needed: what is left is packet identifiers
// and the routing of acknowledgements.
//
// Broker messages are acknowledged only when the gateway calls the
// Delivery's Ack (ack), after the sensor acknowledged them; paho's own
// request to acknowledge (Ack) is ignored.
type connState struct {
	ended      func(*packets.Disconnect) // told once when the connection ends
	raw        *connWriter               // the network connection, for whole packets (see packetConn)
	ackTimeout time.Duration             // how long a PUBLISH waits for its acknowledgement

	mu         sync.Mutex
	connected  atomic.Bool // written under mu; read without it by a QoS 0 PUBLISH
	lastID     uint16
	requests   map[uint16]chan<- packets.ControlPacket // paho's requests (SUBSCRIBE, UNSUBSCRIBE) awaiting their acknowledgement: where it goes
	flights    flights                                 // our QoS 1/2 PUBLISHes awaiting their acknowledgement
	room       chan struct{}                           // signalled when a flight ends (see takeOff, drain)
	expiry     *time.Timer                             // fails flights older than ackTimeout (see expire)
	expiryLive bool                                    // expiry is armed
	pubrecSet  map[uint16]struct{}                     // broker QoS 2 messages we sent PUBREC for, awaiting PUBREL
	backlog    []byte                                  // acknowledgements waiting for the socket, in order (see write)
	flushing   bool                                    // a goroutine writes the backlog
}

// flight is one of our QoS 1/2 PUBLISHes awaiting the broker's answer.
type flight struct {
	topic string
	sent  time.Time
	done  func(error) // told the outcome, once; nil once told of a timeout
}

var _ session.SessionManager = (*connState)(nil)

// Acknowledgements without reason code or properties (MQTT 5 §3.4.2.1:
// a Remaining Length of 2 means success).
func ackPacket(packetType byte, id uint16) []byte {
	flags := byte(0)
	if packetType == packets.PUBREL {
		flags = 2
	}
	return []byte{packetType<<4 | flags, 2, byte(id >> 8), byte(id)}
}

// ConAckReceived starts using conn.
func (s *connState) ConAckReceived(io.Writer, *packets.Connect, *packets.Connack) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.connected.Store(true)
	return nil
}

// ConnectionLost is called by paho when the broker sent DISCONNECT (dp) and
// when the connection closed (nil), before paho waits for a Deliver in
// progress to return. (paho calls OnClientError and OnServerDisconnect only
// after that wait, which a Deliver waiting for the session would make
// endless.) Requests in flight fail.
func (s *connState) ConnectionLost(dp *packets.Disconnect) error {
	s.end()
	s.ended(dp)
	return nil
}

// end stops using the connection and fails the requests in flight (an
// empty ControlPacket tells paho the session is shutting down).
func (s *connState) end() {
	s.mu.Lock()
	s.connected.Store(false)
	for _, resp := range s.requests {
		deliver(resp, packets.ControlPacket{})
	}
	s.requests = nil
	ended := s.flights.clear()
	if s.expiry != nil {
		s.expiry.Stop()
		s.expiryLive = false
	}
	s.signalRoom()
	s.mu.Unlock()
	for _, f := range ended {
		if f.done != nil {
			f.done(publishOutcome(f.topic, 0, errEndedBeforeAck))
		}
	}
}

// errNoRoom: the broker's Receive Maximum of PUBLISHes are unacknowledged.
var errNoRoom = errors.New("the broker's Receive Maximum of PUBLISHes are unacknowledged")

// errUnanswered refuses a PUBLISH while every place under the broker's
// Receive Maximum is held by one it never acknowledged.
var errUnanswered = errors.New("the broker's Receive Maximum is held by PUBLISHes it has not acknowledged within the timeout")

// errEndedBeforeAck fails the PUBLISHes in flight when the connection ends.
var errEndedBeforeAck = errors.New("connection ended before the broker acknowledged the PUBLISH")

// AddToSession gives packet an identifier and remembers where its
// acknowledgement goes. paho asks only for SUBSCRIBE and UNSUBSCRIBE,
// which the broker's Receive Maximum does not count.
func (s *connState) AddToSession(_ context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.allocate(resp)
	if err == nil {
		packet.SetIdentifier(id)
	}
	return err
}

// allocate gives a request the next free packet identifier and, for
// paho's requests (resp not nil), remembers where its acknowledgement
// goes; s.mu is held.
func (s *connState) allocate(resp chan<- packets.ControlPacket) (uint16, error) {
	if !s.connected.Load() {
		return 0, session.ErrNoConnection
	}
	for range 1 << 16 {
		s.lastID++
		if s.lastID == 0 {
			continue
		}
		_, request := s.requests[s.lastID]
		flying := s.flights.has(s.lastID)
		if !request && !flying {
			if resp != nil {
				if s.requests == nil {
					s.requests = make(map[uint16]chan<- packets.ControlPacket, 1)
				}
				s.requests[s.lastID] = resp
			}
			return s.lastID, nil
		}
	}
	return 0, session.ErrPacketIdentifiersExhausted
}

// finish hands the acknowledgement of request id to its waiter.
func (s *connState) finish(id uint16, recv *packets.ControlPacket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if resp, ok := s.requests[id]; ok {
		deliver(resp, *recv)
		delete(s.requests, id)
		if len(s.requests) == 0 {
			s.requests = nil // so that allocate, per PUBLISH, looks up nothing (an empty map's header is one more cache miss)
		}
	}
}

// deliver hands an answer to a request's waiter without blocking: paho
// gives each request a channel with room for one answer.
func deliver(ch chan<- packets.ControlPacket, cp packets.ControlPacket) {
	select {
	case ch <- cp:
	default:
	}
}

// write sends an acknowledgement, a whole packet, without waiting: at
// once when the socket takes it and no earlier one waits, else after
// those, written in order by a goroutine (MQTT wants acknowledgements in
// the order of what they answer), so that neither the session (Delivery's
// Ack) nor the reader ever waits on the socket. The backlog is bounded by
// the messages in flight. s.mu is held. A failed write surfaces as the
// connection's loss on paho's reader.
func (s *connState) write(b []byte) {
	if !s.connected.Load() {
		return
	}
	if !s.flushing && s.raw.tryWrite(b) {
		return
	}
	s.backlog = append(s.backlog, b...)
	if !s.flushing {
		s.flushing = true
		go s.flush()
	}
}

// flush writes the acknowledgements that could not be written at once,
// in order, until none are left.
func (s *connState) flush() {
	for {
		s.mu.Lock()
		b := s.backlog
		s.backlog = nil
		if len(b) == 0 || !s.connected.Load() {
			s.flushing = false
			s.signalRoom() // drain looks again
			s.mu.Unlock()
			return
		}
		s.mu.Unlock()
		if _, err := s.raw.Write(b); err != nil {
			s.mu.Lock()
			s.flushing, s.backlog = false, nil
			s.mu.Unlock()
			_ = s.raw.Close() // paho's reader reports the loss at once
			return
		}
	}
}

// PacketReceived handles the acknowledgements of paho's requests and the
// broker's PUBLISHes. (PUBACK, PUBREC, PUBREL and PUBCOMP never get here:
// packetConn hands them to ackReceived.)
func (s *connState) PacketReceived(recv *packets.ControlPacket, pubChan chan<- *packets.Publish) error {
	switch p := recv.Content.(type) {
	case *packets.Suback:
		s.finish(p.PacketID, recv)
	case *packets.Unsuback:
		s.finish(p.PacketID, recv)
	case *packets.Publish:
		if p.QoS == 2 && p.Duplicate {
			s.mu.Lock()
			_, seen := s.pubrecSet[p.PacketID]
			if seen { // delivered and acknowledged already: acknowledge again
				s.write(ackPacket(packets.PUBREC, p.PacketID))
			}
			s.mu.Unlock()
			if seen {
				return nil
			}
		}
		pubChan <- p
	}
	return nil
}

// ackReceived handles an acknowledgement packet (PUBACK, PUBREC, PUBREL,
// PUBCOMP) on the connection's reader, without paho: an acknowledgement of
// our PUBLISH ends its flight (a PUBREC that accepts it is answered with
// PUBREL first), and the broker's PUBREL of a message to the sensor is
// answered with PUBCOMP. rc is the packet's reason code (0 when absent).
func (s *connState) ackReceived(kind byte, id uint16, rc byte) {
	s.mu.Lock()
	switch kind {
	case packets.PUBREL:
		delete(s.pubrecSet, id)
		s.write(ackPacket(packets.PUBCOMP, id))
		s.mu.Unlock()
		return
	case packets.PUBREC:
		if !s.flights.has(id) {
			s.write([]byte{packets.PUBREL<<4 | 2, 3, byte(id >> 8), byte(id), 0x92}) // identifier not found
			s.mu.Unlock()
			return
		}
		if rc < 0x80 {
			s.write(ackPacket(packets.PUBREL, id))
			s.mu.Unlock()
			return
		}
		// A refusal ends a QoS 2 exchange at PUBREC.
	}
	f, ok := s.land(id)
	s.mu.Unlock()
	if ok && f.done != nil {
		f.done(publishOutcome(f.topic, rc, nil))
	}
}

// land ends the flight of identifier id, if there is one, freeing its
// identifier and its place under the broker's Receive Maximum; s.mu is
// held.
func (s *connState) land(id uint16) (flight, bool) {
	f, ok := s.flights.take(id)
	if ok {
		s.signalRoom()
	}
	return f, ok
}

// Ack ignores paho's automatic acknowledgement of a broker message: ack
// sends it when the sensor has acknowledged.
func (s *connState) Ack(*packets.Publish) error { return nil }

// ack acknowledges a broker message: PUBACK for QoS 1, PUBREC for QoS 2.
func (s *connState) ack(qos byte, id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch qos {
	case 1:
		s.write(ackPacket(packets.PUBACK, id))
	case 2:
		if s.pubrecSet == nil {
			s.pubrecSet = make(map[uint16]struct{}, 1)
		}
		s.pubrecSet[id] = struct{}{}
		s.write(ackPacket(packets.PUBREC, id))
	}
}

// Close releases the state.
func (s *connState) Close() error {
	s.end()
	return nil
}

// SetErrorLogger is part of paho's SessionManager; the state logs nothing.
func (s *connState) SetErrorLogger(log.Logger) {}

// SetDebugLogger is part of paho's SessionManager; the state logs nothing.
func (s *connState) SetDebugLogger(log.Logger) {}

// serverLimits are what the broker's CONNACK allows a publication.
type serverLimits struct {
	receiveMax    uint16 // QoS 1/2 PUBLISHes the broker takes unacknowledged; 65535 unless it said less
	maxQoS        byte   // 2 unless the broker said less
	retain        bool   // retained messages are available
	maxPacketSize uint32 // 0: no limit
}

// limitsOf reads the limits from a CONNACK's properties.
func limitsOf(p *paho.ConnackProperties) serverLimits {
	l := serverLimits{receiveMax: 65535, maxQoS: 2, retain: true}
	if p == nil {
		return l
	}
	if p.ReceiveMaximum != nil && *p.ReceiveMaximum > 0 {
		l.receiveMax = *p.ReceiveMaximum
	}
	if p.MaximumQoS != nil {
		l.maxQoS = *p.MaximumQoS
	}
	l.retain = p.RetainAvailable
	if p.MaximumPacketSize != nil {
		l.maxPacketSize = *p.MaximumPacketSize
	}
	return l
}

// errRefused is a publication the broker's limits do not allow; the caller
// turns it into a refusal.
type errRefused struct{ reason string }

func (e *errRefused) Error() string { return e.reason }

// publishBuffers recycles the buffers PUBLISH packets are encoded into.
var publishBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// publish writes a PUBLISH of its own encoding, whole, to the network
// connection. For QoS 1 and 2 it does not wait for the acknowledgement:
// done is told the outcome when the PUBACK or PUBCOMP arrives (the PUBREL
// in between is sent by ackReceived), when the broker refuses, when the
// connection ends or after ackTimeout without an answer. An error from
// publish means nothing was sent and done will not be called. While the
// broker's Receive Maximum of PUBLISHes are unacknowledged, publish waits
// (until ctx ends) for one of them to finish.
//
// The gateway publishes here rather than through paho's Publish: paho
// builds each PUBLISH out of a dozen allocations, two contexts and a
// writev of four pieces, which at tens of thousands of messages a second
// was a third of the gateway's CPU; and waiting for the acknowledgement
// cost the worker a wake-up per message. publish and tryPublish are called
// one at a time: by the session's upstream worker, or by the session while
// the worker waits with nothing to do.
func (s *connState) publish(ctx context.Context, lim serverLimits, topic string, payload []byte, qos byte, retain bool, done func(error)) error {
	_, err := s.send(ctx, lim, topic, payload, qos, retain, done, true)
	return err
}

// tryPublish is publish without waiting: it sends the PUBLISH only if
// that needs no wait, for room under the broker's Receive Maximum or in
// the connection's send buffer, and reports whether it did (done is then
// told the outcome as for publish). When it reports false nothing was
// sent, and publish will tell why or wait.
func (s *connState) tryPublish(lim serverLimits, topic string, payload []byte, qos byte, retain bool, done func(error)) bool {
	if !s.raw.canTry() {
		return false // TLS, or no raw writes here: every write may wait
	}
	sent, _ := s.send(context.Background(), lim, topic, payload, qos, retain, done, false)
	return sent
}

// send is publish (wait) and tryPublish (not wait). sent reports that the
// PUBLISH went out: for QoS 1/2, done has been or will be told its
// outcome. When nothing was sent, err says why.
func (s *connState) send(ctx context.Context, lim serverLimits, topic string, payload []byte, qos byte, retain bool, done func(error), wait bool) (sent bool, err error) {
	bp, idAt, err := encodePublish(lim, topic, payload, qos, retain)
	if err != nil {
		return false, err
	}
	defer releasePublish(bp)
	b := *bp
	if qos == 0 {
		if !s.connected.Load() {
			return false, session.ErrNoConnection
		}
		return s.writeOut(b, wait)
	}
	id, err := s.takeOff(ctx, lim.receiveMax, topic, done, wait)
	if err != nil {
		return false, err
	}
	b[idAt], b[idAt+1] = byte(id>>8), byte(id)
	if sent, err = s.writeOut(b, wait); sent {
		return true, nil
	}
	// Not written: the broker will never answer this identifier.
	s.mu.Lock()
	f, flying := s.land(id)
	s.mu.Unlock()
	if !flying || f.done == nil {
		return true, nil // the connection ended, or the timeout was told, meanwhile: done knows
	}
	return false, err
}

// writeOut writes a whole packet: with wait, however long the socket
// takes; without, only if it takes the packet at once.
func (s *connState) writeOut(b []byte, wait bool) (bool, error) {
	if !wait {
		return s.raw.tryWrite(b), nil
	}
	if _, err := s.raw.Write(b); err != nil {
		return false, err
	}
	return true, nil
}

// isTopicName reports whether topic can name an MQTT PUBLISH: not empty, no
// wildcard. (A loop over the octets: strings.ContainsAny builds a set on
// every call, and this runs for every message.)
func isTopicName(topic string) bool {
	for i := 0; i < len(topic); i++ {
		if topic[i] == '+' || topic[i] == '#' {
			return false
		}
	}
	return topic != ""
}

// encodePublish checks a publication against the broker's limits and
// encodes it into a pooled buffer (give it back with releasePublish);
// idAt is where the packet identifier goes (QoS 1 and 2).
func encodePublish(lim serverLimits, topic string, payload []byte, qos byte, retain bool) (bp *[]byte, idAt int, err error) {
	switch {
	case !isTopicName(topic):
		return nil, 0, &errRefused{fmt.Sprintf("topic %q is not a topic name", topic)}
	case qos > lim.maxQoS:
		return nil, 0, &errRefused{fmt.Sprintf("QoS %d is above the broker's maximum QoS %d", qos, lim.maxQoS)}
	case retain && !lim.retain:
		return nil, 0, &errRefused{"the broker does not support retained messages"}
	}
	remaining := 2 + len(topic) + 1 + len(payload) // topic, property length 0, payload
	if qos > 0 {
		remaining += 2
	}
	if remaining > 268435455 {
		return nil, 0, &errRefused{"message too large for MQTT"}
	}
	bp = publishBuffers.Get().(*[]byte)
	header := byte(packets.PUBLISH<<4) | qos<<1
	if retain {
		header |= 1
	}
	b := append((*bp)[:0], header)
	for n := remaining; ; {
		digit := byte(n % 128)
		n /= 128
		if n > 0 {
			digit |= 0x80
		}
		b = append(b, digit)
		if n == 0 {
			break
		}
	}
	if lim.maxPacketSize > 0 && uint64(len(b)+remaining) > uint64(lim.maxPacketSize) {
		releasePublish(bp)
		return nil, 0, &errRefused{fmt.Sprintf("message of %d octets is larger than the broker's maximum packet size %d", len(b)+remaining, lim.maxPacketSize)}
	}
	b = append(b, byte(len(topic)>>8), byte(len(topic)))
	b = append(b, topic...)
	idAt = len(b)
	if qos > 0 {
		b = append(b, 0, 0)
	}
	b = append(b, 0) // no properties
	b = append(b, payload...)
	*bp = b
	return bp, idAt, nil
}

// releasePublish gives an encoding buffer back to the pool.
func releasePublish(bp *[]byte) {
	if cap(*bp) <= 64<<10 {
		publishBuffers.Put(bp)
	}
}

// takeOff waits until fewer than max PUBLISHes are unacknowledged (or,
// unless wait, fails with errNoRoom), then gives a new one an identifier
// and records its flight.
func (s *connState) takeOff(ctx context.Context, max uint16, topic string, done func(error), wait bool) (uint16, error) {
	for {
		s.mu.Lock()
		if !s.connected.Load() {
			s.mu.Unlock()
			return 0, session.ErrNoConnection
		}
		if s.flights.len() < int(max) {
			break
		}
		if !wait {
			s.mu.Unlock()
			return 0, errNoRoom
		}
		if s.allTold() {
			// Every place is held by a PUBLISH the broker left unanswered
			// past the timeout: waiting might never end.
			s.mu.Unlock()
			return 0, errUnanswered
		}
		room := s.roomChan()
		s.mu.Unlock()
		select {
		case <-room:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	defer s.mu.Unlock()
	id, err := s.allocate(nil)
	if err != nil {
		return 0, err
	}
	s.flights.put(id, flight{topic: topic, sent: time.Now(), done: done})
	switch {
	case s.expiry == nil:
		s.expiry = time.AfterFunc(s.ackTimeout, s.expire)
		s.expiryLive = true
	case !s.expiryLive:
		s.expiry.Reset(s.ackTimeout)
		s.expiryLive = true
	}
	return id, nil
}

// roomChan returns the channel signalRoom signals, for a waiter; s.mu is
// held.
func (s *connState) roomChan() chan struct{} {
	if s.room == nil {
		s.room = make(chan struct{}, 1)
	}
	return s.room
}

// signalRoom tells a waiting takeOff or drain to look again; s.mu is held.
func (s *connState) signalRoom() {
	select {
	case s.room <- struct{}{}:
	default:
	}
}

// expire tells the flights that have waited ackTimeout for an answer that
// they failed. Their identifiers and their places under the broker's
// Receive Maximum stay taken until the broker answers or the connection
// ends: the broker may still hold the PUBLISH, and a reused identifier
// would take its late acknowledgement for another's. The timer is not
// re-armed per PUBLISH: it runs while untold flights exist, and each time
// it fires it is set for the oldest one left.
func (s *connState) expire() {
	var late []flight
	s.mu.Lock()
	now := time.Now()
	var (
		oldest time.Time
		told   []uint16
	)
	s.flights.each(func(id uint16, f flight) {
		if f.done == nil {
			return // told already
		}
		if now.Sub(f.sent) >= s.ackTimeout {
			late = append(late, f)
			told = append(told, id)
			return
		}
		if oldest.IsZero() || f.sent.Before(oldest) {
			oldest = f.sent
		}
	})
	for i, id := range told {
		f := late[i]
		f.done = nil
		s.flights.put(id, f)
	}
	if oldest.IsZero() {
		s.expiryLive = false
	} else {
		s.expiry.Reset(s.ackTimeout - now.Sub(oldest))
	}
	if len(late) > 0 {
		s.signalRoom() // takeOff and drain look again
	}
	s.mu.Unlock()
	for _, f := range late {
		f.done(publishOutcome(f.topic, 0, fmt.Errorf("no acknowledgement from the broker within %v", s.ackTimeout)))
	}
}

// drain waits, at most d, until no PUBLISH awaits its outcome and no
// acknowledgement waits in the backlog, so that a DISCONNECT written next
// cuts short no exchange the broker has taken and follows every
// acknowledgement.
func (s *connState) drain(d time.Duration) {
	deadline := time.Now().Add(d)
	for {
		s.mu.Lock()
		busy := s.flushing || len(s.backlog) > 0 || !s.allTold()
		if !busy || !s.connected.Load() {
			s.mu.Unlock()
			return
		}
		room := s.roomChan()
		s.mu.Unlock()
		left := time.Until(deadline)
		if left <= 0 {
			return
		}
		t := time.NewTimer(left)
		select {
		case <-room:
			t.Stop()
		case <-t.C:
			return
		}
	}
}

// allTold reports whether every flight has been told its outcome (those
// left wait only for the broker's late answer); s.mu is held.
func (s *connState) allTold() bool {
	all := true
	s.flights.each(func(_ uint16, f flight) { all = all && f.done == nil })
	return all
}
