package upstream

import (
	"context"
	"io"
	"sync"

	"github.com/eclipse/paho.golang/packets"
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
	requests  map[uint16]request  // our requests awaiting their acknowledgement
	pubrecSet map[uint16]struct{} // broker QoS 2 messages we sent PUBREC for, awaiting PUBREL
}

// request is a PUBLISH, SUBSCRIBE or UNSUBSCRIBE of ours in flight.
type request struct {
	packetType byte
	resp       chan<- packets.ControlPacket
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
	for id, r := range s.requests {
		r.resp <- packets.ControlPacket{}
		delete(s.requests, id)
	}
}

// AddToSession gives packet an identifier and remembers where its
// acknowledgement goes. The gateway sends one request at a time on a
// connection, so the broker's Receive Maximum is never in the way.
func (s *connState) AddToSession(_ context.Context, packet session.Packet, resp chan<- packets.ControlPacket) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.connected {
		return session.ErrNoConnection
	}
	if s.requests == nil {
		s.requests = make(map[uint16]request, 1)
	}
	for range 1 << 16 {
		s.lastID++
		if s.lastID == 0 {
			continue
		}
		if _, used := s.requests[s.lastID]; !used {
			s.requests[s.lastID] = request{packetType: packet.Type(), resp: resp}
			packet.SetIdentifier(s.lastID)
			return nil
		}
	}
	return session.ErrPacketIdentifiersExhausted
}

// finish hands the acknowledgement of request id to its waiter.
func (s *connState) finish(id uint16, recv *packets.ControlPacket) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if r, ok := s.requests[id]; ok {
		r.resp <- *recv // buffered by paho, one per request
		delete(s.requests, id)
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
