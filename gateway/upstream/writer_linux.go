package upstream

import (
	"syscall"

	"github.com/sensorgate/mqttsn-gateway/internal/fdguard"
)

// rawCall is a read on a connection's descriptor (recvNow), made raw: the
// descriptor is non-blocking, so the call returns at once and the runtime
// need not know of it. (A system call the runtime knows of wakes its
// monitor thread when the process was idle, which then polls for a while:
// with a message arriving every 50 µs, that monitor was 8 % of the
// gateway's CPU.) A read that finds nothing waits in the runtime's poller.
//
// One goroutine at a time uses a rawCall (the connection's reader). Its
// func is bound once, so that a call does not allocate.
type rawCall struct {
	raw   syscall.RawConn
	fn    func(fd uintptr) bool
	buf   []byte
	n     int
	errno syscall.Errno
}

// init makes c read raw's descriptor.
func (c *rawCall) init(raw syscall.RawConn) { c.raw, c.fn = raw, c.once }

// usable reports whether init was given a descriptor.
func (c *rawCall) usable() bool { return c.fn != nil }

// do reads into b, which is not empty, and returns what it read or the
// call's error; err is the descriptor's (closed).
func (c *rawCall) do(b []byte) (n int, errno syscall.Errno, err error) {
	c.buf, c.n, c.errno = b, 0, 0
	err = c.raw.Read(c.fn)
	c.buf = nil
	return c.n, c.errno, err
}

// poll runs fn in the runtime's read loop on the descriptor: fn reads
// (recv), and returns false to wait until the poller reports the socket
// readable (only after a read that found it empty, or one that took less
// than it could on a watched connection: see packetConn.fill), true to
// end.
func (c *rawCall) poll(fn func(fd uintptr) bool) error { return c.raw.Read(fn) }

// recv is one read into b, which is not empty, of what the socket fd
// holds; EAGAIN when it holds nothing.
func (*rawCall) recv(fd uintptr, b []byte) (int, syscall.Errno) {
	n, errno := recvNow(fd, b)
	return int(n), errno
}

// once is fn: one call; false asks the poller to wait (nothing to read).
func (c *rawCall) once(fd uintptr) bool {
	n, errno := recvNow(fd, c.buf)
	if errno == syscall.EAGAIN {
		return false
	}
	c.n, c.errno = int(n), errno
	return true
}

// rawSend is a non-blocking send(2) straight on a connection's
// descriptor, for the reason rawCall gives, and without the runtime's
// descriptor lock and poller reset either (which cost a cache miss per
// message on a descriptor of its own): the write never waits, so it needs
// no poller. The descriptor stays valid while the connection is open;
// retire, before the connection is closed, waits for a send in progress
// and makes later ones fail.
type rawSend struct {
	guard fdguard.Guard
	valid bool // init was given a descriptor
	fd    uintptr
}

// init takes raw's descriptor.
func (s *rawSend) init(raw syscall.RawConn) {
	_ = raw.Control(func(fd uintptr) { s.fd, s.valid = fd, true })
}

// usable reports whether init was given a descriptor.
func (s *rawSend) usable() bool { return s.valid }

// send writes what the socket takes of b at once; EAGAIN when it takes
// nothing, EBADF once retired.
func (s *rawSend) send(b []byte) (int, syscall.Errno) {
	if !s.guard.Enter() {
		return 0, syscall.EBADF
	}
	n, errno := sendNow(s.fd, b)
	s.guard.Exit()
	if errno != 0 {
		return 0, errno
	}
	return int(n), 0
}

// retire waits for a send in progress, which does not block, and fails
// every later one.
func (s *rawSend) retire() { s.guard.Retire() }

// connWriterPad makes connWriter 192 octets on 64-bit platforms.
const connWriterPad = 16
