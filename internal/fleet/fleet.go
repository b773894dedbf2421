// Package fleet drives many raw MQTT-SN 1.2 clients ("sensors") over UDP on
// loopback, cheaply enough to put ten thousand of them in front of one
// gateway for a load test or a benchmark.
//
// Each sensor has its own UDP socket, since a gateway tells its clients
// apart by address. The connect phase runs on a fixed pool of goroutines
// (Config.Concurrency sensors in flight); a sensor that has gone to sleep
// costs no goroutine at all, and an awake sensor that pings costs one, which
// sleeps on a timer or blocks in the network poller: nothing polls. A request
// that is not answered within Config.Timeout is sent again, as a real sensor
// would, up to Config.Attempts times.
//
// Like internal/snclient the package is built on the mqttsn codec only and
// shares no logic with the gateway it drives. Unlike snclient it does not
// fail a test: it counts what happened (Stats), so that a benchmark can run
// it in a helper process.
package fleet

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Defaults for zero Config fields.
const (
	DefaultConcurrency    = 200
	DefaultTimeout        = 10 * time.Second
	DefaultAttempts       = 5
	DefaultRefusedBackoff = time.Second
	DefaultClientIDPrefix = "fleet-"
	DefaultKeepAlive      = 60
)

// maxDatagram is a sensor's receive buffer: a full Ethernet frame. Longer
// datagrams are truncated and counted as unexpected.
const maxDatagram = 1500

// Config describes a fleet. The zero value of every field but Gateway and
// Sensors has a default.
type Config struct {
	// Gateway is the gateway's UDP address; it must be a loopback address.
	Gateway netip.AddrPort
	// Sensors is how many sensors to run.
	Sensors int
	// ClientIDPrefix names the sensors: sensor i is ClientIDPrefix + i.
	ClientIDPrefix string
	// KeepAlive is the CONNECT's Duration in seconds. Every CONNECT has
	// CleanSession set and no Will.
	KeepAlive uint16
	// TopicPrefix, when not empty, makes every sensor SUBSCRIBE, after its
	// CONNACK, to TopicPrefix + its ClientID (a normal topic name) at
	// SubscribeQoS.
	TopicPrefix  string
	SubscribeQoS mqttsn.QoS
	// Sleep, when not 0, sends every sensor to sleep once it is set up:
	// DISCONNECT with this Duration in seconds, answered by DISCONNECT. A
	// sleeping sensor sends nothing more.
	Sleep uint16
	// PingInterval, when not 0 and Sleep is 0, makes every set-up sensor
	// send PINGREQ every PingInterval, the first one at a random moment
	// within the first interval so that the fleet's pings are spread out.
	PingInterval time.Duration
	// Concurrency is how many sensors are being set up at once.
	Concurrency int
	// Timeout is how long a sensor waits for each answer before it sends
	// its request again.
	Timeout time.Duration
	// Attempts bounds the tries of each request (CONNECT, SUBSCRIBE,
	// DISCONNECT, PINGREQ); a sensor whose setup runs out of them has
	// failed, and a sensor whose PINGREQ runs out of them stops pinging.
	Attempts int
	// RefusedBackoff is how long a sensor waits before it sends a CONNECT
	// again that was refused for congestion (it counts as an attempt).
	RefusedBackoff time.Duration
}

func (c Config) withDefaults() (Config, error) {
	if !c.Gateway.IsValid() || !c.Gateway.Addr().Unmap().IsLoopback() || c.Gateway.Port() == 0 {
		return c, fmt.Errorf("fleet: gateway address %v: a loopback address and a port only", c.Gateway)
	}
	if c.Sensors <= 0 {
		return c, fmt.Errorf("fleet: %d sensors", c.Sensors)
	}
	if c.ClientIDPrefix == "" {
		c.ClientIDPrefix = DefaultClientIDPrefix
	}
	if c.KeepAlive == 0 {
		c.KeepAlive = DefaultKeepAlive
	}
	if c.Concurrency <= 0 {
		c.Concurrency = DefaultConcurrency
	}
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.Attempts <= 0 {
		c.Attempts = DefaultAttempts
	}
	if c.RefusedBackoff <= 0 {
		c.RefusedBackoff = DefaultRefusedBackoff
	}
	return c, nil
}

