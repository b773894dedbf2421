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

func (f *fakeLink) close() {}

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
	e := newEnv("run1")
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
	connectAccepted(t, s, l, now)
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
		s.down.next.Store(seq)
		return appendPayload(nil, payloadPrefix("x-1", e.cmdNonce), seq, e.clk.micros(now), 0, false, 0)
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
			return &mqttsn.Publish{QoS: mqttsn.QoS(rng.IntN(3)), TopicID: id, MsgID: id, Data: []byte(`{"id":"x-1","run":"run1","seq":1,"ts":1}`)}
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

// connectAccepted starts a sensor and accepts its CONNECT.
func connectAccepted(t *testing.T, s *sensor, l *fakeLink, now time.Time) {
	t.Helper()
	s.start(now, now)
	one[*mqttsn.Connect](t, l)
	s.handle(now, &mqttsn.ConnAck{})
}

// connectActive takes a sensor of testGroup from start to active: CONNECT,
// CONNACK, REGISTER (topic id 5) when it has a registered topic.
func connectActive(t *testing.T, s *sensor, l *fakeLink, now time.Time) {
	t.Helper()
	connectAccepted(t, s, l, now)
	if s.g.Topic != "" && s.g.TopicType == TopicRegistered {
		r := one[*mqttsn.Register](t, l)
		s.handle(now, &mqttsn.RegAck{TopicID: 5, MsgID: r.MsgID})
	}
	if s.state != stActive {
		t.Fatalf("state %v after set-up, want active", s.state)
	}
}

// The QoS 2 flow, and a reconnect in the middle of it, with a session the
// gateway keeps (clean_session = false):
//
//	sensor --PUBLISH q2--> gw, <--PUBREC--, --PUBREL-->   (connection lost)
//	sensor --CONNECT--> gw, <--CONNACK--, --REGISTER-->, <--REGACK--
//	sensor --PUBREL--> gw   (not PUBLISH DUP), <--PUBCOMP--: acknowledged
//
// and a QoS 2 command the sensor PUBREC'd before the reconnect, sent again
// by the gateway after it, is not delivered twice.
func TestSensorQoS2ReconnectKeepsSession(t *testing.T) {
	g := testGroup()
	g.CleanSession = false
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", mqttsn.QoS2, true, time.Hour
	g.CommandTopic, g.CommandQoS = "c/{id}", mqttsn.QoS2
	s, l, e := newTestSensor(t, g)
	now := time.Now()
	connectAccepted(t, s, l, now)
	r := one[*mqttsn.Register](t, l)
	s.handle(now, &mqttsn.RegAck{TopicID: 5, MsgID: r.MsgID})
	sub := one[*mqttsn.Subscribe](t, l)
	s.handle(now, &mqttsn.SubAck{QoS: 2, TopicID: 9, MsgID: sub.MsgID})
	s.nextPub = now // the reading is due
	s.tick(now)
	p := one[*mqttsn.Publish](t, l)
	if p.QoS != mqttsn.QoS2 || p.DUP {
		t.Fatalf("PUBLISH %+v", p)
	}

	// A command at QoS 2, PUBREC'd; its PUBREL has not come yet.
	s.down.next.Store(1)
	cmd := appendPayload(nil, payloadPrefix("x-1", e.cmdNonce), 1, e.clk.micros(now), 0, false, 0)
	s.handle(now, &mqttsn.Publish{QoS: mqttsn.QoS2, TopicID: 9, MsgID: 70, Data: cmd})
	one[*mqttsn.PubRec](t, l)

	s.handle(now, &mqttsn.PubRec{MsgID: p.MsgID})
	if rel := one[*mqttsn.PubRel](t, l); rel.MsgID != p.MsgID {
		t.Fatalf("PUBREL %+v for PUBLISH %d", rel, p.MsgID)
	}
	s.handle(now, &mqttsn.Disconnect{}) // the gateway ends the connection
	if s.state != stIdle || s.up.inFlight.Load() != 1 {
		t.Fatalf("state %v, in flight %d", s.state, s.up.inFlight.Load())
	}
	now = s.nextDeadline()
	s.tick(now)
	one[*mqttsn.Connect](t, l)
	s.handle(now, &mqttsn.ConnAck{})
	r = one[*mqttsn.Register](t, l)
	// The gateway sends the command again before the set-up is over.
	s.handle(now, &mqttsn.Publish{DUP: true, QoS: mqttsn.QoS2, TopicID: 9, MsgID: 70, Data: cmd})
	if pr := one[*mqttsn.PubRec](t, l); pr.MsgID != 70 {
		t.Fatalf("answer to the command sent again: %+v", pr)
	}
	s.handle(now, &mqttsn.RegAck{TopicID: 5, MsgID: r.MsgID})
	sub = one[*mqttsn.Subscribe](t, l)
	s.handle(now, &mqttsn.SubAck{QoS: 2, TopicID: 9, MsgID: sub.MsgID})
	rel := one[*mqttsn.PubRel](t, l)
	if rel.MsgID != p.MsgID {
		t.Fatalf("after the reconnect: PUBREL %+v, want MsgId %d", rel, p.MsgID)
	}
	s.handle(now, &mqttsn.PubComp{MsgID: p.MsgID})
	if s.up.acked.Load() != 1 || s.up.inFlight.Load() != 0 || s.up.failed.Load() != 0 {
		t.Errorf("acked %d in flight %d failed %d, want 1 0 0", s.up.acked.Load(), s.up.inFlight.Load(), s.up.failed.Load())
	}
	s.handle(now, &mqttsn.PubRel{MsgID: 70})
	one[*mqttsn.PubComp](t, l)
	if s.down.received.Load() != 1 || s.down.set.duplicated != 0 {
		t.Errorf("command received %d, duplicated %d; want 1, 0", s.down.received.Load(), s.down.set.duplicated)
	}
}

