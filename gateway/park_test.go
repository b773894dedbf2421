package gateway

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestParkSeesDelivery: a broker message sent while the session has an
// owner (whose claim the sender then loses) keeps the owner from parking
// until it is taken; a session that takes no deliveries parks regardless.
func TestParkSeesDelivery(t *testing.T) {
	var s session
	dl := make(chan *Delivery, 4)
	if !s.claim() {
		t.Fatal("a new session could not be claimed")
	}
	dl <- &Delivery{}
	s.noteDelivery()
	if s.claim() {
		t.Fatal("an owned session was claimed")
	}
	if s.park(dl) {
		t.Fatal("the owner parked with a delivery waiting")
	}
	<-dl
	if !s.park(dl) {
		t.Fatal("the owner did not park with nothing waiting")
	}

	if !s.claim() {
		t.Fatal("a parked session could not be claimed")
	}
	dl <- &Delivery{}
	s.noteDelivery()
	if !s.park(nil) {
		t.Fatal("a session that takes no deliveries did not park")
	}
	if !s.claim() {
		t.Fatal("a parked session could not be claimed")
	}
	if s.park(dl) {
		t.Fatal("the delivery sent while the session took none was forgotten")
	}
}

// TestDeliveriesNeverStranded: senders of broker messages and of client
// events, and the owners they become (as Deliver, post and runHere do),
// leave no message in a channel without an owner to take it, and the
// count of client events beside the delivery mark stays right. Each
// sender sends one message a round and waits until the round's messages
// are all taken: a stranded one is never taken, as no one sends after it.
// A race is caught only by chance, and only with two CPUs or more.
func TestDeliveriesNeverStranded(t *testing.T) {
	if runtime.GOMAXPROCS(0) < 2 {
		t.Log("one CPU: the senders and the owner do not run at once")
	}
	const deliverers, posters, rounds = 4, 2, 20000
	s := session{inbox: make(chan inbound, posters)}
	dl := make(chan *Delivery, deliverers)
	var (
		taken     atomic.Int64
		wg        sync.WaitGroup
		stranded  atomic.Bool
		abort     = make(chan struct{}) // closed once stranded: an owner waiting for an event gives up
		abortOnce sync.Once
	)
	own := func() { // as loop does, for deliveries and client events alone
		for !s.park(dl) {
			select {
			case <-s.inbox:
				s.queued.Add(-1)
			case <-dl:
			case <-abort:
				return
			}
			taken.Add(1)
		}
	}
	sender := func(send func()) {
		defer wg.Done()
		for r := range rounds {
			send()
			if s.claim() {
				own()
			}
			deadline := time.Now().Add(2 * time.Second)
			for i := 0; taken.Load() < int64((r+1)*(deliverers+posters)); i++ {
				if stranded.Load() {
					return
				}
				if i%1000 == 999 && time.Now().After(deadline) {
					stranded.Store(true)
					abortOnce.Do(func() { close(abort) })
					return
				}
				runtime.Gosched()
			}
		}
	}
	wg.Add(deliverers + posters)
	for range deliverers {
		go sender(func() {
			dl <- nil
			s.noteDelivery()
		})
	}
	for range posters {
		go sender(func() {
			if !offer(&s, s.inbox, inbound{}) {
				t.Error("the inbox was full")
			}
		})
	}
	wg.Wait()
	if stranded.Load() {
		t.Fatalf("a message was left with no owner: %d taken, %d in the delivery channel, %d in the inbox, count %#x", taken.Load(), len(dl), len(s.inbox), s.queued.Load())
	}
	if q := s.queued.Load(); q&^deliveryMark != 0 {
		t.Errorf("count of client events %d after all were taken", q&^deliveryMark)
	}
}