// Stats counts what the fleet has done so far.
type Stats struct {
	Sensors      int     `json:"sensors"`      // configured
	Ready        int64   `json:"ready"`        // set up as configured: connected, subscribed, asleep
	Failed       int64   `json:"failed"`       // gave up during setup
	Retries      int64   `json:"retries"`      // setup requests sent again after a timeout
	Refused      int64   `json:"refused"`      // CONNACKs refusing for congestion
	PingsSent    int64   `json:"pingsSent"`    // PINGREQs sent, retries included
	PingResps    int64   `json:"pingResps"`    // PINGRESPs received
	PingTimeouts int64   `json:"pingTimeouts"` // PINGREQs not answered within Timeout
	PingGaveUp   int64   `json:"pingGaveUp"`   // sensors that stopped pinging: no PINGRESP after Attempts tries, or a DISCONNECT
	Unexpected   int64   `json:"unexpected"`   // datagrams that were not the answer waited for
	FirstError   string  `json:"firstError"`   // the first setup failure or socket error, if any
	SetupSeconds float64 `json:"setupSeconds"` // how long the setup took, once it is done
}

// counters are the live form of Stats.
type counters struct {
	ready, failed, retries, refused                atomic.Int64
	pingsSent, pingResps, pingTimeouts, pingGaveUp atomic.Int64
	unexpected                                     atomic.Int64
}

// Fleet is a running fleet of sensors. Start it with Start, stop it with
// Close.
type Fleet struct {
	cfg    Config
	local  netip.AddrPort
	ctx    context.Context
	cancel context.CancelFunc

	setupDone chan struct{} // closed when every sensor is set up or failed
	started   time.Time
	setupTook atomic.Int64 // nanoseconds, once setupDone is closed
	loops     sync.WaitGroup

	mu       sync.Mutex
	conns    []*net.UDPConn // every socket opened, closed by Close
	closed   bool
	firstErr string

	counters
}

// Start validates cfg and starts setting the fleet up in the background;
// SetupDone tells when that is over.
func Start(cfg Config) (*Fleet, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &Fleet{
		cfg:       cfg,
		local:     netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0),
		ctx:       ctx,
		cancel:    cancel,
		setupDone: make(chan struct{}),
		started:   time.Now(),
		conns:     make([]*net.UDPConn, 0, cfg.Sensors),
	}
	f.cfg.Gateway = netip.AddrPortFrom(cfg.Gateway.Addr().Unmap(), cfg.Gateway.Port())
	if f.cfg.Gateway.Addr().Is6() {
		f.local = netip.AddrPortFrom(netip.IPv6Loopback(), 0)
	}

	var next atomic.Int64
	var workers sync.WaitGroup
	for range min(cfg.Concurrency, cfg.Sensors) {
		workers.Go(func() {
			buf := make([]byte, maxDatagram)
			for {
				i := int(next.Add(1)) - 1
				if i >= cfg.Sensors || ctx.Err() != nil {
					return
				}
				f.setup(i, buf)
			}
		})
	}
	go func() {
		workers.Wait()
		f.setupTook.Store(int64(time.Since(f.started)))
		close(f.setupDone)
	}()
	return f, nil
}

// SetupDone is closed once every sensor is set up or has failed (or Close
// was called).
func (f *Fleet) SetupDone() <-chan struct{} { return f.setupDone }

// Stats returns the counters so far.
func (f *Fleet) Stats() Stats {
	f.mu.Lock()
	firstErr := f.firstErr
	f.mu.Unlock()
	st := Stats{
		Sensors:      f.cfg.Sensors,
		Ready:        f.ready.Load(),
		Failed:       f.failed.Load(),
		Retries:      f.retries.Load(),
		Refused:      f.refused.Load(),
		PingsSent:    f.pingsSent.Load(),
		PingResps:    f.pingResps.Load(),
		PingTimeouts: f.pingTimeouts.Load(),
		PingGaveUp:   f.pingGaveUp.Load(),
		Unexpected:   f.unexpected.Load(),
		FirstError:   firstErr,
	}
	if d := f.setupTook.Load(); d > 0 {
		st.SetupSeconds = time.Duration(d).Seconds()
	}
	return st
}

// Close stops the setup and the pings, closes every socket (sleeping
// sensors vanish without a word, as radios that ran out of battery would)
// and returns the final counters.
func (f *Fleet) Close() Stats {
	f.cancel()
	f.mu.Lock()
	f.closed = true
	conns := f.conns
	f.conns = nil
	f.mu.Unlock()
	for _, c := range conns {
		_ = c.Close() // unblocks a read in progress
	}
	<-f.setupDone
	f.loops.Wait()
	return f.Stats()
}

