package gateway_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/pion/dtls/v3"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// End-to-end tests of DTLS sensors (issue 5, item 7): real pion/dtls client
// handshakes with the gateway's DTLS listener on loopback, the real upstream
// adapter and a real broker. The gateway binds ClientIds to what a sensor
// proved in its handshake, as the command does with its PSK file.

// pskEntry is one line of the PSK table: the key, and the ClientId the
// identity may use (empty: the identity itself).
type pskEntry struct{ key, clientID string }

// dtlsPSKs is the PSK table of the test gateways.
var dtlsPSKs = map[string]pskEntry{
	"sensor-a": {key: "key-of-sensor-a!", clientID: "dtls-a"},
	// A second identity allowed the same ClientId, as while a device's key
	// is being replaced: the binding lets it CONNECT as dtls-a, and only
	// session ownership keeps it out of sensor-a's session.
	"sensor-a2": {key: "key-of-sensor-a2", clientID: "dtls-a"},
	"sensor-b":  {key: "key-of-sensor-b!"},
}

// certCN is the common name of the test client certificate; certDNS its DNS
// name. Both are ClientIds it may use.
const (
	certCN  = "sensor-cert"
	certDNS = "sensor-cert.example"
)

// dtlsPSK is the listener's PSK callback.
func dtlsPSK(identity string) ([]byte, error) {
	if e, ok := dtlsPSKs[identity]; ok {
		return []byte(e.key), nil
	}
	return nil, fmt.Errorf("unknown PSK identity %q", identity)
}

// dtlsClientIDs is gateway.Config.ClientIDsOf as the command builds it from
// the PSK table: the entry's client_id (the identity by default), or the
// certificate's DNS names and CN.
func dtlsClientIDs(id transport.Identity) []string {
	if id.PSKIdentity != "" {
		if e, ok := dtlsPSKs[id.PSKIdentity]; ok && e.clientID != "" {
			return []string{e.clientID}
		}
		return []string{id.PSKIdentity}
	}
	ids := append([]string(nil), id.CertDNSNames...)
	if id.CertCommonName != "" {
		ids = append(ids, id.CertCommonName)
	}
	return ids
}

// dtlsPKI is a throwaway CA with a server certificate for 127.0.0.1 and a
// client certificate, all ECDSA P-256, and a client certificate of the same
// name from another CA.
type dtlsPKI struct {
	roots    *x509.CertPool
	server   tls.Certificate
	client   tls.Certificate // CN certCN, DNS SAN certDNS
	stranger tls.Certificate // CN certCN, from another CA
}

// testPKI is made once for all the tests.
var testPKI = sync.OnceValues(func() (*dtlsPKI, error) {
	ca, caKey, err := newCA("gateway test CA")
	if err != nil {
		return nil, err
	}
	other, otherKey, err := newCA("stranger CA")
	if err != nil {
		return nil, err
	}
	pki := &dtlsPKI{roots: x509.NewCertPool()}
	pki.roots.AddCert(ca)
	if pki.server, err = issueCert(ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: "gateway"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}); err != nil {
		return nil, err
	}
	if pki.client, err = issueCert(ca, caKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: certCN},
		DNSNames:    []string{certDNS},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	if pki.stranger, err = issueCert(other, otherKey, &x509.Certificate{
		Subject:     pkix.Name{CommonName: certCN},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}); err != nil {
		return nil, err
	}
	return pki, nil
})

