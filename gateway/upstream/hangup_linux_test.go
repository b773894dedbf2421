package upstream

import (
	"bytes"
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
		deadline := time.Now().Add(5 * time.Second)
		for watchers(t) != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: the watch goroutine still runs with no connection", round)
			}
			time.Sleep(time.Millisecond)
		}
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
