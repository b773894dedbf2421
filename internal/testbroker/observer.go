package testbroker

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

const (
	// dialTimeout bounds an Observer's TCP connect and MQTT CONNECT.
	dialTimeout = 5 * time.Second
	// ackTimeout bounds an Observer's wait for a SUBACK or a publish's ack.
	ackTimeout = 10 * time.Second
	// observerReceiveMaximum caps the QoS 1 and 2 messages the broker may
	// have in flight to an Observer. paho sizes a channel by it: its
	// default, 65535, costs about half a megabyte.
	observerReceiveMaximum = 1024
)

// Msg is a PUBLISH an Observer received.
type Msg struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
	Dup     bool
}

// String returns e.g. `t/a q1 retain "hello"`, for failure messages.
func (m Msg) String() string {
	s := fmt.Sprintf("%s q%d", m.Topic, m.QoS)
	if m.Retain {
		s += " retain"
	}
	if m.Dup {
		s += " dup"
	}
	return s + fmt.Sprintf(" %q", m.Payload)
}

// Observer is an MQTT 5 client with which a test watches and injects broker
// traffic. It queues every PUBLISH it receives, without bound, in arrival
// order; Next, Expect and ExpectNone take from that queue.
//
// Its methods fail the test with tb.Fatalf and must be called from the
// test's goroutine.
type Observer struct {
	tb       testing.TB
	clientID string
	client   *paho.Client

	mu     sync.Mutex
	queue  []Msg
	lost   error         // why the connection ended, if it ended
	notify chan struct{} // capacity 1: a message was queued or the connection ended
}

// NewObserver connects an MQTT 5 client with clientID and a clean start to
// the broker at url ("tcp://127.0.0.1:PORT"; the host must be a loopback
// address) and disconnects it in tb's cleanup.
func NewObserver(tb testing.TB, url string, clientID string) *Observer {
	tb.Helper()
	addr, err := brokerAddr(url)
	if err != nil {
		tb.Fatalf("testbroker: observer %s: %v", clientID, err)
	}
	conn, err := net.DialTimeout("tcp", addr, dialTimeout)
	if err != nil {
		tb.Fatalf("testbroker: observer %s: %v", clientID, err)
	}
	o := &Observer{tb: tb, clientID: clientID, notify: make(chan struct{}, 1)}
	o.client = paho.NewClient(paho.ClientConfig{
		Conn:              conn,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){o.received},
		OnClientError:     func(err error) { o.connectionLost(err) },
		OnServerDisconnect: func(d *paho.Disconnect) {
			o.connectionLost(fmt.Errorf("broker sent DISCONNECT, reason code 0x%02X", d.ReasonCode))
		},
		PacketTimeout: ackTimeout,
	})
	receiveMax := uint16(observerReceiveMaximum)
	ctx, cancel := context.WithTimeout(context.Background(), dialTimeout)
	defer cancel()
	ca, err := o.client.Connect(ctx, &paho.Connect{
		ClientID:   clientID,
		CleanStart: true,
		KeepAlive:  30,
		Properties: &paho.ConnectProperties{ReceiveMaximum: &receiveMax},
	})
	if err != nil {
		_ = conn.Close() // paho closes it too; this covers every path
		if ca != nil {
			tb.Fatalf("testbroker: observer %s: connect to %s: %v (CONNACK reason code 0x%02X)", clientID, url, err, ca.ReasonCode)
		}
		tb.Fatalf("testbroker: observer %s: connect to %s: %v", clientID, url, err)
	}
	tb.Cleanup(o.close)
	return o
}

// brokerAddr returns the host:port of a broker URL, checking that the host
// is a loopback address.
func brokerAddr(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", fmt.Errorf("broker URL: %w", err)
	}
	switch u.Scheme {
	case "tcp", "mqtt":
	default:
		return "", fmt.Errorf("broker URL %q: scheme %q, want tcp or mqtt", raw, u.Scheme)
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		return "", fmt.Errorf("broker URL %q has no port", raw)
	}
	if host != "localhost" {
		ip, err := netip.ParseAddr(host)
		if err != nil || !ip.IsLoopback() {
			return "", fmt.Errorf("broker URL %q: tests connect to loopback addresses only", raw)
		}
	}
	return net.JoinHostPort(host, port), nil
}

// received is paho's OnPublishReceived callback: it queues the message.
// paho acknowledges QoS 1 and 2 messages once it returns.
func (o *Observer) received(pr paho.PublishReceived) (bool, error) {
	p := pr.Packet
	m := Msg{
		Topic:   p.Topic,
		Payload: append([]byte(nil), p.Payload...),
		QoS:     p.QoS,
		Retain:  p.Retain,
		Dup:     p.Duplicate(),
	}
	o.mu.Lock()
	o.queue = append(o.queue, m)
	o.mu.Unlock()
	o.wake()
	return true, nil
}

// connectionLost records why the connection ended, for failure messages.
func (o *Observer) connectionLost(err error) {
	o.mu.Lock()
	if o.lost == nil {
		o.lost = err
	}
	o.mu.Unlock()
	o.wake()
}

// wake tells a waiting Next that the queue or the connection changed.
func (o *Observer) wake() {
	select {
	case o.notify <- struct{}{}:
	default:
	}
}

