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

// TestDeliveriesNeverStranded: senders of broker messages and the owners
// they become (as Deliver and runHere do) leave no message in the channel
// without an owner to take it. Each sender sends one message a round and
// waits until the round's messages are all taken: a stranded one is never
// taken, as no one sends after it.
func TestDeliveriesNeverStranded(t *testing.T) {
	const senders, rounds = 4, 20000
	var s session
	dl := make(chan *Delivery, senders)
	var taken atomic.Int64
	own := func() { // as loop does, for deliveries alone
		for !s.park(dl) {
			<-dl
			taken.Add(1)
		}
	}
	var (
		wg       sync.WaitGroup
		stranded atomic.Bool
	)
	for range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for r := range rounds {
				dl <- nil
				s.noteDelivery()
				if s.claim() {
					own()
				}
				deadline := time.Now().Add(2 * time.Second)
				for i := 0; taken.Load() < int64((r+1)*senders); i++ {
					if stranded.Load() {
						return
					}
					if i%1000 == 999 && time.Now().After(deadline) {
						stranded.Store(true)
						return
					}
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	if stranded.Load() {
		t.Fatalf("a delivery was left in the channel with no owner: %d taken, %d in the channel", taken.Load(), len(dl))
	}
}
