package upstream_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/broker"
	"github.com/sensorgate/mqttsn-gateway/gateway/upstream"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
	"github.com/sensorgate/mqttsn-gateway/internal/testlog"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Timing: wait bounds what must happen; quiet is how long nothing must.
const (
	wait  = 5 * time.Second
	quiet = 300 * time.Millisecond
)

// TestNewRejectsBadOptions: every bad URL or CA file is an error that
// names the problem.
func TestNewRejectsBadOptions(t *testing.T) {
	dir := t.TempDir()
	noPEM := filepath.Join(dir, "not-a-cert.pem")
	if err := os.WriteFile(noPEM, []byte("this is no certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(dir, "missing.pem")

	for _, tc := range []struct {
		name string
		opts upstream.Options
		want string // in the error
		is   error  // errors.Is the error, when not nil
	}{
		{"no port", upstream.Options{URL: "tcp://127.0.0.1"}, "has no port", nil},
		{"no scheme", upstream.Options{URL: "127.0.0.1:1883"}, `broker URL "127.0.0.1:1883"`, nil},
		{"unknown scheme", upstream.Options{URL: "ws://127.0.0.1:8080"}, `scheme "ws"`, nil},
		{"unparsable", upstream.Options{URL: "tcp://[::1:1883"}, "missing ']'", nil},
		{"empty", upstream.Options{}, "has no port", nil},
		{"missing CA file", upstream.Options{URL: "tls://127.0.0.1:8883", CAFile: missing}, "CA file", os.ErrNotExist},
		{"CA file without PEM", upstream.Options{URL: "ssl://127.0.0.1:8883", CAFile: noPEM}, "no PEM certificate", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up, err := upstream.New(tc.opts)
			if err == nil {
				t.Fatalf("New(%+v) = %v, nil; want an error", tc.opts, up)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New(%+v): %v; want it to say %q", tc.opts, err, tc.want)
			}
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("New(%+v): %v; want errors.Is %v", tc.opts, err, tc.is)
			}
		})
	}
}

func TestNewAcceptsSchemes(t *testing.T) {
	for _, url := range []string{"tcp://127.0.0.1:1883", "mqtt://localhost:1883", "tls://127.0.0.1:8883", "ssl://[::1]:8883"} {
		if _, err := upstream.New(upstream.Options{URL: url}); err != nil {
			t.Errorf("New(%q): %v", url, err)
		}
	}
}

// TestConnectUnreachable: nothing listens, so Connect fails with an error
// that is not a broker's refusal (the gateway answers congestion, A20).
func TestConnectUnreachable(t *testing.T) {
	url := "tcp://" + closedPort(t)
	up := newUpstream(t, upstream.Options{URL: url})
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := up.Connect(ctx, gateway.ConnectParams{ClientID: "c", CleanStart: true}, newRecorder(t))
	if err == nil {
		c.Disconnect(true)
		t.Fatalf("Connect to %s: no error", url)
	}
	var refused *gateway.RefusedError
	if errors.As(err, &refused) {
		t.Errorf("Connect to %s: %v is a RefusedError; want a network error", url, err)
	}
}

// TestPublish publishes at QoS 0, 1 and 2 through a connection with a Will:
// an observer receives each at its QoS, and no Will after Disconnect.
func TestPublish(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		obs.Subscribe("up/#", 2)
		up := newUpstream(t, upstream.Options{URL: url})
		c := connect(t, up, gateway.ConnectParams{
			ClientID: "pub", CleanStart: true,
			Will: &gateway.Will{Topic: "will/pub", Message: []byte("gone"), QoS: 1},
		}, newRecorder(t))

		for q := range byte(3) {
			m := gateway.Message{Topic: "up/q" + string('0'+q), Payload: []byte{'p', '0' + q}, QoS: q, Retain: q == 2}
			if err := publish(c, m); err != nil {
				t.Fatalf("Publish %+v: %v", m, err)
			}
			got := obs.Expect(wait)
			if got.Topic != m.Topic || string(got.Payload) != string(m.Payload) || got.QoS != q || got.Retain != m.Retain {
				t.Errorf("observer got %v; want %s q%d retain=%v %q", got, m.Topic, q, m.Retain, m.Payload)
			}
		}
		// A payload larger than the read and gathering buffers, and a
		// PUBLISH the broker must never see: a filter is not a topic name.
		big := gateway.Message{Topic: "up/big", Payload: make([]byte, 70000), QoS: 1}
		if err := publish(c, big); err != nil {
			t.Fatalf("Publish of %d octets: %v", len(big.Payload), err)
		}
		if got := obs.Expect(wait); got.Topic != big.Topic || len(got.Payload) != len(big.Payload) {
			t.Errorf("observer got %v; want %s with %d octets", got, big.Topic, len(big.Payload))
		}
		for _, topic := range []string{"up/+", "up/#", ""} {
			err := publish(c, gateway.Message{Topic: topic, Payload: []byte("x"), QoS: 1})
			expectRefused(t, err, mqttsn.RejectedNotSupported)
		}
		c.Disconnect(true)
		obs.ExpectNone(quiet)
	})
}

