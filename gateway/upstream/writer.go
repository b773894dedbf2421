package upstream

import (
	"io"
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
	mu sync.Mutex
	// Raw system calls where the platform and the connection allow them
	// (not TLS, which has no descriptor of its own): fn nil otherwise.
	rd rawCall // paho's reader, through packetConn
	wr rawCall // tryWrite, holding mu
}

func newConnWriter(nc net.Conn) *connWriter {
	w := &connWriter{Conn: nc}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.rd.init(raw, false)
			w.wr.init(raw, true)
		}
	}
	return w
}

// canTry reports whether tryWrite can ever take a packet.
func (w *connWriter) canTry() bool { return w.wr.fn != nil }

// Read reads from the connection (only paho's reader does, through
// packetConn): what is there, at least one octet; io.EOF when the peer
// closed the connection.
func (w *connWriter) Read(b []byte) (int, error) {
	if w.rd.fn == nil || len(b) == 0 {
		return w.Conn.Read(b)
	}
	n, errno, err := w.rd.do(b)
	switch {
	case err != nil:
		return 0, err
	case errno != 0:
		return 0, &net.OpError{Op: "read", Net: "tcp", Err: errno}
	case n == 0:
		return 0, io.EOF
	}
	return n, nil
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
	if !w.canTry() || len(b) == 0 || !w.mu.TryLock() {
		return false
	}
	n, errno, err := w.wr.do(b)
	if err != nil || errno != 0 || n <= 0 { // EAGAIN: the send buffer is full; other errors the waiting write reports
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
