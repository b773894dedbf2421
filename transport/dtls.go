package transport

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/pion/dtls/v3"
	"github.com/pion/dtls/v3/pkg/protocol/extension"
	"github.com/pion/dtls/v3/pkg/protocol/handshake"
)

// Defaults for DTLSOptions fields left zero.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxHandshakes    = 256
	// DefaultIdleTimeout is longer than any silence MQTT-SN allows a
	// client: a keep-alive or sleep Duration of 65,535 s (18.2 h), with the
	// usual tolerance of one and a half times that.
	DefaultIdleTimeout = 28 * time.Hour
)

// MaxDTLSDatagram bounds DTLSOptions.MaxDatagram. pion/dtls reads every
// datagram into an 8 KiB buffer; a record carrying more than this much
// application data, plus its header, nonce, tag and connection ID, would not fit.
const MaxDTLSDatagram = 8192 - dtlsRecordOverhead

// dtlsRecordOverhead is what DTLS 1.2 adds around application data with the
// AEAD suites offered here: a 13-byte record header, an 8-byte connection ID,
// the inner content type (RFC 9146), an 8-byte explicit nonce and a tag of at
// most 16 bytes (46 in all), rounded up generously. A raw datagram larger than
// the largest application datagram plus this is dropped before any routing.
const dtlsRecordOverhead = 128

// cidLength is the length of the connection IDs the server asks peers to send
// (RFC 9146). It is fixed, so routing can find the CID in a record header.
const cidLength = 8

// idleGrace is how long an association found idle is read once more before
// it is closed (see DTLSListener.run).
const idleGrace = 20 * time.Millisecond

// dtlsQueueLength is how many raw datagrams may wait for one peer's DTLS
// state machine; beyond it the reader drops and counts (QueueDropped).
const dtlsQueueLength = 8

// DTLS record layer constants (RFC 6347 §4.1, RFC 9146 §4).
const (
	recordHeaderLen      = 13
	recordCIDOffset      = 11 // a tls12_cid record's CID follows type, version, epoch and sequence number
	handshakeHeaderLen   = 12
	contentTypeHandshake = 22
	contentTypeCID       = 25 // tls12_cid
	handshakeClientHello = 1
	dtlsVersionMajor     = 0xfe // every DTLS version starts with 0xfe
)

// dtlsCipherSuites returns the suites offered, most preferred first. pion
// keeps the PSK ones only when a PSK callback is configured and the
// certificate ones only when certificates are. All are AEAD suites that
// constrained devices implement (RFC 7925 makes the CCM_8 ones mandatory).
func dtlsCipherSuites() []dtls.CipherSuiteID {
	return []dtls.CipherSuiteID{
		dtls.TLS_PSK_WITH_AES_128_CCM_8,
		dtls.TLS_PSK_WITH_AES_128_GCM_SHA256,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8,
		dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	}
}

// DTLSOptions configures a DTLS listener. At least one of PSK and
// Certificates must be set.
type DTLSOptions struct {
	// MaxDatagram is the largest decrypted datagram handed to the handler, in
	// bytes; larger ones are dropped and counted. Zero means
	// DefaultMaxDatagram; at most MaxDTLSDatagram.
	MaxDatagram int

	// ReadBuffer is the socket receive buffer (SO_RCVBUF) in bytes; zero keeps
	// the OS default. See UDPOptions.ReadBuffer.
	ReadBuffer int

	// PSK returns the pre-shared key for a client's PSK identity. It is
	// called once per PSK handshake, on that handshake's goroutine, so it may
	// be called concurrently. An unknown identity must return an error: the
	// handshake then fails with a fatal alert and OnHandshakeError is called.
	// Nil means no PSK cipher suites are offered.
	PSK func(identity string) ([]byte, error)

	// Certificates are the server's certificate chains for the ECDHE_ECDSA
	// suites; their keys must be ECDSA or Ed25519. Empty means PSK only.
	Certificates []tls.Certificate

	// ClientCAs verifies client certificates in certificate handshakes. With
	// ClientCAs set, a client certificate is verified if the client sends one;
	// nil means client certificates are not requested.
	ClientCAs *x509.CertPool

	// RequireClientCert makes certificate handshakes fail unless the client
	// presents a certificate that ClientCAs verifies. It needs ClientCAs. It
	// does not apply to PSK handshakes, where the key authenticates the client.
	RequireClientCert bool

	// ConnectionID offers RFC 9146 connection IDs: a client that supports
	// them gets an 8-octet ID from the server and puts it in every record, so
	// its association survives a change of its address (a NAT rebinding)
	// without a new handshake. Without it, or with a client that does not use
	// CIDs, a client whose address changed must handshake again.
	ConnectionID bool

	// HandshakeTimeout bounds one handshake, from its first ClientHello.
	// Zero means DefaultHandshakeTimeout.
	HandshakeTimeout time.Duration

	// MaxHandshakes caps the handshakes in progress at once. A ClientHello
	// that would start one more is dropped (and counted in HandshakesDropped)
	// before any DTLS state exists for it, so a flood of ClientHellos cannot
	// starve established associations. Zero means DefaultMaxHandshakes.
	MaxHandshakes int

	// IdleTimeout closes an established association that has carried no
	// application data either way for that long, with a close_notify
	// alert: a peer that went away without one (a sensor rebooted onto a
	// new source port, say) leaves nothing behind for ever. A peer that
	// comes back later handshakes again. Zero means DefaultIdleTimeout.
	IdleTimeout time.Duration

	// OnHandshakeError, if not nil, is called once for every handshake that
	// fails or times out, with the peer's address and the reason. It runs on
	// the handshake's goroutine, possibly concurrently with other calls, and
	// should return quickly. Handshakes aborted by Close are not reported.
	OnHandshakeError func(peer netip.AddrPort, err error)
}

