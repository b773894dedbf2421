package testbroker

import (
	"net"
	"os"
	"testing"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway/broker"
)

// LogEnv is the environment variable that, set to 1, makes the embedded
// broker log to the test's log at debug level. Otherwise it logs nothing.
const LogEnv = "TESTBROKER_LOG"

// Embedded starts the gateway's embedded broker (gateway/broker) on
// 127.0.0.1 with a port the system picks, closes it in tb's cleanup and
// returns its URL, e.g. "tcp://127.0.0.1:41234".
func Embedded(tb testing.TB) string {
	tb.Helper()
	log := zerolog.Nop()
	if os.Getenv(LogEnv) == "1" {
		log = zerolog.New(zerolog.NewTestWriter(tb)).Level(zerolog.DebugLevel).With().Timestamp().Logger()
	}
	b, err := broker.Start("127.0.0.1:0", log)
	if err != nil {
		tb.Fatalf("testbroker: %v", err)
	}
	tb.Cleanup(func() {
		if err := b.Close(); err != nil {
			tb.Errorf("testbroker: %v", err)
		}
	})
	addr, ok := b.Addr().(*net.TCPAddr)
	if !ok {
		tb.Fatalf("testbroker: embedded broker listens on %v (%T), not a TCP address", b.Addr(), b.Addr())
	}
	return "tcp://" + addr.String()
}