// close disconnects from the broker and waits for paho's goroutines. When
// the connection is already lost, paho's Disconnect fails to write and only
// waits.
func (o *Observer) close() {
	_ = o.client.Disconnect(&paho.Disconnect{ReasonCode: 0})
}

// Subscribe subscribes to filter with maximum QoS qos (0..2) and fails the
// test unless the broker grants it. The subscription has Retain As Published
// set, so that Msg.Retain shows the publisher's flag even for live messages.
func (o *Observer) Subscribe(filter string, qos byte) {
	o.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	sa, err := o.client.Subscribe(ctx, &paho.Subscribe{
		Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: qos, RetainAsPublished: true}},
	})
	if err != nil {
		if sa != nil && len(sa.Reasons) > 0 {
			o.tb.Fatalf("testbroker: observer %s: subscribe %q q%d: %v (SUBACK reason code 0x%02X)%s", o.clientID, filter, qos, err, sa.Reasons[0], o.lostSuffix())
		}
		o.tb.Fatalf("testbroker: observer %s: subscribe %q q%d: %v%s", o.clientID, filter, qos, err, o.lostSuffix())
	}
	if len(sa.Reasons) != 1 || sa.Reasons[0] >= 0x80 {
		o.tb.Fatalf("testbroker: observer %s: subscribe %q q%d: SUBACK reason codes % X", o.clientID, filter, qos, sa.Reasons)
	}
}

// Publish publishes payload to topic and waits until the broker has handed
// it to the subscribers it has now (see Settle). For QoS 1 and 2 it also
// checks the acknowledgement (PUBACK; PUBCOMP). It fails the test on an
// error or a reason code of 0x80 or more.
func (o *Observer) Publish(topic string, payload []byte, qos byte, retain bool) {
	o.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	pr, err := o.client.Publish(ctx, &paho.Publish{Topic: topic, Payload: payload, QoS: qos, Retain: retain})
	if err != nil {
		o.tb.Fatalf("testbroker: observer %s: publish to %q q%d: %v%s", o.clientID, topic, qos, err, o.lostSuffix())
	}
	if pr != nil && pr.ReasonCode >= 0x80 {
		o.tb.Fatalf("testbroker: observer %s: publish to %q q%d: reason code 0x%02X", o.clientID, topic, qos, pr.ReasonCode)
	}
	o.Settle()
}

// Settle waits until the broker has finished with every packet this
// observer sent before it, by a round trip (UNSUBSCRIBE of a filter never
// subscribed, UNSUBACK) that both brokers handle after those packets.
//
// A PUBACK alone does not say that: mochi acknowledges a QoS 1 PUBLISH before
// it hands the message to subscribers, so a client that subscribes right
// after the PUBACK can receive the message live as well as retained. Both
// brokers read a connection's packets one at a time, so the answer to the
// next packet comes after that hand-over.
//
// Any UNSUBACK will do, whatever its reason code: it is its place in the
// stream that counts. (The released mochi answered 0x91, identifier in use,
// when paho picked the identifier of a message mochi had in flight to this
// observer; third_party/mochi-mqtt-server keeps the directions apart.)
func (o *Observer) Settle() {
	o.tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), ackTimeout)
	defer cancel()
	if ua, err := o.client.Unsubscribe(ctx, &paho.Unsubscribe{Topics: []string{settleFilter}}); err != nil && ua == nil {
		o.tb.Fatalf("testbroker: observer %s: settle: %v%s", o.clientID, err, o.lostSuffix())
	}
}

// settleFilter is the filter Settle unsubscribes from; nothing subscribes to it.
const settleFilter = "testbroker/settle"

// Next returns the next received message, waiting at most timeout for one;
// false if none arrived.
func (o *Observer) Next(timeout time.Duration) (Msg, bool) {
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		if m, ok := o.pop(); ok {
			return m, true
		}
		select {
		case <-o.notify:
		case <-timer.C:
			// A message queued just before the timer fired still counts.
			return o.pop()
		}
	}
}

// pop takes the oldest message off the queue.
func (o *Observer) pop() (Msg, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.queue) == 0 {
		return Msg{}, false
	}
	m := o.queue[0]
	o.queue[0] = Msg{}
	o.queue = o.queue[1:]
	return m, true
}

// Expect returns the next received message and fails the test if none
// arrives within timeout.
func (o *Observer) Expect(timeout time.Duration) Msg {
	o.tb.Helper()
	m, ok := o.Next(timeout)
	if !ok {
		o.tb.Fatalf("testbroker: observer %s: no message within %v%s", o.clientID, timeout, o.lostSuffix())
	}
	return m
}

// ExpectNone fails the test if a message is queued or arrives within d.
func (o *Observer) ExpectNone(d time.Duration) {
	o.tb.Helper()
	if m, ok := o.Next(d); ok {
		o.tb.Fatalf("testbroker: observer %s: want no message within %v, got %v", o.clientID, d, m)
	}
}

// lostSuffix describes a lost connection for a failure message, or returns
// "" while connected.
func (o *Observer) lostSuffix() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.lost == nil {
		return ""
	}
	return fmt.Sprintf(" (connection lost: %v)", o.lost)
}
