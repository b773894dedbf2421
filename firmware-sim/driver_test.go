package main

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// chanLink hands what a sensor sends to a channel, for a test driving the
// sensor's own goroutine.
type chanLink struct {
	t   *testing.T
	out chan mqttsn.Message
}

func (c *chanLink) send(b []byte) error {
	m, err := mqttsn.Decode(b)
	if err != nil {
		c.t.Errorf("undecodable datagram % x: %v", b, err)
		return nil
	}
	c.out <- m
	return nil
}

func (c *chanLink) redial() error { return nil }
func (c *chanLink) close()        {}

func recv[T mqttsn.Message](t *testing.T, c chan mqttsn.Message) T {
	t.Helper()
	for {
		select {
		case m := <-c:
			if v, ok := m.(T); ok {
				return v
			}
			if _, ping := m.(*mqttsn.PingReq); !ping {
				t.Fatalf("got %T %+v, want %T", m, m, *new(T))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("nothing sent, want %T", *new(T))
		}
	}
}

// On the run's hard stop the driver abandons its sensor: the QoS 1
// publication still waiting for its PUBACK is recorded as unfinished, so
// that the report neither counts it sent nor loses it.
func TestDriverHardStopUnfinished(t *testing.T) {
	g := testGroup()
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", mqttsn.QoS1, true, 10*time.Millisecond
	g.RetryInterval = time.Hour
	l := &chanLink{t: t, out: make(chan mqttsn.Message, 16)}
	e := newEnv("run1")
	s := newSensor(&g, e, 1, l, 1)
	d := &driver{s: s, inbox: make(chan mqttsn.Message, 8), quit: make(chan struct{})}
	stopUplink, shutdown, hardStop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	go d.run(time.Now(), stopUplink, shutdown, hardStop)
	recv[*mqttsn.Connect](t, l.out)
	d.inbox <- &mqttsn.ConnAck{}
	r := recv[*mqttsn.Register](t, l.out)
	d.inbox <- &mqttsn.RegAck{TopicID: 5, MsgID: r.MsgID}
	recv[*mqttsn.Publish](t, l.out) // never acknowledged
	close(hardStop)
	select {
	case <-d.quit:
	case <-time.After(5 * time.Second):
		t.Fatal("driver did not return on hard stop")
	}
	if len(s.unfinished) != 1 || s.up.inFlight.Load() != 0 || !s.done() {
		t.Errorf("unfinished %v, in flight %d, state %v", s.unfinished, s.up.inFlight.Load(), s.state)
	}
}

// errConn is a net.Conn whose Read fails at once with an error that is
// not net.ErrClosed, as some DTLS errors are after Close.
type errConn struct{ net.Conn }

func (errConn) Read([]byte) (int, error) { return 0, errors.New("alert: something") }

// A reader stops once its link closed the connection, whatever error the
// connection's Read then gives.
func TestReadLoopStopsOnClose(t *testing.T) {
	closed, quit := make(chan struct{}), make(chan struct{})
	defer close(quit)
	done := make(chan struct{})
	go func() {
		defer close(done)
		readLoop(errConn{}, closed, quit, make(chan mqttsn.Message), new(fleetCounters))
	}()
	time.Sleep(30 * time.Millisecond)
	close(closed)
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("readLoop still running after its connection was closed")
	}
}

// A DTLS handshake with a gateway that never answers ends as soon as the
// run shuts down (the link's context), not after its own timeout, and is
// not counted as a connect failure.
func TestDTLSHandshakeStopsAtShutdown(t *testing.T) {
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	key := []byte{1, 2, 3, 4, 5, 6, 7, 8}
	l := &dtlsLink{gw: silent.LocalAddr().(*net.UDPAddr), ctx: ctx, timeout: 20 * time.Second,
		opts: []dtls.ClientOption{
			dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte("x-1")),
			dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
		},
		inbox: make(chan mqttsn.Message, 1), quit: make(chan struct{}), fc: new(fleetCounters)}
	res := make(chan error, 1)
	start := time.Now()
	go func() { res <- l.redial() }()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case err := <-res:
		if !errors.Is(err, errStopped) {
			t.Errorf("redial: %v, want errStopped", err)
		}
		if took := time.Since(start); took > 3*time.Second {
			t.Errorf("redial took %v after the cancel", took)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handshake went on after the run's shutdown")
	}
	l.close()

	// The sensor does not count it as a connect failure.
	g := testGroup()
	s := newSensor(&g, newEnv("r"), 1, l, 1)
	s.start(time.Now(), time.Now())
	if s.connectFailures != 0 || s.state != stIdle {
		t.Errorf("connect failures %d, state %v", s.connectFailures, s.state)
	}
}
