package broker_test

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway/broker"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
)

// TestFanInToQoS2Subscriber: several publishers fan QoS 1 messages in to
// one QoS 2 subscriber, whose acknowledgements run concurrently with the
// fan-out. Every message must arrive, and the broker must still close.
// (mochi v2.7.9 as released deadlocked here within a second: its
// Inflight.NextImmediate read-locks the in-flight map twice, and a
// fan-out's write lock queued in between blocks both forever.)
func TestFanInToQoS2Subscriber(t *testing.T) {
	b, err := broker.Start("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	url := "tcp://" + b.Addr().String()
	sub := testbroker.NewObserver(t, url, "fan-sub")
	sub.Subscribe("fan/#", 2)

	const publishers, each = 16, 60
	var wg sync.WaitGroup
	for p := range publishers {
		pub := testbroker.NewObserver(t, url, fmt.Sprintf("fan-pub-%d", p))
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				pub.Publish(fmt.Sprintf("fan/%d", p), []byte(fmt.Sprint(i)), 1, false)
			}
		}()
	}
	got := 0
	deadline := time.Now().Add(10 * time.Second)
	for got < publishers*each {
		if _, ok := sub.Next(time.Until(deadline)); !ok {
			t.Fatalf("the subscriber received %d of %d messages", got, publishers*each)
		}
		got++
	}
	wg.Wait()
	closed := make(chan error, 1)
	go func() { closed <- b.Close() }()
	select {
	case err := <-closed:
		if err != nil {
			t.Errorf("close: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the broker did not close within 10 s")
	}
}