// With clean_session = true a publication past PUBREC is settled at the
// reconnect (the gateway forwarded it before its PUBREC), and one before
// PUBREC goes out again as PUBLISH with DUP and its MsgId.
func TestSensorQoS2ReconnectCleanSession(t *testing.T) {
	g := testGroup()
	g.Topic, g.QoS, g.Publishes, g.Interval, g.Window = "s/{id}", mqttsn.QoS2, true, time.Hour, 2
	s, l, _ := newTestSensor(t, g)
	now := time.Now()
	connectActive(t, s, l, now)
	s.nextPub = now // the reading is due
	s.tick(now)
	p1 := one[*mqttsn.Publish](t, l)
	s.nextPub = now // a second one at once
	s.tick(now)
	p2 := one[*mqttsn.Publish](t, l)
	s.handle(now, &mqttsn.PubRec{MsgID: p1.MsgID})
	one[*mqttsn.PubRel](t, l)
	s.handle(now, &mqttsn.Disconnect{})
	if s.up.acked.Load() != 1 || s.up.inFlight.Load() != 1 {
		t.Fatalf("after the connection was lost: acked %d in flight %d, want 1 (past PUBREC) and 1", s.up.acked.Load(), s.up.inFlight.Load())
	}
	now = s.nextDeadline()
	s.tick(now)
	one[*mqttsn.Connect](t, l)
	s.handle(now, &mqttsn.ConnAck{})
	r := one[*mqttsn.Register](t, l)
	s.handle(now, &mqttsn.RegAck{TopicID: 6, MsgID: r.MsgID})
	again := one[*mqttsn.Publish](t, l)
	if !again.DUP || again.MsgID != p2.MsgID || string(again.Data) != string(p2.Data) || again.TopicID != 6 {
		t.Fatalf("resent %+v, want the second PUBLISH with DUP on topic 6", again)
	}
	s.handle(now, &mqttsn.PubRec{MsgID: again.MsgID})
	one[*mqttsn.PubRel](t, l)
	s.handle(now, &mqttsn.PubComp{MsgID: again.MsgID})
	if s.up.acked.Load() != 2 || s.up.inFlight.Load() != 0 {
		t.Errorf("acked %d in flight %d", s.up.acked.Load(), s.up.inFlight.Load())
	}
}

