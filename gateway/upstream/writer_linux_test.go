package upstream

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"
)

// TestTryWriteAfterClose: a raw write goes to the connection while it is
// open, and never after Close, even to a socket that got the closed one's
// descriptor number.
func TestTryWriteAfterClose(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	fd := func(c net.Conn) (fd uintptr) {
		raw, err := c.(syscall.Conn).SyscallConn()
		if err != nil {
			t.Fatal(err)
		}
		_ = raw.Control(func(d uintptr) { fd = d })
		return fd
	}

	nc, peer := tcpPairOn(t, ln)
	w := newConnWriter(nc)
	if !w.canTry() {
		t.Fatal("no raw writes on a TCP connection")
	}
	if !w.tryWrite([]byte("first")) {
		t.Fatal("tryWrite on an open connection with room: not taken")
	}
	got := make([]byte, 5)
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil || string(got) != "first" {
		t.Fatalf("peer read %q, %v; want \"first\"", got, err)
	}

	closedFD := fd(nc)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	next, nextPeer := tcpPairOn(t, ln) // the lowest free descriptor: most likely the one just closed
	if fd(next) != closedFD {
		t.Logf("the new connection got descriptor %d, not the closed %d: only the refusal is checked", fd(next), closedFD)
	}
	if w.tryWrite([]byte("stray")) {
		t.Error("tryWrite after Close: taken")
	}
	_ = nextPeer.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if n, _ := nextPeer.Read(got); n > 0 {
		t.Errorf("the connection opened after Close received %q, written through the closed one", got[:n])
	}
}