// newCA returns a self-signed CA certificate and its key.
func newCA(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("CA %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// issueCert signs a leaf certificate from tmpl (subject, SANs, usages) with
// the CA and returns it with its new key.
func issueCert(ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl.SerialNumber = serial
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("certificate %q: %w", tmpl.Subject.CommonName, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// dtlsGateway is a test gateway with a DTLS listener beside its UDP one.
type dtlsGateway struct {
	*testGateway // addr is the UDP listener's
	dtls         *transport.DTLSListener
	pki          *dtlsPKI
}

// startDTLSGateway starts a test gateway (startGateway) with BindClientID
// and ClientIDsOf from the PSK table, and a DTLS listener on 127.0.0.1 with
// PSKs, certificates (client certificates required in certificate
// handshakes) and connection IDs, serving the same gateway. mod adjusts the
// gateway's config.
func startDTLSGateway(t *testing.T, url string, mod func(*gateway.Config)) *dtlsGateway {
	t.Helper()
	pki, err := testPKI()
	if err != nil {
		t.Fatalf("test PKI: %v", err)
	}
	g := startGateway(t, url, func(c *gateway.Config) {
		c.BindClientID = true
		c.ClientIDsOf = dtlsClientIDs
		if mod != nil {
			mod(c)
		}
	})
	l, err := transport.ListenDTLS("127.0.0.1:0", transport.DTLSOptions{
		PSK:               dtlsPSK,
		Certificates:      []tls.Certificate{pki.server},
		ClientCAs:         pki.roots,
		RequireClientCert: true,
		ConnectionID:      true,
		HandshakeTimeout:  time.Second,
		OnHandshakeError: func(peer netip.AddrPort, err error) {
			t.Logf("DTLS handshake with %s failed: %v", peer, err)
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- l.Serve(g.HandleDatagram) }()
	// Registered after startGateway's cleanup, so it runs before it: the
	// associations end before the gateway closes.
	t.Cleanup(func() {
		_ = l.Close()
		select {
		case err := <-served:
			if err != nil {
				t.Errorf("DTLS Serve: %v", err)
			}
		case <-time.After(wait):
			t.Errorf("DTLS Serve did not return within %v of Close", wait)
		}
	})
	return &dtlsGateway{testGateway: g, dtls: l, pki: pki}
}

// dtlsAddr is the DTLS listener's address.
func (g *dtlsGateway) dtlsAddr() netip.AddrPort { return g.dtls.LocalAddr() }

// pskOptions are pion client options for a PSK handshake with identity and key.
func pskOptions(identity, key string, extra ...dtls.ClientOption) []dtls.ClientOption {
	return append([]dtls.ClientOption{
		dtls.WithPSK(func([]byte) ([]byte, error) { return []byte(key), nil }),
		dtls.WithPSKIdentityHint([]byte(identity)),
		dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8),
	}, extra...)
}

// certOptions are pion client options for a certificate handshake that
// verifies the gateway's certificate for 127.0.0.1.
func (g *dtlsGateway) certOptions(cert tls.Certificate) []dtls.ClientOption {
	return []dtls.ClientOption{
		dtls.WithCertificates(cert),
		dtls.WithRootCAs(g.pki.roots),
		dtls.WithServerName("127.0.0.1"),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
	}
}

// withCID makes a client use the connection ID the gateway offers, like a
// constrained client: it sends the gateway's CID but asks for none back.
func withCID() dtls.ClientOption {
	return dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator())
}

// pskClient handshakes over DTLS with identity's key from the table.
func (g *dtlsGateway) pskClient(t *testing.T, identity string, extra ...dtls.ClientOption) *snclient.Client {
	t.Helper()
	return snclient.DialDTLS(t, g.dtlsAddr(), pskOptions(identity, dtlsPSKs[identity].key, extra...)...)
}

// certClient handshakes over DTLS with the test client certificate.
func (g *dtlsGateway) certClient(t *testing.T) *snclient.Client {
	t.Helper()
	return snclient.DialDTLS(t, g.dtlsAddr(), g.certOptions(g.pki.client)...)
}

// waitDTLS waits until cond holds for the DTLS listener's counters.
func waitDTLS(t *testing.T, g *dtlsGateway, what string, cond func(transport.DTLSStats) bool) transport.DTLSStats {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		st := g.dtls.Stats()
		if cond(st) {
			return st
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; DTLS stats %+v", what, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// connectRefused sends CONNECT with clientID and expects CONNACK 0x03.
func connectRefused(t *testing.T, c *snclient.Client, clientID string) {
	t.Helper()
	c.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: clientID})
	if ack := snclient.Expect[*mqttsn.ConnAck](t, c, wait); ack.ReturnCode != mqttsn.RejectedNotSupported {
		t.Fatalf("CONNECT %q: %s, want CONNACK %v", clientID, snclient.Describe(ack), mqttsn.RejectedNotSupported)
	}
}

// expectMsg takes the observer's next message and fails unless it is
// payload on topic.
func expectMsg(t *testing.T, obs *testbroker.Observer, topic, payload string) {
	t.Helper()
	if m := obs.Expect(wait); m.Topic != topic || string(m.Payload) != payload {
		t.Fatalf("observer got %s, want %s %q", m, topic, payload)
	}
}

// publishAndReceive checks that c, connected as clientID, publishes at QoS 1
// (the observer, subscribed to sensors/#, sees payload on
// sensors/<clientID>) and receives what the observer publishes to
// cmd/<clientID> after c subscribed to it.
func publishAndReceive(t *testing.T, c *snclient.Client, obs *testbroker.Observer, clientID, payload string) {
	t.Helper()
	topic := "sensors/" + clientID
	id := c.Register(topic)
	if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte(payload)); rc != mqttsn.Accepted {
		t.Fatalf("%s: PUBACK %v", clientID, rc)
	}
	expectMsg(t, obs, topic, payload)

	cmd := "cmd/" + clientID
	tid, _ := c.Subscribe(cmd, mqttsn.QoS1)
	obs.Publish(cmd, []byte("to "+payload), 1, false)
	p := snclient.Expect[*mqttsn.Publish](t, c, wait)
	if p.TopicID != tid || string(p.Data) != "to "+payload || p.QoS != mqttsn.QoS1 {
		t.Fatalf("%s: got %s, want %q on topic id %d at QoS 1", clientID, snclient.Describe(p), "to "+payload, tid)
	}
	ackPublish(t, c, p)
}

// publishQoS1Retrying publishes at QoS 1 and sends the PUBLISH again (DUP)
// when no PUBACK comes within a second, as a sensor does; it returns the
// PUBACK's return code.
func publishQoS1Retrying(t *testing.T, c *snclient.Client, topicID uint16, payload string) mqttsn.ReturnCode {
	t.Helper()
	p := &mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: topicID, MsgID: c.NextMsgID(), Data: []byte(payload)}
	for attempt := 1; attempt <= 3; attempt++ {
		c.Send(p)
		deadline := time.Now().Add(time.Second)
		for {
			m, err := c.Recv(time.Until(deadline))
			if errors.Is(err, os.ErrDeadlineExceeded) {
				break
			}
			if err != nil {
				t.Fatalf("waiting for PUBACK: %v", err)
			}
			if a, ok := m.(*mqttsn.PubAck); ok && a.MsgID == p.MsgID {
				if attempt > 1 {
					t.Logf("PUBACK after %d attempts", attempt)
				}
				return a.ReturnCode
			}
			t.Fatalf("waiting for PUBACK, got %s", snclient.Describe(m))
		}
		p.DUP = true
	}
	t.Fatalf("no PUBACK for %q after 3 attempts", payload)
	return 0
}

// PSK and certificate clients CONNECT with the ClientIds their identity
// allows, publish QoS 1 and receive what they subscribed to.
func TestDTLSPublishSubscribe(t *testing.T) {
	clients := []struct {
		name     string
		dial     func(g *dtlsGateway, t *testing.T) *snclient.Client
		clientID string
	}{
		{"psk", func(g *dtlsGateway, t *testing.T) *snclient.Client { return g.pskClient(t, "sensor-a") }, "dtls-a"},
		{"psk default client id", func(g *dtlsGateway, t *testing.T) *snclient.Client { return g.pskClient(t, "sensor-b") }, "sensor-b"},
		{"certificate cn", (*dtlsGateway).certClient, certCN},
		{"certificate dns name", (*dtlsGateway).certClient, certDNS},
	}
	eachBroker(t, func(t *testing.T, url string) {
		g := startDTLSGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 1)
		for _, tc := range clients {
			t.Run(tc.name, func(t *testing.T) {
				c := tc.dial(g, t)
				c.Connect(tc.clientID, true, 60)
				publishAndReceive(t, c, obs, tc.clientID, "hello from "+tc.name)
				c.Disconnect()
			})
		}
		if st := g.Stats(); st.Connects != uint64(len(clients)) || st.IdentityRefused != 0 || st.ConnectsRefused != 0 {
			t.Errorf("stats %+v", st)
		}
		if st := g.dtls.Stats(); st.HandshakesOK != uint64(len(clients)) || st.HandshakesFailed != 0 {
			t.Errorf("DTLS stats %+v", st)
		}
	})
}

// A handshake with the wrong key, an unknown identity or a certificate from
// another CA fails; plain MQTT-SN sent to the DTLS port goes nowhere. None
// of it reaches the gateway: no session, no counter moves.
func TestDTLSFailedHandshakes(t *testing.T) {
	g := startDTLSGateway(t, testbroker.Embedded(t), nil)
	attempts := []struct {
		name string
		opts []dtls.ClientOption
	}{
		{"wrong key", pskOptions("sensor-a", "the wrong key!!!")},
		{"unknown identity", pskOptions("intruder", dtlsPSKs["sensor-a"].key)},
		{"certificate from another CA", g.certOptions(g.pki.stranger)},
	}
	for _, a := range attempts {
		// The gateway gives up on the wrong key after its 1 s handshake
		// timeout; the client does not wait for that.
		c, err := snclient.HandshakeDTLS(t, netip.AddrPort{}, g.dtlsAddr(), 1500*time.Millisecond, a.opts...)
		if err == nil {
			c.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "dtls-a"})
			t.Fatalf("%s: the handshake succeeded", a.name)
		}
		t.Logf("%s: %v", a.name, err)
	}
	plain := snclient.Dial(t, g.dtlsAddr())
	plain.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "dtls-a"})
	plain.ExpectNothing(quiet)

	waitDTLS(t, g, "three failed handshakes", func(s transport.DTLSStats) bool {
		return s.HandshakesFailed == uint64(len(attempts)) && s.HandshakesInProgress == 0
	})
	st := g.dtls.Stats()
	if st.HandshakesOK != 0 || st.Associations != 0 || st.Received != 0 || st.UnroutedDropped == 0 {
		t.Errorf("DTLS stats %+v", st)
	}
	if st := g.Stats(); st != (gateway.Stats{}) {
		t.Errorf("gateway stats %+v, want all zero", st)
	}
}