// fail records why something went wrong, keeping the first reason.
func (f *Fleet) fail(err error) {
	f.mu.Lock()
	if f.firstErr == "" {
		f.firstErr = err.Error()
	}
	f.mu.Unlock()
}

// dial opens sensor i's socket and registers it for Close.
func (f *Fleet) dial() (*net.UDPConn, error) {
	c, err := net.DialUDP("udp", net.UDPAddrFromAddrPort(f.local), net.UDPAddrFromAddrPort(f.cfg.Gateway))
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	f.conns = append(f.conns, c)
	return c, nil
}

// sensor is one sensor's socket and MsgId counter.
type sensor struct {
	clientID string
	conn     *net.UDPConn
	msgID    uint16
	out      []byte // encoding buffer
}

func (s *sensor) nextMsgID() uint16 {
	s.msgID++
	if s.msgID == 0 {
		s.msgID = 1
	}
	return s.msgID
}

func (s *sensor) send(m mqttsn.Message) error {
	b, err := m.AppendBinary(s.out[:0])
	if err != nil {
		return err
	}
	s.out = b
	_, err = s.conn.Write(b)
	return err
}

// setup connects sensor i, subscribes it and sends it to sleep or starts
// its pings, as configured. buf is the worker's receive buffer.
func (f *Fleet) setup(i int, buf []byte) {
	s := &sensor{clientID: f.cfg.ClientIDPrefix + strconv.Itoa(i), out: make([]byte, 0, 64)}
	err := f.setupSensor(s, buf)
	switch {
	case err == nil:
		f.ready.Add(1)
		if f.cfg.Sleep == 0 && f.cfg.PingInterval > 0 {
			f.loops.Go(func() { f.ping(s) })
		}
	case f.ctx.Err() != nil:
		// Closed during the setup: neither ready nor failed.
	default:
		f.failed.Add(1)
		f.fail(fmt.Errorf("sensor %s: %w", s.clientID, err))
	}
}

func (f *Fleet) setupSensor(s *sensor, buf []byte) error {
	c, err := f.dial()
	if err != nil {
		return fmt.Errorf("dial %v: %w", f.cfg.Gateway, err)
	}
	s.conn = c

	connect := &mqttsn.Connect{CleanSession: true, Duration: f.cfg.KeepAlive, ClientID: s.clientID}
	err = f.exchange(s, buf, "CONNACK", func(bool) mqttsn.Message { return connect }, func(m mqttsn.Message) verdict {
		ack, ok := m.(*mqttsn.ConnAck)
		switch {
		case !ok:
			return notYet
		case ack.ReturnCode == mqttsn.Accepted:
			return answered
		case ack.ReturnCode == mqttsn.RejectedCongestion:
			f.refused.Add(1)
			return backOff
		}
		return refused
	})
	if err != nil {
		return err
	}

	if f.cfg.TopicPrefix != "" {
		sub := &mqttsn.Subscribe{QoS: f.cfg.SubscribeQoS, TopicIDType: mqttsn.TopicIDNormal,
			MsgID: s.nextMsgID(), TopicName: f.cfg.TopicPrefix + s.clientID}
		err = f.exchange(s, buf, "SUBACK", func(dup bool) mqttsn.Message { sub.DUP = dup; return sub }, func(m mqttsn.Message) verdict {
			ack, ok := m.(*mqttsn.SubAck)
			switch {
			case !ok || ack.MsgID != sub.MsgID:
				return notYet
			case ack.ReturnCode == mqttsn.Accepted:
				return answered
			}
			return refused
		})
		if err != nil {
			return err
		}
	}

	if f.cfg.Sleep > 0 {
		disc := &mqttsn.Disconnect{HasDuration: true, Duration: f.cfg.Sleep}
		err = f.exchange(s, buf, "DISCONNECT", func(bool) mqttsn.Message { return disc }, func(m mqttsn.Message) verdict {
			if _, ok := m.(*mqttsn.Disconnect); ok {
				return answered
			}
			return notYet
		})
	}
	return err
}

// verdict is what a received message means to an exchange.
type verdict int

const (
	notYet   verdict = iota // not the answer: keep waiting
	answered                // the answer: done
	backOff                 // a refusal worth retrying after RefusedBackoff
	refused                 // a refusal: give up
)

