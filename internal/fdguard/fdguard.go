// Package fdguard keeps raw system calls on a socket's descriptor away
// from its close.
//
// A call made straight on a descriptor number (syscall.RawSyscall on the
// number that syscall.RawConn.Control gave) bypasses the runtime's
// reference count, which otherwise keeps a closing descriptor open until
// its calls end. Once the socket is closed its number may be reused by
// another socket at once, and a late call would then act on that one.
// A Guard brackets each such call (Enter, Exit) and is retired before the
// socket is closed (Retire): a call either runs before the close or is
// refused.
package fdguard

import (
	"runtime"
	"sync/atomic"
)

// Guard counts the raw calls in progress on one descriptor and refuses new
// ones once retired. The zero value is open. Calls must not block: Retire
// waits for them.
type Guard struct {
	inFlight atomic.Int32
	retired  atomic.Bool
}

// Enter reports whether a raw call may go ahead; if so, Exit must follow
// it.
func (g *Guard) Enter() bool {
	// Raised before retired is read: Retire, which sets retired before it
	// reads inFlight, either sees this call and waits for it, or this call
	// sees retired.
	g.inFlight.Add(1)
	if g.retired.Load() {
		g.inFlight.Add(-1)
		return false
	}
	return true
}

// Exit ends a call that Enter let go ahead.
func (g *Guard) Exit() { g.inFlight.Add(-1) }

// Retire waits for the calls in progress and refuses every later one.
func (g *Guard) Retire() {
	g.retired.Store(true)
	for g.inFlight.Load() != 0 {
		runtime.Gosched()
	}
}
