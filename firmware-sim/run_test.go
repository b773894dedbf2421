package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// fakeRun is a verified run's state built by hand: one group per Group,
// its sensors with the counts a test sets.
func fakeRun(t *testing.T, groups ...Group) (*Scenario, [][]*sensor, *env) {
	t.Helper()
	sc := &Scenario{Name: "fake", Groups: groups}
	e := newEnv("run1")
	var gs [][]*sensor
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		var ss []*sensor
		for i := range g.Count {
			ss = append(ss, newSensor(g, e, g.First+i, &fakeLink{t: t}, 1))
		}
		gs = append(gs, ss)
	}
	return sc, gs, e
}

func pubGroup(name string, qos mqttsn.QoS, count int) Group {
	g := testGroup()
	g.Name, g.ClientID, g.Count = name, name+"-{n}", count
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", qos, true, time.Second
	return g
}

// sentQoS1 makes s look as if it had published seqs 1..n at QoS 1, all
// acknowledged, and the observer had seen seen.
func sentQoS1(s *sensor, n uint64, seen ...uint64) {
	s.seq = n
	s.up.maxSeq.Store(n)
	s.up.acked.Store(n)
	s.connects = 1
	for _, q := range seen {
		s.seen.set.add(q)
	}
}

// A verified run fails, saying why, when it could not test anything: a
// publishing group finished nothing (the gateway is down, every CONNECT
// refused), sensors never connected, commands were refused by the broker
// or never sent (every SUBSCRIBE rejected).
func TestReportFailsWhenNothingWasTested(t *testing.T) {
	obs := &observer{}
	cmdGroup := testGroup()
	cmdGroup.Name, cmdGroup.ClientID, cmdGroup.Count = "cmd", "cmd-{n}", 2
	cmdGroup.CommandTopic, cmdGroup.CommandInterval, cmdGroup.CommandQoS = "c/{id}", time.Second, mqttsn.QoS1
	sc, gs, e := fakeRun(t, pubGroup("up", mqttsn.QoS1, 2), cmdGroup)
	for _, s := range gs[0] {
		s.connectFailures = 4 // CONNECT refused every time
	}
	e.fleet.connectFailures.Store(8)
	cmd := &commander{}
	rep := report(sc, gs, obs, cmd, e, time.Second, time.Second)
	if rep.Passed || !rep.Verified {
		t.Fatalf("passed %v verified %v, want a verified failure", rep.Passed, rep.Verified)
	}
	want := []string{
		"group up: no publication finished by its 2 sensors",
		"group up: 2 of 2 sensors never connected (8 connect failures)",
		"group cmd: no command sent (no sensor was subscribed)",
	}
	if strings.Join(rep.Failures, "\n") != strings.Join(want, "\n") {
		t.Errorf("failures:\n%s\nwant:\n%s", strings.Join(rep.Failures, "\n"), strings.Join(want, "\n"))
	}

	// Commands the broker did not accept fail the run.
	sc, gs, e = fakeRun(t, cmdGroup)
	for _, s := range gs[0] {
		s.connects = 1
		s.down.next.Store(3)
		s.down.sent.Store(2)
		s.down.failed(2)
		s.down.set.add(1)
		s.down.set.add(3)
	}
	rep = report(sc, gs, obs, cmd, e, time.Second, time.Second)
	if st := rep.Downlink["qos1"]; st == nil || st.Sent != 4 || st.Delivered != 4 || st.Failed != 2 || st.Lost != 0 {
		t.Fatalf("downlink %+v", rep.Downlink["qos1"])
	}
	if rep.Passed || len(rep.Failures) != 1 || rep.Failures[0] != "downlink qos1: 2 commands not accepted by the broker" {
		t.Errorf("passed %v, failures %q", rep.Passed, rep.Failures)
	}

	// Not verified: nothing to fail.
	rep = report(sc, gs, nil, nil, e, time.Second, time.Second)
	if !rep.Passed || rep.Verified || len(rep.Failures) != 0 {
		t.Errorf("unverified: passed %v failures %q", rep.Passed, rep.Failures)
	}
}