// TestPublishPipelined publishes QoS 1 and QoS 0 messages without waiting
// for acknowledgements, as the gateway does — TryPublish, and Publish when
// that would have to wait — far beyond the broker's Receive Maximum
// (mosquitto's is 20): the broker receives them in the order published,
// and every QoS 1 outcome is told once, accepted.
func TestPublishPipelined(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		obs.Subscribe("pipe/#", 1)
		up := newUpstream(t, upstream.Options{URL: url})
		c := connect(t, up, gateway.ConnectParams{ClientID: "pipe", CleanStart: true}, newRecorder(t))

		const n = 400
		outcomes := make(chan error, n)
		done := func(err error) { outcomes <- err }
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		qos1, waited := 0, 0
		for i := range n {
			m := gateway.Message{Topic: "pipe/x", Payload: []byte(fmt.Sprint(i)), QoS: byte(1 - i%3/2)}
			d := done
			if m.QoS == 0 {
				d = nil
			} else {
				qos1++
			}
			if c.TryPublish(m, d) {
				continue
			}
			waited++
			if err := c.Publish(ctx, m, d); err != nil {
				t.Fatalf("message %d: %v", i, err)
			}
		}
		for i := range qos1 {
			select {
			case err := <-outcomes:
				if err != nil {
					t.Fatalf("QoS 1 outcome %d: %v", i, err)
				}
			case <-ctx.Done():
				t.Fatalf("%d of %d QoS 1 outcomes told", i, qos1)
			}
		}
		for i := range n {
			if got := obs.Expect(wait); string(got.Payload) != fmt.Sprint(i) {
				t.Fatalf("message %d: the broker received %q", i, got.Payload)
			}
		}
		select {
		case err := <-outcomes:
			t.Errorf("an outcome told twice: %v", err)
		default:
		}
		t.Logf("%d messages (%d QoS 1): %d had to wait", n, qos1, waited)
	})
}

// TestSubscribeAndDeliver subscribes at each QoS, gets the granted QoS, and
// receives retained and live messages through Deliver with their fields.
func TestSubscribeAndDeliver(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		obs.Publish("down/retained", []byte("kept"), 1, true)
		up := newUpstream(t, upstream.Options{URL: url})
		h := newRecorder(t)
		c := connect(t, up, gateway.ConnectParams{ClientID: "sub", CleanStart: true}, h)

		for _, s := range []struct {
			filter string
			qos    byte
		}{{"down/q0", 0}, {"down/q1", 1}, {"down/q2", 2}} {
			granted, err := subscribe(c, s.filter, s.qos)
			if err != nil || granted != s.qos {
				t.Fatalf("Subscribe(%q, %d) = %d, %v; want %d, nil", s.filter, s.qos, granted, err, s.qos)
			}
		}

		// A retained message comes on subscribe, with its retain flag.
		if _, err := subscribe(c, "down/retained", 1); err != nil {
			t.Fatal(err)
		}
		d := h.expectDelivery(wait)
		checkDelivery(t, d, "down/retained", "kept", 1, true)
		d.Ack()

		for q := range byte(3) {
			topic, payload := "down/q"+string('0'+q), "m"+string('0'+q)
			obs.Publish(topic, []byte(payload), 2, false) // the subscription's QoS caps it
			d := h.expectDelivery(wait)
			checkDelivery(t, d, topic, payload, q, false)
			if q == 0 {
				if d.Ack != nil {
					t.Errorf("QoS 0 delivery has an Ack")
				}
				continue
			}
			if d.Ack == nil {
				t.Fatalf("QoS %d delivery has no Ack", d.QoS)
			}
			d.Ack()
		}

		// A message published at QoS 1 to a QoS 2 subscription stays at QoS 1.
		obs.Publish("down/q2", []byte("low"), 1, false)
		d = h.expectDelivery(wait)
		checkDelivery(t, d, "down/q2", "low", 1, false)
		d.Ack()

		if err := unsubscribe(c, "down/q1"); err != nil {
			t.Fatalf("Unsubscribe: %v", err)
		}
		obs.Publish("down/q1", []byte("after unsubscribe"), 1, false)
		obs.Publish("down/q0", []byte("marker"), 0, false)
		checkDelivery(t, h.expectDelivery(wait), "down/q0", "marker", 0, false)

		c.Disconnect(true)
		h.expectNoLoss(0)
	})
}