// validate reports every problem with o at once.
func (o DTLSOptions) validate() error {
	var errs []error
	if o.MaxDatagram < 0 || o.MaxDatagram > MaxDTLSDatagram {
		errs = append(errs, fmt.Errorf("MaxDatagram %d out of range [0, %d]", o.MaxDatagram, MaxDTLSDatagram))
	}
	if o.ReadBuffer < 0 {
		errs = append(errs, fmt.Errorf("ReadBuffer %d is negative", o.ReadBuffer))
	}
	if o.PSK == nil && len(o.Certificates) == 0 {
		errs = append(errs, errors.New("neither PSK nor Certificates is set"))
	}
	for i, c := range o.Certificates {
		if err := checkServerCertificate(c); err != nil {
			errs = append(errs, fmt.Errorf("Certificates[%d]: %w", i, err))
		}
	}
	if o.ClientCAs != nil && len(o.Certificates) == 0 {
		errs = append(errs, errors.New("ClientCAs is set but Certificates is empty: client certificates are only used in certificate handshakes"))
	}
	if o.RequireClientCert && o.ClientCAs == nil {
		errs = append(errs, errors.New("RequireClientCert needs ClientCAs to verify the certificates against"))
	}
	if o.HandshakeTimeout < 0 {
		errs = append(errs, fmt.Errorf("HandshakeTimeout %v is negative", o.HandshakeTimeout))
	}
	if o.IdleTimeout < 0 {
		errs = append(errs, fmt.Errorf("IdleTimeout %v is negative", o.IdleTimeout))
	}
	if o.MaxHandshakes < 0 {
		errs = append(errs, fmt.Errorf("MaxHandshakes %d is negative", o.MaxHandshakes))
	}
	return errors.Join(errs...)
}

// checkServerCertificate reports whether c can be used with the ECDHE_ECDSA
// suites offered.
func checkServerCertificate(c tls.Certificate) error {
	if len(c.Certificate) == 0 {
		return errors.New("no certificate")
	}
	signer, ok := c.PrivateKey.(crypto.Signer)
	if !ok {
		return fmt.Errorf("private key %T is not a crypto.Signer", c.PrivateKey)
	}
	switch signer.Public().(type) {
	case *ecdsa.PublicKey, ed25519.PublicKey:
		return nil
	default:
		return fmt.Errorf("%T key: the ECDHE_ECDSA suites need an ECDSA or Ed25519 key", signer.Public())
	}
}

// DTLSStats is a snapshot of a DTLS listener's counters since it was opened.
// The two gauges (HandshakesInProgress, Associations) are current values.
type DTLSStats struct {
	HandshakesStarted    uint64 // ClientHellos that started a handshake
	HandshakesOK         uint64 // handshakes completed: associations established
	HandshakesFailed     uint64 // handshakes failed or timed out, each reported to OnHandshakeError
	HandshakesDropped    uint64 // ClientHellos dropped because MaxHandshakes were in progress
	HandshakesInProgress int    // handshakes in progress now
	Associations         int    // established associations open now
	Replaced             uint64 // associations closed because their peer completed a new handshake from the same address
	IdleClosed           uint64 // associations closed because their peer sent nothing for IdleTimeout
	AddressChanges       uint64 // times a connection-ID association followed its peer to a new address
	Received             uint64 // decrypted datagrams handed to the handler
	OversizeDropped      uint64 // datagrams dropped for being larger than MaxDatagram (decrypted) or the raw limit
	QueueDropped         uint64 // raw datagrams dropped because a peer's queue was full
	UnroutedDropped      uint64 // raw datagrams matching no peer that are not a ClientHello, or carry an unknown CID
	ReadErrors           uint64 // failed socket reads and association read errors, other than those caused by Close
	Sent                 uint64 // datagrams written by an association's WriteTo
	SendErrors           uint64 // WriteTo calls that failed
}

// Identity is what a DTLS peer proved about itself in its handshake: the PSK
// identity it used, or the subject of its verified client certificate.
type Identity struct {
	PSKIdentity    string   // PSK identity; empty after a certificate handshake
	CertCommonName string   // subject common name of the verified client certificate
	CertDNSNames   []string // DNS subject alternative names of that certificate
}

// Empty reports whether the peer proved nothing about itself (a certificate
// handshake without a client certificate).
func (id Identity) Empty() bool {
	return id.PSKIdentity == "" && id.CertCommonName == "" && len(id.CertDNSNames) == 0
}

// Identified is implemented by a Sender whose peer authenticated itself, so
// the gateway can bind a ClientID to what the peer proved.
type Identified interface {
	// Identity returns the peer's authenticated identity. It does not change
	// for the life of the Sender.
	Identity() Identity
}

