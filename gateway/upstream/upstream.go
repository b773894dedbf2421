// Package upstream connects the gateway to an MQTT 5 broker with
// paho.golang: one connection per MQTT-SN client (transparent mode), with
// the client's ClientID and Will, and end-to-end acknowledgements.
//
// A broker message is acknowledged (PUBACK, PUBREC) only when the gateway
// calls the Delivery's Ack, after the sensor acknowledged it. paho is given
// a session state of this package's own (connState): it ignores paho's
// request to acknowledge as soon as the handlers return, and the Delivery's
// Ack sends the acknowledgement later. Unlike paho's manual-acknowledgement
// mode this needs no per-connection ticker; unlike paho's in-memory state
// it copies nothing and starts no goroutine per PUBLISH. The gateway's own
// PUBLISHes, the hot path, are encoded and written by connState too, and
// their acknowledgements are taken out of the read stream before paho
// sees them (packetConn): a QoS 1/2 PUBLISH does not wait for its
// acknowledgement, whose outcome reaches the gateway through a callback.
// paho connects, subscribes, reads the rest and keeps the connection alive.
package upstream

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Options configures the broker connections.
type Options struct {
	URL            string // tcp://host:port, mqtt://, tls:// or ssl://
	Username       string
	Password       string
	ClientIDPrefix string        // put before every client's ClientID upstream
	CAFile         string        // PEM roots for tls://; empty: the system's
	KeepAlive      time.Duration // MQTT keep-alive of each connection; default 60 s
	ReceiveMaximum uint16        // QoS 1/2 messages in flight towards each client; default 16
	AckTimeout     time.Duration // how long a PUBLISH may wait for the broker's acknowledgement; default 10 s
	Log            zerolog.Logger
}

// Upstream opens paho.golang connections to one broker. It implements
// gateway.Upstream.
type Upstream struct {
	opts    Options
	address string
	tlsConf *tls.Config // nil for plain TCP
	hangups hangupWatch // of the connections' ends, for their readers
}

var _ gateway.Upstream = (*Upstream)(nil)

// New checks opts and returns an Upstream for the broker at opts.URL.
func New(opts Options) (*Upstream, error) {
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, fmt.Errorf("upstream: broker URL %q: %w", opts.URL, err)
	}
	if u.Port() == "" {
		return nil, fmt.Errorf("upstream: broker URL %q has no port", opts.URL)
	}
	up := &Upstream{opts: opts, address: u.Host}
	switch u.Scheme {
	case "tcp", "mqtt":
	case "tls", "ssl":
		up.tlsConf = &tls.Config{ServerName: u.Hostname(), MinVersion: tls.VersionTLS12}
		if opts.CAFile != "" {
			pem, err := os.ReadFile(opts.CAFile)
			if err != nil {
				return nil, fmt.Errorf("upstream: CA file: %w", err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upstream: CA file %s: no PEM certificate in it", opts.CAFile)
			}
			up.tlsConf.RootCAs = pool
		}
	default:
		return nil, fmt.Errorf("upstream: broker URL %q: scheme %q is not tcp, mqtt, tls or ssl", opts.URL, u.Scheme)
	}
	if up.opts.KeepAlive <= 0 {
		up.opts.KeepAlive = time.Minute
	}
	if up.opts.ReceiveMaximum == 0 {
		up.opts.ReceiveMaximum = 16
	}
	if up.opts.AckTimeout <= 0 {
		up.opts.AckTimeout = 10 * time.Second
	}
	return up, nil
}