// TestAckIsEndToEnd shows that the broker keeps a QoS 1 or 2 message until
// the Delivery's Ack: without it the message comes again on the next
// connection of the same session; after it, it does not.
func TestAckIsEndToEnd(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		up := newUpstream(t, upstream.Options{URL: url})
		params := gateway.ConnectParams{ClientID: "acker", CleanStart: false, SessionExpiry: time.Minute}

		// gw --CONNECT clean=0--> broker; gw --SUBSCRIBE r/#--> broker
		h1 := newRecorder(t)
		c := connect(t, up, params, h1)
		if _, err := subscribe(c, "r/#", 2); err != nil {
			t.Fatal(err)
		}
		// observer --PUBLISH q1, q2--> broker --PUBLISH--> gw; no PUBACK, no PUBREC
		obs.Publish("r/one", []byte("m1"), 1, false)
		obs.Publish("r/two", []byte("m2"), 2, false)
		checkDelivery(t, h1.expectDelivery(wait), "r/one", "m1", 1, false)
		checkDelivery(t, h1.expectDelivery(wait), "r/two", "m2", 2, false)
		// gw --TCP FIN--> broker (Drop)
		c.Drop()

		// gw --CONNECT clean=0--> broker --PUBLISH dup (both again)--> gw
		// mochi v2.7.9 resends in an order of its own: it sorts the
		// messages by the second they were created in, so those of the
		// same second come in any order.
		h2 := newRecorder(t)
		c = connect(t, up, params, h2)
		again := map[string]*gateway.Delivery{}
		for range 2 {
			d := h2.expectDelivery(wait)
			again[d.Topic] = d
		}
		checkDelivery(t, again["r/one"], "r/one", "m1", 1, false)
		checkDelivery(t, again["r/two"], "r/two", "m2", 2, false)
		// gw --PUBACK, PUBREC--> broker; gw --SUBSCRIBE--> broker --SUBACK--> gw
		for _, d := range again {
			d.Ack()
		}
		// The SUBACK shows that the broker has read the acks. Without it
		// the next CONNECT can overtake them: mosquitto then takes the
		// session over, closes this connection with the acks unread, and
		// redelivers.
		if _, err := subscribe(c, "sync", 0); err != nil {
			t.Fatal(err)
		}
		// gw --DISCONNECT--> broker
		c.Disconnect(false)

		// gw --CONNECT clean=0--> broker: nothing is redelivered, and the
		// session (its subscription) is still there.
		h3 := newRecorder(t)
		c = connect(t, up, params, h3)
		// Again a SUBACK first, so that the broker has finished resuming
		// the session: under load, a message published right after the
		// CONNACK once reached the embedded broker's client twice (QoS 1
		// allows it; what this test checks is that acknowledged messages
		// are not redelivered).
		if _, err := subscribe(c, "sync", 0); err != nil {
			t.Fatal(err)
		}
		obs.Publish("r/three", []byte("m3"), 1, false)
		d := h3.expectDelivery(wait)
		checkDelivery(t, d, "r/three", "m3", 1, false)
		d.Ack()
		h3.expectNoDelivery(quiet)
		c.Disconnect(true)
		for _, h := range []*recorder{h1, h2, h3} {
			h.expectNoLoss(0)
		}
	})
}

// TestPacketIDsPerDirection: the packet identifiers of the gateway's
// requests and those of the broker's deliveries are apart (MQTT 5 §2.2.1):
// a SUBSCRIBE or PUBLISH whose identifier equals that of a delivery not yet
// acknowledged is a new request, and the delivery stays the broker's to
// send again. The released embedded broker kept one identifier space for
// both directions: it refused the SUBSCRIBE (0x91, identifier in use) and
// the PUBLISH erased its own record of the delivery, which was then never
// sent again.
func TestPacketIDsPerDirection(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		up := newUpstream(t, upstream.Options{URL: url})
		params := gateway.ConnectParams{ClientID: "ids", CleanStart: true, SessionExpiry: time.Minute}

		// Each side numbers its packets from 1 on a new connection: the
		// gateway's SUBSCRIBE takes 1, the broker's four deliveries 1 to 4,
		// held unacknowledged.
		h1 := newRecorder(t)
		c := connect(t, up, params, h1)
		if _, err := subscribe(c, "ids/#", 1); err != nil {
			t.Fatal(err)
		}
		msgs := []string{"m1", "m2", "m3", "m4"}
		for _, p := range msgs {
			obs.Publish("ids/"+p, []byte(p), 1, false)
			checkDelivery(t, h1.expectDelivery(wait), "ids/"+p, p, 1, false)
		}
		// The gateway's identifiers 2, 3 and 4.
		if granted, err := subscribe(c, "other", 1); err != nil || granted != 1 {
			t.Errorf("SUBSCRIBE with a delivery's identifier: granted %d, %v; want 1, nil", granted, err)
		}
		for _, q := range []byte{1, 2} {
			if err := publish(c, gateway.Message{Topic: "up", Payload: []byte("u"), QoS: q}); err != nil {
				t.Errorf("QoS %d PUBLISH with a delivery's identifier: %v", q, err)
			}
		}
		c.Drop()

		// The four deliveries, none acknowledged, come again.
		params.CleanStart = false
		h2 := newRecorder(t)
		c = connect(t, up, params, h2)
		again := map[string]*gateway.Delivery{}
		for range msgs {
			d, ok := h2.nextDelivery(wait)
			if !ok {
				break
			}
			again[string(d.Payload)] = d
		}
		for _, p := range msgs {
			if d := again[p]; d == nil {
				t.Errorf("%s was not delivered again (got %d)", p, len(again))
			} else {
				checkDelivery(t, d, "ids/"+p, p, 1, false)
				d.Ack()
			}
		}
		c.Disconnect(true)
	})
}

