package main

import (
	"math/bits"
	"sync"
	"sync/atomic"
	"time"
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

// add records seq and reports whether it was new.
func (s *seqSet) add(seq uint64) bool {
	w := int(seq / 64)
	if w >= len(s.bits) {
		if w > 1<<26 { // 4 G messages from one sensor: not plausible, ignore
			return false
		}
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

// uplinkCounters are what one sensor counts of its own publications.
// Written by the sensor's goroutine; read by the progress line meanwhile
// and by the report after the sensor stopped.
type uplinkCounters struct {
	sent     atomic.Uint64 // QoS 0 and -1: PUBLISHes written
	acked    atomic.Uint64 // QoS 1/2: PUBACK accepted / PUBCOMP received
	failed   atomic.Uint64 // QoS 1/2: retries exhausted or rejected for good
	inFlight atomic.Int64
	retrans  atomic.Uint64 // PUBLISH retransmissions (DUP)
	rejected atomic.Uint64 // PUBACK with a return code other than accepted
}

// uplinkSeen is what the observer saw of one sensor's publications.
type uplinkSeen struct {
	mu  sync.Mutex
	set seqSet
}

// downlink is one sensor's command stream: the observer counts what it
// sent, the sensor what it received.
type downlink struct {
	next     atomic.Uint64 // last seq handed out
	sent     atomic.Uint64 // acknowledged by the broker (QoS 1/2) or written (QoS 0)
	sendFail atomic.Uint64 // publish to the broker failed
	received atomic.Uint64 // unique commands the sensor got
	ready    atomic.Bool   // subscribed: commands can reach the sensor
	set      seqSet        // the sensor goroutine's; read after it stopped
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
}