// Association is the Sender of one established DTLS association. A DTLS
// listener passes it to the Handler with every datagram of that association.
//
// Each handshake makes a new Association; the same Association is passed for
// the association's whole life, even after its peer changed address (with a
// connection ID), so the gateway can key sessions by (Sender, address).
type Association interface {
	Sender
	Identified

	// WriteTo encrypts b and sends it to the peer as one record. addr is
	// ignored: the association sends to its peer's current address. After the
	// association ended it returns an error that wraps net.ErrClosed.
	WriteTo(b []byte, addr netip.AddrPort) error

	// Key returns the peer's address at handshake time: the address the
	// Handler reports for every datagram, stable for the association's life.
	Key() netip.AddrPort

	// RemoteAddr returns the peer's current address. It differs from Key
	// once a connection-ID peer moved.
	RemoteAddr() netip.AddrPort

	// Done returns a channel that is closed when the association has ended:
	// closed by either side, idle for IdleTimeout, replaced by a new
	// handshake from the same address, or closed with the listener. By then its reader has returned
	// and no more datagrams of it reach the Handler.
	Done() <-chan struct{}

	// Close ends the association, sending the peer a close_notify alert. It
	// does not wait for Done. Calls after the first return nil.
	Close() error
}

// DTLSListener accepts DTLS 1.2 associations on one UDP socket.
//
// Create it with ListenDTLS, run Serve on one goroutine, and Close it to end
// Serve. All other methods are safe for concurrent use.
//
// One goroutine (Serve's) reads the socket and routes every datagram, before
// any cryptography: by connection ID, else by source address; a ClientHello
// from an unknown address starts a handshake if fewer than MaxHandshakes are
// in progress. Every peer gets its own pion/dtls server state machine, fed
// through a bounded queue, and one reader goroutine that runs the handshake
// and then reads the association's records into its own buffer and calls
// the Handler.
type DTLSListener struct {
	conn        *net.UDPConn
	local       netip.AddrPort
	maxDatagram int
	rawLimit    int // largest raw datagram routed
	timeout     time.Duration
	idle        time.Duration // IdleTimeout
	maxHS       int
	onError     func(netip.AddrPort, error)
	serverOpts  []dtls.ServerOption
	cid         bool
	bufs        sync.Pool // *[]byte of rawLimit bytes, for queued datagrams

	ctx    context.Context // canceled by Close; parent of every handshake
	cancel context.CancelFunc

	serving atomic.Bool
	closed  atomic.Bool
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup

	mu         sync.Mutex
	closing    bool
	byAddr     map[netip.AddrPort]*dtlsAssoc
	byCID      map[string]*dtlsAssoc
	peers      map[*dtlsAssoc]struct{}
	handshakes int // in progress
	assocs     int // established

	handshakesStarted atomic.Uint64
	handshakesOK      atomic.Uint64
	handshakesFailed  atomic.Uint64
	handshakesDropped atomic.Uint64
	replaced          atomic.Uint64
	idleClosed        atomic.Uint64
	addressChanges    atomic.Uint64
	received          atomic.Uint64
	oversizeDropped   atomic.Uint64
	queueDropped      atomic.Uint64
	unroutedDropped   atomic.Uint64
	readErrors        atomic.Uint64
	sent              atomic.Uint64
	sendErrors        atomic.Uint64
}

