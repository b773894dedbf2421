package main

import (
	"context"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
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
	r := newRunState(sc, opt)
	total := 0
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		for i := range g.Count {
			n := g.First + i
			id := expand(g.ClientID, n, g.IDWidth, "")
			s := &sensor{g: g, env: r.env, clientID: id, prefix: payloadPrefix(id, r.env.nonce), topic: expand(g.Topic, n, g.IDWidth, id),
				interval: g.PublishInterval(), up: new(uplinkCounters), seen: new(uplinkSeen), down: new(downlink)}
			if err := r.add(gi, s); err != nil {
				return nil, err
			}
		}
		if g.Publishes && g.Topic != "" {
			total += g.Count
		}
	}

	if sc.Verify {
		if err := r.observe(ctx); err != nil {
			return nil, err
		}
		defer r.obs.close()
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	t0 := r.startClock(total)
	for gi, ss := range r.groups {
		g := &sc.Groups[gi]
		if !g.Publishes || g.Topic == "" {
			continue
		}
		for i, s := range ss {
			at := t0
			if g.Ramp > 0 && len(ss) > 1 {
				at = t0.Add(g.Ramp * time.Duration(i) / time.Duration(len(ss)))
			}
			wg.Go(func() { publishDirect(ctx, sc.Broker, s, at, stop, opt) })
		}
	}

	runTime := r.publishing(ctx)
	close(stop)
	wg.Wait()

	var drainTime time.Duration
	if r.obs != nil {
		drain := sc.Drain
		if drain == 0 {
			drain = 3 * time.Second
		}
		drainTime = r.drain(drain)
	}
	return r.finish(nil, runTime, drainTime, total)
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
		s.connectFailed()
		opt.Log.Debug().Str("client", s.clientID).Err(err).Msg("direct: dial failed")
		return
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: max(g.RetryInterval, 10*time.Second)})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: s.clientID, CleanStart: true, KeepAlive: uint16(g.KeepAlive / time.Second)}); err != nil {
		_ = conn.Close()
		s.connectFailed()
		opt.Log.Debug().Str("client", s.clientID).Err(err).Msg("direct: connect failed")
		return
	}
	s.connects++
	fleet.connects.Add(1)
	fleet.connected.Add(1)
	defer func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		fleet.connected.Add(-1)
	}()

	qos := mqttQoS(g.QoS)
	var buf []byte
	next := time.Now()
	tick := time.NewTimer(0)
	defer tick.Stop()
	for {
		if s.interval > 0 {
			next = next.Add(s.interval)
			if now := time.Now(); now.Sub(next) > 10*s.interval {
				s.up.skipped.Add(uint64(now.Sub(next) / s.interval))
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
		// As the sensors do: the seq is announced before it leaves, and a
		// QoS 0 one that could not be written is not counted as sent.
		seq := s.seq + 1
		s.up.maxSeq.Store(seq)
		buf = appendPayload(buf[:0], s.prefix, seq, s.env.clk.micros(time.Now()), 21.5, true, g.PayloadSize)
		if qos == 0 {
			if _, err := c.Publish(ctx, &paho.Publish{Topic: s.topic, QoS: 0, Retain: g.Retain, Payload: buf}); err != nil {
				fleet.sendErrors.Add(1)
				return
			}
			s.seq = seq
			s.up.sent.Add(1)
			continue
		}
		s.seq = seq
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
