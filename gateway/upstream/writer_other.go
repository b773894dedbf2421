//go:build !linux

package upstream

import "syscall"

// rawCall and rawSend are Linux only: elsewhere connWriter reads through
// net.Conn, and every write waits.
type (
	rawCall struct{}
	rawSend struct{}
)

func (*rawCall) init(syscall.RawConn) {}
func (*rawCall) usable() bool         { return false }
func (*rawCall) do([]byte) (int, syscall.Errno, error) {
	panic("upstream: rawCall without a platform")
}

func (*rawCall) poll(func(uintptr) bool) error { panic("upstream: rawCall without a platform") }
func (*rawCall) recv(uintptr, []byte) (int, syscall.Errno) {
	panic("upstream: rawCall without a platform")
}

func (*rawSend) init(syscall.RawConn)             {}
func (*rawSend) usable() bool                     { return false }
func (*rawSend) send([]byte) (int, syscall.Errno) { panic("upstream: rawSend without a platform") }
func (*rawSend) retire()                          {}

// connWriterPad: no cache-line layout off Linux.
const connWriterPad = 0
