//go:build linux && !386

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"
)

// client is one sensor: its broker connection and registered topics.
type client struct {
	addr      syscall.RawSockaddrInet4
	conn      net.Conn
	tcp       syscall.RawConn
	up        *rawSend // writes to tcp
	topics    map[uint16]string
	nextTopic uint16
	lastTopic atomic.Uint32 // topic id of the latest QoS 1 PUBLISH
	out       []byte
}

// floor holds the UDP socket and the clients by source port.
type floor struct {
	broker  string
	udp     syscall.RawConn
	reply   *rawSend // the main loop's datagrams
	clients map[uint16]*client
	readers sync.WaitGroup
}

// close closes every broker connection and waits for their readers.
func (f *floor) close() {
	for _, c := range f.clients {
		_ = c.conn.Close()
	}
	f.readers.Wait()
}

func run(listen, broker string) error {
	ap, err := netip.ParseAddrPort(listen)
	if err != nil || !ap.Addr().Is4() {
		return fmt.Errorf("-listen %q: want an IPv4 address and port", listen)
	}
	uc, err := net.ListenUDP("udp4", net.UDPAddrFromAddrPort(ap))
	if err != nil {
		return err
	}
	if err := uc.SetReadBuffer(4 << 20); err != nil {
		return err
	}
	return serve(uc, broker)
}

// serve answers the clients of uc, forwarding to broker (host:port), until
// uc is closed; it then closes their broker connections and returns.
func serve(uc *net.UDPConn, broker string) error {
	raw, err := uc.SyscallConn()
	if err != nil {
		return err
	}
	f := &floor{broker: broker, udp: raw, reply: newRawSend(raw), clients: make(map[uint16]*client)}
	defer f.close()
	var (
		buf  [2048]byte
		from syscall.RawSockaddrInet4
		n    int
	)
	recv := func(fd uintptr) bool {
		size := uint32(unsafe.Sizeof(from))
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
			syscall.MSG_DONTWAIT, uintptr(unsafe.Pointer(&from)), uintptr(unsafe.Pointer(&size)))
		if errno == syscall.EAGAIN {
			return false
		}
		n = int(r)
		if errno != 0 {
			n = -1
		}
		return true
	}
	for {
		if err := raw.Read(recv); err != nil {
			if errors.Is(err, net.ErrClosed) {
				return nil
			}
			return err
		}
		if n < 2 || from.Family != syscall.AF_INET {
			continue
		}
		if err := f.handle(from, buf[:n]); err != nil {
			return err
		}
	}
}

// handle answers one datagram.
func (f *floor) handle(from syscall.RawSockaddrInet4, p []byte) error {
	port := from.Port // network order; only a key
	c := f.clients[port]
	if p[0] == 1 || int(p[0]) != len(p) {
		return nil // three-octet lengths never occur in the burst scenarios
	}
	switch p[1] {
	case 0x04: // CONNECT: flags, protocol id, duration, client id
		if len(p) < 7 {
			return nil
		}
		nc, err := f.connect(from, string(p[6:]))
		if err != nil {
			return err
		}
		if c != nil {
			_ = c.conn.Close() // the client connected again: its reader ends
		}
		f.clients[port] = nc
		f.send(&nc.addr, []byte{3, 0x05, 0})
	case 0x0A: // REGISTER: topic id, msg id, topic name
		if c == nil || len(p) < 7 {
			return nil
		}
		c.nextTopic++
		c.topics[c.nextTopic] = string(p[6:])
		f.send(&c.addr, []byte{7, 0x0B, byte(c.nextTopic >> 8), byte(c.nextTopic), p[4], p[5], 0})
	case 0x0C: // PUBLISH: flags, topic id, msg id, data
		if c == nil || len(p) < 7 {
			return nil
		}
		c.publish(p[2]>>5&3, binary.BigEndian.Uint16(p[3:]), p[5:7], p[7:])
	case 0x16: // PINGREQ
		if c != nil {
			f.send(&c.addr, []byte{2, 0x17})
		}
	case 0x18: // DISCONNECT
		if c != nil {
			f.send(&c.addr, []byte{2, 0x18})
		}
	}
	return nil
}

// connect opens the client's MQTT 5 connection and starts its reader.
func (f *floor) connect(from syscall.RawSockaddrInet4, id string) (*client, error) {
	conn, err := net.Dial("tcp", f.broker)
	if err != nil {
		return nil, err
	}
	// CONNECT: protocol name, level 5, clean start, keep-alive 0, no
	// properties, the client id.
	vh := []byte{0, 4, 'M', 'Q', 'T', 'T', 5, 0x02, 0, 0, 0, byte(len(id) >> 8), byte(len(id))}
	pk := appendHeader(nil, 0x10, len(vh)+len(id))
	pk = append(append(pk, vh...), id...)
	if _, err := conn.Write(pk); err != nil {
		return nil, err
	}
	hdr := make([]byte, 2)
	if _, err := io.ReadFull(conn, hdr); err != nil || hdr[0] != 0x20 || hdr[1] < 2 {
		return nil, fmt.Errorf("CONNECT %q: no CONNACK (% x, %v)", id, hdr, err)
	}
	body := make([]byte, hdr[1])
	if _, err := io.ReadFull(conn, body); err != nil || body[1] != 0 {
		return nil, fmt.Errorf("CONNECT %q: refused (% x, %v)", id, body, err)
	}
	raw, err := conn.(*net.TCPConn).SyscallConn()
	if err != nil {
		return nil, err
	}
	c := &client{addr: from, conn: conn, tcp: raw, up: newRawSend(raw), topics: make(map[uint16]string), out: make([]byte, 0, 512)}
	f.readers.Add(1)
	go func() {
		defer f.readers.Done()
		c.readAcks(f)
	}()
	return c, nil
}

