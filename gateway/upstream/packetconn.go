package upstream

import (
	"bufio"
	"errors"
	"net"
	"sync"

	"github.com/eclipse/paho.golang/packets"
)

// readBuffer is the size of each connection's read buffer. paho reads a
// packet's first octet, its length octets and its body with separate reads:
// without a buffer that is three system calls per PUBACK. Acknowledgements
// and most broker messages to sensors fit in it; a larger body is read
// straight into its destination.
const readBuffer = 256

// packetConn is the broker connection as paho sees it. Reads go through a
// small buffer, and acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) are
// taken out of the stream and handed to acks on the reading goroutine:
// the gateway publishes without paho, so paho has nothing to do with
// them, and decoding them its way costs allocations and a hand-off each.
// Writes are gathered into whole packets: paho writes a packet as several
// pieces (fixed header, variable header, payload), which on the bare
// connection is one writev, but through any wrapper becomes one write per
// piece — more system calls, and pieces of packets written by two
// goroutines could interleave. packetConn holds the pieces until the
// packet is complete, by its own length, and writes it with one call.
//
// Only paho's packets go through Write, and paho writes them from the
// goroutine that calls its methods, which the gateway does from one
// goroutine at a time (the session's upstream worker). The other writers
// (PUBLISH and acknowledgements from connState, PINGREQ from timerPinger)
// write their whole packets straight to the connection's connWriter:
// since a gathered packet reaches it only once complete, they never cut
// one.
type packetConn struct {
	net.Conn
	r       *bufio.Reader
	acks    func(kind byte, id uint16, rc byte) // told each acknowledgement read
	passing int                                 // octets of the current packet still to be read by paho

	mu  sync.Mutex
	pkt []byte // the packet being gathered; nil between packets
}

func newPacketConn(nc net.Conn, acks func(kind byte, id uint16, rc byte)) *packetConn {
	return &packetConn{Conn: nc, r: bufio.NewReaderSize(nc, readBuffer), acks: acks}
}

// packetBuffers recycles the gathering buffers, so that an idle connection
// holds none.
var packetBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Read reads from the packets that are not acknowledgements; only paho's
// reader calls it.
func (c *packetConn) Read(p []byte) (int, error) {
	for c.passing == 0 {
		if err := c.nextPacket(); err != nil {
			return 0, err
		}
	}
	if len(p) > c.passing {
		p = p[:c.passing]
	}
	n, err := c.r.Read(p)
	c.passing -= n
	return n, err
}

// errMalformedLength is a fixed header whose Remaining Length does not end
// within four octets.
var errMalformedLength = errors.New("malformed Remaining Length")

// nextPacket reads the fixed header of the next packet. An acknowledgement
// is read whole and handed to acks; any other packet is left for paho
// (passing is set to its length).
func (c *packetConn) nextPacket() error {
	length, at := 0, 1 // at: the Remaining Length octet being read
	for shift := 0; ; shift += 7 {
		if at > 4 {
			return errMalformedLength
		}
		b, err := c.r.Peek(at + 1)
		if err != nil {
			return err
		}
		length |= int(b[at]&0x7f) << shift
		if b[at]&0x80 == 0 {
			break
		}
		at++
	}
	total := at + 1 + length
	b, _ := c.r.Peek(1)
	kind := b[0] >> 4
	switch kind {
	case packets.PUBACK, packets.PUBREC, packets.PUBREL, packets.PUBCOMP:
		if length >= 2 {
			return c.readAck(kind, at+1, total)
		}
	}
	c.passing = total
	return nil
}

// readAck reads an acknowledgement of total octets, its variable header at
// offset start, and hands it to acks. Only the identifier and the reason
// code are needed: properties (a reason string, however long) are
// skipped, never held.
func (c *packetConn) readAck(kind byte, start, total int) error {
	b, err := c.r.Peek(min(total, start+3))
	if err != nil {
		return err
	}
	body := b[start:]
	id, rc := uint16(body[0])<<8|uint16(body[1]), byte(0)
	if len(body) > 2 {
		rc = body[2]
	}
	if _, err := c.r.Discard(total); err != nil {
		return err
	}
	c.acks(kind, id, rc)
	return nil
}

// Write gathers p into the packet being written, and writes every packet
// that is complete.
func (c *packetConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.pkt == nil {
		c.pkt = (*packetBuffers.Get().(*[]byte))[:0]
	}
	c.pkt = append(c.pkt, p...)
	for {
		n := packetLength(c.pkt)
		if n == 0 || n > len(c.pkt) {
			return len(p), nil // incomplete: wait for the next piece
		}
		if _, err := c.Conn.Write(c.pkt[:n]); err != nil {
			c.release()
			return 0, err
		}
		if n == len(c.pkt) {
			c.release()
			return len(p), nil
		}
		c.pkt = c.pkt[:copy(c.pkt, c.pkt[n:])]
	}
}

// release returns the gathering buffer to the pool; c.mu is held.
func (c *packetConn) release() {
	b := c.pkt[:0]
	c.pkt = nil
	if cap(b) <= 64<<10 {
		packetBuffers.Put(&b)
	}
}

// packetLength returns the length of the MQTT packet at the start of b
// (fixed header included), or 0 while its fixed header is incomplete.
func packetLength(b []byte) int {
	length, shift := 0, 0
	for i := 1; i < len(b) && i <= 4; i++ {
		length |= int(b[i]&0x7f) << shift
		if b[i]&0x80 == 0 {
			return 1 + i + length
		}
		shift += 7
	}
	return 0
}
