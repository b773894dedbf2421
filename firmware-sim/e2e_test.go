package main

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/upstream"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
	"github.com/sensorgate/mqttsn-gateway/internal/testgateway"
	"github.com/sensorgate/mqttsn-gateway/internal/testlog"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// End-to-end: the shipped scenarios, scaled down to a few seconds, against
// a gateway in this process (UDP on 127.0.0.1) bridged to the embedded
// broker and to mosquitto, in verification mode.

// startGateway runs a gateway on 127.0.0.1:0 forwarding to the broker at
// url, configured as the shipped gateway.toml but with short timers, and
// returns its UDP address.
func startGateway(t *testing.T, url string) string {
	t.Helper()
	log := zerolog.Nop()
	if testing.Verbose() {
		log = testlog.New(t, zerolog.WarnLevel)
	}
	_, addr := testgateway.Start(t, testgateway.Options{
		Config: gateway.Config{
			RetryInterval:   500 * time.Millisecond,
			MaxRetries:      3,
			UpstreamTimeout: 5 * time.Second,
			SessionExpiry:   time.Minute,
			ReceiveMaximum:  16,
			SleepTolerance:  1.5,
			SleepBufferQoS0: true,
			QoSMinus1:       true,
		},
		Upstream: upstream.Options{URL: url, ReceiveMaximum: 16},
		Log:      log,
	})
	return addr.String()
}

// shrink loads a shipped scenario and points it at gw and broker, verifying.
func shrink(t *testing.T, name, gw, broker string) *Scenario {
	t.Helper()
	sc, err := LoadScenario("../testdata/scenarios/" + name + ".toml")
	if err != nil {
		t.Fatal(err)
	}
	sc.Gateway, sc.Broker, sc.Verify, sc.Seed = gw, broker, true, 1
	return sc
}

// runScenario runs sc and fails the test unless it passed and every stream
// in want delivered something.
func runScenario(t *testing.T, sc *Scenario, wantUp, wantDown []string) *Report {
	t.Helper()
	rep, err := Run(context.Background(), sc, Options{Log: zerolog.Nop(), ObserverID: "observer-" + t.Name()})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if testing.Verbose() {
		rep.WriteText(t.Output())
	}
	if !rep.Verified || !rep.Passed {
		t.Errorf("report: verified %v, passed %v, failures %v", rep.Verified, rep.Passed, rep.Failures)
	}
	if rep.Seed != sc.Seed || rep.Stale != 0 || rep.Foreign != 0 || rep.EncodeErrors != 0 {
		t.Errorf("seed %d (scenario %d), stale %d, foreign %d, encode errors %d", rep.Seed, sc.Seed, rep.Stale, rep.Foreign, rep.EncodeErrors)
	}
	if n := len(rep.Timeline); n < int(rep.DurationS) || (n > 0 && rep.Timeline[n-1].Up == 0) {
		t.Errorf("timeline of %d points over %.1f s: %+v", n, rep.DurationS, rep.Timeline)
	}
	check := func(dir string, m map[string]*Stream, want []string) {
		for _, k := range want {
			st := m[k]
			switch {
			case st == nil || st.Sent == 0:
				t.Errorf("%s %s: nothing sent (%+v)", dir, k, st)
			case st.Delivered == 0:
				t.Errorf("%s %s: nothing delivered (%+v)", dir, k, st)
			case (k == "qos1" || k == "qos2") && st.Lost > 0:
				t.Errorf("%s %s: %d lost", dir, k, st.Lost)
			case k == "qos2" && st.Duplicated > 0:
				t.Errorf("%s %s: %d duplicated", dir, k, st.Duplicated)
			}
		}
		if len(m) != len(want) {
			t.Errorf("%s streams %v, want %v", dir, sortedKeys(m), want)
		}
	}
	check("uplink", rep.Uplink, wantUp)
	check("downlink", rep.Downlink, wantDown)
	if rep.ConnectFailures > 0 || rep.Malformed > 0 {
		t.Errorf("connect failures %d, malformed %d", rep.ConnectFailures, rep.Malformed)
	}
	return rep
}

