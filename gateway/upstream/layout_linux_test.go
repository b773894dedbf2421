//go:build !386

package upstream

import (
	"testing"
	"unsafe"
)

// TestConnWriterLayout: what a write touches (the mutex, the raw send, the
// traffic times) lies in one cache line of every connWriter allocated.
func TestConnWriterLayout(t *testing.T) {
	const line = 64
	if unsafe.Sizeof(uintptr(0)) != 8 {
		t.Skip("the layout is set for 64-bit platforms")
	}
	var w connWriter
	if next := unsafe.Offsetof(w.lastReceived); next > line { // the field after start, the last a write reads
		t.Errorf("a write's fields end at octet %d, beyond the first cache line", next)
	}
	kept := make([]*connWriter, 16) // on the heap, as connections' are
	for i := range kept {
		kept[i] = new(connWriter)
		if p := uintptr(unsafe.Pointer(kept[i])); p%line != 0 {
			t.Fatalf("a connWriter (%d octets) allocated %d octets into a cache line; change connWriterPad", unsafe.Sizeof(w), p%line)
		}
	}
}
