//go:build !linux

package upstream

import "syscall"

// rawCall is Linux only: elsewhere connWriter reads through net.Conn, and
// every write waits (fn stays nil).
type rawCall struct{ fn func(uintptr) bool }

func (*rawCall) init(syscall.RawConn, bool) {}

func (*rawCall) do([]byte) (int, syscall.Errno, error) { panic("upstream: rawCall without a platform") }
