package main

import (
	"math/rand/v2"
	"net"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// fakeLink records what a sensor sends.
type fakeLink struct {
	t       *testing.T
	sent    []mqttsn.Message
	redials int
}

func (f *fakeLink) send(b []byte) error {
	m, err := mqttsn.Decode(b)
	if err != nil {
		f.t.Fatalf("sensor sent an undecodable datagram % x: %v", b, err)
	}
	f.sent = append(f.sent, m)
	return nil
}

func (f *fakeLink) redial() error { f.redials++; return nil }

// take returns the messages sent since the last take.
func (f *fakeLink) take() []mqttsn.Message {
	m := f.sent
	f.sent = nil
	return m
}

// one fails the test unless exactly one message was sent, and returns it.
func one[T mqttsn.Message](t *testing.T, f *fakeLink) T {
	t.Helper()
	ms := f.take()
	if len(ms) != 1 {
		t.Fatalf("sent %d messages %v, want one %T", len(ms), ms, *new(T))
	}
	m, ok := ms[0].(T)
	if !ok {
		t.Fatalf("sent %T %+v, want %T", ms[0], ms[0], *new(T))
	}
	return m
}

func testGroup() Group {
	return Group{Name: "x", Count: 1, First: 1, IDWidth: 1, ClientID: "x-{n}", Transport: "udp",
		KeepAlive: time.Minute, CleanSession: true, Window: 1,
		RetryInterval: time.Second, MaxRetries: 2, ReconnectMin: time.Second, ReconnectMax: 4 * time.Second}
}

func newTestSensor(t *testing.T, g Group) (*sensor, *fakeLink, *env) {
	l := &fakeLink{t: t}
	e := &env{clk: newClock(), fleet: new(fleetCounters)}
	for i := range e.downLat {
		e.downLat[i] = new(Histogram)
	}
	return newSensor(&g, e, 1, l, 1), l, e
}

// sensor --CONNECT--> gw, --REGISTER-->, then QoS 1 PUBLISH, retransmitted
// with DUP until PUBACK; a PUBLISH never answered is a failure and the
// connection is lost, then the sensor connects again after the back-off.
func TestSensorPublishQoS1Retransmission(t *testing.T) {
	g := testGroup()
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", mqttsn.QoS1, true, time.Second
	g.WillTopic = "w/{id}"
	s, l, e := newTestSensor(t, g)
	now := time.Now()
	s.start(now, now)
	c := one[*mqttsn.Connect](t, l)
	if c.ClientID != "x-1" || !c.CleanSession || !c.Will || c.Duration != 60 {
		t.Fatalf("CONNECT %+v", c)
	}
	s.handle(now, &mqttsn.WillTopicReq{})
	if wt := one[*mqttsn.WillTopic](t, l); wt.Topic != "w/x-1" {
		t.Errorf("WILLTOPIC %+v", wt)
	}
	s.handle(now, &mqttsn.WillMsgReq{})
	one[*mqttsn.WillMsg](t, l)
	s.handle(now, &mqttsn.ConnAck{ReturnCode: mqttsn.Accepted})
	r := one[*mqttsn.Register](t, l)
	if r.TopicName != "s/x-1" || r.MsgID == 0 {
		t.Fatalf("REGISTER %+v", r)
	}
	s.handle(now, &mqttsn.RegAck{TopicID: 5, MsgID: r.MsgID})
	if s.state != stActive || e.fleet.connected.Load() != 1 {
		t.Fatalf("state %v, connected %d", s.state, e.fleet.connected.Load())
	}
	now = s.nextDeadline()
	s.tick(now)
	p := one[*mqttsn.Publish](t, l)
	if p.QoS != mqttsn.QoS1 || p.TopicID != 5 || p.DUP || p.MsgID == 0 {
		t.Fatalf("PUBLISH %+v", p)
	}
	if d := s.nextDeadline(); !d.Equal(now.Add(time.Second)) {
		t.Fatalf("next deadline in %v, want the retry interval (window 1 is full)", d.Sub(now))
	}
	now = now.Add(time.Second)
	s.tick(now)
	dup := one[*mqttsn.Publish](t, l)
	if !dup.DUP || dup.MsgID != p.MsgID || string(dup.Data) != string(p.Data) {
		t.Fatalf("retransmission %+v of %+v", dup, p)
	}
	// The PUBACK frees the window; the next reading is due (1 s after the
	// first) and goes out at once.
	s.handle(now, &mqttsn.PubAck{TopicID: 5, MsgID: p.MsgID})
	p2 := one[*mqttsn.Publish](t, l)
	if s.up.acked.Load() != 1 || s.up.inFlight.Load() != 1 || s.up.retrans.Load() != 1 || p2.MsgID == p.MsgID || p2.DUP {
		t.Fatalf("acked %d in flight %d retrans %d, next %+v", s.up.acked.Load(), s.up.inFlight.Load(), s.up.retrans.Load(), p2)
	}
	if pl, ok := parsePayload(p2.Data); !ok || pl.seq != 2 || string(pl.id) != "x-1" {
		t.Fatalf("payload %s", p2.Data)
	}

	// This one is never answered: 1 + MaxRetries transmissions, then lost.
	for range g.MaxRetries {
		now = now.Add(time.Second)
		s.tick(now)
		if m := one[*mqttsn.Publish](t, l); !m.DUP || m.MsgID != p2.MsgID {
			t.Fatalf("retransmission %+v", m)
		}
	}
	now = now.Add(time.Second)
	s.tick(now)
	if s.up.failed.Load() != 1 || s.state != stIdle || e.fleet.reconnects.Load() != 1 || e.fleet.connected.Load() != 0 {
		t.Fatalf("after retries: failed %d state %v reconnects %d", s.up.failed.Load(), s.state, e.fleet.reconnects.Load())
	}
	if ms := l.take(); len(ms) != 0 {
		t.Fatalf("sent %v while backing off", ms)
	}
	now = s.nextDeadline()
	s.tick(now)
	one[*mqttsn.Connect](t, l)
	if l.redials != 2 {
		t.Errorf("redials %d", l.redials)
	}
	// A gateway DISCONNECT while active is a lost connection too.
	s.handle(now, &mqttsn.ConnAck{})
	r = one[*mqttsn.Register](t, l)
	s.handle(now, &mqttsn.RegAck{TopicID: 6, MsgID: r.MsgID})
	s.handle(now, &mqttsn.Disconnect{})
	if s.state != stIdle || e.fleet.reconnects.Load() != 2 {
		t.Fatalf("after DISCONNECT: state %v reconnects %d", s.state, e.fleet.reconnects.Load())
	}
}

// A sleeping sensor: SUBSCRIBE, DISCONNECT(Duration), wake with
// PINGREQ(ClientId), take the commands the gateway held (QoS 1 and 2,
// duplicates acknowledged again but counted once), PINGRESP: asleep again.
func TestSensorSleepCycle(t *testing.T) {
	g := testGroup()
	g.Sleep, g.CommandTopic, g.CommandQoS = 5*time.Second, "c/{id}", mqttsn.QoS1
	s, l, e := newTestSensor(t, g)
	now := time.Now()
	s.start(now, now)
	one[*mqttsn.Connect](t, l)
	s.handle(now, &mqttsn.ConnAck{})
	sub := one[*mqttsn.Subscribe](t, l)
	if sub.TopicName != "c/x-1" || sub.QoS != mqttsn.QoS1 {
		t.Fatalf("SUBSCRIBE %+v", sub)
	}
	s.handle(now, &mqttsn.SubAck{QoS: 1, TopicID: 9, MsgID: sub.MsgID})
	if !s.down.ready.Load() {
		t.Error("not ready for commands after SUBACK")
	}
	d := one[*mqttsn.Disconnect](t, l)
	if dur, ok := d.SleepDuration(); !ok || dur != 5 {
		t.Fatalf("DISCONNECT %+v", d)
	}
	s.handle(now, &mqttsn.Disconnect{})
	if s.state != stAsleep || e.fleet.connected.Load() != 1 {
		t.Fatalf("state %v connected %d", s.state, e.fleet.connected.Load())
	}
	if ms := l.take(); len(ms) != 0 {
		t.Fatalf("asleep but sent %v", ms)
	}
	now = s.nextDeadline()
	if dt := now.Sub(time.Now()); dt < 4*time.Second {
		t.Fatalf("wakes after %v", dt)
	}
	s.tick(now)
	if pr := one[*mqttsn.PingReq](t, l); pr.ClientID != "x-1" {
		t.Fatalf("PINGREQ %+v", pr)
	}
	cmd := func(seq uint64) []byte {
		return appendPayload(nil, payloadPrefix("x-1"), seq, e.clk.micros(now), 0, false, 0)
	}
	s.handle(now, &mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: 9, MsgID: 100, Data: cmd(1)})
	if pa := one[*mqttsn.PubAck](t, l); pa.MsgID != 100 || pa.TopicID != 9 || pa.ReturnCode != mqttsn.Accepted {
		t.Fatalf("PUBACK %+v", pa)
	}
	s.handle(now, &mqttsn.Publish{DUP: true, QoS: mqttsn.QoS1, TopicID: 9, MsgID: 100, Data: cmd(1)})
	one[*mqttsn.PubAck](t, l)
	s.handle(now, &mqttsn.Register{TopicID: 12, MsgID: 101, TopicName: "c/x-1/extra"})
	if ra := one[*mqttsn.RegAck](t, l); ra.TopicID != 12 || ra.MsgID != 101 {
		t.Fatalf("REGACK %+v", ra)
	}
	s.handle(now, &mqttsn.Publish{QoS: mqttsn.QoS2, TopicID: 12, MsgID: 102, Data: cmd(2)})
	one[*mqttsn.PubRec](t, l)
	s.handle(now, &mqttsn.Publish{DUP: true, QoS: mqttsn.QoS2, TopicID: 12, MsgID: 102, Data: cmd(2)})
	one[*mqttsn.PubRec](t, l)
	s.handle(now, &mqttsn.PubRel{MsgID: 102})
	if pc := one[*mqttsn.PubComp](t, l); pc.MsgID != 102 {
		t.Fatalf("PUBCOMP %+v", pc)
	}
	s.handle(now, &mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: 77, MsgID: 103, Data: cmd(3)})
	if pa := one[*mqttsn.PubAck](t, l); pa.ReturnCode != mqttsn.RejectedInvalidTopicID {
		t.Fatalf("unknown topic id answered %+v", pa)
	}
	if got := s.down.received.Load(); got != 2 || s.down.set.duplicated != 1 {
		t.Fatalf("received %d, duplicated %d; want 2, 1 (the QoS 2 duplicate is not delivered twice)", got, s.down.set.duplicated)
	}
	s.handle(now, &mqttsn.PingResp{})
	if s.state != stAsleep || e.fleet.wakeUps.Load() != 1 {
		t.Fatalf("after PINGRESP: state %v wake-ups %d", s.state, e.fleet.wakeUps.Load())
	}
	s.shutdown(now)
	if d := one[*mqttsn.Disconnect](t, l); d.HasDuration {
		t.Fatalf("final DISCONNECT %+v", d)
	}
	s.handle(now, &mqttsn.Disconnect{})
	if !s.done() || e.fleet.connected.Load() != 0 {
		t.Fatalf("state %v connected %d", s.state, e.fleet.connected.Load())
	}
}

