package upstream

import (
	"syscall"
	"unsafe"
)

// rawCall is one kind of system call, read(2) or write(2), on a
// connection's descriptor, made raw: the descriptor is non-blocking, so
// the call returns at once and the runtime need not know of it. (A system
// call the runtime knows of wakes its monitor thread when the process was
// idle, which then polls for a while: with a message arriving every
// 50 µs, that monitor was 8 % of the gateway's CPU.) A read that finds
// nothing waits in the runtime's poller; a write never waits.
//
// One goroutine at a time uses a rawCall (the reader; the writer holding
// connWriter's mutex). Its func is bound once, so that a call does not
// allocate.
type rawCall struct {
	raw   syscall.RawConn
	trap  uintptr // syscall.SYS_READ or syscall.SYS_WRITE
	fn    func(fd uintptr) bool
	buf   []byte
	n     int
	errno syscall.Errno
}

// init makes c read (or, with write, write) raw's descriptor.
func (c *rawCall) init(raw syscall.RawConn, write bool) {
	c.raw, c.trap, c.fn = raw, syscall.SYS_READ, c.once
	if write {
		c.trap = syscall.SYS_WRITE
	}
}

// do makes the call on b, which is not empty, and returns what it
// transferred or the call's error; err is the descriptor's (closed).
func (c *rawCall) do(b []byte) (n int, errno syscall.Errno, err error) {
	c.buf, c.n, c.errno = b, 0, 0
	if c.trap == syscall.SYS_READ {
		err = c.raw.Read(c.fn)
	} else {
		err = c.raw.Write(c.fn)
	}
	c.buf = nil
	return c.n, c.errno, err
}

// once is fn: one call; false asks the poller to wait (a read that finds
// nothing).
func (c *rawCall) once(fd uintptr) bool {
	n, _, errno := syscall.RawSyscall(c.trap, fd, uintptr(unsafe.Pointer(&c.buf[0])), uintptr(len(c.buf)))
	if errno == syscall.EAGAIN && c.trap == syscall.SYS_READ {
		return false
	}
	c.n, c.errno = int(n), errno
	return true
}
