package upstream

import (
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
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

// TestPacketConnAckDuringHandling: on a raw connection, whose
// acknowledgements are handled within the read, one that arrives while
// the one before is being handled is not missed. Each acknowledgement here
// is sent from the handling of the one before, as a sensor's next QoS 1
// PUBLISH follows its PUBACK; the pause lets the poller see it first. (A
// reader that waited after handling, on a freshly reset readiness, would
// stall here.) Watched, the reader also waits after each short read.
func TestPacketConnAckDuringHandling(t *testing.T) {
	for _, mode := range []readMode{modeRaw, modeWatched} {
		t.Run(mode.String(), func(t *testing.T) { testPacketConnAckDuringHandling(t, mode) })
	}
}

func testPacketConnAckDuringHandling(t *testing.T, mode readMode) {
	nc, peer := tcpPair(t)
	const n = 20
	got := make(chan uint16, n)
	pc := newPacketConn(readerConn(t, nc, mode), func(kind byte, id uint16, rc byte) {
		if id < n {
			if _, err := peer.Write(ackPacket(packets.PUBACK, id+1)); err != nil {
				t.Error(err)
			}
			time.Sleep(2 * time.Millisecond)
		}
		got <- id
	})
	if pc.raw == nil {
		t.Fatal("no raw reads on a TCP connection")
	}
	go func() { _, _ = packets.ReadPacket(pc) }() // returns when the test's cleanup closes the connection
	if _, err := peer.Write(ackPacket(packets.PUBACK, 1)); err != nil {
		t.Fatal(err)
	}
	for want := uint16(1); want <= n; want++ {
		select {
		case id := <-got:
			if id != want {
				t.Fatalf("acknowledgement %d handed over, want %d", id, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("acknowledgement %d not handed over within 5 s: the reader missed its arrival", want)
		}
	}
}