// ListenDTLS binds one UDP socket on addr and returns a DTLS listener for it.
//
// addr is as for ListenUDP. The listener does not read, and so accepts no
// handshake, until Serve is called.
func ListenDTLS(addr string, opts DTLSOptions) (*DTLSListener, error) {
	if err := opts.validate(); err != nil {
		return nil, fmt.Errorf("transport: dtls listen on %q: %w", addr, err)
	}
	if opts.MaxDatagram == 0 {
		opts.MaxDatagram = DefaultMaxDatagram
	}
	if opts.HandshakeTimeout == 0 {
		opts.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if opts.MaxHandshakes == 0 {
		opts.MaxHandshakes = DefaultMaxHandshakes
	}
	if opts.IdleTimeout == 0 {
		opts.IdleTimeout = DefaultIdleTimeout
	}

	conn, local, err := openSocket("dtls", addr, opts.ReadBuffer, 0)
	if err != nil {
		return nil, err
	}

	// Handshake datagrams can be as large as the client's MTU whatever
	// MaxDatagram is, so the raw limit never goes below a full Ethernet frame.
	rawLimit := max(opts.MaxDatagram, DefaultMaxDatagram) + dtlsRecordOverhead
	ctx, cancel := context.WithCancel(context.Background())
	l := &DTLSListener{
		conn:        conn,
		local:       local,
		maxDatagram: opts.MaxDatagram,
		rawLimit:    rawLimit,
		timeout:     opts.HandshakeTimeout,
		idle:        opts.IdleTimeout,
		maxHS:       opts.MaxHandshakes,
		onError:     opts.OnHandshakeError,
		serverOpts:  serverOptions(opts),
		cid:         opts.ConnectionID,
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
		byAddr:      make(map[netip.AddrPort]*dtlsAssoc),
		byCID:       make(map[string]*dtlsAssoc),
		peers:       make(map[*dtlsAssoc]struct{}),
	}
	l.bufs.New = func() any {
		b := make([]byte, rawLimit)
		return &b
	}
	return l, nil
}

// serverOptions translates opts into the pion options shared by every
// handshake. Each handshake adds its own ServerHello hook.
func serverOptions(opts DTLSOptions) []dtls.ServerOption {
	so := []dtls.ServerOption{
		dtls.WithCipherSuites(dtlsCipherSuites()...),
		dtls.WithExtendedMasterSecret(dtls.RequestExtendedMasterSecret),
	}
	if psk := opts.PSK; psk != nil {
		so = append(so, dtls.WithPSK(func(identity []byte) ([]byte, error) {
			key, err := psk(string(identity))
			if err != nil {
				return nil, fmt.Errorf("psk identity %q: %w", identity, err)
			}
			if len(key) == 0 {
				return nil, fmt.Errorf("psk identity %q: empty key", identity)
			}
			return key, nil
		}))
	}
	if len(opts.Certificates) > 0 {
		so = append(so, dtls.WithCertificates(opts.Certificates...))
	}
	if opts.ClientCAs != nil {
		auth := dtls.VerifyClientCertIfGiven
		if opts.RequireClientCert {
			auth = dtls.RequireAndVerifyClientCert
		}
		so = append(so, dtls.WithClientCAs(opts.ClientCAs), dtls.WithClientAuth(auth))
	}
	if opts.ConnectionID {
		so = append(so, dtls.WithConnectionIDGenerator(dtls.RandomCIDGenerator(cidLength)))
	}
	return so
}

// LocalAddr returns the address the socket is bound to.
func (l *DTLSListener) LocalAddr() netip.AddrPort { return l.local }

// Serve reads the socket, runs handshakes and calls h for every datagram of
// every established association until Close is called, then waits for all
// association readers to return and returns nil.
//
// h is called as h(assoc, key, b): assoc is the [Association] (use it to
// answer), key the peer's address at handshake time (stable for the
// association's life, see Association.Key) and b the decrypted datagram.
// Unlike with the UDP listener, h runs on the association's own reader
// goroutine: calls for one association are sequential, calls for different
// associations are concurrent. Otherwise the [Handler] rules hold: h must not
// block, b aliases the reader's buffer, and a panic in h is not recovered
// (it ends the program unless h recovers it).
//
// Called after Close, Serve returns nil at once. It returns an error if h is
// nil or Serve was called before.
func (l *DTLSListener) Serve(h Handler) error {
	if h == nil {
		return fmt.Errorf("transport: dtls serve on %s: nil handler", l.local)
	}
	if l.closed.Load() {
		return nil
	}
	if !l.serving.CompareAndSwap(false, true) {
		return fmt.Errorf("transport: dtls serve on %s: Serve already called", l.local)
	}
	defer l.wg.Wait()

	// One extra byte makes an oversize datagram visible.
	buf := make([]byte, l.rawLimit+1)
	return readLoop(buf, l.rawLimit, l.conn.ReadFromUDPAddrPort, &l.closed, l.done, &l.readErrors, &l.oversizeDropped,
		func(b []byte, from netip.AddrPort) { l.dispatch(b, from, h) })
}

// dispatch routes one raw datagram to its peer's queue, starting a handshake
// for a new peer. It runs on Serve's goroutine and never blocks.
func (l *DTLSListener) dispatch(d []byte, from netip.AddrPort, h Handler) {
	if len(d) < recordHeaderLen || d[1] != dtlsVersionMajor {
		l.unroutedDropped.Add(1)
		return
	}
	l.mu.Lock()
	p, isNew := l.routeLocked(d, from)
	l.mu.Unlock()
	if p == nil {
		return // counted by routeLocked
	}
	p.pc.deliver(d, from)
	if isNew {
		l.wg.Add(1)
		go l.run(p, h)
	}
}

// routeLocked finds the peer for d, or starts a handshake for it (isNew).
// It returns nil, having counted the drop, if d goes nowhere.
//
// Records with a connection ID go by CID alone; everything else goes by
// source address. A ClientHello from an unknown address starts a handshake.
// A cookie-less ClientHello from the address of an established association
// starts a new handshake beside it (RFC 6347 §4.2.8): until the new peer has
// passed the cookie exchange, only epoch-0 records go to it and the old
// association keeps the rest, so a spoofed ClientHello cannot cut an
// association off; after that, everything from the address goes to the new
// handshake, and the old association is closed when it completes.
func (l *DTLSListener) routeLocked(d []byte, from netip.AddrPort) (p *dtlsAssoc, isNew bool) {
	if d[0] == contentTypeCID {
		if !l.cid || len(d) < recordHeaderLen+cidLength {
			l.unroutedDropped.Add(1)
			return nil, false
		}
		p = l.byCID[string(d[recordCIDOffset:recordCIDOffset+cidLength])] // map index by converted bytes: no allocation
		if p == nil {
			l.unroutedDropped.Add(1)
		}
		return p, false
	}
	hello := isClientHello(d)
	p = l.byAddr[from]
	switch {
	case p == nil:
		if !hello {
			l.unroutedDropped.Add(1)
			return nil, false
		}
		return l.startLocked(from, nil)
	case p.next != nil:
		if p.next.verified.Load() || recordEpoch(d) == 0 {
			return p.next, false
		}
		return p, false
	case hello && p.established:
		if clientHelloHasCookie(d) {
			// A late copy from the handshake that made p: not a new one.
			l.unroutedDropped.Add(1)
			return nil, false
		}
		return l.startLocked(from, p)
	default:
		return p, false
	}
}

// startLocked registers a new handshake from addr, replacing old (if not
// nil) when it completes. It returns nil if the listener is closing or
// MaxHandshakes are in progress.
func (l *DTLSListener) startLocked(addr netip.AddrPort, old *dtlsAssoc) (*dtlsAssoc, bool) {
	if l.closing {
		return nil, false
	}
	if l.handshakes >= l.maxHS {
		l.handshakesDropped.Add(1)
		return nil, false
	}
	p := newDTLSAssoc(l, addr)
	p.handshaking = true
	l.handshakes++
	l.handshakesStarted.Add(1)
	l.peers[p] = struct{}{}
	if old == nil {
		l.byAddr[addr] = p
	} else {
		old.next = p
		p.replaces = old
	}
	return p, true
}

// run is a peer's goroutine: it runs the handshake, then reads the
// association until it ends.
func (l *DTLSListener) run(p *dtlsAssoc, h Handler) {
	defer l.wg.Done()
	defer l.finish(p)

	if err := l.handshake(p); err != nil {
		l.finish(p) // free the slot and the routes before reporting
		if l.ctx.Err() != nil {
			return // aborted by Close: not a failed handshake
		}
		l.handshakesFailed.Add(1)
		if l.onError != nil {
			l.onError(p.key, fmt.Errorf("transport: dtls handshake with %s: %w", p.key, err))
		}
		return
	}

	// The read deadline is the idle limit. It is moved only when it
	// passes, to IdleTimeout after the latest datagram either way, so a
	// busy association re-arms pion's deadline timer once per IdleTimeout,
	// not once per datagram. When it passes idle, one more short read takes
	// a record pion decrypted just as the deadline fired (pion's Read may
	// report the deadline although a record waits).
	buf := make([]byte, l.rawLimit)
	lastRead := time.Now()
	p.lastSent.Store(lastRead.UnixNano())
	_ = p.conn.SetReadDeadline(lastRead.Add(l.idle))
	graced := false
	for {
		n, err := p.conn.Read(buf)
		if err != nil {
			if p.pc.isClosed() || errors.Is(err, io.EOF) || errors.Is(err, net.ErrClosed) || errors.Is(err, dtls.ErrConnClosed) {
				return
			}
			if ne := net.Error(nil); errors.As(err, &ne) && ne.Timeout() {
				last := lastRead
				if sent := time.Unix(0, p.lastSent.Load()); sent.After(last) {
					last = sent
				}
				switch {
				case time.Since(last) < l.idle:
					graced = false
					_ = p.conn.SetReadDeadline(last.Add(l.idle))
				case !graced:
					graced = true
					_ = p.conn.SetReadDeadline(time.Now().Add(idleGrace))
				default:
					l.idleClosed.Add(1)
					return // finish closes it, with a close_notify
				}
				continue
			}
			// Non-fatal alerts and similar: pion keeps the association.
			l.readErrors.Add(1)
			continue
		}
		lastRead, graced = time.Now(), false
		if n > l.maxDatagram {
			l.oversizeDropped.Add(1)
			continue
		}
		l.received.Add(1)
		h(p, p.key, buf[:n])
	}
}

// handshake runs p's server handshake and, if it succeeds, makes p an
// established association (replacing the one it was started beside).
func (l *DTLSListener) handshake(p *dtlsAssoc) error {
	opts := append(slices.Clip(l.serverOpts), dtls.WithServerHelloMessageHook(p.onServerHello))
	conn, err := dtls.ServerWithOptions(p.pc, p.pc.keyAddr, opts...)
	if err != nil {
		return fmt.Errorf("create server: %w", err)
	}
	l.mu.Lock()
	p.conn = conn
	closing := l.closing
	l.mu.Unlock()
	if closing {
		return net.ErrClosed
	}

	ctx, cancel := context.WithTimeout(l.ctx, l.timeout)
	err = conn.HandshakeContext(ctx)
	cancel()
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			stage := "after the cookie exchange"
			if !p.verified.Load() {
				stage = "before the peer completed the cookie exchange"
			}
			return fmt.Errorf("timed out after %v, %s: %w", l.timeout, stage, err)
		}
		return err
	}

	id, err := identityOf(conn)
	if err != nil {
		return err
	}
	p.identity = id

	l.mu.Lock()
	if l.closing {
		l.mu.Unlock()
		return net.ErrClosed
	}
	p.handshaking, p.established = false, true
	l.handshakes--
	l.assocs++
	old := p.replaces
	if old != nil {
		p.replaces = nil
		if old.next == p {
			old.next = nil
		}
		if q := l.byAddr[p.key]; q == old || q == nil {
			l.byAddr[p.key] = p
		}
	}
	l.mu.Unlock()
	l.handshakesOK.Add(1)
	if old != nil {
		l.replaced.Add(1)
		old.closeSilently()
	}
	return nil
}

