package topicmap

import (
	"fmt"
	"runtime"
	"testing"
)

// benchRegistry returns a registry with n normal topics and three predefined ones.
func benchRegistry(tb testing.TB, n int) (*Registry, []uint16) {
	pre := mustPredefined(tb, PredefinedTopic{1, "time"}, PredefinedTopic{2, "cmd/all"}, PredefinedTopic{0x1000, "fw/update"})
	r := NewRegistry(pre, 0)
	ids := make([]uint16, n)
	for i := range n {
		ids[i] = mustRegister(tb, r, fmt.Sprintf("sensors/node%04d/temperature", i))
	}
	return r, ids
}

// sizes are a typical sensor and a client beyond the index threshold.
var sizes = []int{4, 200}

func BenchmarkLookupNormal(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n, "topics"), func(b *testing.B) {
			r, ids := benchRegistry(b, n)
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, ok := r.Lookup(KindNormal, ids[i]); !ok {
					b.Fatal("not found")
				}
				if i++; i == len(ids) {
					i = 0
				}
			}
		})
	}
}

func BenchmarkLookupPredefined(b *testing.B) {
	r, _ := benchRegistry(b, 4)
	b.ReportAllocs()
	for b.Loop() {
		if _, ok := r.Lookup(KindPredefined, 0x1000); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkLookupShort(b *testing.B) {
	b.Run("same name", func(b *testing.B) {
		r, _ := benchRegistry(b, 4)
		b.ReportAllocs()
		for b.Loop() {
			if _, ok := r.Lookup(KindShort, 0x5431); !ok {
				b.Fatal("not found")
			}
		}
	})
	b.Run("alternating names", func(b *testing.B) {
		r, _ := benchRegistry(b, 4)
		b.ReportAllocs()
		id := uint16(0x5431)
		for b.Loop() {
			if _, ok := r.Lookup(KindShort, id); !ok {
				b.Fatal("not found")
			}
			id ^= 1 // "T1", "T0", ...
		}
	})
}

func BenchmarkRegisterExisting(b *testing.B) {
	for _, n := range sizes {
		b.Run(fmt.Sprint(n, "topics"), func(b *testing.B) {
			r, ids := benchRegistry(b, n)
			topics := make([]string, n)
			for i, id := range ids {
				topics[i], _ = r.Topic(id)
			}
			b.ReportAllocs()
			i := 0
			for b.Loop() {
				if _, err := r.Register(topics[i]); err != nil {
					b.Fatal(err)
				}
				if i++; i == len(topics) {
					i = 0
				}
			}
		})
	}
}

func BenchmarkAssignExisting(b *testing.B) {
	r, ids := benchRegistry(b, 4)
	topic, _ := r.Topic(ids[2])
	b.ReportAllocs()
	for b.Loop() {
		if _, _, _, err := r.Assign(topic); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRegisterNew measures a new registration, including the removal
// that keeps the registry's size constant.
func BenchmarkRegisterNew(b *testing.B) {
	r, _ := benchRegistry(b, 4)
	topics := make([]string, 64)
	for i := range topics {
		topics[i] = fmt.Sprintf("sensors/new%02d/humidity", i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		id, err := r.Register(topics[i])
		if err != nil {
			b.Fatal(err)
		}
		r.Remove(id)
		if i++; i == len(topics) {
			i = 0
		}
	}
}

// TestHotPathsDoNotAllocate pins the zero-allocation claims of the benchmarks.
func TestHotPathsDoNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	for _, n := range sizes {
		r, ids := benchRegistry(t, n)
		topic, _ := r.Topic(ids[n/2])
		r.Lookup(KindShort, 0x5431) // fill the short-name cache
		checks := map[string]func(){
			"Lookup normal":     func() { r.Lookup(KindNormal, ids[n/2]) },
			"Lookup predefined": func() { r.Lookup(KindPredefined, 2) },
			"Lookup short":      func() { r.Lookup(KindShort, 0x5431) },
			"Lookup unknown":    func() { r.Lookup(KindNormal, 0xFFFF) },
			"Register existing": func() { _, _ = r.Register(topic) },
			"Register predef":   func() { _, _ = r.Register("cmd/all") },
			"Assign existing":   func() { _, _, _, _ = r.Assign(topic) },
			"Assign short":      func() { _, _, _, _ = r.Assign("T1") },
			"Confirmed":         func() { r.Confirmed(ids[0]) },
			"Rejected":          func() { r.Rejected(topic) },
		}
		for name, f := range checks {
			if a := testing.AllocsPerRun(100, f); a != 0 {
				t.Errorf("%d topics: %s: %v allocations, want 0", n, name, a)
			}
		}
	}
}

// TestFootprintMeasured logs the heap cost of many idle clients; run with -v.
func TestFootprintMeasured(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("measurement only")
	}
	const clients = 10000
	pre := mustPredefined(t, PredefinedTopic{1, "time"})
	topics := make([]string, 20) // shared strings: measure the registry, not the names
	for i := range topics {
		topics[i] = fmt.Sprintf("sensors/node/value%d", i)
	}
	for _, n := range []int{0, 3, linearMax, 20} {
		regs := make([]*Registry, clients)
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		for i := range regs {
			regs[i] = NewRegistry(pre, 0)
			for _, topic := range topics[:n] {
				mustRegister(t, regs[i], topic)
			}
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		t.Logf("%2d topics: %4d bytes per client", n, (after.HeapAlloc-before.HeapAlloc)/clients)
		runtime.KeepAlive(regs)
	}
}
