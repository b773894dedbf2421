//go:build !386

package transport

import (
	"net"
	"net/netip"
	"strconv"
	"sync"
	"syscall"
	"unsafe"

	"github.com/sensorgate/mqttsn-gateway/internal/fdguard"
)

// rawReader returns a readFunc that reads one datagram from conn with a
// raw recvfrom(2), or nil if the socket's descriptor is not available.
//
// The socket is non-blocking: a read either returns a datagram or EAGAIN
// at once, and EAGAIN waits in the runtime's poller as net's own read
// does. A system call the runtime knows of (net's read) wakes the
// runtime's monitor thread when the process was idle, which then polls
// for a while; with a datagram every 50 µs that cost 8 % of the gateway's
// CPU. The source address is decoded without allocating.
func rawReader(conn *net.UDPConn) readFunc {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		from   syscall.RawSockaddrAny
		n      int
		errno  syscall.Errno
		buf    []byte
		readFn = func(fd uintptr) bool {
			fromLen := uint32(syscall.SizeofSockaddrAny)
			r, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(unsafe.Pointer(&buf[0])), uintptr(len(buf)),
				0, uintptr(unsafe.Pointer(&from)), uintptr(unsafe.Pointer(&fromLen)))
			if e == syscall.EAGAIN {
				return false // wait for the next datagram
			}
			n, errno = int(r), e
			return true
		}
	)
	return func(b []byte) (int, netip.AddrPort, error) {
		buf = b
		if err := rc.Read(readFn); err != nil {
			return 0, netip.AddrPort{}, err
		}
		if errno != 0 {
			return 0, netip.AddrPort{}, &net.OpError{Op: "read", Net: "udp", Err: errno}
		}
		return n, sockaddrToAddrPort(&from), nil
	}
}

// sockaddrToAddrPort decodes an IPv4 or IPv6 socket address; the port is
// in network byte order.
func sockaddrToAddrPort(sa *syscall.RawSockaddrAny) netip.AddrPort {
	switch sa.Addr.Family {
	case syscall.AF_INET:
		in := (*syscall.RawSockaddrInet4)(unsafe.Pointer(sa))
		return netip.AddrPortFrom(netip.AddrFrom4(in.Addr), networkPort(in.Port))
	case syscall.AF_INET6:
		in := (*syscall.RawSockaddrInet6)(unsafe.Pointer(sa))
		addr := netip.AddrFrom16(in.Addr)
		if in.Scope_id != 0 {
			addr = addr.WithZone(strconv.FormatUint(uint64(in.Scope_id), 10))
		}
		return netip.AddrPortFrom(addr, networkPort(in.Port))
	}
	return netip.AddrPort{}
}

// networkPort swaps between a port's value and the kernel's way of storing
// it (network byte order in a native uint16); the swap is its own inverse.
func networkPort(p uint16) uint16 {
	b := (*[2]byte)(unsafe.Pointer(&p))
	return uint16(b[0])<<8 | uint16(b[1])
}

// rawSender sends datagrams on a socket with raw sendto(2) calls, for the
// reason rawReader gives. A send first goes straight to the descriptor
// without waiting (MSG_DONTWAIT), past the runtime's descriptor lock and
// poller; only when the send buffer is full does it wait in the poller,
// through a call from a pool, so that a send, which may come from many
// goroutines at once, does not allocate. retire, before the socket is
// closed, waits for a straight send in progress and fails later ones, so
// that a closed descriptor's number, reused by another socket, is never
// written to.
type rawSender struct {
	guard fdguard.Guard // the straight sends
	inet6 bool          // the socket is AF_INET6 (IPv4 peers as mapped addresses)
	fd    uintptr
	rc    syscall.RawConn
	calls sync.Pool
}

// sendCall is one sendto(2) with its destination, bound once to fn, for a
// send that waits for room.
type sendCall struct {
	to    syscall.RawSockaddrInet6 // or a RawSockaddrInet4 in its first octets
	toLen uint32
	b     []byte
	errno syscall.Errno
	fn    func(fd uintptr) bool
}

