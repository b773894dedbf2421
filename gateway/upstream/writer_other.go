//go:build !unix

package upstream

import "syscall"

// writeOnce is not available here: every write waits (connWriter.Write).
func writeOnce(syscall.RawConn, []byte) int { return -1 }
