//go:build linux

package upstream

import (
	"io"
	"net"
	"syscall"
	"unsafe"
)

// writeOnce makes one non-blocking write(2) of b on raw's descriptor and
// returns the octets written, or -1 when none were (EAGAIN: the send
// buffer is full; or any error, which a blocking write will report).
//
// The write is a raw system call: the descriptor is non-blocking, so it
// returns at once, and the runtime need not know of it. (A system call
// the runtime knows of wakes its monitor thread when the process was
// idle, which then polls for a while: with a message arriving every
// 50 µs, that monitor was 8 % of the gateway's CPU.)
func writeOnce(raw syscall.RawConn, b []byte) int {
	if len(b) == 0 {
		return 0
	}
	n := -1
	err := raw.Write(func(fd uintptr) bool {
		r, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
		if errno == 0 {
			n = int(r)
		}
		return true // one attempt: do not wait for the descriptor
	})
	if err != nil {
		return -1
	}
	return n
}

// rawRead reads a connection with raw read(2) calls, waiting in the
// runtime's poller when nothing is there, for the reason writeOnce gives.
// One goroutine at a time uses it; fn is bound once, so that a read does
// not allocate.
type rawRead struct {
	raw   syscall.RawConn
	fn    func(fd uintptr) bool
	buf   []byte
	n     int
	errno syscall.Errno
}

// init makes r read raw's descriptor.
func (r *rawRead) init(raw syscall.RawConn) {
	r.raw, r.fn = raw, r.once
}

// into reads what is there into b, at least one octet; io.EOF when the
// peer closed the connection.
func (r *rawRead) into(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.buf = b
	err := r.raw.Read(r.fn)
	r.buf = nil
	if err != nil {
		return 0, err
	}
	switch {
	case r.errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: r.errno}
	case r.n == 0:
		return 0, io.EOF
	}
	return r.n, nil
}

// once is fn: one read(2), or false to wait when there is nothing to read.
func (r *rawRead) once(fd uintptr) bool {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.buf[0])), uintptr(len(r.buf)))
	if errno == syscall.EAGAIN {
		return false
	}
	r.n, r.errno = int(n), errno
	return true
}
