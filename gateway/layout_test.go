package gateway

import (
	"testing"
	"unsafe"
)

// TestSessionLayout pins what the order of session's fields is for: the
// fields a client's QoS 0 PUBLISH touches lie in five cache lines, none
// across two lines, and the client's address in one line of its own, so
// that a message costs as few cache misses as it can. Lines count from
// where the allocator places a session in them.
func TestSessionLayout(t *testing.T) {
	const line = 64
	var s session
	type field struct {
		name        string
		offset, end uintptr
	}
	at := func(name string, offset, size uintptr) field { return field{name, offset, offset + size} }
	opq := unsafe.Offsetof(s.opq)
	hot := []field{
		at("runMu", unsafe.Offsetof(s.runMu), unsafe.Sizeof(s.runMu)),
		at("queued", unsafe.Offsetof(s.queued), unsafe.Sizeof(s.queued)),
		at("stopping", unsafe.Offsetof(s.stopping), unsafe.Sizeof(s.stopping)),
		at("replaced", unsafe.Offsetof(s.replaced), unsafe.Sizeof(s.replaced)),
		at("outstanding", unsafe.Offsetof(s.outstanding), unsafe.Sizeof(s.outstanding)),
		at("running", unsafe.Offsetof(s.running), unsafe.Sizeof(s.running)),
		at("state", unsafe.Offsetof(s.state), unsafe.Sizeof(s.state)),
		at("workerIdle", unsafe.Offsetof(s.workerIdle), unsafe.Sizeof(s.workerIdle)),
		at("armedKeepAlive", unsafe.Offsetof(s.armedKeepAlive), unsafe.Sizeof(s.armedKeepAlive)),
		at("connected", unsafe.Offsetof(s.connected), unsafe.Sizeof(s.connected)),
		at("g", unsafe.Offsetof(s.g), unsafe.Sizeof(s.g)),
		at("deliveries", unsafe.Offsetof(s.deliveries), unsafe.Sizeof(s.deliveries)),
		at("reg", unsafe.Offsetof(s.reg), unsafe.Sizeof(s.reg)),
		at("out", unsafe.Offsetof(s.out), unsafe.Sizeof(s.out)),
		at("willUpdate", unsafe.Offsetof(s.willUpdate), unsafe.Sizeof(s.willUpdate)),
		at("epoch", unsafe.Offsetof(s.epoch), unsafe.Sizeof(s.epoch)),
		at("keepAlive", unsafe.Offsetof(s.keepAlive), unsafe.Sizeof(s.keepAlive)),
		at("keepAliveAt", unsafe.Offsetof(s.keepAliveAt), unsafe.Sizeof(s.keepAliveAt)),
		at("queueBytes", unsafe.Offsetof(s.queueBytes), unsafe.Sizeof(s.queueBytes)),
		at("queue", unsafe.Offsetof(s.queue), unsafe.Sizeof(s.queue)),
		at("armedFor", unsafe.Offsetof(s.armedFor), unsafe.Sizeof(s.armedFor)),
		at("peer", unsafe.Offsetof(s.peer), unsafe.Sizeof(s.peer)),
		at("opq.mu", opq+unsafe.Offsetof(s.opq.mu), unsafe.Sizeof(s.opq.mu)),
		at("opq.idleConn", opq+unsafe.Offsetof(s.opq.idleConn), unsafe.Sizeof(s.opq.idleConn)),
		at("opq.items", opq+unsafe.Offsetof(s.opq.items), unsafe.Sizeof(s.opq.items)),
	}
	kept := make([]*session, 16) // on the heap, as sessions are
	base := uintptr(0)
	for i := range kept {
		kept[i] = new(session)
		p := uintptr(unsafe.Pointer(kept[i])) % line
		if i > 0 && p != base {
			t.Fatalf("sessions are allocated at different places in a cache line (%d, %d octets in): no layout can count on them", base, p)
		}
		base = p
	}
	for _, f := range hot {
		first, last := (base+f.offset)/line, (base+f.end-1)/line
		if last > 4 {
			t.Errorf("session.%s is in cache line %d (%d octets into the line the session starts in), beyond the first five", f.name, last, base)
		}
		if first != last && f.name != "peer" {
			t.Errorf("session.%s (octets %d–%d, %d into the line) straddles two cache lines", f.name, f.offset, f.end-1, base)
		}
	}
	if off := base + unsafe.Offsetof(s.peer); off%line != 0 || unsafe.Sizeof(s.peer) > line {
		t.Errorf("session.peer at octet %d of its lines, %d octets: not one cache line of its own", off, unsafe.Sizeof(s.peer))
	}
}
