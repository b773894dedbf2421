package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// The observer is an MQTT 5 client of the broker behind the gateway. It
// subscribes to what the sensors publish and counts each message by
// (ClientId, seq) from its payload, and it publishes the commands the
// sensors subscribed to, one sequence per sensor.

const (
	observerTimeout = 10 * time.Second
	// observerReceiveMaximum caps the QoS 1/2 messages in flight to the
	// observer; paho sizes a channel by it.
	observerReceiveMaximum = 4096
	commandWorkers         = 8
)

// observer watches the broker for one run.
type observer struct {
	client  *paho.Client
	clk     clock
	sensors map[string]*sensor // by ClientId; read-only once running
	upLat   *[4]*Histogram     // uplink latency by QoS (index 3: QoS -1)
	foreign atomic.Uint64      // messages that are not a sensor's
	lostErr atomic.Pointer[error]
}

// brokerDial opens the TCP (or TLS) connection to the broker at raw.
func brokerDial(ctx context.Context, raw string) (net.Conn, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Errorf("broker URL %q: %w", raw, err)
	}
	host := u.Host
	if u.Port() == "" {
		return nil, fmt.Errorf("broker URL %q has no port", raw)
	}
	d := &net.Dialer{Timeout: observerTimeout}
	switch u.Scheme {
	case "tcp", "mqtt":
		return d.DialContext(ctx, "tcp", host)
	case "tls", "ssl", "mqtts":
		td := &tls.Dialer{NetDialer: d, Config: &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}}
		return td.DialContext(ctx, "tcp", host)
	}
	return nil, fmt.Errorf("broker URL %q: scheme %q, want tcp, mqtt, tls or ssl", raw, u.Scheme)
}

// newObserver connects to the broker and subscribes to every filter.
func newObserver(ctx context.Context, broker, clientID string, subQoS byte, clk clock, sensors map[string]*sensor, upLat *[4]*Histogram, filters []string) (*observer, error) {
	conn, err := brokerDial(ctx, broker)
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	o := &observer{clk: clk, sensors: sensors, upLat: upLat}
	lost := func(err error) {
		o.lostErr.CompareAndSwap(nil, &err)
	}
	o.client = paho.NewClient(paho.ClientConfig{
		Conn:              conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){o.received},
		OnClientError:     lost,
		OnServerDisconnect: func(d *paho.Disconnect) {
			lost(fmt.Errorf("broker sent DISCONNECT, reason code 0x%02X", d.ReasonCode))
		},
		PacketTimeout: observerTimeout,
	})
	rm := uint16(observerReceiveMaximum)
	cctx, cancel := context.WithTimeout(ctx, observerTimeout)
	defer cancel()
	ca, err := o.client.Connect(cctx, &paho.Connect{
		ClientID:   clientID,
		CleanStart: true,
		KeepAlive:  30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &rm},
	})
	if err != nil {
		_ = conn.Close()
		if ca != nil {
			return nil, fmt.Errorf("observer: connect to %s: %w (reason code 0x%02X)", broker, err, ca.ReasonCode)
		}
		return nil, fmt.Errorf("observer: connect to %s: %w", broker, err)
	}
	if len(filters) > 0 {
		subs := make([]paho.SubscribeOptions, len(filters))
		for i, f := range filters {
			subs[i] = paho.SubscribeOptions{Topic: f, QoS: subQoS}
		}
		sa, err := o.client.Subscribe(cctx, &paho.Subscribe{Subscriptions: subs})
		if err != nil {
			o.close()
			return nil, fmt.Errorf("observer: subscribe %v: %w", filters, err)
		}
		for i, r := range sa.Reasons {
			if r >= 0x80 {
				o.close()
				return nil, fmt.Errorf("observer: subscribe %q: reason code 0x%02X", filters[i], r)
			}
		}
	}
	return o, nil
}

