// Package testbroker starts MQTT brokers for tests and watches their traffic.
//
// Embedded starts the gateway's own embedded broker (mochi-mqtt) in process;
// Mosquitto starts Debian's mosquitto as a child process; ForEach runs a test
// against both. An Observer is an MQTT 5 client (paho.golang) that a test uses
// to subscribe to, publish to and wait for broker traffic.
//
// Every broker listens on 127.0.0.1 only and is stopped by the test's cleanup.
// Helpers that fail the test (Fatalf) must be called from the test's own
// goroutine, as testing.TB requires.
package testbroker

import (
	"os"
	"testing"
)

// Broker names a kind of test broker and how to start one.
type Broker struct {
	// Name is the subtest name ForEach uses: "embedded" or "mosquitto".
	Name string
	// Start starts a broker for tb, stops it in tb's cleanup and returns its
	// URL, e.g. "tcp://127.0.0.1:41234".
	Start func(tb testing.TB) string
}

// Brokers returns the brokers ForEach runs against: the embedded broker,
// then mosquitto.
func Brokers() []Broker {
	return []Broker{
		{Name: "embedded", Start: Embedded},
		{Name: "mosquitto", Start: Mosquitto},
	}
}

// ForEach runs fn as one subtest per broker of Brokers, each with a fresh
// broker whose URL it passes to fn. The mosquitto subtest is skipped when
// mosquitto is not installed, or fails when CI=true (see Mosquitto).
func ForEach(t *testing.T, fn func(t *testing.T, url string)) {
	t.Helper()
	for _, b := range Brokers() {
		t.Run(b.Name, func(t *testing.T) {
			fn(t, b.Start(t))
		})
	}
}

// inCI reports whether the tests run in CI, where a missing mosquitto is an
// error rather than a reason to skip.
func inCI() bool {
	return os.Getenv("CI") == "true"
}
