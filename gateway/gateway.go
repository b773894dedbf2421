package gateway

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// peer is where a client's datagrams come from and its replies go: a
// listener and an address on it.
type peer struct {
	via  transport.Sender
	addr netip.AddrPort
	node string // the wireless node id behind a forwarder (§5.5), "" for a direct client
}

func (p peer) String() string {
	if p.node != "" {
		return p.addr.String() + "/node=" + hex.EncodeToString([]byte(p.node))
	}
	return p.addr.String()
}

// encode appends m's wire form for p to dst: wrapped with p's node id when p
// is behind a forwarder (A17: replies carry the same node id, radius 0).
func (p peer) encode(dst []byte, m mqttsn.Message) ([]byte, error) {
	if p.node != "" {
		var err error
		if dst, err = mqttsn.AppendEncapsulation(dst, 0, []byte(p.node)); err != nil {
			return dst, err
		}
	}
	return m.AppendBinary(dst)
}

// Gateway is a transparent MQTT-SN gateway: it owns the sessions of the
// clients that talk to it through one or more listeners, and bridges each of
// them to the broker through an Upstream.
type Gateway struct {
	cfg Config
	up  Upstream
	log zerolog.Logger

	mu         sync.Mutex
	byPeer     map[peer]*session   // connected sessions by address
	byClientID map[string]*session // every session, connected or persisted
	closing    bool
	sessions   sync.WaitGroup

	minus1          *minus1Forwarder
	stats           counters
	fullLoggedAt    atomic.Int64                       // when "gateway full" was last logged (UnixNano)
	gwinfoPending   atomic.Bool                        // a delayed GWINFO is waiting to be sent
	gwinfoMulticast atomic.Pointer[func([]byte) error] // where GWINFO goes instead of the sender
}

// New returns a gateway that bridges clients to the broker through up.
// Feed it datagrams with HandleDatagram and stop it with Close.
func New(cfg Config, up Upstream, log zerolog.Logger) (*Gateway, error) {
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	if up == nil {
		return nil, errors.New("gateway: no upstream")
	}
	g := &Gateway{
		cfg:        cfg,
		up:         up,
		log:        log,
		byPeer:     make(map[peer]*session),
		byClientID: make(map[string]*session),
	}
	if cfg.QoSMinus1 {
		g.minus1 = newMinus1Forwarder(g)
	}
	return g, nil
}

// Stats returns a snapshot of the gateway's counters.
func (g *Gateway) Stats() Stats { return g.stats.snapshot() }

// HandleDatagram is the gateway's transport.Handler: it decodes one datagram
// and hands it to the session it belongs to. It never blocks on a session:
// a full inbox drops the message (the client retransmits).
func (g *Gateway) HandleDatagram(via transport.Sender, from netip.AddrPort, b []byte) {
	g.stats.datagrams.Add(1)
	msg, err := mqttsn.Decode(b)
	if err != nil {
		g.stats.malformed.Add(1)
		if e := g.log.Debug(); e.Enabled() {
			e.Str("peer", from.String()).Err(err).Msg("dropped malformed datagram")
		}
		if emptyClientID(b) {
			// A15: a CONNECT without ClientId is refused, not ignored, so
			// that the sensor learns why.
			g.stats.connectsRefused.Add(1)
			send(peer{via: via, addr: from}, &mqttsn.ConnAck{ReturnCode: mqttsn.RejectedNotSupported})
		}
		return
	}
	p := peer{via: via, addr: from}
	if e, ok := msg.(*mqttsn.Encapsulated); ok {
		// A frame relayed by a forwarder: the node behind it is the client
		// (the codec has checked the wrapper and refused nesting, A17).
		if !g.cfg.AcceptForwarders {
			g.stats.malformed.Add(1)
			g.log.Debug().Str("peer", from.String()).Msg("dropped an encapsulated frame: forwarder.enabled is off")
			return
		}
		g.stats.encapsulated.Add(1)
		p.node = string(e.NodeID)
		msg = e.Message
	}
	if msg.Type() == mqttsn.TypeSearchGW {
		g.searchGW(p)
		return
	}

	g.mu.Lock()
	s := g.byPeer[p]
	g.mu.Unlock()
	if s != nil && msg.Type() != mqttsn.TypeConnect {
		s.post(p, msg)
		return
	}

	switch m := msg.(type) {
	case *mqttsn.Connect:
		g.connect(p, m)
	case *mqttsn.PingReq:
		if m.ClientID == "" || !g.wake(p, m) {
			g.noSession(p, msg)
		}
	case *mqttsn.Publish:
		if m.QoS == mqttsn.QoSMinus1 {
			g.publishMinus1(from, m)
			return
		}
		g.noSession(p, msg)
	default:
		g.noSession(p, msg)
	}
}