// TestWill: Drop makes the broker publish the Will; Disconnect does not.
func TestWill(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		obs.Subscribe("will/#", 2)
		up := newUpstream(t, upstream.Options{URL: url})
		will := func(id string) gateway.ConnectParams {
			return gateway.ConnectParams{
				ClientID: id, CleanStart: true, SessionExpiry: time.Minute,
				Will: &gateway.Will{Topic: "will/" + id, Message: []byte(id + " lost"), QoS: 1},
			}
		}

		// Drop: the broker publishes the Will.
		h := newRecorder(t)
		connect(t, up, will("dropped"), h).Drop()
		m := obs.Expect(wait)
		if m.Topic != "will/dropped" || string(m.Payload) != "dropped lost" || m.QoS != 1 || m.Retain {
			t.Errorf("Will after Drop: got %v, want will/dropped q1 %q", m, "dropped lost")
		}

		// Disconnect, keeping the session or not: the broker discards the Will.
		connect(t, up, will("kept"), h).Disconnect(false)
		connect(t, up, will("ended"), h).Disconnect(true)
		obs.ExpectNone(500 * time.Millisecond)
		h.expectNoLoss(0)
	})
}

// TestLost stops the broker under three connections: the one the gateway
// still uses is lost, once; the ones it disconnected or dropped itself are
// not reported.
func TestLost(t *testing.T) {
	forEachStoppable(t, func(t *testing.T, url string, stop func()) {
		up := newUpstream(t, upstream.Options{URL: url})
		live, disconnected, dropped := newRecorder(t), newRecorder(t), newRecorder(t)
		connect(t, up, gateway.ConnectParams{ClientID: "live", CleanStart: true}, live)
		connect(t, up, gateway.ConnectParams{ClientID: "disconnected", CleanStart: true}, disconnected).Disconnect(false)
		connect(t, up, gateway.ConnectParams{ClientID: "dropped", CleanStart: true}, dropped).Drop()

		stop()
		t.Logf("Lost(%v)", live.expectLoss(wait))
		live.expectNoLoss(quiet)
		disconnected.expectNoLoss(0)
		dropped.expectNoLoss(0)
	})
}

// TestLostWhileDeliveryWaits: a handler's Deliver may block until the
// session takes the message (it stops waiting once told the connection is
// lost). The loss must still be reported while Deliver waits.
func TestLostWhileDeliveryWaits(t *testing.T) {
	forEachStoppable(t, func(t *testing.T, url string, stop func()) {
		obs := testbroker.NewObserver(t, url, "observer")
		up := newUpstream(t, upstream.Options{URL: url})
		h := newRecorder(t)
		h.holdUntilLost = true
		c := connect(t, up, gateway.ConnectParams{ClientID: "slow", CleanStart: true}, h)
		if _, err := subscribe(c, "slow/#", 1); err != nil {
			t.Fatal(err)
		}
		obs.Publish("slow/a", []byte("held"), 1, false)
		checkDelivery(t, h.expectDelivery(wait), "slow/a", "held", 1, false) // Deliver now waits

		stop()
		t.Logf("Lost(%v)", h.expectLoss(wait))
		h.expectNoLoss(quiet)
	})
}

// forEachStoppable runs fn against an embedded broker and a mosquitto that
// stop stops (Close; SIGTERM).
func forEachStoppable(t *testing.T, fn func(t *testing.T, url string, stop func())) {
	t.Run("embedded", func(t *testing.T) {
		b, url := startEmbedded(t)
		fn(t, url, func() {
			if err := b.Close(); err != nil {
				t.Error(err)
			}
		})
	})
	t.Run("mosquitto", func(t *testing.T) {
		m := startMosquitto(t, func(p []int) string { return listenerConf(p[0]) + "allow_anonymous true\n" }, 1)
		fn(t, m.url("tcp", 0), m.stop)
	})
}

// TestTakeoverIsLost: a second connection with the same ClientID takes the
// session over; the broker disconnects the first, which is a loss.
func TestTakeoverIsLost(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		up := newUpstream(t, upstream.Options{URL: url})
		first, second := newRecorder(t), newRecorder(t)
		connect(t, up, gateway.ConnectParams{ClientID: "twin", CleanStart: true}, first)
		c := connect(t, up, gateway.ConnectParams{ClientID: "twin", CleanStart: true}, second)
		t.Logf("Lost(%v)", first.expectLoss(wait))
		c.Disconnect(true)
		second.expectNoLoss(quiet)
	})
}

