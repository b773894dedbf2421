package main

import (
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestHistogramPercentiles(t *testing.T) {
	var h Histogram
	if h.Percentile(99) != 0 || h.Max() != 0 {
		t.Fatal("empty histogram is not 0")
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var vals []uint64
	for range 100_000 {
		v := uint64(rng.ExpFloat64() * 2000) // µs, a long tail
		vals = append(vals, v)
		h.Record(time.Duration(v) * time.Microsecond)
	}
	slices.Sort(vals)
	for _, p := range []float64{50, 90, 99, 99.9} {
		exact := vals[int(p/100*float64(len(vals)))-1]
		got := h.Percentile(p)
		if got < exact || float64(got) > float64(exact)*1.04+1 {
			t.Errorf("p%v = %d, exact %d (want within +4%%)", p, got, exact)
		}
	}
	if h.Max() != vals[len(vals)-1] || h.Percentile(100) != vals[len(vals)-1] {
		t.Errorf("max = %d / p100 = %d, want %d", h.Max(), h.Percentile(100), vals[len(vals)-1])
	}
	if h.Count() != uint64(len(vals)) {
		t.Errorf("count = %d", h.Count())
	}
}

func TestHistogramBuckets(t *testing.T) {
	// Buckets are contiguous and every value lies within its bucket.
	prev := -1
	for _, v := range []uint64{0, 1, 63, 64, 65, 127, 128, 1000, 1 << 20, 1<<40 + 12345, 1<<63 + 1} {
		b := bucketOf(v)
		if b < prev || b >= histBuckets {
			t.Fatalf("bucketOf(%d) = %d after %d", v, b, prev)
		}
		prev = b
		if hi := bucketHigh(b); hi < v || (b > 0 && bucketHigh(b-1) >= v) {
			t.Errorf("value %d in bucket %d, range ..%d, previous ..%d", v, b, hi, bucketHigh(b-1))
		}
	}
	for v := uint64(0); v < 100_000; v++ {
		if b := bucketOf(v); bucketHigh(b) < v || (b > 0 && bucketHigh(b-1) >= v) {
			t.Fatalf("value %d: bucket %d", v, b)
		}
	}
}

func TestHistogramConcurrentAndMerge(t *testing.T) {
	var a, b Histogram
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 1000 {
				a.Record(time.Duration(i*1000+j) * time.Microsecond)
			}
		})
	}
	wg.Wait()
	b.Record(time.Hour)
	b.Merge(&a)
	if b.Count() != 4001 || b.Max() != uint64(time.Hour/time.Microsecond) {
		t.Errorf("count %d max %d", b.Count(), b.Max())
	}
	if p := b.Percentile(50); p < 1900 || p > 2100 {
		t.Errorf("p50 = %d", p)
	}
}

func TestSeqSet(t *testing.T) {
	var s seqSet
	for _, seq := range []uint64{1, 2, 4, 3, 3, 200, 5, 1} {
		s.add(seq)
	}
	if s.unique != 6 || s.duplicated != 2 || s.outOfOrder != 2 || s.maxSeq != 200 {
		t.Errorf("unique %d dup %d ooo %d max %d", s.unique, s.duplicated, s.outOfOrder, s.maxSeq)
	}
	if !s.has(200) || s.has(6) || s.has(100000) {
		t.Error("has")
	}
}

func TestPayload(t *testing.T) {
	for _, size := range []int{0, 10, 64, 65, 66, 200} {
		b := appendPayload(nil, payloadPrefix("temp-0001", "0badcafe"), 42, 1732600000123456, 21.5, true, size)
		if size > 90 && len(b) != size {
			t.Errorf("size %d: got %d octets: %s", size, len(b), b)
		}
		p, ok := parsePayload(b)
		if !ok || string(p.id) != "temp-0001" || string(p.run) != "0badcafe" || p.seq != 42 || p.ts != 1732600000123456 {
			t.Errorf("size %d: parse %s = %+v %v", size, b, p, ok)
		}
		if !strings.HasPrefix(string(b), `{"id":"temp-0001","run":"0badcafe","seq":42,"ts":1732600000123456,"value":21.50`) || b[len(b)-1] != '}' {
			t.Errorf("payload %s", b)
		}
	}
	for _, bad := range []string{"", "{", `{"id":"x"`, `{"id":"x","run":"r","seq":}`, `{"id":"x","run":"r","seq":1}`, `{"id":"x","run":"r","seq":1,"ts":}`,
		`{"id":"x","run":"r","seq":99999999999999999999999,"ts":1}`, "21.5", `{"seq":1,"id":"x","ts":2}`,
		`{"id":"x","seq":1,"ts":2}`, `{"id":"x","run":"r`, `{"id":"x","run":r,"seq":1,"ts":2}`} {
		if p, ok := parsePayload([]byte(bad)); ok {
			t.Errorf("parsePayload(%q) = %+v, want not ok", bad, p)
		}
	}
	buf := make([]byte, 0, 256)
	if n := testing.AllocsPerRun(1000, func() {
		buf = appendPayload(buf[:0], `{"id":"a","run":"b","seq":`, 1, 2, 3, true, 100)
		parsePayload(buf)
	}); n != 0 {
		t.Errorf("%v allocations per payload", n)
	}
}

func FuzzParsePayload(f *testing.F) {
	f.Add([]byte(`{"id":"temp-0001","run":"0badcafe","seq":42,"ts":1732600000123456}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		parsePayload(b) // must not panic
	})
}

// delivered counts the intersection of 1..last minus unsent with the set;
// a bogus seq far above anything sent allocates nothing.
func TestSeqSetDelivered(t *testing.T) {
	var s seqSet
	for _, seq := range []uint64{1, 2, 3, 63, 64, 65, 127, 128, 200, 1000} {
		s.add(seq)
	}
	cases := []struct {
		last   uint64
		unsent []uint64
		want   uint64
	}{
		{0, nil, 0}, {1, nil, 1}, {62, nil, 3}, {63, nil, 4}, {64, nil, 5}, {127, nil, 7}, {128, nil, 8},
		{999, nil, 9}, {5000, nil, 10}, {200, []uint64{2, 4, 200, 1000}, 7},
	}
	for _, c := range cases {
		if got := s.delivered(c.last, c.unsent); got != c.want {
			t.Errorf("delivered(%d, %v) = %d, want %d", c.last, c.unsent, got, c.want)
		}
	}
	var b seqSet
	if b.add(maxTrackedSeq+1) || b.add(0) || len(b.bits) != 0 || b.unique != 0 {
		t.Errorf("out-of-range seqs recorded: %d words, unique %d", len(b.bits), b.unique)
	}
}
