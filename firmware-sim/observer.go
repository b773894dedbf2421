package main

import (
	"context"
	"crypto/tls"
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
//
// It counts only this run's messages. Its subscriptions ask for no
// retained messages (Retain Handling 2) and none of its own (No Local), a
// message that arrives with Retain set is ignored all the same, and a
// payload must carry this run's nonce and a seq its sensor has assigned
// (up.maxSeq). Commands go out on a connection of their own (see
// newObserver) with the run's command nonce, so that a command whose topic
// an uplink filter matches is recognised and ignored. The rest is counted:
// foreign (not a payload of this simulator, or an unknown ClientId) or
// stale (a sensor's ClientId, but another run's message).

const (
	observerTimeout = 10 * time.Second
	// observerReceiveMaximum caps the QoS 1/2 messages in flight to the
	// observer; paho sizes a channel by it.
	observerReceiveMaximum = 4096
	commandWorkers         = 8
)

// observer watches the broker for one run.
type observer struct {
	client *paho.Client // subscribed to the sensors' topics
	pub    *paho.Client // publishes the commands; nil without

	env     *env               // the clock, the nonce, the uplink latencies
	sensors map[string]*sensor // by ClientId; read-only once running
	foreign atomic.Uint64      // messages that are not a sensor's
	stale   atomic.Uint64      // a sensor's ClientId, but not this run's message
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

// newObserver connects to the broker and subscribes to every filter; with
// commands it opens a second connection (ClientId clientID + "-cmd") for
// the commander.
//
// Commands have a connection of their own, which receives nothing,
// because a broker may keep one packet-id space per client for both
// directions: mochi-mqtt (the embedded broker) holds a client's inbound
// QoS 2 records and its outbound messages in one in-flight map, and an
// inbound PUBLISH deletes the outbound record with its packet id. (With
// the commands on the observer's connection, a QoS 2 command of the demo
// scenario once failed in the end-to-end test, under load.)
func newObserver(ctx context.Context, broker, clientID string, subQoS byte, e *env, sensors map[string]*sensor, filters []string, commands bool) (*observer, error) {
	o := &observer{env: e, sensors: sensors}
	var err error
	if o.client, err = o.connect(ctx, broker, clientID, o.received); err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, observerTimeout)
	defer cancel()
	if len(filters) > 0 {
		subs := make([]paho.SubscribeOptions, len(filters))
		for i, f := range filters {
			subs[i] = paho.SubscribeOptions{Topic: f, QoS: subQoS, NoLocal: true, RetainHandling: 2}
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
	if commands {
		if o.pub, err = o.connect(ctx, broker, clientID+"-cmd", nil); err != nil {
			o.close()
			return nil, err
		}
	}
	return o, nil
}

// connect opens one MQTT 5 connection of the observer; received, when not
// nil, gets the messages of its subscriptions.
func (o *observer) connect(ctx context.Context, broker, clientID string, received func(paho.PublishReceived) (bool, error)) (*paho.Client, error) {
	conn, err := brokerDial(ctx, broker)
	if err != nil {
		return nil, fmt.Errorf("observer: %w", err)
	}
	lost := func(err error) {
		o.lostErr.CompareAndSwap(nil, &err)
	}
	cfg := paho.ClientConfig{
		Conn:          conn,
		OnClientError: lost,
		OnServerDisconnect: func(d *paho.Disconnect) {
			lost(fmt.Errorf("broker sent DISCONNECT to %s, reason code 0x%02X", clientID, d.ReasonCode))
		},
		PacketTimeout: observerTimeout,
	}
	if received != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){received}
	}
	c := paho.NewClient(cfg)
	rm := uint16(observerReceiveMaximum)
	cctx, cancel := context.WithTimeout(ctx, observerTimeout)
	defer cancel()
	ca, err := c.Connect(cctx, &paho.Connect{
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
	return c, nil
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
	o.count(time.Now(), pr.Packet.Payload, pr.Packet.Retain)
	return true, nil
}

// count counts one message that arrived at now.
func (o *observer) count(now time.Time, payload []byte, retain bool) {
	p, ok := parsePayload(payload)
	if !ok {
		o.foreign.Add(1)
		return
	}
	s := o.sensors[string(p.id)]
	switch {
	case string(p.run) == o.env.cmdNonce:
		return // a command of this run, on a topic an uplink filter matches
	case s == nil:
		o.foreign.Add(1)
		return
	case retain || string(p.run) != o.env.nonce || p.seq > s.up.maxSeq.Load():
		o.stale.Add(1)
		return
	}
	s.seen.mu.Lock()
	added := s.seen.set.add(p.seq)
	s.seen.mu.Unlock()
	if added {
		o.env.upLat.of(s.g.QoS).Record(o.env.clk.since(now, p.ts))
	}
}

// close disconnects from the broker.
func (o *observer) close() {
	_ = o.client.Disconnect(&paho.Disconnect{ReasonCode: 0})
	if o.pub != nil {
		_ = o.pub.Disconnect(&paho.Disconnect{ReasonCode: 0})
	}
}

// commander publishes commands to the sensors of the groups that have a
// command_interval, each sensor's every interval, spread evenly.
type commander struct {
	o    *observer
	jobs chan *sensor
	wg   sync.WaitGroup
	skip atomic.Uint64 // commands not sent: the workers were all busy
	// firstErr is why the first command the broker did not take failed.
	firstErr atomic.Pointer[string]
}

// startCommander starts the workers and one scheduler per group; stop
// closing ends the schedulers. Wait for the workers with c.wg.
func startCommander(o *observer, groups [][]*sensor, stop <-chan struct{}) *commander {
	c := &commander{o: o, jobs: make(chan *sensor, 1024)}
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
// broker has it (QoS 1/2) or it is written (QoS 0); a command the broker
// did not take is counted failed, and its seq is not expected.
func (c *commander) send(s *sensor) {
	seq := s.down.next.Add(1) // before it leaves: the sensor rejects seqs above
	payload := appendPayload(make([]byte, 0, 112), payloadPrefix(s.clientID, c.o.env.cmdNonce), seq, c.o.env.clk.micros(time.Now()), 0, false, 0)
	ctx, cancel := context.WithTimeout(context.Background(), observerTimeout)
	defer cancel()
	pr, err := c.o.pub.Publish(ctx, &paho.Publish{Topic: s.cmdTopic, QoS: mqttQoS(s.g.CommandQoS), Payload: payload})
	if err == nil && pr != nil && pr.ReasonCode >= 0x80 {
		err = fmt.Errorf("reason code 0x%02X", pr.ReasonCode)
	}
	if err != nil {
		s.down.failed(seq)
		msg := err.Error()
		c.firstErr.CompareAndSwap(nil, &msg)
		return
	}
	s.down.sent.Add(1)
}

// mqttQoS returns the MQTT QoS that carries MQTT-SN QoS q: QoS -1 is
// QoS 0 on the broker's side.
func mqttQoS(q mqttsn.QoS) byte {
	if q == mqttsn.QoSMinus1 {
		return 0
	}
	return byte(q)
}