// Whatever valid message arrives in whatever state, the sensor neither
// panics nor schedules a deadline in the past that it would not act on.
func TestSensorRandomInput(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	msgs := func() mqttsn.Message {
		id := uint16(rng.IntN(4))
		switch rng.IntN(14) {
		case 0:
			return &mqttsn.ConnAck{ReturnCode: mqttsn.ReturnCode(rng.IntN(3))}
		case 1:
			return &mqttsn.RegAck{TopicID: id, MsgID: id, ReturnCode: mqttsn.ReturnCode(rng.IntN(2))}
		case 2:
			return &mqttsn.SubAck{TopicID: id, MsgID: id}
		case 3:
			return &mqttsn.PubAck{TopicID: id, MsgID: id, ReturnCode: mqttsn.ReturnCode(rng.IntN(4))}
		case 4:
			return &mqttsn.PubRec{MsgID: id}
		case 5:
			return &mqttsn.PubComp{MsgID: id}
		case 6:
			return &mqttsn.PubRel{MsgID: id}
		case 7:
			return &mqttsn.PingResp{}
		case 8:
			return &mqttsn.PingReq{}
		case 9:
			return &mqttsn.Disconnect{}
		case 10:
			return &mqttsn.Register{TopicID: id, MsgID: id, TopicName: "t"}
		case 11:
			return &mqttsn.WillTopicReq{}
		case 12:
			return &mqttsn.Publish{QoS: mqttsn.QoS(rng.IntN(3)), TopicID: id, MsgID: id, Data: []byte(`{"id":"x-1","seq":1,"ts":1}`)}
		}
		return &mqttsn.GwInfo{}
	}
	for _, qos := range []mqttsn.QoS{mqttsn.QoSMinus1, mqttsn.QoS0, mqttsn.QoS1, mqttsn.QoS2} {
		g := testGroup()
		g.Topic, g.QoS, g.Publishes, g.Interval, g.Window = "s/{id}", qos, true, 100*time.Millisecond, 3
		if qos == mqttsn.QoSMinus1 {
			g.Topic, g.TopicType = "ab", TopicShort
		} else {
			g.Sleep, g.Awake, g.CommandTopic = time.Second, 300*time.Millisecond, "c/{id}"
		}
		s, l, _ := newTestSensor(t, g)
		now := time.Now()
		s.start(now, now)
		for i := range 20000 {
			if i%3 == 0 {
				if d := s.nextDeadline(); !d.IsZero() && d.After(now) {
					now = d
				}
				s.tick(now)
			} else {
				s.handle(now, msgs())
			}
			if d := s.nextDeadline(); !d.IsZero() && d.Before(now) {
				s.tick(now)
				if d2 := s.nextDeadline(); !d2.IsZero() && d2.Before(now) {
					t.Fatalf("qos %v: state %v: deadline %v in the past after tick", qos, s.state, now.Sub(d2))
				}
			}
			l.take()
			if len(s.pubs) > g.Window {
				t.Fatalf("%d in flight, window %d", len(s.pubs), g.Window)
			}
		}
	}
}

