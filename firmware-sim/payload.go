package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"
)

// Payloads are small JSON objects, written by hand into a reused buffer:
//
//	{"id":"temp-0001","run":"9f3a02c4","seq":42,"ts":1732600000123456,"value":21.53,"pad":"xxxx"}
//
// id and seq identify the message (sequence numbers start at 1 per sensor
// and direction), run is the nonce of the run that sent it (so that a
// message of an earlier run, or of another simulator using the same
// ClientIds, is not counted), ts is the time it was first sent in µs since
// the Unix epoch, value is the reading (or, for commands, absent), and pad
// fills the payload up to the configured size.

// clock gives wall-clock timestamps derived from one monotonic reading, so
// that latencies measured inside the process do not jump with the wall clock.
type clock struct{ base time.Time }

func newClock() clock { return clock{base: time.Now()} }

// micros returns t in µs since the Unix epoch.
func (c clock) micros(t time.Time) int64 {
	return c.base.UnixMicro() + t.Sub(c.base).Microseconds()
}

// since returns the time elapsed from the timestamp ts (µs since the epoch)
// to now.
func (c clock) since(now time.Time, ts int64) time.Duration {
	return time.Duration(c.micros(now)-ts) * time.Microsecond
}

// appendPayload appends a reading's JSON to dst, padded to size octets
// when size is larger than the natural size. prefix is payloadPrefix's.
func appendPayload(dst []byte, prefix string, seq uint64, ts int64, value float64, withValue bool, size int) []byte {
	start := len(dst)
	dst = append(dst, prefix...)
	dst = strconv.AppendUint(dst, seq, 10)
	dst = append(dst, `,"ts":`...)
	dst = strconv.AppendInt(dst, ts, 10)
	if withValue {
		dst = append(dst, `,"value":`...)
		dst = strconv.AppendFloat(dst, value, 'f', 2, 64)
	}
	const padOverhead = len(`,"pad":""`)
	if n := size - (len(dst) - start) - 1 - padOverhead; n >= 0 {
		dst = append(dst, `,"pad":"`...)
		for range n {
			dst = append(dst, 'x')
		}
		dst = append(dst, '"')
	}
	return append(dst, '}')
}

// payloadPrefix returns the constant start of a sensor's payloads in the
// run with the nonce run: `{"id":"<ClientId>","run":"<nonce>","seq":`. The
// scenario parser keeps quotes, backslashes and control characters out of
// ClientIds, so that the id needs no escaping.
func payloadPrefix(clientID, run string) string {
	return `{"id":` + strconv.Quote(clientID) + `,"run":` + strconv.Quote(run) + `,"seq":`
}

// newRunNonce returns a run's nonce: 8 hex digits, random whatever the
// scenario's seed, so that a run repeated with the same seed still tells
// its messages from the earlier run's.
func newRunNonce() string {
	return fmt.Sprintf("%08x", rand.Uint32())
}

// parsedPayload is what parsePayload finds in a payload.
type parsedPayload struct {
	id  []byte // the ClientId, as written (ClientIds need no escaping)
	run []byte // the run's nonce
	seq uint64
	ts  int64
}

// parsePayload reads id, run, seq and ts from a payload written by
// appendPayload. It does not allocate; ok is false for anything else.
func parsePayload(b []byte) (p parsedPayload, ok bool) {
	var rest []byte
	if p.id, rest, ok = quotedField(b, `{"id":"`); !ok {
		return p, false
	}
	if p.run, rest, ok = quotedField(rest, `,"run":"`); !ok {
		return p, false
	}
	const seqKey = `,"seq":`
	if !bytes.HasPrefix(rest, []byte(seqKey)) {
		return p, false
	}
	rest = rest[len(seqKey):]
	var n int
	p.seq, n = parseUint(rest)
	if n == 0 {
		return p, false
	}
	rest = rest[n:]
	const tsKey = `,"ts":`
	if !bytes.HasPrefix(rest, []byte(tsKey)) {
		return p, false
	}
	ts, n := parseUint(rest[len(tsKey):])
	if n == 0 || ts > 1<<62 {
		return p, false
	}
	p.ts = int64(ts)
	return p, true
}

// quotedField reads the string after key (which ends with the opening
// quote) at the start of b, up to the closing quote, and returns the rest.
func quotedField(b []byte, key string) (val, rest []byte, ok bool) {
	if !bytes.HasPrefix(b, []byte(key)) {
		return nil, nil, false
	}
	b = b[len(key):]
	end := bytes.IndexByte(b, '"')
	if end < 0 {
		return nil, nil, false
	}
	return b[:end], b[end+1:], true
}

// parseUint parses the decimal digits at the start of b; n is how many
// octets it read (0: none, or more than 19 digits).
func parseUint(b []byte) (v uint64, n int) {
	for n < len(b) && n < 19 && b[n] >= '0' && b[n] <= '9' {
		v = v*10 + uint64(b[n]-'0')
		n++
	}
	if n < len(b) && n == 19 && b[n] >= '0' && b[n] <= '9' {
		return 0, 0
	}
	return v, n
}
