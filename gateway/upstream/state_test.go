package upstream

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// testState is a connState writing to a loopback TCP connection whose other
// end the test reads as the broker would, and answers by hand.
func testState(t *testing.T, ackTimeout time.Duration) (*connState, net.Conn) {
	t.Helper()
	nc, peer := tcpPair(t)
	s := &connState{ended: func(*packets.Disconnect) {}, raw: newConnWriter(nc), ackTimeout: ackTimeout}
	if err := s.ConAckReceived(nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	return s, peer
}

// readPacket reads the next packet the state wrote.
func readPacket(t *testing.T, peer net.Conn) *packets.ControlPacket {
	t.Helper()
	_ = peer.SetReadDeadline(time.Now().Add(5 * time.Second))
	cp, err := packets.ReadPacket(peer)
	if err != nil {
		t.Fatalf("read what the gateway sent: %v", err)
	}
	return cp
}

// outcomes collects what done is told, per publication.
type outcomes chan error

func (o outcomes) done(err error) { o <- err }

func (o outcomes) next(t *testing.T) error {
	t.Helper()
	select {
	case err := <-o:
		return err
	case <-time.After(5 * time.Second):
		t.Fatal("no outcome within 5 s")
		return nil
	}
}

func (o outcomes) none(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case err := <-o:
		t.Fatalf("unexpected outcome %v", err)
	case <-time.After(d):
	}
}

var lim2 = serverLimits{receiveMax: 2, maxQoS: 2, retain: true}

