package gateway

import (
	"testing"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// TestPendingSet: a request is pending from add to remove, told apart by
// type and MsgId, and removing one leaves the others.
func TestPendingSet(t *testing.T) {
	var p pendingSet
	pub := func(id uint16) pendingKey { return pendingKey{t: mqttsn.TypePublish, msgID: id} }
	sub := pendingKey{t: mqttsn.TypeSubscribe, msgID: 1}
	for id := uint16(1); id <= opsSize; id++ {
		p.add(pub(id))
	}
	if p.has(sub) {
		t.Error("SUBSCRIBE 1 pending, but only PUBLISHes were added")
	}
	p.add(sub)
	p.remove(pub(1))
	p.remove(pub(7))
	p.remove(pub(99)) // not there: nothing happens
	for id := uint16(1); id <= opsSize; id++ {
		if want := id != 1 && id != 7; p.has(pub(id)) != want {
			t.Errorf("PUBLISH %d pending: %v, want %v", id, p.has(pub(id)), want)
		}
	}
	if !p.has(sub) || len(p) != opsSize-1 {
		t.Errorf("after two removals: SUBSCRIBE pending %v, %d requests; want true, %d", p.has(sub), len(p), opsSize-1)
	}
}