// A CONNECT whose ClientId the peer's identity does not allow gets CONNACK
// 0x03 and is counted in IdentityRefused; the association stays usable.
func TestDTLSClientIDBinding(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startDTLSGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 1)
		a := g.pskClient(t, "sensor-a")
		b := g.pskClient(t, "sensor-b")
		cert := g.certClient(t)
		refused := []struct {
			c        *snclient.Client
			clientID string
		}{
			{a, "sensor-a"}, // its identity, but the table binds it to dtls-a
			{a, "other"},
			{b, "dtls-a"},
			{cert, "dtls-a"},
			{cert, "sensor-b"},
		}
		for _, r := range refused {
			connectRefused(t, r.c, r.clientID)
		}
		st := g.Stats()
		if n := uint64(len(refused)); st.IdentityRefused != n || st.ConnectsRefused != n || st.Connects != 0 || st.Sessions != 0 {
			t.Fatalf("stats %+v", st)
		}
		a.Connect("dtls-a", true, 60)
		publishAndReceive(t, a, obs, "dtls-a", "bound")
		if st := g.Stats(); st.Connects != 1 || st.Sessions != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A session owned by one identity is not taken over by a CONNECT with its
// ClientId from another identity the binding allows, nor from plain UDP;
// the owner goes on undisturbed.
func TestDTLSSessionOwnership(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startDTLSGateway(t, url, nil)
		obs := g.observer(t, "sensors/#", 1)
		owner := g.pskClient(t, "sensor-a")
		owner.Connect("dtls-a", true, 60)
		id := owner.Register("sensors/dtls-a")

		other := g.pskClient(t, "sensor-a2")
		udp := g.client(t)
		for _, c := range []*snclient.Client{other, udp} {
			connectRefused(t, c, "dtls-a")
			// No session was made or taken: its PUBLISH gets DISCONNECT.
			c.Send(&mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: id, MsgID: 1, Data: []byte("intruder")})
			snclient.Expect[*mqttsn.Disconnect](t, c, wait)
		}
		st := g.Stats()
		if st.IdentityRefused != 2 || st.ConnectsRefused != 2 || st.Takeovers != 0 || st.Connects != 1 || st.Sessions != 1 {
			t.Fatalf("stats %+v", st)
		}
		owner.ExpectNothing(quiet / 4)
		publishAndReceive(t, owner, obs, "dtls-a", "still mine")
		obs.ExpectNone(quiet / 4)

		// Ownership is the session's: once the owner ended it, the other
		// identity the binding allows may start one.
		owner.Disconnect()
		waitStats(t, g.testGateway, "the owner's session ended", func(s gatewayStats) bool { return s.Sessions == 0 })
		other.Connect("dtls-a", true, 60)
		publishAndReceive(t, other, obs, "dtls-a", "new owner")
	})
}