// TestPublishFlights: QoS 1 and 2 PUBLISHes do not wait for their
// acknowledgement, never more than the broker's Receive Maximum are
// unacknowledged, and each one's outcome is told once: acknowledged,
// refused, timed out or cut by the end of the connection.
func TestPublishFlights(t *testing.T) {
	ctx := context.Background()

	t.Run("receive maximum", func(t *testing.T) {
		s, peer := testState(t, time.Minute)
		out := make(outcomes, 3)
		third := make(chan error, 1)
		go func() {
			for i := range 3 {
				err := s.publish(ctx, lim2, "t", []byte{byte(i)}, 1, false, out.done)
				if i == 2 {
					third <- err
				} else if err != nil {
					t.Error(err)
				}
			}
		}()
		first := readPacket(t, peer).Content.(*packets.Publish)
		second := readPacket(t, peer).Content.(*packets.Publish)
		select {
		case err := <-third:
			t.Fatalf("a third PUBLISH went out (%v) while the Receive Maximum of 2 were unacknowledged", err)
		case <-time.After(100 * time.Millisecond):
		}
		s.ackReceived(packets.PUBACK, first.PacketID, 0)
		if err := out.next(t); err != nil {
			t.Errorf("acknowledged PUBLISH: outcome %v, want nil", err)
		}
		if err := <-third; err != nil {
			t.Fatalf("third PUBLISH: %v", err)
		}
		last := readPacket(t, peer).Content.(*packets.Publish)
		if last.Payload[0] != 2 || last.PacketID == second.PacketID {
			t.Errorf("third PUBLISH: payload %v id %d (second's id %d)", last.Payload, last.PacketID, second.PacketID)
		}
		s.ackReceived(packets.PUBACK, second.PacketID, packets.PubackQuotaExceeded)
		var refused *gateway.RefusedError
		if err := out.next(t); !errors.As(err, &refused) || refused.Code != mqttsn.RejectedCongestion {
			t.Errorf("refused PUBLISH: outcome %v, want a refusal with congestion", err)
		}
		s.ackReceived(packets.PUBACK, last.PacketID, 0)
		if err := out.next(t); err != nil {
			t.Errorf("third PUBLISH: outcome %v", err)
		}
		s.ackReceived(packets.PUBACK, last.PacketID, 0) // repeated: nothing more
		out.none(t, 50*time.Millisecond)
	})

	t.Run("QoS 2", func(t *testing.T) {
		s, peer := testState(t, time.Minute)
		out := make(outcomes, 1)
		if err := s.publish(ctx, lim2, "t", []byte("x"), 2, false, out.done); err != nil {
			t.Fatal(err)
		}
		p := readPacket(t, peer).Content.(*packets.Publish)
		s.ackReceived(packets.PUBREC, p.PacketID, 0)
		if rel, ok := readPacket(t, peer).Content.(*packets.Pubrel); !ok || rel.PacketID != p.PacketID {
			t.Fatalf("after PUBREC the gateway sent %#v, want PUBREL %d", rel, p.PacketID)
		}
		out.none(t, 50*time.Millisecond) // done only at PUBCOMP
		s.ackReceived(packets.PUBCOMP, p.PacketID, 0)
		if err := out.next(t); err != nil {
			t.Errorf("outcome %v", err)
		}
		s.ackReceived(packets.PUBREC, 999, 0) // nothing of ours: PUBREL "identifier not found"
		if rel, ok := readPacket(t, peer).Content.(*packets.Pubrel); !ok || rel.PacketID != 999 || rel.ReasonCode != 0x92 {
			t.Errorf("unknown PUBREC answered with %#v, want PUBREL 999 reason 0x92", rel)
		}
	})

	t.Run("no answer", func(t *testing.T) {
		const timeout = 300 * time.Millisecond
		s, peer := testState(t, timeout)
		out := make(outcomes, 2)
		start := time.Now()
		if err := s.publish(ctx, lim2, "late", []byte("x"), 1, false, out.done); err != nil {
			t.Fatal(err)
		}
		p := readPacket(t, peer).Content.(*packets.Publish)
		err := out.next(t)
		if err == nil || !strings.Contains(err.Error(), "no acknowledgement") {
			t.Fatalf("unanswered PUBLISH: outcome %v, want a timeout", err)
		}
		if d := time.Since(start); d < timeout {
			t.Errorf("timed out after %v, before the %v timeout", d, timeout)
		}
		s.ackReceived(packets.PUBACK, p.PacketID, 0) // too late: nothing more
		out.none(t, 50*time.Millisecond)
		// The timer is armed again for the next one.
		if err := s.publish(ctx, lim2, "late", []byte("y"), 1, false, out.done); err != nil {
			t.Fatal(err)
		}
		if err := out.next(t); err == nil {
			t.Error("second unanswered PUBLISH: nil outcome, want a timeout")
		}
	})

	t.Run("timed out keeps its place", func(t *testing.T) {
		// The broker may still hold a PUBLISH it has not answered: its
		// identifier and its place under the Receive Maximum stay taken
		// until it answers, and its late answer ends nothing else.
		s, peer := testState(t, 100*time.Millisecond)
		lim1 := serverLimits{receiveMax: 1, maxQoS: 2, retain: true}
		out := make(outcomes, 2)
		if err := s.publish(ctx, lim1, "t", []byte("1"), 1, false, out.done); err != nil {
			t.Fatal(err)
		}
		first := readPacket(t, peer).Content.(*packets.Publish)
		if err := out.next(t); err == nil {
			t.Fatal("unanswered PUBLISH: nil outcome, want a timeout")
		}
		if s.tryPublish(lim1, "t", []byte("2"), 1, false, out.done) {
			t.Fatal("a PUBLISH went out while the timed-out one still holds the Receive Maximum of 1")
		}
		// Waiting for a place only timed-out PUBLISHes hold might never
		// end: publish refuses at once.
		waited := make(chan error, 1)
		go func() { waited <- s.publish(ctx, lim1, "t", []byte("2"), 1, false, out.done) }()
		select {
		case err := <-waited:
			if !errors.Is(err, errUnanswered) {
				t.Fatalf("publish with every place held by unanswered PUBLISHes: %v, want %v", err, errUnanswered)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("publish waited for a place only unanswered PUBLISHes hold")
		}
		s.ackReceived(packets.PUBACK, first.PacketID, 0) // late: frees the place, tells nothing
		out.none(t, 50*time.Millisecond)
		if !s.tryPublish(lim1, "t", []byte("2"), 1, false, out.done) {
			t.Fatal("no PUBLISH after the late acknowledgement freed the place")
		}
		second := readPacket(t, peer).Content.(*packets.Publish)
		s.ackReceived(packets.PUBACK, second.PacketID, 0)
		if err := out.next(t); err != nil {
			t.Errorf("second PUBLISH: outcome %v", err)
		}
	})

	t.Run("drain before DISCONNECT", func(t *testing.T) {
		s, peer := testState(t, time.Minute)
		out := make(outcomes, 1)
		if err := s.publish(ctx, lim2, "t", nil, 1, false, out.done); err != nil {
			t.Fatal(err)
		}
		p := readPacket(t, peer).Content.(*packets.Publish)
		drained := make(chan struct{})
		go func() { s.drain(5 * time.Second); close(drained) }()
		select {
		case <-drained:
			t.Fatal("drain returned with a PUBLISH in flight")
		case <-time.After(100 * time.Millisecond):
		}
		s.ackReceived(packets.PUBACK, p.PacketID, 0)
		select {
		case <-drained:
		case <-time.After(5 * time.Second):
			t.Fatal("drain did not return once the PUBLISH was acknowledged")
		}
		if err := out.next(t); err != nil {
			t.Errorf("outcome %v", err)
		}
		start := time.Now()
		if err := s.publish(ctx, lim2, "t", nil, 1, false, out.done); err != nil {
			t.Fatal(err)
		}
		s.drain(200 * time.Millisecond) // never answered: drain gives up
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("drain of an unanswered PUBLISH took %v, bound 200ms", d)
		}
	})

	t.Run("drain waits for acknowledgements", func(t *testing.T) {
		// An acknowledgement that could not be written at once (another
		// write in progress) goes out before a DISCONNECT written after
		// drain.
		s, peer := testState(t, time.Minute)
		s.raw.mu.Lock() // a write in progress
		s.ack(2, 7)
		s.raw.mu.Unlock()
		s.drain(5 * time.Second)
		if _, err := s.raw.Write([]byte{packets.DISCONNECT << 4, 0}); err != nil {
			t.Fatal(err)
		}
		if rec, ok := readPacket(t, peer).Content.(*packets.Pubrec); !ok || rec.PacketID != 7 {
			t.Fatalf("the broker read %#v first, want PUBREC 7 before the DISCONNECT", rec)
		}
	})

	t.Run("connection ends", func(t *testing.T) {
		s, peer := testState(t, time.Minute)
		out := make(outcomes, 2)
		for range 2 {
			if err := s.publish(ctx, lim2, "t", nil, 1, false, out.done); err != nil {
				t.Fatal(err)
			}
			readPacket(t, peer)
		}
		waiting := make(chan error, 1)
		go func() { waiting <- s.publish(ctx, lim2, "t", nil, 1, false, out.done) }()
		time.Sleep(50 * time.Millisecond)
		s.end()
		for range 2 {
			if err := out.next(t); !errors.Is(err, errEndedBeforeAck) {
				t.Errorf("PUBLISH in flight at the end: outcome %v, want %v", err, errEndedBeforeAck)
			}
		}
		if err := <-waiting; err == nil {
			t.Error("PUBLISH waiting for room when the connection ended: nil error, want one")
		}
		out.none(t, 50*time.Millisecond)
	})
}