// emptyClientID reports whether b is a CONNECT whose only fault is an empty
// ClientId: Flags, ProtocolId 0x01 and Duration, nothing after.
func emptyClientID(b []byte) bool {
	h, err := mqttsn.ParseHeader(b)
	return err == nil && h.Type == mqttsn.TypeConnect && len(b) == h.Size()+4 && b[h.Size()+1] == mqttsn.ProtocolID
}

// noSession answers a message from an address that has no session: a
// request a connected client would send gets DISCONNECT, so that the client
// knows to CONNECT again (§6.12); anything else is dropped. DISCONNECT is
// 2 octets, smaller than any request, so this cannot amplify.
func (g *Gateway) noSession(p peer, msg mqttsn.Message) {
	g.stats.noSession.Add(1)
	if e := g.log.Debug(); e.Enabled() {
		e.Str("peer", p.String()).Stringer("type", msg.Type()).Msg("message from an address with no session")
	}
	switch msg.Type() {
	case mqttsn.TypePublish, mqttsn.TypeRegister, mqttsn.TypeSubscribe, mqttsn.TypeUnsubscribe,
		mqttsn.TypePingReq, mqttsn.TypeWillTopicUpd, mqttsn.TypeWillMsgUpd, mqttsn.TypeDisconnect:
		// A repeated DISCONNECT is answered again: the first answer may
		// have been lost (A10).
		send(p, &mqttsn.Disconnect{})
	}
}

// wake routes a PINGREQ carrying a ClientId from an address that has no
// session to the session of that ClientId (A9): a sleeping client waking up,
// perhaps from a new address. It reports false when there is no such session.
func (g *Gateway) wake(p peer, m *mqttsn.PingReq) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := g.byClientID[m.ClientID]
	if s == nil {
		return false
	}
	if s.owner != "" && ownerKey(p) != s.owner {
		g.refuseIdentity(p, m.ClientID, "PINGREQ for a session owned by another identity")
		send(p, &mqttsn.Disconnect{})
		return true
	}
	s.postControl(evWake{peer: p, sameOwner: s.owner != ""})
	return true
}

// refuseIdentity logs a ClientId refused for the peer's identity.
func (g *Gateway) refuseIdentity(p peer, clientID, why string) {
	g.stats.identityRefused.Add(1)
	id, _ := identityOf(p)
	g.log.Warn().Str("peer", p.String()).Str("client", clientID).Str("psk_identity", id.PSKIdentity).
		Str("cert_cn", id.CertCommonName).Str("reason", why).Msg("refused a ClientId for its identity")
}

// connect routes a CONNECT: to the session already at that address, to the
// session of that ClientID (a takeover or a resumption), or to a new session.
//
// The event is posted while g.mu is held, so that a session that is ending
// (it leaves the maps under g.mu, then hands back what was posted to it)
// never swallows a CONNECT.
func (g *Gateway) connect(p peer, m *mqttsn.Connect) {
	if reason := g.checkConnect(m); reason != "" {
		g.stats.connectsRefused.Add(1)
		if e := g.log.Debug(); e.Enabled() {
			e.Str("peer", p.String()).Str("client", m.ClientID).Str("reason", reason).Msg("refused CONNECT")
		}
		send(p, &mqttsn.ConnAck{ReturnCode: mqttsn.RejectedNotSupported})
		return
	}

	if !g.clientIDAllowed(p, m.ClientID) {
		g.refuseIdentity(p, m.ClientID, "the ClientId does not match the authenticated identity")
		g.stats.connectsRefused.Add(1)
		send(p, &mqttsn.ConnAck{ReturnCode: mqttsn.RejectedNotSupported})
		return
	}
	owner := ownerKey(p)

	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closing {
		return
	}
	atPeer := g.byPeer[p]
	s := g.byClientID[m.ClientID]
	if s != nil && s.owner != "" && s.owner != owner {
		// A session an identity owns is never taken over by another
		// identity, nor by an unauthenticated peer.
		g.refuseIdentity(p, m.ClientID, "the session is owned by another identity")
		g.stats.connectsRefused.Add(1)
		send(p, &mqttsn.ConnAck{ReturnCode: mqttsn.RejectedNotSupported})
		return
	}
	if atPeer != nil && atPeer != s {
		// Another client was connected from this address: that device
		// now calls itself something else, so the old session is lost.
		delete(g.byPeer, p)
		atPeer.replace()
	}
	if s == nil {
		if len(g.byClientID) >= g.cfg.MaxClients {
			g.stats.connectsRefused.Add(1)
			g.gatewayFull(p, m.ClientID)
			send(p, &mqttsn.ConnAck{ReturnCode: mqttsn.RejectedCongestion})
			return
		}
		s = newSession(g, m.ClientID, p)
		s.owner = owner
		g.byClientID[m.ClientID] = s
		g.byPeer[p] = s
		g.sessions.Add(1)
		g.stats.sessions.Add(1)
	}
	sameOwner := s.owner != "" && s.owner == owner
	s.postControl(evConnect{peer: p, msg: m, owner: owner, sameOwner: sameOwner})
}