// identityOf reads what the peer of an established conn authenticated with.
func identityOf(conn *dtls.Conn) (Identity, error) {
	st, ok := conn.ConnectionState()
	if !ok {
		return Identity{}, errors.New("no connection state after the handshake")
	}
	id := Identity{PSKIdentity: string(st.IdentityHint)}
	if len(st.PeerCertificates) > 0 {
		// pion verified the chain against ClientCAs; only read the leaf.
		leaf, err := x509.ParseCertificate(st.PeerCertificates[0])
		if err != nil {
			return Identity{}, fmt.Errorf("parse client certificate: %w", err)
		}
		id.CertCommonName = leaf.Subject.CommonName
		id.CertDNSNames = leaf.DNSNames
	}
	return id, nil
}

// finish removes p from the listener and closes it. It is idempotent.
func (l *DTLSListener) finish(p *dtlsAssoc) {
	l.mu.Lock()
	if _, ok := l.peers[p]; !ok {
		l.mu.Unlock()
		return
	}
	delete(l.peers, p)
	if p.handshaking {
		l.handshakes--
	}
	if p.established {
		l.assocs--
	}
	l.releaseAddrLocked(p)
	if old := p.replaces; old != nil && old.next == p {
		old.next = nil
	}
	if p.cid != "" && l.byCID[p.cid] == p {
		delete(l.byCID, p.cid)
	}
	conn := p.conn
	l.mu.Unlock()

	if conn != nil {
		// pion closes p.pc itself, after its close_notify. Closing p.pc here
		// could beat an Association.Close running on another goroutine to
		// it and swallow that alert.
		_ = conn.Close()
	} else {
		_ = p.pc.Close()
	}
	close(p.done)
}

