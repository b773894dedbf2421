package fdguard

import (
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestRetireWaitsForCalls: Retire returns only once the call in progress
// has exited, and no call enters after it.
func TestRetireWaitsForCalls(t *testing.T) {
	var g Guard
	if !g.Enter() {
		t.Fatal("Enter on a fresh guard refused")
	}
	var retired atomic.Bool
	done := make(chan struct{})
	go func() {
		g.Retire()
		retired.Store(true)
		close(done)
	}()
	time.Sleep(20 * time.Millisecond)
	if retired.Load() {
		t.Fatal("Retire returned while a call was in progress")
	}
	g.Exit()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Retire did not return after the call exited")
	}
	if g.Enter() {
		t.Error("Enter after Retire went ahead")
	}
}

// TestNoCallAfterRetire: with calls entering from many goroutines, none is
// in progress once Retire has returned.
func TestNoCallAfterRetire(t *testing.T) {
	var (
		g        Guard
		inside   atomic.Int32
		over     atomic.Bool
		late     atomic.Int32
		wg       sync.WaitGroup
		stopping = make(chan struct{})
	)
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stopping:
					return
				default:
				}
				if !g.Enter() {
					continue
				}
				inside.Add(1)
				if over.Load() {
					late.Add(1)
				}
				inside.Add(-1)
				g.Exit()
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	g.Retire()
	over.Store(true)
	if n := inside.Load(); n != 0 {
		t.Errorf("%d calls in progress after Retire returned", n)
	}
	time.Sleep(10 * time.Millisecond)
	close(stopping)
	wg.Wait()
	if n := late.Load(); n != 0 {
		t.Errorf("%d calls went ahead after Retire returned", n)
	}
}
