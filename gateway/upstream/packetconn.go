package upstream

import (
	"bufio"
	"net"
	"sync"
)

// readBuffer is the size of each connection's read buffer. paho reads a
// packet's first octet, its length octets and its body with separate reads:
// without a buffer that is three system calls per PUBACK. Acknowledgements
// and most broker messages to sensors fit in it; a larger body is read
// straight into its destination.
const readBuffer = 256

// packetConn is the broker connection as paho sees it. Reads go through a
// small buffer. Writes are gathered into whole packets: paho writes a
// packet as several pieces (fixed header, variable header, payload), which
// on the bare connection is one writev, but through any wrapper becomes one
// write per piece — more system calls, and pieces of packets written by two
// goroutines could interleave. packetConn holds the pieces until the packet
// is complete, by its own length, and writes it with one call.
//
// Only paho's packets go through Write, and paho writes them from the
// goroutine that calls its methods, which the gateway does from one
// goroutine at a time (the session's upstream worker). The other writers
// (acknowledgements from connState, PINGREQ from timerPinger) write their
// whole packets straight to the network connection: since a gathered
// packet reaches the connection only once complete, they never cut one.
type packetConn struct {
	net.Conn
	r *bufio.Reader

	mu  sync.Mutex
	pkt []byte // the packet being gathered; nil between packets
}

func newPacketConn(nc net.Conn) *packetConn {
	return &packetConn{Conn: nc, r: bufio.NewReaderSize(nc, readBuffer)}
}

// packetBuffers recycles the gathering buffers, so that an idle connection
// holds none.
var packetBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

func (c *packetConn) Read(p []byte) (int, error) { return c.r.Read(p) }

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