// TestClientIDPrefix connects the same ClientID through two prefixes: the
// broker sees two clients, so neither takes the other's session over (which
// TestTakeoverIsLost shows it would), and both receive.
func TestClientIDPrefix(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer")
		var hs []*recorder
		var cs []gateway.Conn
		for _, prefix := range []string{"gw1/", "gw2/"} {
			up := newUpstream(t, upstream.Options{URL: url, ClientIDPrefix: prefix})
			h := newRecorder(t)
			c := connect(t, up, gateway.ConnectParams{ClientID: "dev", CleanStart: true}, h)
			if _, err := subscribe(c, "all", 0); err != nil {
				t.Fatalf("prefix %q: %v", prefix, err)
			}
			hs, cs = append(hs, h), append(cs, c)
		}
		obs.Publish("all", []byte("both"), 0, false)
		for i, h := range hs {
			checkDelivery(t, h.expectDelivery(wait), "all", "both", 0, false)
			h.expectNoLoss(0)
			cs[i].Disconnect(true)
		}

		// The prefix is part of the ClientID the broker sees: prefix+ClientID
		// taken as a plain ClientID takes over the prefixed connection.
		up := newUpstream(t, upstream.Options{URL: url, ClientIDPrefix: "p-"})
		h := newRecorder(t)
		connect(t, up, gateway.ConnectParams{ClientID: "dev", CleanStart: true}, h)
		plain := newUpstream(t, upstream.Options{URL: url})
		c := connect(t, plain, gateway.ConnectParams{ClientID: "p-dev", CleanStart: true}, newRecorder(t))
		h.expectLoss(wait)
		c.Disconnect(true)
	})
}

// TestTLS connects through a TLS listener of mosquitto with a certificate
// signed by a CA of the test's own.
func TestTLS(t *testing.T) {
	certs := writeCerts(t, t.TempDir())
	m := startMosquitto(t, func(p []int) string {
		return listenerConf(p[0]) +
			"cafile " + certs.ca + "\ncertfile " + certs.cert + "\nkeyfile " + certs.key + "\n" +
			listenerConf(p[1]) + "allow_anonymous true\n"
	}, 2)
	tlsURL, plainURL := m.url("tls", 0), m.url("tcp", 1)

	t.Run("trusted CA", func(t *testing.T) {
		obs := testbroker.NewObserver(t, plainURL, "observer")
		obs.Subscribe("secure/#", 1)
		up := newUpstream(t, upstream.Options{URL: tlsURL, CAFile: certs.ca})
		h := newRecorder(t)
		c := connect(t, up, gateway.ConnectParams{ClientID: "tls", CleanStart: true}, h)
		if err := publish(c, gateway.Message{Topic: "secure/a", Payload: []byte("sealed"), QoS: 1}); err != nil {
			t.Fatal(err)
		}
		if got := obs.Expect(wait); got.Topic != "secure/a" || string(got.Payload) != "sealed" || got.QoS != 1 {
			t.Errorf("observer got %v, want secure/a q1 \"sealed\"", got)
		}
		if _, err := subscribe(c, "secure/down", 1); err != nil {
			t.Fatal(err)
		}
		obs.Publish("secure/down", []byte("back"), 1, false)
		d := h.expectDelivery(wait)
		checkDelivery(t, d, "secure/down", "back", 1, false)
		d.Ack()
		c.Disconnect(true)
		h.expectNoLoss(0)
	})

	t.Run("system roots", func(t *testing.T) {
		up := newUpstream(t, upstream.Options{URL: tlsURL})
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, err := up.Connect(ctx, gateway.ConnectParams{ClientID: "untrusting", CleanStart: true}, newRecorder(t))
		if err == nil {
			c.Disconnect(true)
			t.Fatal("Connect trusting only the system's roots: no error")
		}
		var refused *gateway.RefusedError
		if errors.As(err, &refused) {
			t.Errorf("Connect: %v is a RefusedError; want a handshake error", err)
		}
		if !errors.As(err, new(x509.UnknownAuthorityError)) {
			t.Errorf("Connect: %v; want x509.UnknownAuthorityError", err)
		}
	})
}