// A sensor that handshakes again from the same address (after closing its
// association, or after a reboot that forgot it) has no session on the new
// association until it CONNECTs; then it works.
func TestDTLSRehandshakeSameAddress(t *testing.T) {
	for _, silent := range []bool{false, true} {
		name := "after close_notify"
		if silent {
			name = "after a reboot"
		}
		t.Run(name, func(t *testing.T) {
			eachBroker(t, func(t *testing.T, url string) {
				g := startDTLSGateway(t, url, nil)
				obs := g.observer(t, "sensors/#", 1)
				c1 := g.pskClient(t, "sensor-a")
				c1.Connect("dtls-a", true, 60)
				publishAndReceive(t, c1, obs, "dtls-a", "first")
				local := c1.LocalAddr()
				if silent {
					c1.Vanish()
				} else {
					c1.Close()
					waitDTLS(t, g, "the association closed", func(s transport.DTLSStats) bool { return s.Associations == 0 })
				}

				c2 := snclient.DialDTLSFrom(t, local, g.dtlsAddr(), pskOptions("sensor-a", dtlsPSKs["sensor-a"].key)...)
				if got := c2.LocalAddr(); got != local {
					t.Fatalf("the new client is at %v, want %v", got, local)
				}
				c2.Send(&mqttsn.PingReq{})
				snclient.Expect[*mqttsn.Disconnect](t, c2, wait)
				c2.Connect("dtls-a", true, 60)
				publishAndReceive(t, c2, obs, "dtls-a", "second")

				if st := g.Stats(); st.Connects != 2 || st.Sessions != 1 || st.IdentityRefused != 0 {
					t.Errorf("stats %+v", st)
				}
				replaced := uint64(0)
				if silent {
					replaced = 1
				}
				waitDTLS(t, g, "one association left", func(s transport.DTLSStats) bool {
					return s.HandshakesOK == 2 && s.Associations == 1 && s.Replaced == replaced
				})
			})
		})
	}
}

