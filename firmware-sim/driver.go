package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/pion/dtls/v3"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// maxDatagram is a sensor's receive buffer; larger datagrams are cut and
// then fail to decode (counted as malformed).
const maxDatagram = 2048

// errStopped is a link's answer to redial once the run is shutting down:
// not a connect failure.
var errStopped = errors.New("the run is shutting down")

// driver runs one sensor in its own goroutine: the only one that touches
// the sensor. Its link's reader goroutine decodes datagrams into inbox.
type driver struct {
	s     *sensor
	inbox chan mqttsn.Message
	quit  chan struct{} // closed when the driver returns: readers stop
}

// run drives the sensor until it is done or hardStop closes. It starts the
// sensor at startAt, stops its publications when stopUplink closes, and
// shuts it down when shutdown closes. On hardStop the sensor is abandoned:
// its publications in flight are recorded as unfinished.
func (d *driver) run(startAt time.Time, stopUplink, shutdown, hardStop <-chan struct{}) {
	defer close(d.quit)
	s := d.s
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var armed time.Time
	s.start(time.Now(), startAt)
	for !s.done() {
		if dl := s.nextDeadline(); dl != armed || armed.IsZero() {
			armed = dl
			if dl.IsZero() {
				timer.Reset(time.Hour)
			} else {
				timer.Reset(time.Until(dl))
			}
		}
		select {
		case m := <-d.inbox:
			s.handle(time.Now(), m)
		case <-timer.C:
			armed = time.Time{}
			s.tick(time.Now())
		case <-stopUplink:
			stopUplink = nil
			s.stopUplink(time.Now())
		case <-shutdown:
			shutdown = nil
			s.shutdown(time.Now())
		case <-hardStop:
			s.abandon()
			return
		}
	}
}

// readLoop reads datagrams from conn until it is closed (closed is closed
// by the link's close, whatever error Read then returns) or quit closes, and
// hands what decodes to inbox. Malformed datagrams are counted and dropped:
// nothing the gateway sends can crash a sensor.
func readLoop(conn net.Conn, closed, quit <-chan struct{}, inbox chan<- mqttsn.Message, fc *fleetCounters) {
	buf := make([]byte, maxDatagram)
	for {
		n, err := conn.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) || errors.Is(err, dtls.ErrConnClosed) || isClosed(closed) || isClosed(quit) {
				return
			}
			// ICMP port unreachable (no gateway yet) and the like.
			select {
			case <-quit:
				return
			case <-closed:
				return
			case <-time.After(10 * time.Millisecond):
			}
			continue
		}
		m, err := mqttsn.Decode(buf[:n])
		if err != nil {
			fc.malformed.Add(1)
			continue
		}
		select {
		case inbox <- m:
		case <-quit:
			return
		}
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// udpLink is a sensor's own UDP socket, connected to the gateway; it keeps
// its address for the whole run, as a real sensor does.
type udpLink struct {
	gw     *net.UDPAddr
	conn   *net.UDPConn
	closed chan struct{} // closed by close: the reader stops
	inbox  chan<- mqttsn.Message
	quit   <-chan struct{}
	fc     *fleetCounters
}

func (l *udpLink) send(b []byte) error {
	if l.conn == nil {
		return net.ErrClosed
	}
	_, err := l.conn.Write(b)
	return err
}

// redial opens the socket the first time; later it keeps it.
func (l *udpLink) redial() error {
	if l.conn != nil {
		return nil
	}
	c, err := net.DialUDP("udp", nil, l.gw)
	if err != nil {
		return fmt.Errorf("udp socket to %v: %w", l.gw, err)
	}
	l.conn = c
	l.closed = make(chan struct{})
	go readLoop(c, l.closed, l.quit, l.inbox, l.fc)
	return nil
}

func (l *udpLink) close() {
	if l.conn != nil {
		close(l.closed)
		_ = l.conn.Close()
		l.conn = nil
	}
}

// dtlsLink is a DTLS association with the gateway, handshaken anew (from a
// new socket) for every CONNECT after a lost connection.
type dtlsLink struct {
	gw   *net.UDPAddr
	opts []dtls.ClientOption
	// ctx bounds every handshake besides timeout: the run cancels it when
	// it shuts down, so that no sensor waits out a handshake then.
	ctx     context.Context
	timeout time.Duration
	conn    *dtls.Conn
	closed  chan struct{} // closed by close: the reader stops
	inbox   chan<- mqttsn.Message
	quit    <-chan struct{}
	fc      *fleetCounters
	onError func(error)
}

func (l *dtlsLink) send(b []byte) error {
	if l.conn == nil {
		return net.ErrClosed
	}
	_, err := l.conn.Write(b)
	return err
}