// TestCredentialsAndACLFile runs mosquitto with a password file and an ACL
// file that lets alice use ok/# only, and bob everything.
func TestCredentialsAndACLFile(t *testing.T) {
	dir := t.TempDir()
	passwd := filepath.Join(dir, "passwd")
	mosquittoPasswd(t, passwd, "alice", "s3cret")
	mosquittoPasswd(t, passwd, "bob", "b0b")
	acl := filepath.Join(dir, "acl")
	if err := os.WriteFile(acl, []byte("user alice\ntopic readwrite ok/#\n\nuser bob\ntopic readwrite #\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := startMosquitto(t, func(p []int) string {
		return listenerConf(p[0]) + "allow_anonymous false\npassword_file " + passwd + "\nacl_file " + acl + "\n"
	}, 1)
	url := m.url("tcp", 0)

	// mosquitto 2.0.11 refuses all three with CONNACK 0x87 (not
	// authorized), not 0x86 (bad user name or password).
	for _, tc := range []struct{ name, user, password string }{
		{"wrong password", "alice", "guess"},
		{"unknown user", "mallory", "s3cret"},
		{"anonymous", "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			up := newUpstream(t, upstream.Options{URL: url, Username: tc.user, Password: tc.password})
			ctx, cancel := context.WithTimeout(context.Background(), wait)
			defer cancel()
			c, err := up.Connect(ctx, gateway.ConnectParams{ClientID: "c", CleanStart: true}, newRecorder(t))
			if err == nil {
				c.Disconnect(true)
				t.Fatal("Connect: no error")
			}
			t.Logf("Connect: %v", err)
			expectRefused(t, err, mqttsn.RejectedNotSupported)
		})
	}

	t.Run("alice", func(t *testing.T) {
		up := newUpstream(t, upstream.Options{URL: url, Username: "alice", Password: "s3cret"})
		h := newRecorder(t)
		c := connect(t, up, gateway.ConnectParams{ClientID: "alice", CleanStart: true}, h)

		granted, err := subscribe(c, "ok/#", 1)
		if err != nil || granted != 1 {
			t.Fatalf("Subscribe(ok/#, 1) = %d, %v; want 1, nil", granted, err)
		}
		for q := range byte(3) {
			if err := publish(c, gateway.Message{Topic: "ok/a", Payload: []byte{'0' + q}, QoS: q}); err != nil {
				t.Fatalf("Publish ok/a q%d: %v", q, err)
			}
			d := h.expectDelivery(wait)
			checkDelivery(t, d, "ok/a", string([]byte{'0' + q}), min(q, 1), false)
			if d.Ack != nil {
				d.Ack()
			}
		}

		// mosquitto 2.0.11 refuses a denied publish with PUBACK 0x87 (QoS
		// 1) or PUBREC 0x87 (QoS 2), and drops a QoS 0 one silently.
		for q := byte(1); q <= 2; q++ {
			err := publish(c, gateway.Message{Topic: "denied/a", Payload: []byte("no"), QoS: q})
			expectRefused(t, err, mqttsn.RejectedNotSupported)
			if err != nil && !strings.Contains(err.Error(), "0x87") {
				t.Errorf("Publish denied/a q%d: %v; want reason code 0x87", q, err)
			}
		}
		if err := publish(c, gateway.Message{Topic: "denied/a", Payload: []byte("no"), QoS: 0}); err != nil {
			t.Errorf("Publish denied/a q0: %v; want nil (QoS 0 has no answer)", err)
		}

		// mosquitto's ACL file does not restrict subscriptions (its
		// default ACL check allows every SUBSCRIBE: "FIXME - implement
		// ACL subscription strings"): a denied filter is granted, and
		// the messages the ACL forbids alice to read are not delivered.
		granted, err = subscribe(c, "denied/#", 1)
		if err != nil || granted != 1 {
			t.Errorf("Subscribe(denied/#, 1) = %d, %v; want mosquitto 2.0's 1, nil", granted, err)
		}
		bob := login(t, url, "bob", "b0b")
		if err := publish(bob, gateway.Message{Topic: "denied/b", Payload: []byte("hidden"), QoS: 1}); err != nil {
			t.Fatalf("bob: Publish denied/b: %v", err)
		}
		if err := publish(bob, gateway.Message{Topic: "ok/b", Payload: []byte("still"), QoS: 1}); err != nil {
			t.Fatalf("bob: Publish ok/b: %v", err)
		}
		d := h.expectDelivery(wait) // the refusals left the connection up
		checkDelivery(t, d, "ok/b", "still", 1, false)
		d.Ack()
		h.expectNoDelivery(quiet)
		c.Disconnect(true)
		h.expectNoLoss(0)
	})
}

