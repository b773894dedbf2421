package upstream

import (
	"syscall"
	"unsafe"
)

// sendNow is one write(2) of b on the socket fd, which is non-blocking:
// linux/386 has no sendto call of its own (socket calls go through
// socketcall). The runtime ignores the SIGPIPE of a broken connection, as
// for net's own writes; the write fails with EPIPE.
func sendNow(fd uintptr, b []byte) (uintptr, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return n, errno
}

// recvNow is one read(2) into b on the socket fd, which is non-blocking
// (no recvfrom call of its own here either): EAGAIN when it holds nothing.
func recvNow(fd uintptr, b []byte) (uintptr, syscall.Errno) {
	n, _, errno := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&b[0])), uintptr(len(b)))
	return n, errno
}