// moved records that p's peer now sends from addr: pion switched the
// association to addr after authenticating a connection-ID record from it
// (RFC 9146 §6), and is writing there. The address route follows, so a later
// ClientHello from addr replaces p.
func (l *DTLSListener) moved(p *dtlsAssoc, addr netip.AddrPort) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if _, ok := l.peers[p]; !ok || p.addr == addr {
		return
	}
	// A handshake pending at the old address is not p's peer starting over
	// (that peer has just proved it is at addr): it keeps the old address.
	l.releaseAddrLocked(p)
	if _, taken := l.byAddr[addr]; !taken {
		l.byAddr[addr] = p
	}
	p.addr = addr
	l.addressChanges.Add(1)
}

// releaseAddrLocked removes p's address route, handing it to the handshake
// started beside p from the same address, if any.
//
// Routes keep one invariant, checked by the tests: byAddr[a] == p implies
// p.addr == a, and byCID[c] == p implies p.cid == c; so removing p.addr and
// p.cid leaves no route to p.
func (l *DTLSListener) releaseAddrLocked(p *dtlsAssoc) {
	if l.byAddr[p.addr] != p {
		return
	}
	if next := p.next; next != nil {
		l.byAddr[p.addr] = next
		next.replaces = nil
		p.next = nil
	} else {
		delete(l.byAddr, p.addr)
	}
}

// Close ends Serve, every association (each peer gets a close_notify alert)
// and every handshake in progress. It does not wait for them, so a handler
// may call it; Serve returns once they have all ended. Calls after the first
// return nil.
func (l *DTLSListener) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	close(l.done)
	l.cancel()
	l.mu.Lock()
	l.closing = true
	peers := make([]*dtlsAssoc, 0, len(l.peers))
	for p := range l.peers {
		peers = append(peers, p)
	}
	l.mu.Unlock()
	for _, p := range peers {
		_ = p.Close()
	}
	if err := l.conn.Close(); err != nil {
		return fmt.Errorf("transport: dtls close on %s: %w", l.local, err)
	}
	return nil
}

// Stats returns a snapshot of the listener's counters. Fields are read one by
// one, so a snapshot taken under traffic need not be consistent across them.
func (l *DTLSListener) Stats() DTLSStats {
	l.mu.Lock()
	hs, as := l.handshakes, l.assocs
	l.mu.Unlock()
	return DTLSStats{
		HandshakesStarted:    l.handshakesStarted.Load(),
		HandshakesOK:         l.handshakesOK.Load(),
		HandshakesFailed:     l.handshakesFailed.Load(),
		HandshakesDropped:    l.handshakesDropped.Load(),
		HandshakesInProgress: hs,
		Associations:         as,
		Replaced:             l.replaced.Load(),
		IdleClosed:           l.idleClosed.Load(),
		AddressChanges:       l.addressChanges.Load(),
		Received:             l.received.Load(),
		OversizeDropped:      l.oversizeDropped.Load(),
		QueueDropped:         l.queueDropped.Load(),
		UnroutedDropped:      l.unroutedDropped.Load(),
		ReadErrors:           l.readErrors.Load(),
		Sent:                 l.sent.Load(),
		SendErrors:           l.sendErrors.Load(),
	}
}

// dtlsAssoc is one peer: a handshake in progress and then, once it
// completes, an established association (the Association given to the
// Handler).
type dtlsAssoc struct {
	l        *DTLSListener
	key      netip.AddrPort // address at handshake time
	pc       *peerConn
	done     chan struct{} // closed by finish
	verified atomic.Bool   // ServerHello sent: the peer passed the cookie exchange
	lastSent atomic.Int64  // UnixNano of the latest WriteTo that succeeded, for IdleTimeout
	identity Identity      // set before established, then read-only

	// Guarded by l.mu.
	conn        *dtls.Conn
	addr        netip.AddrPort // the byAddr key routing to it
	cid         string         // the byCID key routing to it, if any
	handshaking bool           // counted in l.handshakes
	established bool           // counted in l.assocs
	next        *dtlsAssoc     // handshake from the same address that will replace it
	replaces    *dtlsAssoc     // established association this handshake will replace
}

// Interface check: an association is what the Handler gets.
var _ Association = (*dtlsAssoc)(nil)