// gatewayFull logs a CONNECT refused for max_clients, at most once a minute
// (they are counted one by one in ConnectsRefused).
func (g *Gateway) gatewayFull(p peer, clientID string) {
	now := time.Now().UnixNano()
	last := g.fullLoggedAt.Load()
	if now-last < int64(time.Minute) || !g.fullLoggedAt.CompareAndSwap(last, now) {
		return
	}
	g.log.Warn().Str("peer", p.String()).Str("client", clientID).Int("max_clients", g.cfg.MaxClients).
		Msg("refused CONNECT: session.max_clients reached (logged at most once a minute)")
}

// checkConnect returns why a CONNECT must be refused with 0x03, or "".
func (g *Gateway) checkConnect(m *mqttsn.Connect) string {
	switch {
	case len(m.ClientID) > g.cfg.MaxClientIDLength:
		return fmt.Sprintf("ClientId of %d octets, longer than %d", len(m.ClientID), g.cfg.MaxClientIDLength)
	case !utf8.ValidString(m.ClientID) || strings.ContainsRune(m.ClientID, 0):
		return "ClientId is not valid UTF-8 without NUL (MQTT requires it)"
	case m.Duration == 0 && !g.cfg.AllowZeroKeepAlive:
		return "keep-alive 0 (A7)"
	}
	return ""
}

// bind makes p the address of s, forgetting its previous one.
func (g *Gateway) bind(s *session, old, p peer) {
	g.mu.Lock()
	if g.byPeer[old] == s {
		delete(g.byPeer, old)
	}
	if other := g.byPeer[p]; other != nil && other != s {
		other.replace()
	}
	g.byPeer[p] = s
	g.mu.Unlock()
}

// claim makes owner the owner of s, once s accepted a CONNECT from an
// authenticated peer (an unowned session becomes that identity's).
func (g *Gateway) claim(s *session, owner string) {
	if owner == "" {
		return
	}
	g.mu.Lock()
	s.owner = owner
	g.mu.Unlock()
}

// unbind removes s's address, so that its datagrams are no longer routed to it.
func (g *Gateway) unbind(s *session, p peer) {
	g.mu.Lock()
	if g.byPeer[p] == s {
		delete(g.byPeer, p)
	}
	g.mu.Unlock()
}

// forget removes s from the gateway; its goroutine is ending. Events
// posted to s before this are handed back by the caller (see connect).
func (g *Gateway) forget(s *session, p peer) {
	g.mu.Lock()
	if g.byPeer[p] == s {
		delete(g.byPeer, p)
	}
	if g.byClientID[s.clientID] == s {
		delete(g.byClientID, s.clientID)
	}
	g.mu.Unlock()
	g.stats.sessions.Add(-1)
}

// Close ends every session (each client gets DISCONNECT and its upstream
// connection is closed cleanly) and waits for them, at most until ctx ends.
func (g *Gateway) Close(ctx context.Context) error {
	g.mu.Lock()
	g.closing = true
	all := make([]*session, 0, len(g.byClientID))
	for _, s := range g.byClientID {
		all = append(all, s)
	}
	g.mu.Unlock()
	for _, s := range all {
		s.stop()
	}
	if g.minus1 != nil {
		g.minus1.close()
	}
	done := make(chan struct{})
	go func() {
		g.sessions.Wait()
		if g.minus1 != nil {
			g.minus1.wait()
		}
		close(done)
	}()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("gateway: close: %d sessions still ending: %w", g.stats.sessions.Load(), ctx.Err())
	}
}

// send encodes m and writes it to p. Encoding into a stack buffer keeps
// the common replies allocation-free.
func send(p peer, m mqttsn.Message) {
	var buf [64]byte
	b, err := p.encode(buf[:0], m)
	if err != nil {
		return
	}
	_ = p.via.WriteTo(b, p.addr)
}