// errGiveUp is wrapped by the error of an exchange that ran out of attempts.
var errGiveUp = errors.New("no answer")

// exchange sends req (dup is true on a retry) and reads until judge accepts
// an answer, sending req again after each Timeout, at most Attempts times.
func (f *Fleet) exchange(s *sensor, buf []byte, what string, req func(dup bool) mqttsn.Message, judge func(mqttsn.Message) verdict) error {
	for attempt := range f.cfg.Attempts {
		if attempt > 0 {
			f.retries.Add(1)
		}
		m := req(attempt > 0)
		if err := s.send(m); err != nil {
			return fmt.Errorf("send %s: %w", m.Type(), err)
		}
		deadline := time.Now().Add(f.cfg.Timeout)
		for {
			got, err := f.read(s, buf, deadline)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break // send again
			}
			if err != nil {
				return fmt.Errorf("waiting for %s: %w", what, err)
			}
			if got == nil {
				continue // malformed, counted
			}
			switch judge(got) {
			case answered:
				return nil
			case refused:
				return fmt.Errorf("%s refused: %s %+v", m.Type(), got.Type(), got)
			case backOff:
				select {
				case <-time.After(f.cfg.RefusedBackoff):
				case <-f.ctx.Done():
					return f.ctx.Err()
				}
			case notYet:
				f.unexpected.Add(1)
				continue
			}
			break // backOff: send again
		}
	}
	return fmt.Errorf("%w: %s after %d attempts %v apart", errGiveUp, what, f.cfg.Attempts, f.cfg.Timeout)
}

// read reads one datagram until deadline and decodes it; a malformed one
// is counted and returned as nil, nil.
func (f *Fleet) read(s *sensor, buf []byte, deadline time.Time) (mqttsn.Message, error) {
	if err := s.conn.SetReadDeadline(deadline); err != nil {
		return nil, err
	}
	n, err := s.conn.Read(buf)
	if err != nil {
		return nil, err
	}
	m, err := mqttsn.Decode(buf[:n])
	if err != nil {
		f.unexpected.Add(1)
		return nil, nil
	}
	return m, nil
}

// ping is an awake sensor's loop: PINGREQ every PingInterval, on a fixed
// schedule, each waited for and retried like a setup request. It ends when
// the fleet closes, when a PINGREQ goes unanswered Attempts times, or when
// the gateway sends DISCONNECT (it lost the session).
func (f *Fleet) ping(s *sensor) {
	interval := f.cfg.PingInterval
	next := time.Now().Add(rand.N(interval))
	timer := time.NewTimer(time.Until(next))
	defer timer.Stop()
	buf := make([]byte, maxDatagram)
	req := &mqttsn.PingReq{}
	for {
		select {
		case <-f.ctx.Done():
			return
		case <-timer.C:
		}
		if !f.pingOnce(s, buf, req) {
			if f.ctx.Err() == nil {
				f.pingGaveUp.Add(1)
			}
			return
		}
		next = next.Add(interval)
		if d := time.Until(next); d > 0 {
			timer.Reset(d)
		} else {
			next = time.Now()
			timer.Reset(0)
		}
	}
}

// pingOnce sends PINGREQ until PINGRESP comes; false means stop pinging.
func (f *Fleet) pingOnce(s *sensor, buf []byte, req *mqttsn.PingReq) bool {
	for range f.cfg.Attempts {
		f.pingsSent.Add(1)
		if err := s.send(req); err != nil {
			if f.ctx.Err() == nil {
				f.fail(fmt.Errorf("sensor %s: send PINGREQ: %w", s.clientID, err))
			}
			return false
		}
		deadline := time.Now().Add(f.cfg.Timeout)
		for {
			m, err := f.read(s, buf, deadline)
			if errors.Is(err, os.ErrDeadlineExceeded) {
				f.pingTimeouts.Add(1)
				break
			}
			if err != nil {
				if f.ctx.Err() == nil {
					f.fail(fmt.Errorf("sensor %s: waiting for PINGRESP: %w", s.clientID, err))
				}
				return false
			}
			switch m.(type) {
			case *mqttsn.PingResp:
				f.pingResps.Add(1)
				return true
			case *mqttsn.Disconnect:
				f.unexpected.Add(1)
				f.fail(fmt.Errorf("sensor %s: the gateway sent DISCONNECT instead of PINGRESP", s.clientID))
				return false
			default:
				f.unexpected.Add(1)
			}
		}
	}
	return false
}
