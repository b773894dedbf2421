package mqtt

// Tests of this directory's patches (see README.md); mochi's own tests are
// not vendored.

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// TestOutQueueNeverEmptyDoesNotGrow: a writer that always has one packet
// left (a subscriber always a little behind) must not make the queue's
// array grow with every packet ever queued.
func TestOutQueueNeverEmptyDoesNotGrow(t *testing.T) {
	cl := &Client{ops: &ops{options: &Options{Capabilities: NewDefaultServerCapabilities()}}}
	q := &cl.State.outbound
	q.writing = true // as if a WriteLoop were busy: push starts none
	pk := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}
	q.push(cl, pk)
	for i := 0; i < 100_000; i++ {
		q.push(cl, pk)
		if q.pop() == nil {
			t.Fatal("pop found nothing pending")
		}
	}
	if q.pending() != 1 || cap(q.items) > 64 {
		t.Fatalf("pending %d, array of %d for it", q.pending(), cap(q.items))
	}
}

// TestOutQueueRefusesOnlyQoS0: beyond MaximumClientWritesPending a QoS 0
// packet is refused, a QoS 1 packet taken.
func TestOutQueueRefusesOnlyQoS0(t *testing.T) {
	caps := NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = 4
	cl := &Client{ops: &ops{options: &Options{Capabilities: caps}}}
	q := &cl.State.outbound
	q.writing = true
	qos0 := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish}}
	qos1 := &packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}}
	for i := 0; i < 4; i++ {
		if !q.push(cl, qos0) {
			t.Fatalf("QoS 0 packet %d refused below the limit", i)
		}
	}
	if q.push(cl, qos0) {
		t.Error("a QoS 0 packet was taken beyond the limit")
	}
	if !q.push(cl, qos1) {
		t.Error("a QoS 1 packet was refused")
	}
}