// newRawSender returns a sender for conn, or nil if the socket's
// descriptor or family is not available.
func newRawSender(conn *net.UDPConn) *rawSender {
	rc, err := conn.SyscallConn()
	if err != nil {
		return nil
	}
	var (
		local   syscall.Sockaddr
		nameErr error
		fd      uintptr
	)
	if err := rc.Control(func(d uintptr) { fd = d; local, nameErr = syscall.Getsockname(int(d)) }); err != nil || nameErr != nil {
		return nil
	}
	s := &rawSender{rc: rc, fd: fd}
	switch local.(type) {
	case *syscall.SockaddrInet4:
	case *syscall.SockaddrInet6:
		s.inet6 = true
	default:
		return nil
	}
	s.calls.New = func() any {
		c := &sendCall{}
		c.fn = c.once
		return c
	}
	return s
}

// send writes b to addr, waiting in the poller while the send buffer is
// full; errNotRaw when it leaves that to net (an empty datagram, a zone
// that is not a number, an IPv6 peer of an IPv4 socket), and an error
// wrapping net.ErrClosed once retired.
func (s *rawSender) send(b []byte, addr netip.AddrPort) error {
	if len(b) == 0 {
		return errNotRaw
	}
	var to syscall.RawSockaddrInet6
	toLen, ok := sockaddr(&to, addr, s.inet6)
	if !ok {
		return errNotRaw
	}
	if !s.guard.Enter() {
		return &net.OpError{Op: "write", Net: "udp", Err: net.ErrClosed}
	}
	errno := sendto(s.fd, b, &to, toLen, syscall.MSG_DONTWAIT)
	s.guard.Exit()
	switch errno {
	case 0:
		return nil
	case syscall.EAGAIN:
		return s.sendWaiting(b, &to, toLen)
	}
	return &net.OpError{Op: "write", Net: "udp", Err: errno}
}

// sendWaiting sends b to the address to once the send buffer has room,
// waiting in the runtime's poller (which knows when the socket closes).
func (s *rawSender) sendWaiting(b []byte, to *syscall.RawSockaddrInet6, toLen uint32) error {
	c := s.calls.Get().(*sendCall)
	defer s.calls.Put(c)
	c.to, c.toLen, c.b = *to, toLen, b
	err := s.rc.Write(c.fn)
	c.b = nil
	if err != nil {
		return err
	}
	if c.errno != 0 {
		return &net.OpError{Op: "write", Net: "udp", Err: c.errno}
	}
	return nil
}

// retire waits for a straight send in progress, which does not block, and
// fails every later one.
func (s *rawSender) retire() { s.guard.Retire() }

// sendto is one sendto(2) of b on the socket fd to the address to.
func sendto(fd uintptr, b []byte, to *syscall.RawSockaddrInet6, toLen uint32, flags int) syscall.Errno {
	_, _, errno := syscall.RawSyscall6(syscall.SYS_SENDTO, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)),
		uintptr(flags), uintptr(unsafe.Pointer(to)), uintptr(toLen))
	return errno
}

// sockaddr sets *to to addr and returns its length, or false if addr
// cannot be a destination of the socket.
func sockaddr(to *syscall.RawSockaddrInet6, addr netip.AddrPort, inet6 bool) (uint32, bool) {
	ip := addr.Addr()
	port := addr.Port()
	if !inet6 {
		if !ip.Is4() && !ip.Is4In6() {
			return 0, false
		}
		in4 := (*syscall.RawSockaddrInet4)(unsafe.Pointer(to))
		*in4 = syscall.RawSockaddrInet4{Family: syscall.AF_INET, Port: networkPort(port), Addr: ip.Unmap().As4()}
		return syscall.SizeofSockaddrInet4, true
	}
	var scope uint32
	if z := ip.Zone(); z != "" {
		n, err := strconv.ParseUint(z, 10, 32)
		if err != nil {
			return 0, false
		}
		scope = uint32(n)
	}
	*to = syscall.RawSockaddrInet6{Family: syscall.AF_INET6, Port: networkPort(port), Addr: ip.As16(), Scope_id: scope}
	return syscall.SizeofSockaddrInet6, true
}

// once is fn: one sendto(2), or false to wait for room in the send buffer.
func (c *sendCall) once(fd uintptr) bool {
	errno := sendto(fd, c.b, &c.to, c.toLen, 0)
	if errno == syscall.EAGAIN {
		return false
	}
	c.errno = errno
	return true
}