// Delivered is the intersection of what was sent and what was seen: a
// message seen that was never sent (or is still unfinished) does not make
// up for one lost.
func TestReportDeliveredIsIntersection(t *testing.T) {
	sc, gs, e := fakeRun(t, pubGroup("q0", mqttsn.QoS0, 1), pubGroup("q1", mqttsn.QoS1, 1))
	s0 := gs[0][0]
	s0.seq, s0.connects = 3, 1
	s0.up.sent.Store(3)
	s0.seen.set.add(1)
	s0.seen.set.add(2)
	s0.seen.set.add(9) // not sent: (the observer would reject it; report does not count it either)
	s0.up.skipped.Store(4)
	s1 := gs[1][0]
	sentQoS1(s1, 5, 1, 2, 5, 5)
	s1.up.acked.Store(4)
	s1.unfinished = []uint64{5} // seen, but not finished: not in Sent, not delivered
	rep := report(sc, gs, &observer{}, nil, e, time.Second, 0)
	if st := rep.Uplink["qos0"]; st.Sent != 3 || st.Delivered != 2 || st.Lost != 1 || st.Skipped != 4 {
		t.Errorf("qos0 %+v; want sent 3, delivered 2, lost 1, skipped 4", st)
	}
	if st := rep.Uplink["qos1"]; st.Sent != 4 || st.Delivered != 2 || st.Lost != 2 || st.Unfinished != 1 || st.Duplicated != 1 {
		t.Errorf("qos1 %+v; want sent 4, delivered 2, lost 2, unfinished 1, dup 1", st)
	}
	if rep.Passed || len(rep.Failures) != 1 || rep.Failures[0] != "uplink qos1: 2 of 4 lost" {
		t.Errorf("failures %q", rep.Failures)
	}
}

// The seed is in the report, as JSON and as text; the timeline only in
// the JSON.
func TestReportSeedAndTimeline(t *testing.T) {
	rep := &Report{Scenario: "x", Seed: 12345, Uplink: map[string]*Stream{"qos0": {Sent: 1, Skipped: 2}}, Downlink: map[string]*Stream{},
		Timeline: []TimelinePoint{{T: 1, Up: 10, Down: 2}}}
	var text bytes.Buffer
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "seed 12345") || strings.Contains(strings.ToLower(text.String()), "timeline") ||
		!strings.Contains(text.String(), "readings skipped 2") {
		t.Errorf("text report:\n%s", text.String())
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `"seed":12345`) || !strings.Contains(string(b), `"timeline":[{"t":1,"up":10,"down":2}]`) {
		t.Errorf("JSON: %s", b)
	}
}

func TestSettled(t *testing.T) {
	sc, gs, _ := fakeRun(t, pubGroup("q1", mqttsn.QoS1, 1))
	_ = sc
	s := gs[0][0]
	all := gs[0]
	sentQoS1(s, 3, 1, 2)
	if settled(all, true) {
		t.Error("settled with seq 3 not seen")
	}
	if !settled(all, false) {
		t.Error("not settled without verification and nothing in flight")
	}
	s.up.inFlight.Store(1)
	if settled(all, false) {
		t.Error("settled with a publication in flight")
	}
	s.up.inFlight.Store(0)
	s.seen.set.add(3)
	if !settled(all, true) {
		t.Error("not settled with everything seen")
	}
	s.down.sent.Store(1)
	if settled(all, true) {
		t.Error("settled with a command on its way")
	}
	s.down.received.Store(1)
	if !settled(all, true) {
		t.Error("not settled with the command received")
	}
}

// The timeline samples the counters every period from t0.
func TestTimeline(t *testing.T) {
	_, gs, _ := fakeRun(t, pubGroup("q1", mqttsn.QoS1, 2))
	t0 := time.Now()
	tl := startTimeline(gs[0], t0, 20*time.Millisecond)
	gs[0][0].up.sent.Store(3)
	gs[0][1].up.acked.Store(4)
	gs[0][1].up.failed.Store(1)
	gs[0][0].down.received.Store(2)
	time.Sleep(110 * time.Millisecond)
	pts := tl.stop()
	if len(pts) < 3 {
		t.Fatalf("%d points in 110 ms at 20 ms", len(pts))
	}
	last := pts[len(pts)-1]
	if last.Up != 8 || last.Down != 2 {
		t.Errorf("last point %+v, want up 8 down 2", last)
	}
	for i := 1; i < len(pts); i++ {
		if pts[i].T <= pts[i-1].T || pts[i].Up < pts[i-1].Up {
			t.Errorf("points %+v", pts)
		}
	}
}

