package upstream

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/eclipse/paho.golang/paho/log"
)

// timerPinger keeps a broker connection alive like paho's DefaultPinger,
// but on a timer instead of a goroutine: its Run arms the timer and returns
// at once, so a connection costs paho's reader and router goroutines only.
// With thousands of sleeping sensors, each holding a connection that does
// nothing but ping, the pinger goroutine was a quarter of their memory.
//
// It sends PINGREQ when the connection has not both sent and received a
// packet within the keep-alive (as DefaultPinger does, so that a half-open
// connection is noticed even while the gateway only publishes), and closes
// the connection when a PINGREQ is not answered by the next check; paho's
// reader then fails and reports the loss.
type timerPinger struct {
	raw *connWriter // the network connection, which notes its traffic: PINGREQ is written whole to it (see packetConn)

	mu           sync.Mutex
	interval     time.Duration
	timer        *time.Timer
	stopped      bool
	lastPingSent time.Time
	lastPingResp time.Time
}

// newTimerPinger returns the pinger of the connection raw.
func newTimerPinger(raw *connWriter) *timerPinger {
	return &timerPinger{raw: raw}
}

var _ paho.Pinger = (*timerPinger)(nil)

// Run starts keeping conn alive every keepAlive seconds until stop. It does
// not block. (Stopping with ctx, which paho cancels when the connection
// ends, would cost every connection a context.AfterFunc registration; the
// connection's owner calls stop instead.)
func (p *timerPinger) Run(_ context.Context, _ net.Conn, keepAlive uint16) error {
	if keepAlive == 0 {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return nil
	}
	p.interval = time.Duration(keepAlive) * time.Second
	p.timer = time.AfterFunc(p.interval, p.check)
	return nil
}

// stop ends the pinging for good.
func (p *timerPinger) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	if p.timer != nil {
		p.timer.Stop()
	}
}

// check runs when the timer fires: it sends a PINGREQ if one is due, or
// closes a connection whose last PINGREQ went unanswered.
func (p *timerPinger) check() {
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return
	}
	now := time.Now()
	if !p.lastPingSent.IsZero() && p.lastPingSent.After(p.lastPingResp) {
		p.stopped = true
		p.mu.Unlock()
		_ = p.raw.Close() // no PINGRESP within a keep-alive
		return
	}
	if wait := p.raw.quietSince() + p.interval - now.Sub(p.raw.start); wait > 0 {
		p.timer.Reset(wait)
		p.mu.Unlock()
		return
	}
	p.lastPingSent = now
	p.timer.Reset(p.interval)
	p.mu.Unlock()
	// The timer's own goroutine may block in the write; closing the
	// connection ends it.
	if _, err := p.raw.Write([]byte{packets.PINGREQ << 4, 0}); err != nil {
		p.stop()
		_ = p.raw.Close()
	}
}

// PacketSent is part of paho's Pinger: the connection notes its traffic
// itself, every packet of it, paho's or not.
func (p *timerPinger) PacketSent() {}

// PacketReceived is part of paho's Pinger (see PacketSent).
func (p *timerPinger) PacketReceived() {}

// PingResp notes a PINGRESP.
func (p *timerPinger) PingResp() {
	now := time.Now()
	p.mu.Lock()
	p.lastPingResp = now
	p.mu.Unlock()
}

// SetDebug is part of paho's Pinger; the pinger logs nothing.
func (p *timerPinger) SetDebug(log.Logger) {}
