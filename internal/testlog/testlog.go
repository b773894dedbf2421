// Package testlog gives tests a logger that writes to the test's log and
// goes quiet when the test ends.
package testlog

import (
	"sync"
	"testing"

	"github.com/rs/zerolog"
)

// New returns a logger at level that writes to tb's log until tb's test
// has ended and drops what comes after: a goroutine of a closed connection
// may still log then, which testing answers with a panic. Call it before
// starting what logs, so that its cleanup runs after theirs.
func New(tb testing.TB, level zerolog.Level) zerolog.Logger {
	w := &writer{out: zerolog.NewTestWriter(tb)}
	tb.Cleanup(func() {
		w.mu.Lock()
		w.ended = true
		w.mu.Unlock()
	})
	return zerolog.New(w).Level(level)
}

// writer passes log lines to the test until it has ended.
type writer struct {
	mu    sync.Mutex
	out   zerolog.TestWriter
	ended bool
}

func (w *writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return len(p), nil
	}
	return w.out.Write(p)
}