func TestDemoScenario(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		sc := shrink(t, "demo", startGateway(t, url), url)
		sc.Duration = 3 * time.Second
		for i := range sc.Groups {
			g := &sc.Groups[i]
			g.Ramp = 200 * time.Millisecond
			g.RetryInterval = 500 * time.Millisecond
			g.Jitter = 50 * time.Millisecond
			switch g.Name {
			case "temp":
				g.Count, g.Interval = 4, 300*time.Millisecond
			case "sleepy":
				g.Count, g.Interval, g.Awake, g.Sleep = 2, 200*time.Millisecond, 400*time.Millisecond, time.Second
				g.CommandInterval = 300 * time.Millisecond
			case "valve":
				g.Interval, g.CommandInterval = 300*time.Millisecond, 300*time.Millisecond
			case "beacon":
				g.Interval = 200 * time.Millisecond
			}
		}
		rep := runScenario(t, sc, []string{"qos-1", "qos0", "qos1", "qos2"}, []string{"qos1", "qos2"})
		if rep.Sleeps == 0 || rep.WakeUps == 0 {
			t.Errorf("sleeps %d, wake-ups %d: the sleepy sensors did not sleep", rep.Sleeps, rep.WakeUps)
		}
	})
}

func TestSleepyScenario(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		sc := shrink(t, "sleepy", startGateway(t, url), url)
		sc.Duration = 3 * time.Second
		g := &sc.Groups[0]
		g.Count = 20
		g.Ramp = 300 * time.Millisecond
		g.Interval, g.Awake, g.Sleep, g.Jitter = 150*time.Millisecond, 300*time.Millisecond, time.Second, 100*time.Millisecond
		g.RetryInterval = 500 * time.Millisecond
		g.CommandInterval = 700 * time.Millisecond // most commands reach a sleeping sensor
		rep := runScenario(t, sc, []string{"qos1"}, []string{"qos1"})
		if rep.WakeUps < uint64(g.Count) {
			t.Errorf("%d wake-ups for %d sensors", rep.WakeUps, g.Count)
		}
	})
}

// A closed-loop QoS 1 group publishes back to back, one in flight each.
func TestClosedLoopQoS1(t *testing.T) {
	testbroker.ForEach(t, testClosedLoopQoS1)
}

func testClosedLoopQoS1(t *testing.T, url string) {
	sc := &Scenario{Name: "closed", Gateway: startGateway(t, url), Broker: url, Duration: time.Second, Verify: true, Seed: 1, ObserverQoS: 2,
		Groups: []Group{{Name: "q1", Count: 5, ClientID: "q1-{n}", IDWidth: 2, First: 1, Transport: "udp", KeepAlive: 10 * time.Second,
			CleanSession: true, Topic: "load/{id}", QoS: mqttsn.QoS1, Publishes: true, Window: 1,
			RetryInterval: time.Second, MaxRetries: 3, ReconnectMin: time.Second, ReconnectMax: 2 * time.Second}}}
	rep := runScenario(t, sc, []string{"qos1"}, nil)
	if st := rep.Uplink["qos1"]; st.Sent < 50 {
		t.Errorf("closed loop sent only %d in 1 s", st.Sent)
	}
}

// -direct publishes the same load straight to the broker: the baseline.
// Every message the sensors finished arrives, and none goes through a
// gateway (the scenario's gateway address is unused and unreachable).
func TestDirectBaseline(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		sc := &Scenario{Name: "direct", Gateway: "127.0.0.1:9", Broker: url, Duration: time.Second, Verify: true, Seed: 1, ObserverQoS: 1,
			Groups: []Group{
				{Name: "q0", Count: 3, ClientID: "d0-{n}", IDWidth: 2, First: 1, KeepAlive: 10 * time.Second, CleanSession: true,
					Topic: "direct/{id}", QoS: mqttsn.QoS0, Publishes: true, Interval: 20 * time.Millisecond, RetryInterval: time.Second},
				{Name: "q1", Count: 3, ClientID: "d1-{n}", IDWidth: 2, First: 1, KeepAlive: 10 * time.Second, CleanSession: true,
					Topic: "direct/{id}", QoS: mqttsn.QoS1, Publishes: true, Window: 1, RetryInterval: time.Second},
			}}
		rep, err := Run(context.Background(), sc, Options{Log: zerolog.Nop(), ObserverID: "observer-" + t.Name(), Direct: true})
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
		if !rep.Passed || rep.Connects != 6 {
			t.Errorf("passed %v (%v), %d connects; want a pass and 6", rep.Passed, rep.Failures, rep.Connects)
		}
		for _, k := range []string{"qos0", "qos1"} {
			st := rep.Uplink[k]
			if st == nil || st.Sent == 0 || st.Delivered != st.Sent {
				t.Errorf("uplink %s: %+v; want every sent message delivered", k, st)
			}
		}
		if q0 := rep.Uplink["qos0"]; q0 != nil && (q0.Sent < 3*30 || q0.Sent > 3*60) {
			t.Errorf("QoS 0 every 20 ms for 1 s from 3 sensors: %d sent, want about 150", q0.Sent)
		}
	})
}