func newDTLSAssoc(l *DTLSListener, addr netip.AddrPort) *dtlsAssoc {
	p := &dtlsAssoc{
		l:    l,
		key:  addr,
		addr: addr,
		done: make(chan struct{}),
	}
	p.pc = newPeerConn(p, addr)
	return p
}

// onServerHello is pion's ServerHello hook for p's handshake. pion builds the
// ServerHello only after the client returned the HelloVerifyRequest cookie,
// and the connection ID it offers is in it: register the CID route now, before
// the client can send a record with it.
func (p *dtlsAssoc) onServerHello(m handshake.MessageServerHello) handshake.Message {
	p.verified.Store(true)
	var cid string
	for _, e := range m.Extensions {
		if c, ok := e.(*extension.ConnectionID); ok && len(c.CID) == cidLength {
			cid = string(c.CID)
		}
	}
	if cid != "" {
		l := p.l
		l.mu.Lock()
		if _, ok := l.peers[p]; ok {
			if p.cid != "" && l.byCID[p.cid] == p {
				delete(l.byCID, p.cid)
			}
			// 64 random bits: a collision with an open association is not
			// worth a branch; the newcomer would just fail its handshake.
			if _, taken := l.byCID[cid]; !taken {
				l.byCID[cid] = p
				p.cid = cid
			}
		}
		l.mu.Unlock()
	}
	return &m
}

// WriteTo encrypts b and sends it to the association's peer; addr is ignored.
func (p *dtlsAssoc) WriteTo(b []byte, _ netip.AddrPort) error {
	if p.pc.isClosed() {
		p.l.sendErrors.Add(1)
		return fmt.Errorf("transport: dtls write to %s: %w", p.key, net.ErrClosed)
	}
	if _, err := p.conn.Write(b); err != nil {
		p.l.sendErrors.Add(1)
		if p.pc.isClosed() || errors.Is(err, dtls.ErrConnClosed) {
			return fmt.Errorf("transport: dtls write to %s: %w: %w", p.key, net.ErrClosed, err)
		}
		return fmt.Errorf("transport: dtls write to %s: %w", p.key, err)
	}
	p.l.sent.Add(1)
	p.lastSent.Store(time.Now().UnixNano())
	return nil
}

// LocalAddr returns the listener's address.
func (p *dtlsAssoc) LocalAddr() netip.AddrPort { return p.l.local }

// Identity returns what the peer authenticated with.
func (p *dtlsAssoc) Identity() Identity {
	id := p.identity
	id.CertDNSNames = slices.Clone(id.CertDNSNames)
	return id
}

// Key returns the peer's address at handshake time.
func (p *dtlsAssoc) Key() netip.AddrPort { return p.key }

// RemoteAddr returns the peer's current address.
func (p *dtlsAssoc) RemoteAddr() netip.AddrPort {
	if ua := p.pc.cur.Load(); ua != nil {
		return unmap(ua.AddrPort())
	}
	return p.key
}

// Done returns a channel closed when the association has ended.
func (p *dtlsAssoc) Done() <-chan struct{} { return p.done }

// Close ends the association with a close_notify alert.
func (p *dtlsAssoc) Close() error {
	p.l.mu.Lock()
	conn := p.conn
	p.l.mu.Unlock()
	if conn != nil {
		if err := conn.Close(); err != nil {
			return fmt.Errorf("transport: dtls close of %s: %w", p.key, err)
		}
		return nil
	}
	// Still creating the pion state: closing the queue fails the handshake.
	_ = p.pc.Close()
	return nil
}

// closeSilently ends the association without a close_notify: its peer has
// started a new association from the same address and has no use for it.
func (p *dtlsAssoc) closeSilently() {
	_ = p.pc.Close() // first, so pion's alert has nowhere to go
	_ = p.Close()
}

// inbound is one raw datagram queued for a peer.
type inbound struct {
	buf  *[]byte
	n    int
	from netip.AddrPort
}

// peerConn is the net.PacketConn pion/dtls runs one peer's association over:
// reads come from the queue Serve fills, writes go straight to the shared
// socket. Only pion's record reader calls ReadFrom (one at a time).
type peerConn struct {
	a       *dtlsAssoc
	in      chan inbound
	closed  chan struct{}
	once    sync.Once
	keyAddr *net.UDPAddr                // the key as a net.Addr, given to pion as the peer address
	cur     atomic.Pointer[net.UDPAddr] // the address pion writes to

	mu       sync.Mutex
	deadline time.Time
	wake     chan struct{} // closed and replaced when the deadline changes

	// Owned by the reader: the last source address and its net.Addr, so
	// that reading from an unchanged address does not allocate, and pion
	// sees the same pointer (it compares addresses with ==).
	lastFrom netip.AddrPort
	lastAddr *net.UDPAddr
}

// Interface check: pion runs over it.
var _ net.PacketConn = (*peerConn)(nil)

func newPeerConn(a *dtlsAssoc, addr netip.AddrPort) *peerConn {
	ua := net.UDPAddrFromAddrPort(addr)
	c := &peerConn{
		a:        a,
		in:       make(chan inbound, dtlsQueueLength),
		closed:   make(chan struct{}),
		keyAddr:  ua,
		wake:     make(chan struct{}),
		lastFrom: addr,
		lastAddr: ua,
	}
	c.cur.Store(ua)
	return c
}