// Connect opens one client's broker connection.
func (up *Upstream) Connect(ctx context.Context, p gateway.ConnectParams, h gateway.ConnHandler) (gateway.Conn, error) {
	nc, err := up.dial(ctx)
	if err != nil {
		return nil, fmt.Errorf("upstream: dial %s: %w", up.address, err)
	}
	w := newConnWriter(nc)
	up.hangups.add(w)
	c := &conn{net: w, handler: h, log: up.opts.Log, pinger: newTimerPinger(w)}
	c.state = &connState{ended: c.ended, raw: w, ackTimeout: up.opts.AckTimeout}
	c.client = paho.NewClient(paho.ClientConfig{
		Conn:               newPacketConn(w, c.state.ackReceived),
		Session:            c.state,
		PingHandler:        c.pinger,
		OnPublishReceived:  []func(paho.PublishReceived) (bool, error){c.onPublish},
		OnClientError:      c.onError,
		OnServerDisconnect: c.onServerDisconnect,
	})

	recvMax := up.opts.ReceiveMaximum
	expiry := uint32(p.SessionExpiry / time.Second)
	cp := &paho.Connect{
		ClientID:   up.opts.ClientIDPrefix + p.ClientID,
		KeepAlive:  uint16(up.opts.KeepAlive / time.Second),
		CleanStart: p.CleanStart,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &recvMax, SessionExpiryInterval: &expiry},
	}
	if up.opts.Username != "" {
		cp.Username, cp.UsernameFlag = up.opts.Username, true
	}
	if up.opts.Password != "" {
		cp.Password, cp.PasswordFlag = []byte(up.opts.Password), true
	}
	if w := p.Will; w != nil {
		cp.WillMessage = &paho.WillMessage{Topic: w.Topic, Payload: w.Message, QoS: w.QoS, Retain: w.Retain}
	}
	ca, err := c.client.Connect(ctx, cp)
	if err != nil {
		c.pinger.stop()
		_ = w.Close()
		_ = c.state.Close()
		if ca != nil {
			return nil, &gateway.RefusedError{Code: connackCode(ca.ReasonCode), Reason: fmt.Sprintf("CONNACK 0x%02x %s", ca.ReasonCode, reasonString(ca.Properties))}
		}
		return nil, fmt.Errorf("upstream: connect %q: %w", cp.ClientID, err)
	}
	c.limits = limitsOf(ca.Properties)
	c.ready.Store(true)
	if err := c.earlyLoss.Load(); err != nil {
		// The connection ended between CONNACK and here, before a loss
		// could be reported: this Connect failed.
		c.Drop()
		return nil, fmt.Errorf("upstream: connect %q: connection lost right after CONNACK: %w", cp.ClientID, *err)
	}
	return c, nil
}

func (up *Upstream) dial(ctx context.Context) (net.Conn, error) {
	if up.tlsConf != nil {
		d := tls.Dialer{Config: up.tlsConf}
		return d.DialContext(ctx, "tcp", up.address)
	}
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", up.address)
	if err == nil {
		_ = nc.(*net.TCPConn).SetNoDelay(true)
	}
	return nc, err
}

func reasonString(p *paho.ConnackProperties) string {
	if p == nil {
		return ""
	}
	return p.ReasonString
}

// connackCode maps a refusing CONNACK to the MQTT-SN return code (A20):
// an unavailable or overloaded broker is congestion, anything else is
// "not supported".
func connackCode(rc byte) mqttsn.ReturnCode {
	switch rc {
	case packets.ConnackServerUnavailable, packets.ConnackServerBusy, packets.ConnackQuotaExceeded, packets.ConnackConnectionRateExceeded:
		return mqttsn.RejectedCongestion
	}
	return mqttsn.RejectedNotSupported
}

// ackCode maps a refusing PUBACK, PUBREC or SUBACK reason code (A20).
func ackCode(rc byte) mqttsn.ReturnCode {
	switch rc {
	case packets.PubackQuotaExceeded:
		return mqttsn.RejectedCongestion
	}
	return mqttsn.RejectedNotSupported
}

// conn is one client's broker connection.
type conn struct {
	client  *paho.Client
	state   *connState
	limits  serverLimits // what the broker's CONNACK allows a PUBLISH
	pinger  *timerPinger
	net     net.Conn
	handler gateway.ConnHandler
	log     zerolog.Logger

	ready     atomic.Bool           // Connect succeeded: losses are reported from now on
	closing   atomic.Bool           // the gateway ended the connection itself
	endOnce   sync.Once             // ended reports once
	earlyLoss atomic.Pointer[error] // a loss before Connect returned
	closeOnce sync.Once
}

var _ gateway.Conn = (*conn)(nil)

func (c *conn) onPublish(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	d := &gateway.Delivery{Message: gateway.Message{Topic: p.Topic, Payload: p.Payload, QoS: p.QoS, Retain: p.Retain}}
	if qos, id := p.QoS, p.PacketID; qos > 0 {
		d.Ack = func() { c.state.ack(qos, id) }
	}
	c.handler.Deliver(d)
	return true, nil
}

// onError logs why paho ended the connection; ended has reported the loss.
func (c *conn) onError(err error) {
	c.log.Debug().Err(err).Msg("upstream connection ended")
}

// onServerDisconnect logs the broker's DISCONNECT; ended has reported it.
func (c *conn) onServerDisconnect(d *paho.Disconnect) {
	c.log.Debug().Uint8("reason", d.ReasonCode).Msg("broker sent DISCONNECT")
}