func (l *dtlsLink) redial() error {
	l.close()
	pc, err := net.ListenUDP("udp", nil)
	if err != nil {
		return fmt.Errorf("dtls socket: %w", err)
	}
	c, err := dtls.ClientWithOptions(pc, l.gw, l.opts...)
	if err != nil {
		_ = pc.Close()
		return fmt.Errorf("dtls client for %v: %w", l.gw, err)
	}
	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		_ = c.Close()
		if l.ctx.Err() != nil {
			return fmt.Errorf("dtls handshake with %v: %w", l.gw, errStopped)
		}
		err = fmt.Errorf("dtls handshake with %v: %w", l.gw, err)
		if l.onError != nil {
			l.onError(err)
		}
		return err
	}
	l.conn = c
	l.closed = make(chan struct{})
	go readLoop(c, l.closed, l.quit, l.inbox, l.fc)
	return nil
}

func (l *dtlsLink) close() {
	if l.conn != nil {
		close(l.closed)
		_ = l.conn.Close()
		l.conn = nil
	}
}

// pskEntry is one [[psk]] table of a PSK file.
type pskEntry struct {
	Identity string `toml:"identity"`
	Key      string `toml:"key"`
	ClientID string `toml:"client_id"`
}

// pskKey is a decoded PSK entry.
type pskKey struct {
	identity string
	key      []byte
}

// loadPSKFile reads a PSK file in the gateway's format and returns its
// entries by ClientId (client_id, default the identity).
func loadPSKFile(path string) (map[string]pskKey, error) {
	var doc struct {
		PSK []pskEntry `toml:"psk"`
	}
	md, err := toml.DecodeFile(path, &doc)
	if err != nil {
		return nil, fmt.Errorf("PSK file %s: %w", path, err)
	}
	if und := md.Undecoded(); len(und) > 0 {
		return nil, fmt.Errorf("PSK file %s: %s: unknown key", path, und[0])
	}
	out := make(map[string]pskKey, len(doc.PSK))
	for i, e := range doc.PSK {
		if e.Identity == "" {
			return nil, fmt.Errorf("PSK file %s: psk[%d].identity: missing", path, i)
		}
		k, err := hex.DecodeString(e.Key)
		if err != nil || len(k) < 4 {
			return nil, fmt.Errorf("PSK file %s: psk[%d].key: not a hex key of 4 or more octets", path, i)
		}
		id := e.ClientID
		if id == "" {
			id = e.Identity
		}
		out[id] = pskKey{identity: e.Identity, key: k}
	}
	return out, nil
}

// dtlsSetup builds each DTLS sensor's pion options from the [dtls] table.
type dtlsSetup struct {
	cfg   DTLSConfig
	psks  map[string]pskKey
	roots *x509.CertPool
	host  string
}

func newDTLSSetup(cfg DTLSConfig, gatewayHost string) (*dtlsSetup, error) {
	d := &dtlsSetup{cfg: cfg, host: gatewayHost}
	if cfg.PSKFile != "" {
		psks, err := loadPSKFile(cfg.PSKFile)
		if err != nil {
			return nil, err
		}
		d.psks = psks
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("dtls CA file: %w", err)
		}
		d.roots = x509.NewCertPool()
		if !d.roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("dtls CA file %s holds no PEM certificate", cfg.CAFile)
		}
	}
	if d.psks == nil && cfg.CertFile == "" {
		return nil, errors.New("DTLS sensors need a PSK file (-dtls-psk-file, dtls.psk_file) or a certificate (dtls.cert_file)")
	}
	return d, nil
}

// options returns the pion client options of the sensor clientID: its PSK
// entry when the PSK file has one, else its certificate.
func (d *dtlsSetup) options(clientID string) ([]dtls.ClientOption, error) {
	var opts []dtls.ClientOption
	if d.cfg.ConnectionID {
		opts = append(opts, dtls.WithConnectionIDGenerator(dtls.OnlySendCIDGenerator()))
	}
	if e, ok := d.psks[clientID]; ok {
		key := e.key
		return append(opts,
			dtls.WithPSK(func([]byte) ([]byte, error) { return key, nil }),
			dtls.WithPSKIdentityHint([]byte(e.identity)),
			dtls.WithCipherSuites(dtls.TLS_PSK_WITH_AES_128_CCM_8, dtls.TLS_PSK_WITH_AES_128_GCM_SHA256),
		), nil
	}
	if d.cfg.CertFile == "" {
		return nil, fmt.Errorf("sensor %s: no entry with its ClientId in the PSK file %s", clientID, d.cfg.PSKFile)
	}
	cert, err := tls.LoadX509KeyPair(expand(d.cfg.CertFile, 0, 0, clientID), expand(d.cfg.KeyFile, 0, 0, clientID))
	if err != nil {
		return nil, fmt.Errorf("sensor %s: certificate: %w", clientID, err)
	}
	name := d.cfg.ServerName
	if name == "" {
		name = d.host
	}
	opts = append(opts,
		dtls.WithCertificates(cert),
		dtls.WithServerName(name),
		dtls.WithCipherSuites(dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256),
	)
	if d.roots != nil {
		opts = append(opts, dtls.WithRootCAs(d.roots))
	}
	return opts, nil
}