// TestTryPublish: a publication that would have to wait for room under
// the Receive Maximum is not sent; one that needs no wait is.
func TestTryPublish(t *testing.T) {
	s, peer := testState(t, time.Minute)
	out := make(outcomes, 3)
	lim1 := serverLimits{receiveMax: 1, maxQoS: 2, retain: true}
	if !s.tryPublish(lim1, "t", []byte("a"), 1, false, out.done) {
		t.Fatal("first QoS 1 PUBLISH not sent")
	}
	first := readPacket(t, peer).Content.(*packets.Publish)
	if s.tryPublish(lim1, "t", []byte("b"), 1, false, out.done) {
		t.Fatal("a second QoS 1 PUBLISH was sent beyond the Receive Maximum of 1")
	}
	if !s.tryPublish(lim1, "t", []byte("c"), 0, false, nil) {
		t.Fatal("QoS 0 PUBLISH not sent")
	}
	if p := readPacket(t, peer).Content.(*packets.Publish); string(p.Payload) != "c" {
		t.Fatalf("after the first PUBLISH the peer read %q, want the QoS 0 one", p.Payload)
	}
	if s.tryPublish(serverLimits{receiveMax: 1, maxQoS: 0}, "t", []byte("d"), 1, false, out.done) {
		t.Error("a PUBLISH above the broker's maximum QoS was sent")
	}
	s.ackReceived(packets.PUBACK, first.PacketID, 0)
	if err := out.next(t); err != nil {
		t.Errorf("outcome %v", err)
	}
	out.none(t, 50*time.Millisecond)
}

