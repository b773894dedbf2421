package upstream

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// connWriter is a broker connection whose writes are serialised by a
// mutex of its own, so that a packet written without waiting (tryWrite),
// of which the socket may take only a part at once, is finished before
// any other packet is written. Every writer of the connection — paho
// (through packetConn), connState, timerPinger — writes through it, and
// paho's reader reads through it, so it also notes when the connection
// last sent and received something, for the keep-alive.
//
// What a write touches comes first, so that it takes one cache line.
type connWriter struct {
	mu sync.Mutex
	// Raw system calls where the platform and the connection allow them
	// (not TLS, which has no descriptor of its own): not usable otherwise.
	wr rawSend // tryWrite, holding mu

	// When the connection opened, and the last octets each way as time
	// since then: written for every read and write, so without a mutex
	// and with the monotonic clock only. (They live here, beside the
	// mutex every write takes, rather than in the pinger: one object
	// less to touch per message.)
	lastSent     atomic.Int64
	start        time.Time
	lastReceived atomic.Int64

	// Whether the reader may wait for the poller after a read that left
	// the socket empty without showing it (see mayWait); read with every
	// read, so beside lastReceived.
	readState   atomic.Uint32
	wakePending atomic.Bool // unwatch set its deadline, which woken has not cleared

	net.Conn
	rd rawCall // paho's reader, through packetConn

	// The hangupWatch that watches the connection (nil: none), and the
	// connection's key in it.
	watch   *hangupWatch
	watchID uint64

	// Padding to a multiple of the cache line: the allocator then places
	// every connWriter on a line's start, and what a write touches, above,
	// in one line (TestConnWriterLayout).
	_ [connWriterPad]byte
}

// newConnWriter wraps nc, which from then on must be closed through the
// connWriter only (see Close).
func newConnWriter(nc net.Conn) *connWriter {
	w := &connWriter{Conn: nc, start: time.Now()}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			w.rd.init(raw)
			w.wr.init(raw)
		}
	}
	return w
}

// canTry reports whether tryWrite can ever take a packet.
func (w *connWriter) canTry() bool { return w.wr.usable() }

// noteSent and noteReceived record traffic; quietSince is the time since
// the start of the connection when it last both sent and received.
func (w *connWriter) noteSent()     { w.lastSent.Store(int64(time.Since(w.start))) }
func (w *connWriter) noteReceived() { w.lastReceived.Store(int64(time.Since(w.start))) }
func (w *connWriter) quietSince() time.Duration {
	return time.Duration(min(w.lastSent.Load(), w.lastReceived.Load()))
}

// Read reads from the connection (only paho's reader does, through
// packetConn): what is there, at least one octet; io.EOF when the peer
// closed the connection.
func (w *connWriter) Read(b []byte) (int, error) {
	if !w.rd.usable() || len(b) == 0 {
		n, err := w.Conn.Read(b)
		if n > 0 {
			w.noteReceived()
		}
		return n, err
	}
	n, errno, err := w.rd.do(b)
	for err != nil && w.woken(err) {
		n, errno, err = w.rd.do(b)
	}
	if err == nil {
		err = readError(n, errno)
	}
	if err != nil {
		return 0, err
	}
	w.noteReceived()
	return n, nil
}

// readError is what a raw read that returned n octets and errno (not
// EAGAIN) means for the reader: nil when it read something, io.EOF when
// the peer closed the connection, else the error.
func readError(n int, errno syscall.Errno) error {
	switch {
	case errno != 0:
		return &net.OpError{Op: "read", Net: "tcp", Err: errno}
	case n == 0:
		return io.EOF
	}
	return nil
}

// Write writes b whole, waiting for the socket as long as it takes.
func (w *connWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	n, err := w.Conn.Write(b)
	if n > 0 {
		w.noteSent()
	}
	return n, err
}

// Close closes the connection once no raw write is in progress on its
// descriptor (which a closed descriptor's reuse would misdirect), and
// after its hangupWatch let go of it.
func (w *connWriter) Close() error {
	w.wr.retire()
	if w.watch != nil {
		w.watch.remove(w)
	}
	return w.Conn.Close()
}

// The reader's states (connWriter.readState).
const (
	readUnwatched uint32 = iota // no hangupWatch: read until the socket says it is empty
	readWatched                 // a hangupWatch wakes the reader at the connection's end
	readHungUp                  // the connection ended, or its watch stopped: read until empty again
)

// mayWait reports whether the reader, after a read that took what the
// socket held, may wait for the poller without first reading again to
// find the socket empty. That read is what shows a FIN or a reset that
// came right behind the data, since neither raises a new readiness; it
// may be skipped only while a hangupWatch would report them (unwatch).
func (w *connWriter) mayWait() bool { return w.readState.Load() == readWatched }

// unwatch ends mayWait, once, and wakes the reader if it waits: its
// hangupWatch saw the connection end, or can no longer tell. The wake-up
// is a read deadline in the past, which woken then clears; so no one else
// may set a read deadline on a watched connection.
func (w *connWriter) unwatch() {
	if !w.readState.CompareAndSwap(readWatched, readHungUp) {
		return
	}
	w.wakePending.Store(true)
	_ = w.Conn.SetReadDeadline(time.Unix(1, 0))
}

// woken reports whether err, from a read, is unwatch's wake-up; if so it
// clears the deadline, for the reader to read again.
func (w *connWriter) woken(err error) bool {
	if !errors.Is(err, os.ErrDeadlineExceeded) || !w.wakePending.CompareAndSwap(true, false) {
		return false
	}
	_ = w.Conn.SetReadDeadline(time.Time{})
	return true
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
	n, errno := w.wr.send(b)
	if errno != 0 || n <= 0 { // EAGAIN: the send buffer is full; other errors (and a closed connection) the waiting write reports
		w.mu.Unlock()
		return false
	}
	w.noteSent()
	if n == len(b) {
		w.mu.Unlock()
		return true
	}
	rest := append([]byte(nil), b[n:]...)
	go func() {
		defer w.mu.Unlock()
		if _, err := w.Conn.Write(rest); err != nil {
			_ = w.Close() // the stream is cut: let the reader report the loss
		}
	}()
	return true
}
