package main

import (
	"context"
	"fmt"
	"os"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// runDirect sends the scenario's uplink load straight to the broker over
// MQTT 5, one paho client per sensor, without the gateway: the baseline
// that the gateway's figures are compared with. Each sensor connects with
// its ClientId and publishes its group's topic, QoS, payload and schedule
// (QoS -1 goes as QoS 0; back-to-back QoS 1/2 waits for each
// acknowledgement, i.e. window 1). Sleep cycles, Wills and commands are
// MQTT-SN matters and are left out. The report has the same form as
// Run's; with -verify the same observer counts what arrived.
func runDirect(ctx context.Context, sc *Scenario, opt Options) (*Report, error) {
	clk := newClock()
	e := &env{clk: clk, fleet: new(fleetCounters)}
	for i := range e.downLat {
		e.downLat[i] = new(Histogram)
	}
	var upLat [4]*Histogram
	for i := range upLat {
		upLat[i] = new(Histogram)
	}
	var groups [][]*sensor
	var drivers []*driver // for the progress display only
	byID := map[string]*sensor{}
	total := 0
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		var ss []*sensor
		for i := range g.Count {
			n := g.First + i
			id := expand(g.ClientID, n, g.IDWidth, "")
			s := &sensor{g: g, env: e, clientID: id, prefix: payloadPrefix(id), topic: expand(g.Topic, n, g.IDWidth, id),
				interval: g.PublishInterval(), up: new(uplinkCounters), seen: new(uplinkSeen), down: new(downlink)}
			if _, dup := byID[id]; dup {
				return nil, fmt.Errorf("group %s: ClientId %q is used by two sensors", g.Name, id)
			}
			byID[id] = s
			ss = append(ss, s)
			drivers = append(drivers, &driver{s: s})
		}
		groups = append(groups, ss)
		if g.Publishes && g.Topic != "" {
			total += g.Count
		}
	}

	var obs *observer
	if sc.Verify {
		var filters []string
		for _, g := range sc.Groups {
			if g.Count > 0 && g.Publishes && g.Topic != "" {
				if f := filterOf(g.Topic); !slices.Contains(filters, f) {
					filters = append(filters, f)
				}
			}
		}
		id := opt.ObserverID
		if id == "" {
			id = "firmware-sim-observer-" + strconv.Itoa(os.Getpid())
		}
		var err error
		if obs, err = newObserver(ctx, sc.Broker, id, sc.ObserverQoS, clk, byID, &upLat, filters); err != nil {
			return nil, err
		}
		defer obs.close()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	for gi, ss := range groups {
		g := &sc.Groups[gi]
		if !g.Publishes || g.Topic == "" {
			continue
		}
		for i, s := range ss {
			at := t0
			if g.Ramp > 0 && len(ss) > 1 {
				at = t0.Add(g.Ramp * time.Duration(i) / time.Duration(len(ss)))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				publishDirect(ctx, sc.Broker, s, at, stop, opt)
			}()
		}
	}
	prog := &progress{opt: opt, drivers: drivers, upLat: &upLat, fleet: e.fleet, total: total, start: t0}
	progDone, progStopped := make(chan struct{}), make(chan struct{})
	if opt.Progress != nil {
		go func() {
			defer close(progStopped)
			prog.loop(progDone)
		}()
	} else {
		close(progStopped)
	}

	timer := time.NewTimer(sc.Duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	runTime := time.Since(t0)
	close(stop)
	wg.Wait()

	drain := sc.Drain
	if drain == 0 {
		drain = 3 * time.Second
	}
	drainStart := time.Now()
	for obs != nil && time.Since(drainStart) < drain && !settled(drivers, true) {
		time.Sleep(50 * time.Millisecond)
	}
	drainTime := time.Since(drainStart)
	close(progDone)
	<-progStopped

	rep := report(sc, groups, obs, nil, &upLat, e, runTime, drainTime)
	rep.Sensors = total
	if obs != nil {
		if err := obs.err(); err != nil {
			return rep, fmt.Errorf("observer lost its broker connection: %w", err)
		}
	}
	return rep, nil
}

// publishDirect is one sensor of runDirect: it connects at startAt and
// publishes on its group's schedule until stop.
func publishDirect(ctx context.Context, broker string, s *sensor, startAt time.Time, stop <-chan struct{}, opt Options) {
	g, fleet := s.g, s.env.fleet
	wait := time.NewTimer(time.Until(startAt))
	defer wait.Stop()
	select {
	case <-wait.C:
	case <-stop:
		return
	}
	conn, err := brokerDial(ctx, broker)
	if err != nil {
		fleet.connectFailures.Add(1)
		opt.Log.Debug().Str("client", s.clientID).Err(err).Msg("direct: dial failed")
		return
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: max(g.RetryInterval, 10*time.Second)})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: s.clientID, CleanStart: true, KeepAlive: uint16(g.KeepAlive / time.Second)}); err != nil {
		_ = conn.Close()
		fleet.connectFailures.Add(1)
		opt.Log.Debug().Str("client", s.clientID).Err(err).Msg("direct: connect failed")
		return
	}
	fleet.connects.Add(1)
	fleet.connected.Add(1)
	defer func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		fleet.connected.Add(-1)
	}()

	qos := byte(g.QoS)
	if g.QoS == mqttsn.QoSMinus1 {
		qos = 0
	}
	var buf []byte
	var seq uint64
	next := time.Now()
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		if s.interval > 0 {
			next = next.Add(s.interval)
			if now := time.Now(); now.Sub(next) > 10*s.interval {
				next = now // far behind: skip ahead rather than burst
			}
			tick.Reset(time.Until(next))
			select {
			case <-tick.C:
			case <-stop:
				return
			}
		} else {
			select {
			case <-stop:
				return
			default:
			}
		}
		seq++
		buf = appendPayload(buf[:0], s.prefix, seq, s.env.clk.micros(time.Now()), 21.5, true, g.PayloadSize)
		if qos == 0 {
			if _, err := c.Publish(ctx, &paho.Publish{Topic: s.topic, QoS: 0, Retain: g.Retain, Payload: buf}); err != nil {
				fleet.sendErrors.Add(1)
				return
			}
			s.up.sent.Add(1)
			continue
		}
		s.up.inFlight.Add(1)
		resp, err := c.Publish(ctx, &paho.Publish{Topic: s.topic, QoS: qos, Retain: g.Retain, Payload: buf})
		s.up.inFlight.Add(-1)
		switch {
		case err == nil && (resp == nil || resp.ReasonCode < 0x80):
			s.up.acked.Add(1)
		default:
			s.up.failed.Add(1)
			if err != nil {
				fleet.sendErrors.Add(1)
				return
			}
		}
	}
}