// err returns why the connection was lost, or nil.
func (o *observer) err() error {
	if p := o.lostErr.Load(); p != nil {
		return *p
	}
	return nil
}

// received is paho's callback for every PUBLISH: it counts the message
// against its sensor. paho acknowledges QoS 1/2 once it returns.
func (o *observer) received(pr paho.PublishReceived) (bool, error) {
	now := time.Now()
	p, ok := parsePayload(pr.Packet.Payload)
	if !ok {
		o.foreign.Add(1)
		return true, nil
	}
	s := o.sensors[string(p.id)]
	if s == nil {
		o.foreign.Add(1)
		return true, nil
	}
	s.seen.mu.Lock()
	added := s.seen.set.add(p.seq)
	s.seen.mu.Unlock()
	if added {
		if h := o.upLat[s.g.QoS&3]; h != nil {
			h.Record(o.clk.since(now, p.ts))
		}
	}
	return true, nil
}

// close disconnects from the broker.
func (o *observer) close() {
	_ = o.client.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// commander publishes commands to the sensors of the groups that have a
// command_interval, each sensor's every interval, spread evenly.
type commander struct {
	o    *observer
	clk  clock
	jobs chan *sensor
	wg   sync.WaitGroup
	skip atomic.Uint64 // commands not sent: the workers were all busy
}

// startCommander starts the workers and one scheduler per group; stop
// closing ends the schedulers. Wait for the workers with wait.
func startCommander(o *observer, clk clock, groups [][]*sensor, stop <-chan struct{}) *commander {
	c := &commander{o: o, clk: clk, jobs: make(chan *sensor, 1024)}
	var sched sync.WaitGroup
	for _, ss := range groups {
		if len(ss) == 0 || ss[0].g.CommandInterval <= 0 || ss[0].cmdTopic == "" {
			continue
		}
		sched.Add(1)
		go func() {
			defer sched.Done()
			c.schedule(ss, stop)
		}()
	}
	for range commandWorkers {
		c.wg.Add(1)
		go func() {
			defer c.wg.Done()
			for s := range c.jobs {
				c.send(s)
			}
		}()
	}
	go func() {
		sched.Wait()
		close(c.jobs)
	}()
	return c
}

// schedule sends one command every interval/len(ss), to each sensor in turn.
func (c *commander) schedule(ss []*sensor, stop <-chan struct{}) {
	step := ss[0].g.CommandInterval / time.Duration(len(ss))
	step = max(step, 50*time.Microsecond)
	t := time.NewTicker(step)
	defer t.Stop()
	for i := 0; ; i = (i + 1) % len(ss) {
		select {
		case <-stop:
			return
		case <-t.C:
		}
		s := ss[i]
		if !s.down.ready.Load() {
			continue
		}
		select {
		case c.jobs <- s:
		default:
			c.skip.Add(1)
		}
	}
}

// send publishes the next command to s and counts it sent once the
// broker has it (QoS 1/2) or it is written (QoS 0).
func (c *commander) send(s *sensor) {
	seq := s.down.next.Add(1)
	payload := appendPayload(make([]byte, 0, 96), s.prefix, seq, c.clk.micros(time.Now()), 0, false, 0)
	ctx, cancel := context.WithTimeout(context.Background(), observerTimeout)
	defer cancel()
	qos := byte(s.g.CommandQoS)
	if s.g.CommandQoS == mqttsn.QoSMinus1 {
		qos = 0
	}
	pr, err := c.o.client.Publish(ctx, &paho.Publish{Topic: s.cmdTopic, QoS: qos, Payload: payload})
	if err == nil && pr != nil && pr.ReasonCode >= 0x80 {
		err = fmt.Errorf("reason code 0x%02X", pr.ReasonCode)
	}
	if err != nil {
		if !errors.Is(err, context.Canceled) {
			s.down.sendFail.Add(1)
		}
		return
	}
	s.down.sent.Add(1)
}