// publish writes one MQTT PUBLISH (QoS 0, or 1 with msgID as its packet
// identifier) to the broker, with a non-blocking send: a packet the socket
// does not take at once is dropped, as the floor is about cost.
func (c *client) publish(qos byte, topicID uint16, msgID, data []byte) {
	topic := c.topics[topicID]
	size := 2 + len(topic) + 1 + len(data) // topic, properties length, payload
	first := byte(0x30)
	if qos == 1 {
		first |= 0x02
		size += 2
		c.lastTopic.Store(uint32(topicID))
	}
	b := appendHeader(c.out[:0], first, size)
	b = append(b, byte(len(topic)>>8), byte(len(topic)))
	b = append(b, topic...)
	if qos == 1 {
		b = append(b, msgID...)
	}
	b = append(b, 0)
	b = append(b, data...)
	c.out = b
	c.up.send(nil, b)
}

// readAcks reads the broker's packets and answers each PUBACK with a
// PUBACK datagram, until the connection ends.
func (c *client) readAcks(f *floor) {
	var (
		buf  [4096]byte
		have int
		n    int
	)
	recv := func(fd uintptr) bool {
		r, _, errno := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[have])), uintptr(len(buf)-have),
			syscall.MSG_DONTWAIT, 0, 0)
		if errno == syscall.EAGAIN {
			return false
		}
		n = int(r)
		if errno != 0 {
			n = 0
		}
		return true
	}
	ack := []byte{7, 0x0D, 0, 0, 0, 0, 0}
	down := newRawSend(f.udp)
	for {
		if err := c.tcp.Read(recv); err != nil || n == 0 {
			return
		}
		have += n
		p := buf[:have]
		for len(p) >= 2 {
			size, hl, err := remainingLength(p[1:])
			if errors.Is(err, io.ErrUnexpectedEOF) || len(p) < 1+hl+size {
				break
			}
			if err != nil {
				return
			}
			if p[0] == 0x40 && size >= 2 { // PUBACK
				t := c.lastTopic.Load()
				ack[2], ack[3], ack[4], ack[5] = byte(t>>8), byte(t), p[1+hl], p[2+hl]
				down.send(&c.addr, ack)
			}
			p = p[1+hl+size:]
		}
		have = copy(buf[:], p)
	}
}

// send sends one datagram to addr from the main loop.
func (f *floor) send(addr *syscall.RawSockaddrInet4, b []byte) { f.reply.send(addr, b) }

// rawSend makes one non-blocking sendto(2) on a socket, bound once so that
// a call does not allocate. One goroutine at a time uses it.
type rawSend struct {
	raw syscall.RawConn
	fn  func(fd uintptr) bool
	to  *syscall.RawSockaddrInet4 // nil on a connected socket
	b   []byte
}

func newRawSend(raw syscall.RawConn) *rawSend {
	s := &rawSend{raw: raw}
	s.fn = s.call
	return s
}

// send sends b to to (nil: the connected peer); what the socket does not
// take at once is dropped.
func (s *rawSend) send(to *syscall.RawSockaddrInet4, b []byte) {
	s.to, s.b = to, b
	_ = s.raw.Write(s.fn)
	s.to, s.b = nil, nil
}

func (s *rawSend) call(fd uintptr) bool {
	var to, size uintptr
	if s.to != nil {
		to, size = uintptr(unsafe.Pointer(s.to)), unsafe.Sizeof(*s.to)
	}
	syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&s.b[0])), uintptr(len(s.b)),
		syscall.MSG_DONTWAIT|syscall.MSG_NOSIGNAL, to, size)
	return true
}

// appendHeader appends an MQTT fixed header: the first octet and the
// remaining length.
func appendHeader(b []byte, first byte, size int) []byte {
	b = append(b, first)
	for {
		d := byte(size & 0x7f)
		size >>= 7
		if size > 0 {
			d |= 0x80
		}
		b = append(b, d)
		if size == 0 {
			return b
		}
	}
}

// remainingLength decodes an MQTT remaining length at the start of b.
func remainingLength(b []byte) (size, n int, err error) {
	for shift := 0; n < 4; shift += 7 {
		if n == len(b) {
			return 0, 0, io.ErrUnexpectedEOF
		}
		d := b[n]
		n++
		size |= int(d&0x7f) << shift
		if d&0x80 == 0 {
			return size, n, nil
		}
	}
	return 0, 0, errors.New("malformed remaining length")
}
