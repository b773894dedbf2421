//go:build unix

package upstream

import "syscall"

// writeOnce makes one non-blocking write(2) of b on raw's descriptor and
// returns the octets written, or -1 when none were (EAGAIN: the send
// buffer is full; or any error, which a blocking write will report).
func writeOnce(raw syscall.RawConn, b []byte) int {
	n := -1
	err := raw.Write(func(fd uintptr) bool {
		n, _ = syscall.Write(int(fd), b)
		return true // one attempt: do not wait for the descriptor
	})
	if err != nil {
		return -1
	}
	return n
}
