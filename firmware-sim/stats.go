package main

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Histogram records latencies in microseconds in log-linear buckets: exact
// below 64 µs, then 32 buckets per power of two, so a percentile is within
// about 3 % of the true value, in fixed memory (about 15 KB), whatever the
// number of samples. It is safe for concurrent use.
type Histogram struct {
	counts [histBuckets]atomic.Uint64
	n      atomic.Uint64
	max    atomic.Uint64
}

const (
	histSubBits = 5 // 32 sub-buckets per power of two
	histSub     = 1 << histSubBits
	histLinear  = 2 * histSub // values below this have a bucket each
	histBuckets = histLinear + (64-histSubBits-1)*histSub
)

// bucketOf returns the bucket of v.
func bucketOf(v uint64) int {
	if v < histLinear {
		return int(v)
	}
	e := bits.Len64(v) - histSubBits - 1 // v >> e is in [histSub, 2*histSub)
	return histLinear + (e-1)*histSub + int(v>>e) - histSub
}

// bucketHigh returns the largest value of bucket b.
func bucketHigh(b int) uint64 {
	if b < histLinear {
		return uint64(b)
	}
	b -= histLinear
	e := b/histSub + 1
	m := uint64(b%histSub + histSub)
	return (m+1)<<e - 1
}

// Record adds one sample of d (negative counts as 0).
func (h *Histogram) Record(d time.Duration) {
	us := uint64(0)
	if d > 0 {
		us = uint64(d / time.Microsecond)
	}
	h.counts[bucketOf(us)].Add(1)
	h.n.Add(1)
	for {
		m := h.max.Load()
		if us <= m || h.max.CompareAndSwap(m, us) {
			break
		}
	}
}

// Count returns the number of samples.
func (h *Histogram) Count() uint64 { return h.n.Load() }

// Max returns the largest sample in µs (exact).
func (h *Histogram) Max() uint64 { return h.max.Load() }

// Percentile returns the p-th percentile (0 < p ≤ 100) in µs: the upper
// bound of the bucket holding it, capped at the exact maximum; 0 without
// samples.
func (h *Histogram) Percentile(p float64) uint64 {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := uint64(p/100*float64(n) + 0.5)
	if rank < 1 {
		rank = 1
	}
	var seen uint64
	for b := range h.counts {
		seen += h.counts[b].Load()
		if seen >= rank {
			return min(bucketHigh(b), h.max.Load())
		}
	}
	return h.max.Load()
}

// Merge adds o's samples to h.
func (h *Histogram) Merge(o *Histogram) {
	for b := range o.counts {
		if c := o.counts[b].Load(); c > 0 {
			h.counts[b].Add(c)
		}
	}
	h.n.Add(o.n.Load())
	for {
		m, om := h.max.Load(), o.max.Load()
		if om <= m || h.max.CompareAndSwap(m, om) {
			break
		}
	}
}

// latencies holds one Histogram per QoS, indexed by the QoS's two wire
// bits: 0, 1, 2, and 3 for QoS -1. of is the only way in, so that no QoS
// can index out of range.
type latencies [4]*Histogram

// newLatencies returns a set of empty histograms.
func newLatencies() *latencies {
	var l latencies
	for i := range l {
		l[i] = new(Histogram)
	}
	return &l
}

// of returns the histogram of q.
func (l *latencies) of(q mqttsn.QoS) *Histogram { return l[q&3] }

// maxTrackedSeq bounds the sequence numbers a seqSet holds (one bit each:
// 128 MiB at most, for a sensor that really sent a billion messages).
// Receivers reject a seq above what its sender assigned before it gets
// here, so a bogus number cannot make a set grow.
const maxTrackedSeq = 1 << 30

// seqSet is the set of sequence numbers one sensor's stream delivered,
// with the counts a receiver derives from it: unique, duplicated, and out
// of order (a number below the highest seen before). One bit per number.
type seqSet struct {
	bits       []uint64
	maxSeq     uint64
	unique     uint64
	duplicated uint64
	outOfOrder uint64
}

// add records seq and reports whether it was new. 0 and numbers above
// maxTrackedSeq are ignored (false).
func (s *seqSet) add(seq uint64) bool {
	if seq == 0 || seq > maxTrackedSeq {
		return false
	}
	w := int(seq / 64)
	if w >= len(s.bits) {
		s.bits = append(s.bits, make([]uint64, w+1-len(s.bits)+len(s.bits)/2)...)
	}
	bit := uint64(1) << (seq % 64)
	if s.bits[w]&bit != 0 {
		s.duplicated++
		return false
	}
	s.bits[w] |= bit
	s.unique++
	if seq < s.maxSeq {
		s.outOfOrder++
	}
	if seq > s.maxSeq {
		s.maxSeq = seq
	}
	return true
}