// A sleeping sensor whose next handshake comes from a new address (no
// connection ID) wakes up with PINGREQ(ClientId) and gets what was buffered,
// although AllowAddressChange is off: it proved the identity that owns the
// session (A9). A PINGREQ(ClientId) from another identity, or from plain
// UDP, gets DISCONNECT and leaves the session alone.
func TestDTLSSleepWakeFromNewHandshake(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startDTLSGateway(t, url, func(c *gateway.Config) { c.AllowAddressChange = false })
		obs := g.observer(t, "sensors/#", 1)
		c1 := g.pskClient(t, "sensor-a")
		c1.Connect("dtls-a", true, 60)
		tid, _ := c1.Subscribe("cmd/dtls-a", mqttsn.QoS1)
		sleep(t, c1, 60)
		obs.Publish("cmd/dtls-a", []byte("while asleep"), 1, false)
		waitQueued(t, g.testGateway, 1)

		for _, intruder := range []*snclient.Client{g.pskClient(t, "sensor-b"), g.pskClient(t, "sensor-a2"), g.client(t)} {
			intruder.Send(&mqttsn.PingReq{ClientID: "dtls-a"})
			snclient.Expect[*mqttsn.Disconnect](t, intruder, wait)
			intruder.ExpectNothing(quiet / 4)
		}
		if st := g.Stats(); st.IdentityRefused != 3 || st.Moves != 0 || st.WakeUps != 0 || st.Queued != 1 {
			t.Fatalf("stats %+v", st)
		}

		c2 := g.pskClient(t, "sensor-a")
		if c2.LocalAddr() == c1.LocalAddr() {
			t.Fatalf("both clients at %v", c1.LocalAddr())
		}
		c2.Send(&mqttsn.PingReq{ClientID: "dtls-a"})
		p := snclient.Expect[*mqttsn.Publish](t, c2, wait)
		if p.TopicID != tid || string(p.Data) != "while asleep" {
			t.Fatalf("at the new address: %s", snclient.Describe(p))
		}
		ackPublish(t, c2, p)
		snclient.Expect[*mqttsn.PingResp](t, c2, wait)
		c1.ExpectNothing(quiet / 4)
		if st := g.Stats(); st.Moves != 1 || st.MovesRefused != 0 || st.WakeUps != 1 || st.Queued != 0 {
			t.Fatalf("stats %+v", st)
		}

		// The session lives on the new association now: CONNECT resumes
		// it (A1), and the old association has no session.
		c2.Connect("dtls-a", true, 60)
		id := c2.Register("sensors/dtls-a")
		if rc := c2.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("awake")); rc != mqttsn.Accepted {
			t.Fatalf("PUBACK %v", rc)
		}
		expectMsg(t, obs, "sensors/dtls-a", "awake")
		c1.Send(&mqttsn.PingReq{})
		snclient.Expect[*mqttsn.Disconnect](t, c1, wait)
		if st := g.Stats(); st.Resumes != 1 || st.Connects != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}