// A refused REGISTER or SUBSCRIBE does not end the connection: congestion
// sends that request again after a back-off, "not supported" gives it up
// (a subscription: the sensor goes active without it). Each is counted.
func TestSensorRefusedRequests(t *testing.T) {
	g := testGroup()
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", mqttsn.QoS1, true, time.Hour
	g.CommandTopic = "c/{id}"
	g.KeepAlive = 0
	s, l, e := newTestSensor(t, g)
	now := time.Now()
	connectAccepted(t, s, l, now)
	r := one[*mqttsn.Register](t, l)
	s.handle(now, &mqttsn.RegAck{MsgID: r.MsgID, ReturnCode: mqttsn.RejectedCongestion})
	// The subscription goes on meanwhile; it is congested too.
	sub := one[*mqttsn.Subscribe](t, l)
	s.handle(now, &mqttsn.SubAck{MsgID: sub.MsgID, ReturnCode: mqttsn.RejectedCongestion})
	if ms := l.take(); len(ms) != 0 || s.state != stSetup {
		t.Fatalf("sent %v in state %v, want nothing before the back-off", ms, s.state)
	}
	if d := s.nextDeadline(); !d.Equal(now.Add(g.RetryInterval)) {
		t.Fatalf("next deadline in %v, want the back-off %v", d.Sub(now), g.RetryInterval)
	}
	now = now.Add(g.RetryInterval)
	s.tick(now)
	r2 := one[*mqttsn.Register](t, l)
	s.handle(now, &mqttsn.RegAck{TopicID: 5, MsgID: r2.MsgID})
	sub2 := one[*mqttsn.Subscribe](t, l)
	if sub2.TopicName != "c/x-1" {
		t.Fatalf("SUBSCRIBE %+v", sub2)
	}
	s.handle(now, &mqttsn.SubAck{MsgID: sub2.MsgID, ReturnCode: mqttsn.RejectedNotSupported})
	if s.state != stActive || s.down.ready.Load() {
		t.Fatalf("state %v, ready %v: want active without the subscription", s.state, s.down.ready.Load())
	}
	if s.up.rejected.Load() != 3 || e.fleet.reconnects.Load() != 0 || e.fleet.connects.Load() != 1 {
		t.Errorf("rejected %d reconnects %d connects %d, want 3 0 1", s.up.rejected.Load(), e.fleet.reconnects.Load(), e.fleet.connects.Load())
	}
	// It publishes, and never subscribes again on this connection.
	now = now.Add(time.Hour)
	s.tick(now)
	one[*mqttsn.Publish](t, l)

	// A REGISTER refused as not supported gives the topic up.
	g2 := testGroup()
	g2.Topic, g2.QoS, g2.Publishes, g2.Interval = "s/{id}", mqttsn.QoS0, true, time.Second
	s2, l2, _ := newTestSensor(t, g2)
	s2.start(now, now)
	one[*mqttsn.Connect](t, l2)
	s2.handle(now, &mqttsn.ConnAck{})
	r = one[*mqttsn.Register](t, l2)
	s2.handle(now, &mqttsn.RegAck{MsgID: r.MsgID, ReturnCode: mqttsn.RejectedNotSupported})
	if s2.state != stActive {
		t.Fatalf("state %v", s2.state)
	}
	for range 3 {
		now = now.Add(time.Second)
		s2.tick(now)
	}
	if ms := l2.take(); len(ms) != 0 {
		t.Errorf("sent %v with the topic given up", ms)
	}
}

