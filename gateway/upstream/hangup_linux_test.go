package upstream

import (
	"bytes"
	"fmt"
	"net"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// TestHangupWatchLifecycle: the watch's set and goroutine exist only while
// a connection is watched, and come back with the next one.
func TestHangupWatchLifecycle(t *testing.T) {
	var h hangupWatch
	waitNoWatchers(t) // of tests before
	for round := range 3 {
		var ws []*connWriter
		for range 3 {
			nc, _ := tcpPair(t)
			w := newConnWriter(nc)
			h.add(w)
			if !w.mayWait() {
				t.Fatalf("round %d: a connection is not watched", round)
			}
			ws = append(ws, w)
		}
		if watchers(t) != 1 {
			t.Fatalf("round %d: %d watch goroutines for 3 connections, want 1", round, watchers(t))
		}
		for i, w := range ws {
			_ = w.Close()
			_ = w.Close() // a second Close finds nothing to remove
			h.mu.Lock()
			open, left := h.set != nil, len(h.conns)
			h.mu.Unlock()
			if want := i < len(ws)-1; open != want || left != len(ws)-1-i {
				t.Fatalf("round %d, after %d closed: set open %v with %d connections", round, i+1, open, left)
			}
		}
		waitNoWatchers(t)
	}
}

// waitNoWatchers waits until no goroutine runs a hangupWatch: one whose
// set was closed may be on its way out.
func waitNoWatchers(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for watchers(t) != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d watch goroutines still run with no connection", watchers(t))
		}
		time.Sleep(time.Millisecond)
	}
}

// watchers counts the goroutines that run a hangupWatch.
func watchers(t *testing.T) int {
	t.Helper()
	buf := make([]byte, 1<<20)
	return strings.Count(string(buf[:runtime.Stack(buf, true)]), "(*hangupWatch).run(")
}

// TestHangupWatchFails: when the watch's own wait fails, its connections'
// readers are woken and go on reading, without an error and without the
// wait after a short read; one waits between packets, the other within a
// packet larger than packetConn's buffer. The next connection starts a new
// watch.
func TestHangupWatchFails(t *testing.T) {
	var h hangupWatch
	big := &packets.Publish{Topic: "cmd/big", QoS: 1, PacketID: 9, Payload: bytes.Repeat([]byte("p"), 1000), Properties: &packets.Properties{}}
	var bigPacket bytes.Buffer
	if _, err := big.WriteTo(&bigPacket); err != nil {
		t.Fatal(err)
	}
	type reader struct {
		w       *connWriter
		peer    interface{ Write([]byte) (int, error) }
		packets chan *packets.ControlPacket
		errs    chan error
		rest    []byte // what the peer sends after the failure
	}
	var readers []*reader
	for _, first := range [][]byte{nil, bigPacket.Bytes()[:400]} {
		nc, peer := tcpPair(t)
		w := newConnWriter(nc)
		h.add(w)
		r := &reader{w: w, peer: peer, packets: make(chan *packets.ControlPacket, 2), errs: make(chan error, 1), rest: bigPacket.Bytes()[len(first):]}
		pc := newPacketConn(w, func(byte, uint16, byte) {})
		go func() {
			for {
				cp, err := packets.ReadPacket(pc)
				if err != nil {
					r.errs <- err
					return
				}
				r.packets <- cp
			}
		}()
		if _, err := peer.Write(first); err != nil {
			t.Fatal(err)
		}
		readers = append(readers, r)
	}
	time.Sleep(20 * time.Millisecond) // both readers wait in the poller

	h.mu.Lock()
	set := h.set
	h.mu.Unlock()
	_ = set.Close() // not through remove: to run's read, a failure

	deadline := time.Now().Add(5 * time.Second)
	for _, r := range readers {
		for r.w.mayWait() {
			if time.Now().After(deadline) {
				t.Fatal("a connection is still watched after its watch failed")
			}
			time.Sleep(time.Millisecond)
		}
	}
	time.Sleep(20 * time.Millisecond) // the readers, woken, wait again
	for i, r := range readers {
		select {
		case err := <-r.errs:
			t.Fatalf("reader %d: %v, after its watch failed", i, err)
		default:
		}
		if _, err := r.peer.Write(r.rest); err != nil {
			t.Fatal(err)
		}
		select {
		case cp := <-r.packets:
			if p, ok := cp.Content.(*packets.Publish); !ok || p.PacketID != 9 || !bytes.Equal(p.Payload, big.Payload) {
				t.Fatalf("reader %d read %v, want the PUBLISH whole", i, cp)
			}
		case err := <-r.errs:
			t.Fatalf("reader %d: %v", i, err)
		case <-time.After(5 * time.Second):
			t.Fatalf("reader %d: no packet within 5 s after its watch failed", i)
		}
	}

	nc, _ := tcpPair(t)
	w := newConnWriter(nc)
	h.add(w)
	defer w.Close()
	if !w.mayWait() {
		t.Error("a connection added after the watch failed is not watched")
	}
}

