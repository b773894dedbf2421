package upstream

import (
	"net"
	"sync"
	"syscall"
)

// connWriter is a broker connection whose writes are serialised by a
// mutex of its own, so that a packet written without waiting (tryWrite),
// of which the socket may take only a part at once, is finished before
// any other packet is written. Every writer of the connection — paho
// (through packetConn), connState, timerPinger — writes through it.
type connWriter struct {
	net.Conn
	mu   sync.Mutex
	raw  syscall.RawConn // nil when the connection has no descriptor of its own (TLS)
	read rawRead         // raw read(2) calls where the platform allows (see rawRead)
}

func newConnWriter(nc net.Conn) *connWriter {
	w := &connWriter{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.raw = raw
			w.read.init(raw)
		}
	}
	return w
}

// Read reads from the connection (only paho's reader does, through
// packetConn).
func (w *connWriter) Read(b []byte) (int, error) {
	if w.read.fn == nil {
		return w.Conn.Read(b)
	}
	return w.read.into(b)
}

// Write writes b whole, waiting for the socket as long as it takes.
func (w *connWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.Conn.Write(b)
}

// tryWrite writes b if that needs no wait: no other write in progress,
// and room in the socket's send buffer for at least part of it. It
// reports whether b was taken. The rest of a packet the socket took only
// in part is written by a goroutine of its own, which holds the mutex
// until it is done, so that nothing comes between; a failure there closes
// the connection, whose reader reports the loss.
func (w *connWriter) tryWrite(b []byte) bool {
	if w.raw == nil || !w.mu.TryLock() {
		return false
	}
	n := writeOnce(w.raw, b)
	if n <= 0 {
		w.mu.Unlock()
		return false
	}
	if n == len(b) {
		w.mu.Unlock()
		return true
	}
	rest := append([]byte(nil), b[n:]...)
	go func() {
		defer w.mu.Unlock()
		if _, err := w.Conn.Write(rest); err != nil {
			_ = w.Conn.Close() // the stream is cut: let the reader report the loss
		}
	}()
	return true
}