// TestTryWrite: tryWrite takes packets while the socket has room, refuses
// them once it is full, and finishes a packet the socket took in part
// before any other write: the peer reads exactly the packets taken, whole
// and in order, then what was written after.
func TestTryWrite(t *testing.T) {
	nc, peer := tcpPair(t)
	_ = nc.(*net.TCPConn).SetWriteBuffer(4096)
	_ = peer.(*net.TCPConn).SetReadBuffer(4096)
	w := newConnWriter(nc)
	var want []byte
	refused := 0
	for i := 0; refused < 3 && i < 10000; i++ {
		pkt := []byte(strings.Repeat(string(rune('a'+i%26)), 500+i*733%2500))
		if w.tryWrite(pkt) {
			want = append(want, pkt...)
			refused = 0
		} else {
			refused++
			time.Sleep(time.Millisecond)
		}
	}
	if refused < 3 {
		t.Fatal("tryWrite never found the socket full")
	}
	after := []byte("after")
	wrote := make(chan error, 1)
	go func() { _, err := w.Write(after); wrote <- err }()
	want = append(want, after...)
	got := make([]byte, len(want))
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("read %d octets: %v", len(want), err)
	}
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the peer read %d octets that differ from the %d taken", len(got), len(want))
	}
	t.Logf("%d octets taken before the socket was full", len(want)-len(after))
}

// TestConnWriterDoesNotAllocate: on the per-message path, a packet taken
// at once and a read of what the peer sent allocate nothing (the raw
// calls are bound once per connection; where they are not available,
// the test skips).
func TestConnWriterDoesNotAllocate(t *testing.T) {
	nc, peer := tcpPair(t)
	w := newConnWriter(nc)
	if !w.canTry() {
		t.Skip("no raw system calls on this platform")
	}
	pkt := []byte{0x30, 4, 0, 1, 't', 'x'} // a QoS 0 PUBLISH of "x" to "t"
	in := make([]byte, 64)
	var failed error
	allocs := testing.AllocsPerRun(200, func() {
		if !w.tryWrite(pkt) {
			failed = errors.New("tryWrite refused a packet on an empty socket")
			return
		}
		if _, err := io.ReadFull(peer, in[:len(pkt)]); err != nil {
			failed = err
			return
		}
		if _, err := peer.Write(pkt); err != nil {
			failed = err
			return
		}
		if _, err := w.Read(in); err != nil {
			failed = err
		}
	})
	if failed != nil {
		t.Fatal(failed)
	}
	// The peer's own reads and writes (net's) allocate nothing either.
	if allocs != 0 {
		t.Errorf("a write and a read allocate %.1f times, want 0", allocs)
	}
}

// TestAckNeverWaits: acknowledgements written while the socket is full
// (the broker stopped reading) return at once, and reach the broker in
// order, after what was written before, once it reads again.
func TestAckNeverWaits(t *testing.T) {
	s, peer := testState(t, time.Minute)
	_ = s.raw.Conn.(*net.TCPConn).SetWriteBuffer(4096)
	_ = peer.(*net.TCPConn).SetReadBuffer(4096)
	var want []byte
	filler := bytes.Repeat([]byte{0}, 1000) // not MQTT: the test reads octets
	// Full: nothing taken for 100 ms (the peer's window has closed).
	for refused := 0; refused < 100; {
		if s.raw.tryWrite(filler) {
			want = append(want, filler...)
			refused = 0
		} else {
			refused++
			time.Sleep(time.Millisecond)
		}
	}
	acked := make(chan struct{})
	go func() {
		defer close(acked)
		for id := range uint16(50) {
			s.ack(1+byte(id%2), id+1) // PUBACK and PUBREC alternately
		}
	}()
	select {
	case <-acked:
	case <-time.After(5 * time.Second):
		t.Fatal("acknowledging waited on the full socket")
	}
	for id := range uint16(50) {
		kind := byte(packets.PUBACK)
		if id%2 == 1 {
			kind = packets.PUBREC
		}
		want = append(want, ackPacket(kind, id+1)...)
	}
	got := make([]byte, len(want))
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.ReadFull(peer, got); err != nil {
		t.Fatalf("read %d octets: %v", len(want), err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("the broker read the acknowledgements out of order or damaged")
	}
}