// The observer counts only this run's messages of a sensor: not retained
// ones, not another run's (nonce), not a seq the sensor never assigned.
func TestObserverCountsOnlyThisRun(t *testing.T) {
	_, gs, e := fakeRun(t, pubGroup("q1", mqttsn.QoS1, 1))
	s := gs[0][0]
	s.up.maxSeq.Store(2)
	o := &observer{env: e, sensors: map[string]*sensor{s.clientID: s}}
	now := time.Now()
	pl := func(id, run string, seq uint64) []byte {
		return appendPayload(nil, payloadPrefix(id, run), seq, e.clk.micros(now), 1, true, 0)
	}
	o.count(now, pl("q1-1", "run1", 1), true)   // retained
	o.count(now, pl("q1-1", "other", 2), false) // another run
	o.count(now, pl("q1-1", "run1", 3), false)  // never assigned
	o.count(now, pl("q1-1", "run1", 1<<40), false)
	o.count(now, pl("nobody", "run1", 1), false) // unknown ClientId
	o.count(now, []byte("21.5"), false)
	o.count(now, pl("q1-1", e.cmdNonce, 1), false) // a command of this run: ignored
	if s.seen.set.unique != 0 || o.stale.Load() != 4 || o.foreign.Load() != 2 || len(s.seen.set.bits) != 0 {
		t.Fatalf("seen %d stale %d foreign %d (%d words)", s.seen.set.unique, o.stale.Load(), o.foreign.Load(), len(s.seen.set.bits))
	}
	o.count(now, pl("q1-1", "run1", 2), false)
	if s.seen.set.unique != 1 || !s.seen.set.has(2) || e.upLat.of(mqttsn.QoS1).Count() != 1 {
		t.Errorf("seen %d, latency samples %d", s.seen.set.unique, e.upLat.of(mqttsn.QoS1).Count())
	}
}

// The observer's subscriptions take neither retained messages (a sensor's
// topic retained by an earlier run) nor its own publications (a command
// topic that an uplink filter matches).
func TestObserverSubscriptionOptions(t *testing.T) {
	url := testbroker.Embedded(t)
	_, gs, e := fakeRun(t, pubGroup("q1", mqttsn.QoS1, 1))
	s := gs[0][0]
	s.up.maxSeq.Store(1 << 20)
	ctx := context.Background()

	// An earlier run left a retained message on the sensor's topic.
	// Publish waits until the broker has handed the message to the
	// subscribers it has: the observer, subscribing next, must get it only
	// as retained (which it declines), not live as well.
	payload := appendPayload(nil, payloadPrefix(s.clientID, e.nonce), 1, e.clk.micros(time.Now()), 1, true, 0)
	testbroker.NewObserver(t, url, "earlier-"+t.Name()).Publish("s/q1-1", payload, 1, true)

	o, err := newObserver(ctx, url, "observer-"+t.Name(), 1, e, map[string]*sensor{s.clientID: s}, []string{"s/+"}, true)
	if err != nil {
		t.Fatal(err)
	}
	defer o.close()
	// Its own message on a topic it subscribed to.
	payload = appendPayload(nil, payloadPrefix(s.clientID, e.nonce), 2, e.clk.micros(time.Now()), 1, true, 0)
	if _, err := o.client.Publish(ctx, &paho.Publish{Topic: "s/q1-1", QoS: 1, Payload: payload}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	s.seen.mu.Lock()
	seen := s.seen.set.unique
	s.seen.mu.Unlock()
	if seen != 0 || o.stale.Load() != 0 || o.foreign.Load() != 0 {
		t.Errorf("observer got messages: seen %d, stale %d, foreign %d; want none", seen, o.stale.Load(), o.foreign.Load())
	}
	// A command on a topic the uplink filter matches (the commands'
	// connection) is not counted either.
	cmd := appendPayload(nil, payloadPrefix(s.clientID, e.cmdNonce), 1, e.clk.micros(time.Now()), 0, false, 0)
	if _, err := o.pub.Publish(ctx, &paho.Publish{Topic: "s/q1-1", QoS: 2, Payload: cmd}); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	s.seen.mu.Lock()
	seen = s.seen.set.unique
	s.seen.mu.Unlock()
	if seen != 0 || o.stale.Load() != 0 || o.foreign.Load() != 0 {
		t.Errorf("observer counted a command: seen %d, stale %d, foreign %d", seen, o.stale.Load(), o.foreign.Load())
	}
	// Clear the retained message.
	_, _ = o.client.Publish(ctx, &paho.Publish{Topic: "s/q1-1", QoS: 1, Retain: true})
}