// deliver queues a copy of d, or drops and counts it if the queue is full.
// It is called by Serve's goroutine only and never blocks.
func (c *peerConn) deliver(d []byte, from netip.AddrPort) {
	l := c.a.l
	if c.isClosed() {
		l.unroutedDropped.Add(1)
		return
	}
	bp := l.bufs.Get().(*[]byte)
	n := copy(*bp, d)
	select {
	case c.in <- inbound{buf: bp, n: n, from: from}:
	default:
		l.bufs.Put(bp)
		l.queueDropped.Add(1)
	}
}

// isClosed reports whether Close was called.
func (c *peerConn) isClosed() bool {
	select {
	case <-c.closed:
		return true
	default:
		return false
	}
}

// ReadFrom returns the next queued datagram. It honours the read deadline,
// which pion uses to interrupt it.
func (c *peerConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		deadline, wake := c.deadline, c.wake
		c.mu.Unlock()
		var timer *time.Timer
		var expired <-chan time.Time
		if !deadline.IsZero() {
			d := time.Until(deadline)
			if d <= 0 {
				return 0, nil, os.ErrDeadlineExceeded
			}
			timer = time.NewTimer(d)
			expired = timer.C
		}
		n, addr, again, err := c.readOnce(b, wake, expired)
		if timer != nil {
			timer.Stop()
		}
		if !again {
			return n, addr, err
		}
	}
}

// readOnce waits for a datagram, Close, a deadline change (again) or the
// deadline.
func (c *peerConn) readOnce(b []byte, wake <-chan struct{}, expired <-chan time.Time) (n int, addr net.Addr, again bool, err error) {
	select {
	case p := <-c.in:
		n := copy(b, (*p.buf)[:p.n])
		c.a.l.bufs.Put(p.buf)
		if p.from != c.lastFrom {
			c.lastFrom, c.lastAddr = p.from, net.UDPAddrFromAddrPort(p.from)
		}
		return n, c.lastAddr, false, nil
	case <-c.closed:
		return 0, nil, false, net.ErrClosed
	case <-wake:
		return 0, nil, true, nil
	case <-expired:
		return 0, nil, false, os.ErrDeadlineExceeded
	}
}

// WriteTo sends b on the listener's socket to addr, the peer's address as
// pion knows it. When pion starts writing to a new address, the association
// has moved (connection IDs only) and the routes follow.
func (c *peerConn) WriteTo(b []byte, addr net.Addr) (int, error) {
	if c.isClosed() {
		return 0, net.ErrClosed
	}
	ua, ok := addr.(*net.UDPAddr)
	if !ok {
		return 0, fmt.Errorf("transport: dtls write: unexpected address type %T", addr)
	}
	ap := unmap(ua.AddrPort())
	if cur := c.cur.Load(); cur != ua {
		c.cur.Store(ua)
		if cur == nil || unmap(cur.AddrPort()) != ap {
			c.a.l.moved(c.a, ap)
		}
	}
	return c.a.l.conn.WriteToUDPAddrPort(b, ap)
}

// Close unblocks ReadFrom and makes later reads and writes fail. The routes
// are removed by the peer's goroutine when it ends.
func (c *peerConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return nil
}

// LocalAddr returns the listener socket's address.
func (c *peerConn) LocalAddr() net.Addr { return c.a.l.conn.LocalAddr() }

// SetDeadline sets the read deadline; writes do not block.
func (c *peerConn) SetDeadline(t time.Time) error { return c.SetReadDeadline(t) }

// SetReadDeadline sets the deadline for ReadFrom and wakes a blocked call so
// it sees the new deadline.
func (c *peerConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	c.deadline = t
	close(c.wake)
	c.wake = make(chan struct{})
	c.mu.Unlock()
	return nil
}

// SetWriteDeadline does nothing: writes go straight to the UDP socket.
func (c *peerConn) SetWriteDeadline(time.Time) error { return nil }

// isClientHello reports whether d starts with a DTLS handshake record of
// epoch 0 carrying (the first fragment of) a ClientHello.
func isClientHello(d []byte) bool {
	return len(d) >= recordHeaderLen+handshakeHeaderLen &&
		d[0] == contentTypeHandshake &&
		recordEpoch(d) == 0 &&
		d[recordHeaderLen] == handshakeClientHello
}

// recordEpoch returns the epoch of the record at the start of d, which has
// at least a record header.
func recordEpoch(d []byte) uint16 { return binary.BigEndian.Uint16(d[3:5]) }

// clientHelloHasCookie reports whether the ClientHello that isClientHello
// found in d carries a cookie (RFC 6347 §4.2.1). It reports true if it cannot
// tell, so that an unparsable ClientHello never replaces an association.
func clientHelloHasCookie(d []byte) bool {
	hs := d[recordHeaderLen:]
	if fragmentOffset := uint32(hs[6])<<16 | uint32(hs[7])<<8 | uint32(hs[8]); fragmentOffset != 0 {
		return true
	}
	// client_version(2) random(32) session_id<0..32> cookie<0..255>
	body := hs[handshakeHeaderLen:]
	const sessionIDAt = 2 + 32
	if len(body) <= sessionIDAt {
		return true
	}
	cookieAt := sessionIDAt + 1 + int(body[sessionIDAt])
	if len(body) <= cookieAt {
		return true
	}
	return body[cookieAt] != 0
}