// ended reports the end of the connection that paho noticed: a DISCONNECT
// from the broker (dp) or a closed connection (nil; paho tells the cause
// to onError only later). It runs on paho's goroutines, which must not
// wait for the gateway.
func (c *conn) ended(dp *packets.Disconnect) {
	c.endOnce.Do(func() {
		err := errors.New("connection to the broker closed")
		if dp != nil {
			err = fmt.Errorf("broker sent DISCONNECT 0x%02x", dp.ReasonCode)
		}
		go c.lost(err)
	})
}

func (c *conn) lost(err error) {
	if c.closing.Load() {
		return
	}
	if !c.ready.Load() {
		c.earlyLoss.Store(&err)
		if !c.ready.Load() {
			return // Connect sees earlyLoss and fails
		}
		// Connect finished meanwhile; it may or may not have seen
		// earlyLoss, and closeOnce keeps the loss reported once.
	}
	c.closeOnce.Do(func() {
		// Tell the gateway first: it stops waiting on this connection's
		// deliveries, which lets paho finish.
		c.handler.Lost(err)
		c.finish()
	})
}

// finish waits for paho to stop and releases the session state.
func (c *conn) finish() {
	c.pinger.stop()
	select {
	case <-c.client.Done():
	case <-time.After(5 * time.Second):
	}
	_ = c.state.Close()
}

// Publish forwards m: QoS 0 once written, QoS 1 and 2 without waiting for
// the acknowledgement, which done is told (see gateway.Conn).
func (c *conn) Publish(ctx context.Context, m gateway.Message, done func(error)) error {
	err := c.state.publish(ctx, c.limits, m.Topic, m.Payload, m.QoS, m.Retain, done)
	return publishOutcome(m.Topic, 0, err)
}

// TryPublish forwards m if that needs no wait (see gateway.Conn).
func (c *conn) TryPublish(m gateway.Message, done func(error)) bool {
	return c.state.tryPublish(c.limits, m.Topic, m.Payload, m.QoS, m.Retain, done)
}

// publishOutcome maps the end of a publication to what the gateway is told:
// nil, a *gateway.RefusedError for a refusal (by the broker's reason code
// rc or by its CONNACK limits), or err with context.
func publishOutcome(topic string, rc byte, err error) error {
	if err == nil {
		if rc < 0x80 {
			return nil
		}
		return &gateway.RefusedError{Code: ackCode(rc), Reason: fmt.Sprintf("reason code 0x%02x", rc)}
	}
	if refused, ok := errors.AsType[*errRefused](err); ok {
		return &gateway.RefusedError{Code: mqttsn.RejectedNotSupported, Reason: refused.reason}
	}
	return fmt.Errorf("upstream: publish %q: %w", topic, err)
}

// Subscribe subscribes to filter and returns the granted QoS.
func (c *conn) Subscribe(ctx context.Context, filter string, qos byte) (byte, error) {
	sa, err := c.client.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos}}})
	if sa != nil && len(sa.Reasons) == 1 {
		if rc := sa.Reasons[0]; rc >= 0x80 {
			return 0, &gateway.RefusedError{Code: ackCode(rc), Reason: fmt.Sprintf("SUBACK 0x%02x", rc)}
		}
		return sa.Reasons[0], nil
	}
	if errors.Is(err, paho.ErrInvalidArguments) {
		return 0, &gateway.RefusedError{Code: mqttsn.RejectedNotSupported, Reason: err.Error()}
	}
	if err == nil {
		err = errors.New("SUBACK without a reason code")
	}
	return 0, fmt.Errorf("upstream: subscribe %q: %w", filter, err)
}

// Unsubscribe removes the subscription to filter.
func (c *conn) Unsubscribe(ctx context.Context, filter string) error {
	if _, err := c.client.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{filter}}); err != nil {
		return fmt.Errorf("upstream: unsubscribe %q: %w", filter, err)
	}
	return nil
}

// Disconnect sends DISCONNECT (the broker discards the Will) and closes,
// once the PUBLISHes in flight have their outcome (waiting at most the
// acknowledgement timeout).
func (c *conn) Disconnect(endSession bool) {
	c.state.drain(c.state.ackTimeout)
	c.closing.Store(true)
	d := &paho.Disconnect{ReasonCode: 0}
	if endSession {
		zero := uint32(0)
		d.Properties = &paho.DisconnectProperties{SessionExpiryInterval: &zero}
	}
	_ = c.client.Disconnect(d)
	c.closeOnce.Do(c.finish)
}

// Drop closes the TCP connection without DISCONNECT: the broker publishes
// the Will.
func (c *conn) Drop() {
	c.closing.Store(true)
	_ = c.net.Close()
	c.closeOnce.Do(c.finish)
}
