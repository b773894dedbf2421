package upstream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

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
	ended func(*packets.Disconnect) // told once when the connection ends
	raw   io.Writer                 // the network connection, for whole packets (see packetConn)

	mu        sync.Mutex
	connected bool
	lastID    uint16
	requests  map[uint16]chan<- packets.ControlPacket // our requests awaiting their acknowledgement: where it goes
	pubResp   chan packets.ControlPacket              // the acknowledgements of publish's PUBLISHes
	pubrecSet map[uint16]struct{}                     // broker QoS 2 messages we sent PUBREC for, awaiting PUBREL
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
	s.connected = true
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
	defer s.mu.Unlock()
	s.connected = false
	for id, resp := range s.requests {
		deliver(resp, packets.ControlPacket{})
		delete(s.requests, id)
	}
}

// AddToSession gives packet an identifier and remembers where its
// acknowledgement goes. The gateway sends one request at a time on a
// connection, so the broker's Receive Maximum is never in the way.
func (s *connState) AddToSession(_ context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	id, err := s.allocate(resp)
	if err == nil {
		packet.SetIdentifier(id)
	}
	return err
}

// allocate gives a request of ours the next free packet identifier and
// remembers where its acknowledgement goes; s.mu is held.
func (s *connState) allocate(resp chan<- packets.ControlPacket) (uint16, error) {
	if !s.connected {
		return 0, session.ErrNoConnection
	}
	if s.requests == nil {
		s.requests = make(map[uint16]chan<- packets.ControlPacket, 1)
	}
	for range 1 << 16 {
		s.lastID++
		if s.lastID == 0 {
			continue
		}
		if _, used := s.requests[s.lastID]; !used {
			s.requests[s.lastID] = resp
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
	}
}

// deliver hands an answer to a request's waiter without blocking: each
// channel has room for one answer (paho's one per request; publish's is
// drained before every request), so a full channel holds a stale answer
// the waiter will skip.
func deliver(ch chan<- packets.ControlPacket, cp packets.ControlPacket) {
	select {
	case ch <- cp:
	default:
	}
}

// write sends an acknowledgement, a whole packet in one write on the
// network connection; s.mu is held. A failed write surfaces as the
// connection's loss on paho's reader.
func (s *connState) write(b []byte) {
	if s.connected {
		_, _ = s.raw.Write(b)
	}
}

// PacketReceived handles acknowledgements of our requests and the broker's
// PUBLISH and PUBREL.
func (s *connState) PacketReceived(recv *packets.ControlPacket, pubChan chan<- *packets.Publish) error {
	switch p := recv.Content.(type) {
	case *packets.Puback:
		s.finish(p.PacketID, recv)
	case *packets.Suback:
		s.finish(p.PacketID, recv)
	case *packets.Unsuback:
		s.finish(p.PacketID, recv)
	case *packets.Pubcomp:
		s.finish(p.PacketID, recv)
	case *packets.Pubrec:
		s.mu.Lock()
		_, known := s.requests[p.PacketID]
		switch {
		case !known:
			s.write([]byte{packets.PUBREL<<4 | 2, 3, byte(p.PacketID >> 8), byte(p.PacketID), 0x92}) // identifier not found
			s.mu.Unlock()
		case p.ReasonCode >= 0x80:
			s.mu.Unlock()
			s.finish(p.PacketID, recv) // refused: the PUBREC is the answer
		default:
			s.write(ackPacket(packets.PUBREL, p.PacketID))
			s.mu.Unlock()
		}
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
	case *packets.Pubrel:
		s.mu.Lock()
		delete(s.pubrecSet, p.PacketID)
		s.write(ackPacket(packets.PUBCOMP, p.PacketID))
		s.mu.Unlock()
	}
	return nil
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
	maxQoS        byte   // 2 unless the broker said less
	retain        bool   // retained messages are available
	maxPacketSize uint32 // 0: no limit
}

// limitsOf reads the limits from a CONNACK's properties.
func limitsOf(p *paho.ConnackProperties) serverLimits {
	l := serverLimits{maxQoS: 2, retain: true}
	if p == nil {
		return l
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
// connection and, for QoS 1 and 2, waits for its PUBACK or PUBCOMP (the
// PUBREL in between is sent by PacketReceived). It returns the reason code
// of the acknowledgement that ended the exchange.
//
// The gateway publishes here rather than through paho's Publish: paho
// builds each PUBLISH out of a dozen allocations, two contexts and a
// writev of four pieces, which at tens of thousands of messages a second
// was a third of the gateway's CPU. The connection's single writer of
// requests (the session's upstream worker) calls it one at a time.
func (s *connState) publish(ctx context.Context, lim serverLimits, topic string, payload []byte, qos byte, retain bool) (byte, error) {
	switch {
	case topic == "" || strings.ContainsAny(topic, "+#"):
		return 0, &errRefused{fmt.Sprintf("topic %q is not a topic name", topic)}
	case qos > lim.maxQoS:
		return 0, &errRefused{fmt.Sprintf("QoS %d is above the broker's maximum QoS %d", qos, lim.maxQoS)}
	case retain && !lim.retain:
		return 0, &errRefused{"the broker does not support retained messages"}
	}
	remaining := 2 + len(topic) + 1 + len(payload) // topic, property length 0, payload
	if qos > 0 {
		remaining += 2
	}
	if remaining > 268435455 {
		return 0, &errRefused{"message too large for MQTT"}
	}
	bp := publishBuffers.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 {
			publishBuffers.Put(bp)
		}
	}()
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
		return 0, &errRefused{fmt.Sprintf("message of %d octets is larger than the broker's maximum packet size %d", len(b)+remaining, lim.maxPacketSize)}
	}
	b = append(b, byte(len(topic)>>8), byte(len(topic)))
	b = append(b, topic...)
	idAt := len(b)
	if qos > 0 {
		b = append(b, 0, 0)
	}
	b = append(b, 0) // no properties
	b = append(b, payload...)
	*bp = b

	if qos == 0 {
		s.mu.Lock()
		connected := s.connected
		s.mu.Unlock()
		if !connected {
			return 0, session.ErrNoConnection
		}
		if _, err := s.raw.Write(b); err != nil {
			return 0, err
		}
		return 0, nil
	}

	resp, id, err := s.register()
	if err != nil {
		return 0, err
	}
	b[idAt], b[idAt+1] = byte(id>>8), byte(id)
	if _, err := s.raw.Write(b); err != nil {
		s.forget(id)
		return 0, err
	}
	for {
		select {
		case <-ctx.Done():
			s.forget(id)
			return 0, ctx.Err()
		case cp := <-resp:
			switch p := cp.Content.(type) {
			case nil:
				return 0, errors.New("connection ended before the broker acknowledged the PUBLISH")
			case *packets.Puback:
				if p.PacketID == id {
					return p.ReasonCode, nil
				}
			case *packets.Pubrec: // a refusal ends a QoS 2 exchange at PUBREC
				if p.PacketID == id {
					return p.ReasonCode, nil
				}
			case *packets.Pubcomp:
				if p.PacketID == id {
					return p.ReasonCode, nil
				}
			}
			// An answer to an earlier publication that timed out: skip it.
		}
	}
}

// register allocates a packet identifier for a request of ours and returns
// the channel its acknowledgement will come on. Publications reuse one
// channel: the worker has one in flight at a time, and a late answer to
// one that timed out is told apart by its identifier.
func (s *connState) register() (<-chan packets.ControlPacket, uint16, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.pubResp == nil {
		s.pubResp = make(chan packets.ControlPacket, 1)
	}
	// Drain an answer left by a publication that timed out, so that the
	// channel has room for this one's.
	select {
	case <-s.pubResp:
	default:
	}
	id, err := s.allocate(s.pubResp)
	return s.pubResp, id, err
}

// forget drops a request whose answer is no longer awaited.
func (s *connState) forget(id uint16) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.requests, id)
}
