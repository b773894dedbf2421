package upstream

import (
	"errors"
	"net"
	"sync"
	"syscall"

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
// On a connWriter with raw reads, they are handled within the read itself
// (see fill), so acks must not close the connection: Close would wait for
// the read to end.
//
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
	raw     *connWriter                         // Conn, if it is a connWriter with raw reads; nil otherwise
	acks    func(kind byte, id uint16, rc byte) // told each acknowledgement read
	passing int                                 // octets of the current packet still to be read by paho
	skip    int                                 // octets of an acknowledgement already handed over, still to be dropped
	r, end  int                                 // buf[r:end] is read and not yet handled or passed on
	fillErr error                               // what ended fill
	fillFn  func(fd uintptr) bool               // fill, bound once
	buf     [readBuffer]byte

	mu  sync.Mutex
	pkt []byte // the packet being gathered; nil between packets
}

func newPacketConn(nc net.Conn, acks func(kind byte, id uint16, rc byte)) *packetConn {
	c := &packetConn{Conn: nc, acks: acks}
	if w, ok := nc.(*connWriter); ok && w.rd.usable() {
		c.raw = w
		c.fillFn = c.fill
	}
	return c
}

// packetBuffers recycles the gathering buffers, so that an idle connection
// holds none.
var packetBuffers = sync.Pool{New: func() any { b := make([]byte, 0, 512); return &b }}

// Read reads from the packets that are not acknowledgements; only paho's
// reader calls it.
func (c *packetConn) Read(p []byte) (int, error) {
	for {
		ready, err := c.handle()
		if err != nil {
			return 0, err
		}
		if ready {
			break
		}
		if err := c.readMore(); err != nil {
			return 0, err
		}
	}
	p = p[:min(len(p), c.passing)]
	if c.r == c.end { // the rest of a large packet: straight into p
		n, err := c.Conn.Read(p)
		c.passing -= n
		return n, err
	}
	n := copy(p, c.buf[c.r:c.end])
	c.r += n
	c.passing -= n
	return n, nil
}

// errMalformedLength is a fixed header whose Remaining Length does not end
// within four octets.
var errMalformedLength = errors.New("malformed Remaining Length")

// handle works through what buf holds: it hands each acknowledgement to
// acks and drops the rest of one (properties: a reason string, however
// long, is never held). It stops at any other packet, which is paho's
// (passing is set to its length), or at one not yet read whole enough to
// tell, and reports whether paho has a packet to read.
func (c *packetConn) handle() (bool, error) {
	for c.passing == 0 {
		if c.skip > 0 {
			k := min(c.skip, c.end-c.r)
			c.r += k
			c.skip -= k
			if c.skip > 0 {
				return false, nil
			}
		}
		b := c.buf[c.r:c.end]
		length, at := 0, 1 // at: the Remaining Length octet being read
		for shift := 0; ; shift += 7 {
			if at > 4 {
				return false, errMalformedLength
			}
			if at >= len(b) {
				return false, nil
			}
			length |= int(b[at]&0x7f) << shift
			if b[at]&0x80 == 0 {
				break
			}
			at++
		}
		total := at + 1 + length
		kind := b[0] >> 4
		switch kind {
		case packets.PUBACK, packets.PUBREC, packets.PUBREL, packets.PUBCOMP:
			if length < 2 {
				break // malformed: paho's to refuse
			}
			body := b[at+1:]
			if len(body) < min(length, 3) {
				return false, nil // the identifier and reason code are not all here yet
			}
			id, rc := uint16(body[0])<<8|uint16(body[1]), byte(0)
			if length > 2 {
				rc = body[2]
			}
			held := min(total, len(b))
			c.r += held
			c.skip = total - held
			c.acks(kind, id, rc)
			continue
		}
		c.passing = total
	}
	return true, nil
}

// readMore reads what the connection has after what buf holds, which is
// at most the start of one packet.
func (c *packetConn) readMore() error {
	c.compact()
	if c.raw != nil {
		for {
			c.fillErr = nil
			err := c.raw.rd.poll(c.fillFn)
			if err == nil {
				return c.fillErr
			}
			if !c.raw.woken(err) {
				return err
			}
		}
	}
	n, err := c.Conn.Read(c.buf[c.end:])
	c.end += n
	if n > 0 {
		return nil
	}
	return err
}

// fill is the raw read's callback (see rawCall.poll): it reads what the
// socket holds and hands over the acknowledgements in it at once, then
// reads again, until there is a packet for paho, the connection failed
// (fillErr), or the socket is empty; the poller then waits, within the
// same poll, without a new start. It reports true for paho's packet or a
// failure.
//
// The socket is empty when a read says so (EAGAIN), and when a read took
// less than it had room for (TCP stops short only at urgent data, which
// MQTT brokers do not send). On the second evidence fill waits only while
// the connection's hangupWatch would wake it (connWriter.mayWait): such a
// read may have taken the end of the stream with it (a FIN is taken with
// the data before it) or left an error to report (a reset), and neither
// raises a new readiness for the poller, so without the watch only the
// next read learns of them. (Data that comes after the read does raise
// one: the wait then ends at once.)
func (c *packetConn) fill(fd uintptr) bool {
	for {
		room := len(c.buf) - c.end
		n, errno := c.raw.rd.recv(fd, c.buf[c.end:])
		if errno == syscall.EAGAIN {
			return false
		}
		if c.fillErr = readError(n, errno); c.fillErr != nil {
			return true
		}
		c.end += n
		c.raw.noteReceived()
		ready, err := c.handle()
		if err != nil {
			c.fillErr = err
			return true
		}
		if ready {
			return true
		}
		c.compact() // only the start of a packet (at most 8 octets) is left
		if n < room && c.raw.mayWait() {
			return false
		}
	}
}

// compact moves what buf holds to its front, for room after it.
func (c *packetConn) compact() {
	if c.r > 0 {
		c.end = copy(c.buf[:], c.buf[c.r:c.end])
		c.r = 0
	}
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
