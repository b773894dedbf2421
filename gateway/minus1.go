package gateway

import (
	"context"
	"net/netip"

	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
)

// minus1QueueSize bounds the QoS −1 messages waiting for the shared
// upstream connection; beyond it they are dropped and counted.
const minus1QueueSize = 256

// minus1Forwarder forwards PUBLISH with QoS −1 (A16) at QoS 0 over one
// upstream connection shared by all senders, opened on first use and
// reopened, with backoff, after a loss.
type minus1Forwarder struct {
	g      *Gateway
	queue  chan Message
	ctx    context.Context
	cancel context.CancelFunc
	done   chan struct{}
}

func newMinus1Forwarder(g *Gateway) *minus1Forwarder {
	ctx, cancel := context.WithCancel(context.Background())
	f := &minus1Forwarder{
		g:      g,
		queue:  make(chan Message, minus1QueueSize),
		ctx:    ctx,
		cancel: cancel,
		done:   make(chan struct{}),
	}
	go f.run()
	return f
}

// publishMinus1 handles a QoS −1 PUBLISH from an address without a
// session: predefined ids and short names only (the codec rejects the
// rest), never answered.
func (g *Gateway) publishMinus1(from netip.AddrPort, m *mqttsn.Publish) {
	if g.minus1 == nil || !g.minus1Allowed(from.Addr()) {
		g.stats.qosMinus1Dropped.Add(1)
		return
	}
	var topic string
	switch m.TopicIDType {
	case mqttsn.TopicIDPredefined:
		t, ok := g.cfg.Predefined.Topic(m.TopicID)
		if !ok {
			g.stats.qosMinus1Dropped.Add(1) // A4: unknown id, dropped silently
			return
		}
		topic = t
	case mqttsn.TopicIDShort:
		topic = topicmap.ShortName(m.TopicID)
		if _, ok := topicmap.ShortID(topic); !ok {
			g.stats.qosMinus1Dropped.Add(1) // not a topic name: "+", "#" or NUL
			return
		}
	default:
		g.stats.qosMinus1Dropped.Add(1)
		return
	}
	select {
	case g.minus1.queue <- Message{Topic: topic, Payload: m.Data, Retain: m.Retain}:
	default:
		g.stats.qosMinus1Dropped.Add(1)
	}
}

// minus1Allowed reports whether a QoS −1 sender is in the allowed networks.
func (g *Gateway) minus1Allowed(a netip.Addr) bool {
	if len(g.cfg.QoSMinus1Senders) == 0 {
		return true
	}
	a = a.WithZone("")
	for _, p := range g.cfg.QoSMinus1Senders {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

func (f *minus1Forwarder) close() { f.cancel() }

func (f *minus1Forwarder) wait() { <-f.done }

// run owns the shared connection.
func (f *minus1Forwarder) run() {
	defer close(f.done)
	var conn Conn
	lost := make(chan struct{}, 1)
	backoff := time.Second
	defer func() {
		if conn != nil {
			conn.Disconnect(true)
		}
	}()
	for {
		var m Message
		select {
		case <-f.ctx.Done():
			return
		case <-lost:
			conn = nil
			continue
		case m = <-f.queue:
		}
		if conn == nil {
			ctx, cancel := context.WithTimeout(f.ctx, f.g.cfg.UpstreamTimeout)
			c, err := f.g.up.Connect(ctx, ConnectParams{ClientID: f.g.cfg.QoSMinus1ClientID, CleanStart: true}, minus1Handler{lost})
			cancel()
			if err != nil {
				f.g.stats.qosMinus1Dropped.Add(1)
				f.g.log.Warn().Err(err).Dur("retry_in", backoff).Msg("QoS -1 upstream connection failed")
				select {
				case <-f.ctx.Done():
					return
				case <-time.After(backoff):
				}
				backoff = min(2*backoff, time.Minute)
				continue
			}
			conn, backoff = c, time.Second
		}
		if err := conn.Publish(f.ctx, m, nil); err != nil { // QoS 0: done once written
			// The connection may be gone; open a new one for the next.
			f.g.stats.qosMinus1Dropped.Add(1)
			conn.Drop()
			conn = nil
			continue
		}
		f.g.stats.qosMinus1.Add(1)
	}
}

// minus1Handler signals the loss of the shared connection; it receives no
// messages (it subscribes to nothing).
type minus1Handler struct{ lost chan<- struct{} }

func (h minus1Handler) Deliver(d *Delivery) {
	if d.Ack != nil {
		d.Ack()
	}
}

func (h minus1Handler) Lost(error) {
	select {
	case h.lost <- struct{}{}:
	default:
	}
}