// A CONNECT that cannot be encoded (empty ClientId) ends the sensor,
// counted, instead of leaving it waiting in connecting.
func TestSensorEncodeFailureEnds(t *testing.T) {
	g := testGroup()
	g.ClientID = ""
	s, l, e := newTestSensor(t, g)
	now := time.Now()
	s.start(now, now)
	if ms := l.take(); len(ms) != 0 {
		t.Fatalf("sent %v", ms)
	}
	if !s.done() || !s.nextDeadline().IsZero() {
		t.Fatalf("state %v, next deadline %v: want done", s.state, s.nextDeadline())
	}
	if e.fleet.encodeErrors.Load() != 1 || s.connectFailures != 1 || e.fleet.connectFailures.Load() != 1 {
		t.Errorf("encode errors %d, connect failures %d/%d", e.fleet.encodeErrors.Load(), s.connectFailures, e.fleet.connectFailures.Load())
	}
}

// Readings that fall due while the sensor is not connected are counted
// skipped, not sent late and not dropped silently.
func TestSensorSkippedReadings(t *testing.T) {
	g := testGroup()
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", mqttsn.QoS0, true, time.Second
	g.ReconnectMin, g.ReconnectMax = 10*time.Second, 10*time.Second
	s, l, _ := newTestSensor(t, g)
	now := time.Now()
	connectActive(t, s, l, now)
	now = s.nextDeadline()
	s.tick(now)
	one[*mqttsn.Publish](t, l)
	lostAt := now
	s.handle(now, &mqttsn.Disconnect{})
	now = s.nextDeadline() // 5..10 s later
	s.tick(now)
	one[*mqttsn.Connect](t, l)
	s.handle(now, &mqttsn.ConnAck{})
	r := one[*mqttsn.Register](t, l)
	s.handle(now, &mqttsn.RegAck{TopicID: 5, MsgID: r.MsgID})
	// Due at lostAt+1s, +2s, … up to now: one goes now, the rest were
	// skipped (the back-off is 5 to 10 s).
	want := uint64((now.Sub(lostAt) - time.Second) / time.Second)
	if want < 4 {
		t.Fatalf("back-off of %v only", now.Sub(lostAt))
	}
	if got := s.up.skipped.Load(); got != want {
		t.Errorf("skipped %d after %v disconnected, want %d", got, now.Sub(lostAt), want)
	}
	if p := one[*mqttsn.Publish](t, l); p.TopicID != 5 {
		t.Errorf("PUBLISH %+v", p)
	}
	// Disconnected at the end of the publishing time: the readings due
	// since then are skipped too.
	s.handle(now, &mqttsn.Disconnect{})
	before := s.up.skipped.Load()
	s.stopUplink(now.Add(3500 * time.Millisecond))
	if got := s.up.skipped.Load() - before; got != 3 {
		t.Errorf("skipped %d at the end, want 3 (due 1, 2 and 3 s after the last)", got)
	}
	if s.up.sent.Load() != 2 {
		t.Errorf("sent %d", s.up.sent.Load())
	}
}

// abandon (the run's hard stop) records the publications in flight as
// unfinished.
func TestSensorAbandon(t *testing.T) {
	g := testGroup()
	g.Topic, g.QoS, g.Publishes, g.Interval = "s/{id}", mqttsn.QoS1, true, time.Second
	s, l, e := newTestSensor(t, g)
	now := time.Now()
	connectActive(t, s, l, now)
	now = s.nextDeadline()
	s.tick(now)
	one[*mqttsn.Publish](t, l)
	s.abandon()
	if !s.done() || len(s.unfinished) != 1 || s.unfinished[0] != 1 || s.up.inFlight.Load() != 0 || e.fleet.connected.Load() != 0 {
		t.Errorf("done %v unfinished %v in flight %d connected %d", s.done(), s.unfinished, s.up.inFlight.Load(), e.fleet.connected.Load())
	}
}