// A sensor with a connection ID goes on with its MQTT-SN session after its
// source port changed: no new handshake, no new CONNECT. Without one, its
// datagrams from the new port reach nothing, and it must handshake and
// CONNECT again.
func TestDTLSConnectionIDPortChange(t *testing.T) {
	t.Run("cid", func(t *testing.T) {
		eachBroker(t, func(t *testing.T, url string) {
			g := startDTLSGateway(t, url, nil)
			obs := g.observer(t, "sensors/#", 1)
			c := g.pskClient(t, "sensor-a", withCID())
			c.Connect("dtls-a", true, 60)
			if !c.SendsConnectionID() {
				t.Fatal("the client sends no connection ID")
			}
			id := c.Register("sensors/dtls-a")
			if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("before")); rc != mqttsn.Accepted {
				t.Fatalf("PUBACK %v", rc)
			}
			expectMsg(t, obs, "sensors/dtls-a", "before")

			before := c.LocalAddr()
			c.Rebind()
			if c.LocalAddr() == before {
				t.Fatalf("still at %v", before)
			}
			// The PUBACK follows the broker's, by when the gateway's DTLS
			// side has long switched to the new address; the retry only
			// guards against pion's switch coming after the delivery.
			if rc := publishQoS1Retrying(t, c, id, "after"); rc != mqttsn.Accepted {
				t.Fatalf("PUBACK after the move %v", rc)
			}
			expectMsg(t, obs, "sensors/dtls-a", "after")
			// Downlink follows the sensor too.
			tid, _ := c.Subscribe("cmd/dtls-a", mqttsn.QoS1)
			obs.Publish("cmd/dtls-a", []byte("down"), 1, false)
			if p := snclient.Expect[*mqttsn.Publish](t, c, wait); p.TopicID != tid || string(p.Data) != "down" {
				t.Fatalf("after the move: %s", snclient.Describe(p))
			} else {
				ackPublish(t, c, p)
			}

			if st := g.Stats(); st.Connects != 1 || st.Takeovers != 0 || st.Sessions != 1 || st.NoSession != 0 {
				t.Errorf("stats %+v", st)
			}
			if st := g.dtls.Stats(); st.HandshakesStarted != 1 || st.AddressChanges != 1 || st.Associations != 1 {
				t.Errorf("DTLS stats %+v", st)
			}
		})
	})
	t.Run("no cid", func(t *testing.T) {
		eachBroker(t, func(t *testing.T, url string) {
			g := startDTLSGateway(t, url, nil)
			obs := g.observer(t, "sensors/#", 1)
			c := g.pskClient(t, "sensor-a")
			c.Connect("dtls-a", true, 60)
			if c.SendsConnectionID() {
				t.Fatal("the client sends a connection ID")
			}
			id := c.Register("sensors/dtls-a")
			if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("before")); rc != mqttsn.Accepted {
				t.Fatalf("PUBACK %v", rc)
			}
			expectMsg(t, obs, "sensors/dtls-a", "before")

			datagrams := g.Stats().Datagrams
			unrouted := g.dtls.Stats().UnroutedDropped
			c.Rebind()
			c.Send(&mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: id, MsgID: c.NextMsgID(), Data: []byte("lost")})
			c.Send(&mqttsn.PingReq{})
			c.ExpectNothing(quiet)
			obs.ExpectNone(quiet / 4)
			if st := g.Stats(); st.Datagrams != datagrams {
				t.Fatalf("the gateway got %d datagrams after the move", st.Datagrams-datagrams)
			}
			waitDTLS(t, g, "the moved records dropped", func(s transport.DTLSStats) bool {
				return s.UnroutedDropped >= unrouted+2 && s.AddressChanges == 0
			})

			// A new handshake from the new address, then CONNECT.
			moved := c.LocalAddr()
			c.Vanish()
			c2 := snclient.DialDTLSFrom(t, moved, g.dtlsAddr(), pskOptions("sensor-a", dtlsPSKs["sensor-a"].key)...)
			c2.Send(&mqttsn.Publish{QoS: mqttsn.QoS1, TopicID: id, MsgID: c2.NextMsgID(), Data: []byte("too early")})
			snclient.Expect[*mqttsn.Disconnect](t, c2, wait)
			c2.Connect("dtls-a", true, 60)
			publishAndReceive(t, c2, obs, "dtls-a", "reconnected")
			if st := g.Stats(); st.Connects != 2 || st.Sessions != 1 {
				t.Errorf("stats %+v", st)
			}
		})
	})
}