// TestDynsecRefusals runs mosquitto with its dynamic security plugin,
// which, unlike the ACL file, refuses a denied subscription: SUBACK 0x87.
func TestDynsecRefusals(t *testing.T) {
	plugin := findDynsecPlugin(t)
	conf := writeDynsecConfig(t, t.TempDir(), "carol", "c4r0l", []dynsecACL{
		{Type: "publishClientSend", Topic: "ok/#", Allow: true},
		{Type: "publishClientReceive", Topic: "#", Allow: true},
		{Type: "subscribePattern", Topic: "ok/#", Allow: true},
	})
	m := startMosquitto(t, func(p []int) string {
		return listenerConf(p[0]) + "allow_anonymous false\nplugin " + plugin + "\nplugin_opt_config_file " + conf + "\n"
	}, 1)
	url := m.url("tcp", 0)

	t.Run("wrong password", func(t *testing.T) {
		up := newUpstream(t, upstream.Options{URL: url, Username: "carol", Password: "guess"})
		ctx, cancel := context.WithTimeout(context.Background(), wait)
		defer cancel()
		c, err := up.Connect(ctx, gateway.ConnectParams{ClientID: "c", CleanStart: true}, newRecorder(t))
		if err == nil {
			c.Disconnect(true)
			t.Fatal("Connect: no error")
		}
		t.Logf("Connect: %v", err)
		expectRefused(t, err, mqttsn.RejectedNotSupported)
	})

	t.Run("carol", func(t *testing.T) {
		up := newUpstream(t, upstream.Options{URL: url, Username: "carol", Password: "c4r0l"})
		h := newRecorder(t)
		c := connect(t, up, gateway.ConnectParams{ClientID: "carol", CleanStart: true}, h)
		if granted, err := subscribe(c, "ok/#", 2); err != nil || granted != 2 {
			t.Fatalf("Subscribe(ok/#, 2) = %d, %v; want 2, nil", granted, err)
		}
		granted, err := subscribe(c, "denied/#", 1)
		t.Logf("Subscribe(denied/#): %d, %v", granted, err)
		expectRefused(t, err, mqttsn.RejectedNotSupported)
		if err != nil && !strings.Contains(err.Error(), "SUBACK 0x87") {
			t.Errorf("Subscribe(denied/#): %v; want SUBACK 0x87", err)
		}
		for q := byte(1); q <= 2; q++ {
			err := publish(c, gateway.Message{Topic: "denied/a", Payload: []byte("no"), QoS: q})
			t.Logf("Publish denied/a q%d: %v", q, err)
			expectRefused(t, err, mqttsn.RejectedNotSupported)
			if err != nil && !strings.Contains(err.Error(), "0x87") {
				t.Errorf("Publish denied/a q%d: %v; want reason code 0x87", q, err)
			}
		}
		if err := publish(c, gateway.Message{Topic: "ok/a", Payload: []byte("fine"), QoS: 2}); err != nil {
			t.Fatalf("Publish ok/a: %v", err)
		}
		d := h.expectDelivery(wait)
		checkDelivery(t, d, "ok/a", "fine", 2, false)
		d.Ack()
		c.Disconnect(true)
		h.expectNoLoss(0)
	})
}

// login connects a second client with credentials, for traffic
// an Observer (anonymous) cannot send.
func login(t *testing.T, url, user, password string) gateway.Conn {
	t.Helper()
	up := newUpstream(t, upstream.Options{URL: url, Username: user, Password: password})
	return connect(t, up, gateway.ConnectParams{ClientID: user, CleanStart: true}, newRecorder(t))
}

// expectRefused checks that err is a *gateway.RefusedError with code.
func expectRefused(t *testing.T, err error, code mqttsn.ReturnCode) {
	t.Helper()
	var refused *gateway.RefusedError
	if !errors.As(err, &refused) {
		t.Errorf("got %v (%T); want a *gateway.RefusedError with code %v", err, err, code)
		return
	}
	if refused.Code != code || !errors.Is(err, code) {
		t.Errorf("got %v, code 0x%02x; want code 0x%02x (%v)", err, byte(refused.Code), byte(code), code)
	}
}

// newUpstream is upstream.New that fails the test on an error. It logs to
// the test's log with -v.
func newUpstream(t *testing.T, opts upstream.Options) *upstream.Upstream {
	t.Helper()
	opts.Log = zerolog.Nop()
	if testing.Verbose() {
		opts.Log = testlog.New(t, zerolog.DebugLevel)
	}
	up, err := upstream.New(opts)
	if err != nil {
		t.Fatalf("upstream.New: %v", err)
	}
	return up
}

// connect connects or fails the test, and disconnects in t's cleanup (a
// no-op for a connection that already ended).
func connect(t *testing.T, up *upstream.Upstream, p gateway.ConnectParams, h gateway.ConnHandler) gateway.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	c, err := up.Connect(ctx, p, h)
	if err != nil {
		t.Fatalf("Connect %q: %v", p.ClientID, err)
	}
	t.Cleanup(func() {
		if r, ok := h.(*recorder); ok {
			r.release() // a Deliver that waits would hold up Disconnect
		}
		c.Disconnect(true)
	})
	return c
}

// publish publishes m and, for QoS 1 and 2, waits for the outcome.
func publish(c gateway.Conn, m gateway.Message) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	outcome := make(chan error, 1)
	if err := c.Publish(ctx, m, func(err error) { outcome <- err }); err != nil || m.QoS == 0 {
		return err
	}
	select {
	case err := <-outcome:
		return err
	case <-ctx.Done():
		return fmt.Errorf("no outcome: %w", ctx.Err())
	}
}