// Garbage from the gateway's address is counted and dropped.
func TestReadLoopMalformed(t *testing.T) {
	gw, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer gw.Close()
	fc := new(fleetCounters)
	inbox := make(chan mqttsn.Message, 4)
	quit := make(chan struct{})
	l := &udpLink{gw: gw.LocalAddr().(*net.UDPAddr), inbox: inbox, quit: quit, fc: fc}
	if err := l.redial(); err != nil {
		t.Fatal(err)
	}
	defer func() { close(quit); l.close() }()
	if err := l.send([]byte{2, 0x16}); err != nil { // PINGREQ, so the gateway learns the address
		t.Fatal(err)
	}
	buf := make([]byte, 64)
	_, from, err := gw.ReadFromUDP(buf)
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{{}, {0}, {1}, {1, 0, 3, 0x0c}, {9, 0x0c, 0}, {2, 0xff}, {3, 0x05}, {7, 0x0c, 0x63, 0, 1, 0, 0}} {
		if _, err := gw.WriteToUDP(b, from); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := gw.WriteToUDP([]byte{3, 0x05, 0}, from); err != nil { // a valid CONNACK
		t.Fatal(err)
	}
	select {
	case m := <-inbox:
		if _, ok := m.(*mqttsn.ConnAck); !ok {
			t.Fatalf("got %T", m)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("no CONNACK")
	}
	if n := fc.malformed.Load(); n != 8 {
		t.Errorf("malformed = %d, want 8", n)
	}
}