// A CONNECT refused by a sleeping session must not change who owns it: an
// authenticated peer whose CONNECT for an unowned sleeping session is
// refused (AllowAddressChange off) must not then wake the session with
// PINGREQ(ClientId) and take its buffered messages, nor lock the sensor that
// made the session out of it. (The gateway once claimed ownership before
// the session decided.)
func TestDTLSRefusedConnectKeepsOwner(t *testing.T) {
	eachBroker(t, func(t *testing.T, url string) {
		g := startDTLSGateway(t, url, func(c *gateway.Config) { c.AllowAddressChange = false })
		obs := g.observer(t, "", 0)
		udp := g.client(t) // unauthenticated: the session has no owner
		udp.Connect("sensor-b", true, 60)
		tid, _ := udp.Subscribe("cmd/sensor-b", mqttsn.QoS1)
		sleep(t, udp, 60)
		obs.Publish("cmd/sensor-b", []byte("for the sleeper"), 1, false)
		waitQueued(t, g.testGateway, 1)

		b := g.pskClient(t, "sensor-b") // the binding allows it "sensor-b"
		b.Send(&mqttsn.Connect{CleanSession: true, Duration: 60, ClientID: "sensor-b"})
		snclient.Expect[*mqttsn.Disconnect](t, b, wait) // a sleeping session does not move (A9)
		b.Send(&mqttsn.PingReq{ClientID: "sensor-b"})
		snclient.Expect[*mqttsn.Disconnect](t, b, wait)
		b.ExpectNothing(quiet / 4)
		if st := g.Stats(); st.Moves != 0 || st.Queued != 1 {
			t.Fatalf("the refused peer moved the session: stats %+v", st)
		}

		// The sensor that made the session resumes it from its own address.
		udp.Connect("sensor-b", true, 60)
		p := snclient.Expect[*mqttsn.Publish](t, udp, wait)
		if p.TopicID != tid || string(p.Data) != "for the sleeper" {
			t.Fatalf("got %s", snclient.Describe(p))
		}
		ackPublish(t, udp, p)
	})
}