// TestHangupWatchWakesParkedReader: a reader that waits after a short read
// which took the last acknowledgement and the FIN with it (or the data
// before a reset) is woken by its watch, which here learns of the end
// only after the reader waits (the test holds the watch's lock).
func TestHangupWatchWakesParkedReader(t *testing.T) {
	for _, reset := range []bool{false, true} {
		t.Run(fmt.Sprintf("reset=%v", reset), func(t *testing.T) {
			nc, peer := tcpPair(t)
			var h hangupWatch
			w := newConnWriter(nc)
			h.add(w)
			t.Cleanup(func() { _ = w.Close() })
			if !w.mayWait() {
				t.Fatal("the connection is not watched")
			}
			acked := make(chan uint16, 1)
			pc := newPacketConn(w, func(_ byte, id uint16, _ byte) { acked <- id })

			h.mu.Lock() // run gets the event but cannot look the connection up
			locked := true
			defer func() {
				if locked {
					h.mu.Unlock()
				}
			}()
			if _, err := peer.Write(ackPacket(packets.PUBACK, 1)); err != nil {
				t.Fatal(err)
			}
			if reset {
				_ = peer.(*net.TCPConn).SetLinger(0)
			}
			_ = peer.Close()
			time.Sleep(5 * time.Millisecond) // both are in before the reader's first read

			result := make(chan error, 1)
			go func() { _, err := packets.ReadPacket(pc); result <- err }()
			select {
			case <-acked:
			case <-time.After(5 * time.Second):
				t.Fatal("the acknowledgement was not handed over")
			}
			time.Sleep(20 * time.Millisecond) // the reader waits in the poller
			select {
			case err := <-result:
				t.Fatalf("the reader returned (%v) without waiting after its short read", err)
			default:
			}
			if !w.mayWait() {
				t.Fatal("unwatched while the watch's lock was held")
			}
			locked = false
			h.mu.Unlock()
			awaitEnd(t, result, "the waiting reader was not woken by its watch")
		})
	}
}

// TestHangupWatchLateCloseSparesReusedDescriptor: a late second Close of a
// closed connection leaves alone the watch of a new connection that got
// its descriptor number.
func TestHangupWatchLateCloseSparesReusedDescriptor(t *testing.T) {
	var h hangupWatch
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	keepNC, _ := tcpPairOn(t, ln)
	keep := newConnWriter(keepNC)
	h.add(keep) // keeps the set open
	defer keep.Close()
	oldNC, _ := tcpPairOn(t, ln)
	old := newConnWriter(oldNC)
	h.add(old)
	_ = old.Close()
	newNC, newPeer := tcpPairOn(t, ln)
	w := newConnWriter(newNC)
	h.add(w)
	defer w.Close()
	if w.wr.fd != old.wr.fd {
		t.Skip("the descriptor number was not reused")
	}
	_ = old.Close() // late, as from tryWrite's goroutine
	_ = newPeer.Close()
	deadline := time.Now().Add(5 * time.Second)
	for w.mayWait() {
		if time.Now().After(deadline) {
			t.Fatal("the new connection's end went unseen: the old one's Close removed its watch")
		}
		time.Sleep(time.Millisecond)
	}
}

// TestHangupWatchCloseDuringEvent: a Close while the watch's goroutine
// holds an event of the same connection neither deadlocks nor leaves the
// goroutine running.
func TestHangupWatchCloseDuringEvent(t *testing.T) {
	waitNoWatchers(t) // of tests before
	var h hangupWatch
	nc, peer := tcpPair(t)
	w := newConnWriter(nc)
	h.add(w)
	h.mu.Lock()
	_ = peer.Close()
	time.Sleep(10 * time.Millisecond) // run has the event and waits for h.mu
	closed := make(chan struct{})
	go func() { _ = w.Close(); close(closed) }()
	time.Sleep(10 * time.Millisecond) // remove waits for h.mu too
	h.mu.Unlock()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close deadlocked against the watch's handling of an event")
	}
	waitNoWatchers(t)
}