func subscribe(c gateway.Conn, filter string, qos byte) (byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return c.Subscribe(ctx, filter, qos)
}

func unsubscribe(c gateway.Conn, filter string) error {
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	return c.Unsubscribe(ctx, filter)
}

// startEmbedded starts an embedded broker that the test may close itself.
func startEmbedded(t *testing.T) (*broker.Broker, string) {
	t.Helper()
	b, err := broker.Start("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b, "tcp://" + b.Addr().String()
}

// checkDelivery checks a delivery's message and that QoS 1 and 2 come with
// an Ack.
func checkDelivery(t *testing.T, d *gateway.Delivery, topic, payload string, qos byte, retain bool) {
	t.Helper()
	if d == nil {
		t.Fatalf("no delivery of %s", topic)
	}
	if d.Topic != topic || string(d.Payload) != payload || d.QoS != qos || d.Retain != retain {
		t.Errorf("delivered %s q%d retain=%v %q; want %s q%d retain=%v %q",
			d.Topic, d.QoS, d.Retain, d.Payload, topic, qos, retain, payload)
	}
	if (d.Ack != nil) != (d.QoS > 0) {
		t.Errorf("delivery %s q%d: Ack set = %v", d.Topic, d.QoS, d.Ack != nil)
	}
}

// recorder is a gateway.ConnHandler that queues what it is given.
type recorder struct {
	t          *testing.T
	deliveries chan *gateway.Delivery
	losses     chan error
	// holdUntilLost makes Deliver of QoS 1 and 2 wait until Lost is
	// called, like a session that is not taking messages.
	holdUntilLost bool
	lost          chan struct{} // closed by the first Lost
	lostOnce      sync.Once
	done          chan struct{} // closed by release
	doneOnce      sync.Once
}

func newRecorder(t *testing.T) *recorder {
	r := &recorder{
		t:          t,
		deliveries: make(chan *gateway.Delivery, 64),
		losses:     make(chan error, 8),
		lost:       make(chan struct{}),
		done:       make(chan struct{}),
	}
	t.Cleanup(r.release)
	return r
}

// release makes Deliver return at once from now on.
func (r *recorder) release() { r.doneOnce.Do(func() { close(r.done) }) }

// Deliver queues d; with holdUntilLost it then waits for Lost.
func (r *recorder) Deliver(d *gateway.Delivery) {
	select {
	case r.deliveries <- d:
	case <-r.done:
		return
	}
	if r.holdUntilLost && d.QoS > 0 {
		select {
		case <-r.lost:
		case <-r.done:
		}
	}
}

// Lost queues err.
func (r *recorder) Lost(err error) {
	r.lostOnce.Do(func() { close(r.lost) })
	select {
	case r.losses <- err:
	default: // more than cap(losses) calls: expectNoLoss fails anyway
	}
}

// expectDelivery returns the next delivery, failing the test if none comes
// within timeout.
func (r *recorder) expectDelivery(timeout time.Duration) *gateway.Delivery {
	r.t.Helper()
	d, ok := r.nextDelivery(timeout)
	if !ok {
		r.t.Fatalf("no delivery within %v", timeout)
	}
	return d
}

// nextDelivery returns the next delivery, or false if none comes within
// timeout.
func (r *recorder) nextDelivery(timeout time.Duration) (*gateway.Delivery, bool) {
	select {
	case d := <-r.deliveries:
		return d, true
	case <-time.After(timeout):
		return nil, false
	}
}

// expectNoDelivery fails the test if a delivery is queued or comes within d.
func (r *recorder) expectNoDelivery(d time.Duration) {
	r.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case m := <-r.deliveries:
		r.t.Errorf("unexpected delivery %s q%d %q", m.Topic, m.QoS, m.Payload)
	case <-timer.C:
		select { // one queued just before the timer fired still counts
		case m := <-r.deliveries:
			r.t.Errorf("unexpected delivery %s q%d %q", m.Topic, m.QoS, m.Payload)
		default:
		}
	}
}

// expectLoss returns the error of the next Lost, failing the test if Lost
// is not called within timeout.
func (r *recorder) expectLoss(timeout time.Duration) error {
	r.t.Helper()
	select {
	case err := <-r.losses:
		if err == nil {
			r.t.Errorf("Lost(nil)")
		}
		return err
	case <-time.After(timeout):
		r.t.Fatalf("Lost not called within %v", timeout)
		return nil
	}
}

// expectNoLoss fails the test if Lost was or is called within d.
func (r *recorder) expectNoLoss(d time.Duration) {
	r.t.Helper()
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case err := <-r.losses:
		r.t.Errorf("unexpected Lost(%v)", err)
	case <-timer.C:
		select { // one queued just before the timer fired still counts
		case err := <-r.losses:
			r.t.Errorf("unexpected Lost(%v)", err)
		default:
		}
	}
}
