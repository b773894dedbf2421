package gateway_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/upstream"
	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
	"github.com/sensorgate/mqttsn-gateway/internal/testgateway"
	"github.com/sensorgate/mqttsn-gateway/internal/testlog"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

// Timing for the tests: short, so that retransmission and keep-alive tests
// take a second, not a minute.
const (
	testRetry   = 200 * time.Millisecond
	testRetries = 2
	wait        = 3 * time.Second // how long to wait for something that must come
	quiet       = 400 * time.Millisecond
)

// testGateway is a gateway on 127.0.0.1:0 bridged to a real broker.
type testGateway struct {
	*gateway.Gateway
	addr   netip.AddrPort
	broker string
}

// predefined are the predefined topics every test gateway knows.
var predefined = []topicmap.PredefinedTopic{{ID: 7, Topic: "sensors/alerts"}, {ID: 8, Topic: "cmd/all"}}

// startGateway runs a gateway in-process, talking UDP on loopback and
// forwarding to the broker at url. mod adjusts its config.
func startGateway(t *testing.T, url string, mod func(*gateway.Config)) *testGateway {
	t.Helper()
	return startGatewayWith(t, url, mod, nil)
}

// startGatewayWith is startGateway with the upstream adapter's options
// adjusted too.
func startGatewayWith(t *testing.T, url string, mod func(*gateway.Config), upMod func(*upstream.Options)) *testGateway {
	t.Helper()
	log := zerolog.Nop()
	if testing.Verbose() {
		log = testlog.New(t, zerolog.DebugLevel)
	}
	opts := upstream.Options{URL: url, ReceiveMaximum: 4}
	if upMod != nil {
		upMod(&opts)
	}
	pre, err := topicmap.NewPredefined(predefined)
	if err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{
		RetryInterval:    testRetry,
		MaxRetries:       testRetries,
		UpstreamTimeout:  5 * time.Second,
		SessionExpiry:    time.Minute,
		SleepBufferQoS0:  true,
		ReceiveMaximum:   4,
		Predefined:       pre,
		QoSMinus1:        true,
		AcceptForwarders: true,
	}
	if mod != nil {
		mod(&cfg)
	}
	g, addr := testgateway.Start(t, testgateway.Options{Config: cfg, Upstream: opts, Log: log})
	return &testGateway{Gateway: g, addr: addr, broker: url}
}

// client dials the gateway with a fresh UDP socket.
func (g *testGateway) client(t *testing.T) *snclient.Client {
	return snclient.Dial(t, g.addr)
}

// observer connects an MQTT client to the gateway's broker, subscribed to filter.
func (g *testGateway) observer(t *testing.T, filter string, qos byte) *testbroker.Observer {
	o := testbroker.NewObserver(t, g.broker, "observer-"+t.Name())
	if filter != "" {
		o.Subscribe(filter, qos)
	}
	return o
}

// eachBroker runs fn against the embedded broker and against mosquitto.
func eachBroker(t *testing.T, fn func(t *testing.T, url string)) {
	testbroker.ForEach(t, fn)
}

// waitStats polls the gateway's counters until cond holds.
func waitStats(t *testing.T, g *testGateway, what string, cond func(gateway.Stats) bool) gateway.Stats {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st := g.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; stats %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// gatewayStats is short for the counters in test predicates.
type gatewayStats = gateway.Stats

var _ = mqttsn.TypePublish