// has reports whether seq was delivered.
func (s *seqSet) has(seq uint64) bool {
	w := int(seq / 64)
	return w < len(s.bits) && s.bits[w]&(uint64(1)<<(seq%64)) != 0
}

// countUpTo returns how many of 1..last the set holds.
func (s *seqSet) countUpTo(last uint64) uint64 {
	var n int
	for w, word := range s.bits {
		lo := uint64(w) * 64
		if lo > last {
			break
		}
		if last-lo < 63 {
			word &= uint64(1)<<(last-lo+1) - 1
		}
		n += bits.OnesCount64(word)
	}
	return uint64(n) // bit 0 (seq 0) is never set
}

// delivered returns how many of the sent seqs the set holds: those of
// 1..last that are not in unsent. It is the intersection of what was sent
// and what arrived, so that an extra arrival cannot hide a loss.
func (s *seqSet) delivered(last uint64, unsent []uint64) uint64 {
	n := s.countUpTo(last)
	for _, seq := range unsent {
		if seq <= last && s.has(seq) {
			n--
		}
	}
	return n
}

// uplinkCounters are what one sensor counts of its own publications.
// Written by the sensor's goroutine; read by the progress line, the
// timeline and the observer meanwhile, and by the report after the sensor
// stopped.
type uplinkCounters struct {
	sent     atomic.Uint64 // QoS 0 and -1: PUBLISHes written
	acked    atomic.Uint64 // QoS 1/2: PUBACK accepted / PUBCOMP received (or PUBREC, see sensor.retryLater)
	failed   atomic.Uint64 // QoS 1/2: retries exhausted or rejected for good
	inFlight atomic.Int64
	retrans  atomic.Uint64 // PUBLISH retransmissions (DUP)
	rejected atomic.Uint64 // PUBACK, REGACK or SUBACK with a return code other than accepted
	skipped  atomic.Uint64 // readings that fell due while the sensor could not publish
	// maxSeq is the highest seq the sensor assigned, stored before the
	// PUBLISH leaves: the observer rejects anything above it.
	maxSeq atomic.Uint64
}

// finished returns the publications the sensor finished: written (QoS 0,
// -1), acknowledged or given up (QoS 1/2).
func (u *uplinkCounters) finished() uint64 {
	return u.sent.Load() + u.acked.Load() + u.failed.Load()
}

// uplinkSeen is what the observer saw of one sensor's publications.
type uplinkSeen struct {
	mu  sync.Mutex
	set seqSet
}

// downlink is one sensor's command stream: the observer counts what it
// sent, the sensor what it received.
type downlink struct {
	next     atomic.Uint64 // last seq handed out: the sensor rejects anything above
	sent     atomic.Uint64 // acknowledged by the broker (QoS 1/2) or written (QoS 0)
	sendFail atomic.Uint64 // publish to the broker failed
	received atomic.Uint64 // unique commands of this run the sensor got
	stale    atomic.Uint64 // commands of another run, or with a seq never handed out
	ready    atomic.Bool   // subscribed: commands can reach the sensor
	set      seqSet        // the sensor goroutine's; read after it stopped

	mu     sync.Mutex
	unsent []uint64 // seqs handed out whose publish failed
}

// failed records that the command seq did not reach the broker.
func (d *downlink) failed(seq uint64) {
	d.sendFail.Add(1)
	d.mu.Lock()
	d.unsent = append(d.unsent, seq)
	d.mu.Unlock()
}

// fleetCounters are run-wide counts of connection events.
type fleetCounters struct {
	connects        atomic.Uint64 // CONNACK accepted (full connects and resumes)
	connectFailures atomic.Uint64 // refused, unanswered, or DTLS handshake failed
	reconnects      atomic.Uint64 // connections lost and tried again
	connected       atomic.Int64  // sensors connected (active, asleep or awake) now
	sleeps          atomic.Uint64
	wakeUps         atomic.Uint64
	malformed       atomic.Uint64 // datagrams from the gateway that did not decode
	unexpected      atomic.Uint64 // valid messages with no use in the state
	sendErrors      atomic.Uint64
	encodeErrors    atomic.Uint64 // messages a sensor could not encode (it gave up)
}
