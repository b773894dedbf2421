//go:build !linux

package upstream

import "syscall"

// writeOnce is not available here: every write waits (connWriter.Write).
func writeOnce(syscall.RawConn, []byte) int { return -1 }

// rawRead is not available here: connWriter reads through net.Conn.
type rawRead struct{ fn func(uintptr) bool }

func (*rawRead) init(syscall.RawConn) {}

func (*rawRead) into([]byte) (int, error) { panic("upstream: rawRead without a platform") }
