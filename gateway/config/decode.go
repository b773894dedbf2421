package config

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"
)

// How the file is decoded, so that every problem is reported and names its key:
//
//   - Each top-level table is first kept as a toml.Primitive, so that a table of
//     the wrong type (gateway = 5) is one error instead of the end of decoding.
//   - Each table is then decoded into a struct of values that accept any TOML
//     type; the type of every key is checked afterwards, by key name.
//   - Integers are checked as int64 before they are narrowed, so that
//     gateway.id = 300 is an error and never 44.
//   - A float key also takes a TOML integer (sleep.tolerance = 2 is 2.0);
//     nan and inf are refused, as a range check alone would let nan through.
//   - upstream.ca_file is looked up on disk while loading, so that a missing
//     file is a configuration error rather than a failure at the first TLS
//     connection. So are the dtls files when dtls.listen is set, and the PSK
//     file is read then: its problems name that file and its own keys.
//   - The listen addresses of [udp] and [dtls] are compared with one another:
//     the same address twice, or a wildcard host and another host on the
//     same port, could not both be bound (or, with SO_REUSEPORT, would share
//     the datagrams between plain UDP and DTLS).
//   - Unknown keys come from toml.MetaData.Undecoded, plus keys that are not
//     lower case (the toml package matches struct fields case-insensitively).
//
// A key missing from the file takes its value from Default, and that value goes
// through the same checks.

// document is the top level of a configuration file.
type document struct {
	Gateway          toml.Primitive `toml:"gateway"`
	UDP              toml.Primitive `toml:"udp"`
	DTLS             toml.Primitive `toml:"dtls"`
	Upstream         toml.Primitive `toml:"upstream"`
	EmbeddedBroker   toml.Primitive `toml:"embedded_broker"`
	Session          toml.Primitive `toml:"session"`
	PredefinedTopics toml.Primitive `toml:"predefined_topics"`
	QoSMinus1        toml.Primitive `toml:"qos_minus1"`
	Forwarder        toml.Primitive `toml:"forwarder"`
	Discovery        toml.Primitive `toml:"discovery"`
	Sleep            toml.Primitive `toml:"sleep"`
	Log              toml.Primitive `toml:"log"`
}

// value is one key's value as written in the file, whatever its TOML type.
type value struct {
	v   any
	set bool
}

// UnmarshalTOML implements toml.Unmarshaler; it accepts every value.
func (x *value) UnmarshalTOML(v any) error {
	x.v, x.set = v, true
	return nil
}

type rawGateway struct {
	ID value `toml:"id"`
}

type rawUDP struct {
	Listen      value `toml:"listen"`
	MaxDatagram value `toml:"max_datagram"`
	ReadBuffer  value `toml:"read_buffer"`
}

type rawDTLS struct {
	Listen            value `toml:"listen"`
	PSKFile           value `toml:"psk_file"`
	CertFile          value `toml:"cert_file"`
	KeyFile           value `toml:"key_file"`
	ClientCAFile      value `toml:"client_ca_file"`
	RequireClientCert value `toml:"require_client_cert"`
	BindClientID      value `toml:"bind_client_id"`
	ConnectionID      value `toml:"connection_id"`
	HandshakeTimeout  value `toml:"handshake_timeout"`
	IdleTimeout       value `toml:"idle_timeout"`
	MaxHandshakes     value `toml:"max_handshakes"`
}

type rawUpstream struct {
	Broker         value `toml:"broker"`
	Username       value `toml:"username"`
	Password       value `toml:"password"`
	ClientIDPrefix value `toml:"client_id_prefix"`
	CAFile         value `toml:"ca_file"`
	SessionExpiry  value `toml:"session_expiry"`
	KeepAlive      value `toml:"keep_alive"`
	ReceiveMaximum value `toml:"receive_maximum"`
	Timeout        value `toml:"timeout"`
}

type rawEmbeddedBroker struct {
	Listen value `toml:"listen"`
}

type rawSession struct {
	MaxClients         value `toml:"max_clients"`
	MaxClientIDLength  value `toml:"max_client_id_length"`
	RetryInterval      value `toml:"retry_interval"`
	MaxRetries         value `toml:"max_retries"`
	MaxTopics          value `toml:"max_topics"`
	AllowZeroKeepAlive value `toml:"allow_zero_keep_alive"`
}

type rawTopic struct {
	ID    value `toml:"id"`
	Topic value `toml:"topic"`
}

type rawQoSMinus1 struct {
	Enabled        value `toml:"enabled"`
	AllowedSenders value `toml:"allowed_senders"`
}

type rawDiscovery struct {
	AdvertiseInterval value `toml:"advertise_interval"`
	Address           value `toml:"address"`
	TTL               value `toml:"ttl"`
	ReplyMulticast    value `toml:"reply_multicast"`
	GWInfoDelayMax    value `toml:"gwinfo_delay_max"`
}

type rawForwarder struct {
	Enabled value `toml:"enabled"`
}

type rawSleep struct {
	Tolerance          value `toml:"tolerance"`
	MaxMessages        value `toml:"max_messages"`
	MaxBytes           value `toml:"max_bytes"`
	BufferQoS0         value `toml:"buffer_qos0"`
	AllowAddressChange value `toml:"allow_address_change"`
}

type rawLog struct {
	Level  value `toml:"level"`
	Format value `toml:"format"`
}

// logLevels are the names accepted in log.level.
var logLevels = map[string]zerolog.Level{
	"debug": zerolog.DebugLevel,
	"info":  zerolog.InfoLevel,
	"warn":  zerolog.WarnLevel,
	"error": zerolog.ErrorLevel,
}

// decoder collects the problems of one file.
type decoder struct {
	file string
	md   *toml.MetaData
	errs []error
	// failed holds the keys already reported, so that keys below them are not
	// reported again as unknown.
	failed map[string]bool
}

func parse(name string, data []byte) (Config, error) {
	var doc document
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return Config{}, errors.Join(&Error{File: name, Line: pe.Position.Line, Reason: oneLine(pe.Message)})
		}
		// Not expected: every table of document is a Primitive.
		return Config{}, errors.Join(&Error{File: name, Reason: oneLine(err.Error())})
	}
	d := &decoder{file: name, md: &md, failed: make(map[string]bool)}

	var (
		gw  rawGateway
		udp rawUDP
		dt  rawDTLS
		up  rawUpstream
		eb  rawEmbeddedBroker
		ses rawSession
		qm1 rawQoSMinus1
		fwd rawForwarder
		dsc rawDiscovery
		slp rawSleep
		lg  rawLog
	)
	d.table("gateway", doc.Gateway, &gw)
	d.table("udp", doc.UDP, &udp)
	d.table("dtls", doc.DTLS, &dt)
	d.table("upstream", doc.Upstream, &up)
	d.table("embedded_broker", doc.EmbeddedBroker, &eb)
	d.table("session", doc.Session, &ses)
	topics := d.topicTables(doc.PredefinedTopics)
	d.table("qos_minus1", doc.QoSMinus1, &qm1)
	d.table("forwarder", doc.Forwarder, &fwd)
	d.table("discovery", doc.Discovery, &dsc)
	d.table("sleep", doc.Sleep, &slp)
	d.table("log", doc.Log, &lg)

	def := Default()
	gateway := d.gateway(gw, def.Gateway)
	udpConfig, udpAddrs := d.udp(udp, def.UDP)
	cfg := Config{
		Gateway:          gateway,
		UDP:              udpConfig,
		DTLS:             d.dtls(dt, def.DTLS, udpAddrs),
		Upstream:         d.upstream(up, def.Upstream),
		Session:          d.session(ses, def.Session),
		PredefinedTopics: d.topics(topics),
		QoSMinus1:        d.qosMinus1(qm1, def.QoSMinus1),
		Forwarder:        d.forwarder(fwd, def.Forwarder),
		Discovery:        d.discovery(dsc, def.Discovery),
		Sleep:            d.sleep(slp, def.Sleep),
		Log:              d.log(lg, def.Log),
	}
	cfg.EmbeddedBroker = d.embeddedBroker(eb, def.EmbeddedBroker, cfg.Upstream.Embedded())
	if longest := cfg.LongestSilence(); cfg.DTLS.Enabled() && cfg.DTLS.IdleTimeout < longest && !d.failed["dtls.idle_timeout"] {
		d.fail("dtls.idle_timeout", "%q is shorter than the longest silence a session allows (65535 s × %g = %s): a silent sensor's association would close under its session (the larger of the keep-alive's %g and sleep.tolerance); make it at least %q",
			shortDuration(cfg.DTLS.IdleTimeout), cfg.silenceFactor(), longest.Round(time.Second), keepAliveTolerance, shortDuration(longest.Truncate(time.Hour)+time.Hour))
	}

	errs := append(d.unknownKeys(), d.errs...)
	if len(errs) > 0 {
		return Config{}, errors.Join(errs...)
	}
	return cfg, nil
}

// fail records a problem with key.
func (d *decoder) fail(key, format string, args ...any) {
	d.failed[key] = true
	d.errs = append(d.errs, &Error{File: d.file, Key: key, Reason: oneLine(fmt.Sprintf(format, args...))})
}

// table decodes the top-level table key into dst, if the file has it.
func (d *decoder) table(key string, p toml.Primitive, dst any) {
	if !d.md.IsDefined(key) {
		return
	}
	var v any
	if err := d.md.PrimitiveDecode(p, &v); err != nil {
		d.fail(key, "%v", err)
		return
	}
	if _, ok := v.(map[string]any); !ok {
		d.fail(key, "must be a table ([%s]), not %s", key, describe(v))
		return
	}
	if err := d.md.PrimitiveDecode(p, dst); err != nil {
		d.fail(key, "%v", err) // not expected: every field is a value
	}
}

// topicTables decodes the [[predefined_topics]] array, if the file has it.
func (d *decoder) topicTables(p toml.Primitive) []rawTopic {
	const key = "predefined_topics"
	if !d.md.IsDefined(key) {
		return nil
	}
	var v any
	if err := d.md.PrimitiveDecode(p, &v); err != nil {
		d.fail(key, "%v", err)
		return nil
	}
	switch v := v.(type) {
	case []map[string]any: // [[predefined_topics]]
	case []any: // predefined_topics = [{...}, ...]
		ok := true
		for i, e := range v {
			if _, isTable := e.(map[string]any); !isTable {
				d.fail(fmt.Sprintf("%s[%d]", key, i), "must be a table such as {id = 1, topic = \"a/b\"}, not %s", describe(e))
				ok = false
			}
		}
		if !ok {
			d.failed[key] = true // its keys are not decoded: do not call them unknown
			return nil
		}
	default:
		d.fail(key, "must be an array of tables ([[%s]]), not %s", key, describe(v))
		return nil
	}
	var topics []rawTopic
	if err := d.md.PrimitiveDecode(p, &topics); err != nil {
		d.fail(key, "%v", err) // not expected: every element is a table
		return nil
	}
	return topics
}

// unknownKeys reports, in file order, the keys that the schema does not have.
// Keys below a reported key are left out.
func (d *decoder) unknownKeys() []error {
	undecoded := make(map[string]bool)
	for _, k := range d.md.Undecoded() {
		undecoded[k.String()] = true
	}
	reported := make(map[string]bool)
	var errs []error
	for _, k := range d.md.Keys() {
		s := k.String()
		if reported[s] || below(k, reported) || below(k, d.failed) {
			continue
		}
		var reason string
		switch {
		case undecoded[s]:
			reason = "unknown key"
		case s != strings.ToLower(s):
			reason = "unknown key (keys are lower case)"
		default:
			continue
		}
		reported[s] = true
		errs = append(errs, &Error{File: d.file, Key: s, Reason: reason})
	}
	return errs
}

// below reports whether a proper prefix of k is in keys.
func below(k toml.Key, keys map[string]bool) bool {
	for i := 1; i < len(k); i++ {
		if keys[k[:i].String()] {
			return true
		}
	}
	return false
}

func (d *decoder) gateway(r rawGateway, def GatewayConfig) GatewayConfig {
	id, _ := d.integer("gateway.id", r.ID, int64(def.ID), 0, 255)
	return GatewayConfig{ID: uint8(id)}
}

// udp returns the [udp] table, and its listen addresses for comparing with
// those of [dtls].
func (d *decoder) udp(r rawUDP, def UDPConfig) (UDPConfig, []listenAddr) {
	addrs := d.listen("udp.listen", r.Listen, def.Listen, false)
	maxDatagram, _ := d.integer("udp.max_datagram", r.MaxDatagram, int64(def.MaxDatagram), 16, 65535)
	readBuffer, _ := d.integer("udp.read_buffer", r.ReadBuffer, int64(def.ReadBuffer), 0, 256<<20)
	return UDPConfig{
		Listen:      addrStrings(addrs),
		MaxDatagram: int(maxDatagram),
		ReadBuffer:  int(readBuffer),
	}, addrs
}

// listenAddr is one checked address of a listen key.
type listenAddr struct {
	s     string // as written
	index int    // in the key's array
	// host is the host in a form fit for comparing: "" for every wildcard
	// ("", "0.0.0.0", "::": Go binds each of them dual-stack), an IP address
	// as netip formats it (IPv4-mapped ones as IPv4), or a lower-case name.
	host string
	port uint16
}

// parseListenAddr returns s, which checkHostPort accepted, as a listenAddr.
func parseListenAddr(s string, index int) listenAddr {
	host, port, _ := net.SplitHostPort(s)
	p, _ := strconv.ParseUint(port, 10, 16)
	a := listenAddr{s: s, index: index, host: strings.ToLower(host), port: uint16(p)}
	if ip, err := netip.ParseAddr(host); err == nil {
		ip = ip.Unmap()
		if ip.IsUnspecified() {
			a.host = ""
		} else {
			a.host = ip.String()
		}
	}
	return a
}

// clash says how a and b, two addresses to bind, get in each other's way:
// "same" for the same address, "wildcard" when they share a port and one of
// them takes it on every interface, "" when they do not. Port 0 picks a free
// port, so only the same spelling twice clashes there.
func clash(a, b listenAddr) string {
	switch {
	case a.s == b.s:
		return "same"
	case a.port == 0 || a.port != b.port:
		return ""
	case a.host == b.host:
		return "same"
	case a.host == "" || b.host == "":
		return "wildcard"
	}
	return ""
}

// clashReason describes the clash kind of a, at key, with b, at otherKey.
func clashReason(kind string, a listenAddr, otherKey string, b listenAddr) string {
	if kind == "same" {
		if a.s == b.s {
			return fmt.Sprintf("%q is already listed as %s[%d]", a.s, otherKey, b.index)
		}
		return fmt.Sprintf("%q is already listed as %s[%d] (written %q)", a.s, otherKey, b.index, b.s)
	}
	return fmt.Sprintf("%q and %s[%d] %q share port %d, and a wildcard host takes it on every interface", a.s, otherKey, b.index, b.s, a.port)
}

// addrStrings returns the addresses as written, or nil if there are none.
func addrStrings(addrs []listenAddr) []string {
	if len(addrs) == 0 {
		return nil
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.s
	}
	return s
}

// listen returns the addresses at key (udp.listen or dtls.listen), or def
// when the file does not set them; allowEmpty accepts an empty array.
// An address that clashes with an earlier one is reported and left out.
func (d *decoder) listen(key string, v value, def []string, allowEmpty bool) []listenAddr {
	list := make([]any, len(def))
	for i, s := range def {
		list[i] = s
	}
	if v.set {
		var ok bool
		if list, ok = v.v.([]any); !ok {
			d.fail(key, "must be an array of \"host:port\" strings, not %s", describe(v.v))
			return nil
		}
		if len(list) == 0 && !allowEmpty {
			d.fail(key, "must list at least one address")
			return nil
		}
	}
	addrs := make([]listenAddr, 0, len(list))
	for i, e := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		s, ok := e.(string)
		if !ok {
			d.fail(k, "must be a \"host:port\" string, not %s", describe(e))
			continue
		}
		if why := checkHostPort(s); why != "" {
			d.fail(k, "%s", why)
			continue
		}
		a := parseListenAddr(s, i)
		clashed := false
		for _, b := range addrs {
			if kind := clash(a, b); kind != "" {
				d.fail(k, "%s", clashReason(kind, a, key, b))
				clashed = true
				break
			}
		}
		if !clashed {
			addrs = append(addrs, a)
		}
	}
	return addrs
}

// dtls returns the [dtls] table. udp holds the udp.listen addresses, which
// the DTLS ones must keep clear of.
//
// With dtls.listen empty, DTLS is off: the other keys are checked for their
// types and ranges only, and no file is looked at.
func (d *decoder) dtls(r rawDTLS, def DTLSConfig, udp []listenAddr) DTLSConfig {
	const listenKey = "dtls.listen"
	addrs := d.listen(listenKey, r.Listen, def.Listen, true)
	kept := addrs[:0]
	for _, a := range addrs {
		clashed := false
		for _, b := range udp {
			if a.port == 0 {
				break // a free port, never one udp.listen has
			}
			if kind := clash(a, b); kind != "" {
				d.fail(fmt.Sprintf("%s[%d]", listenKey, a.index), "%s; DTLS needs a port of its own", clashReason(kind, a, "udp.listen", b))
				clashed = true
				break
			}
		}
		if !clashed {
			kept = append(kept, a)
		}
	}
	// On as written, even when an address was wrong, so that the files are
	// checked in the same pass.
	on := len(def.Listen) > 0
	if r.Listen.set {
		list, _ := r.Listen.v.([]any)
		on = len(list) > 0
	}

	c := DTLSConfig{Listen: addrStrings(kept)}
	var pskOK, certOK, keyOK, caOK, requireOK bool
	c.PSKFile, pskOK = d.str("dtls.psk_file", r.PSKFile, def.PSKFile)
	c.CertFile, certOK = d.str("dtls.cert_file", r.CertFile, def.CertFile)
	c.KeyFile, keyOK = d.str("dtls.key_file", r.KeyFile, def.KeyFile)
	c.ClientCAFile, caOK = d.str("dtls.client_ca_file", r.ClientCAFile, def.ClientCAFile)
	c.RequireClientCert, requireOK = d.boolean("dtls.require_client_cert", r.RequireClientCert, def.RequireClientCert)
	c.BindClientID, _ = d.boolean("dtls.bind_client_id", r.BindClientID, def.BindClientID)
	c.ConnectionID, _ = d.boolean("dtls.connection_id", r.ConnectionID, def.ConnectionID)

	if on {
		certPair := certOK && keyOK && c.CertFile != "" && c.KeyFile != ""
		if pskOK && certOK && keyOK && c.PSKFile == "" && c.CertFile == "" && c.KeyFile == "" {
			d.fail("dtls.psk_file", "dtls.listen is set but DTLS has no credentials: set dtls.psk_file, or dtls.cert_file and dtls.key_file, or both")
		}
		if pskOK && c.PSKFile != "" {
			if why := checkFile(c.PSKFile, "a PSK file"); why != "" {
				d.fail("dtls.psk_file", "%s", why)
			} else {
				c.PSKs = d.psks(c.PSKFile)
			}
		}
		if certOK && c.CertFile != "" {
			if why := checkFile(c.CertFile, "a PEM file"); why != "" {
				d.fail("dtls.cert_file", "%s", why)
			}
		}
		if certOK && keyOK && c.CertFile != "" && c.KeyFile == "" {
			d.fail("dtls.key_file", "must be set with dtls.cert_file: the private key of that certificate")
		}
		if keyOK && c.KeyFile != "" {
			if why := checkFile(c.KeyFile, "a PEM file"); why != "" {
				d.fail("dtls.key_file", "%s", why)
			}
		}
		if certOK && keyOK && c.KeyFile != "" && c.CertFile == "" {
			d.fail("dtls.cert_file", "must be set with dtls.key_file: the certificate of that key")
		}
		if caOK && c.ClientCAFile != "" {
			if certOK && keyOK && c.CertFile == "" && c.KeyFile == "" {
				d.fail("dtls.client_ca_file", "only used with dtls.cert_file and dtls.key_file: sensors present certificates only in certificate handshakes, never in PSK ones")
			} else if why := checkFile(c.ClientCAFile, "a PEM file"); why != "" {
				d.fail("dtls.client_ca_file", "%s", why)
			}
		}
		if requireOK && caOK && c.RequireClientCert && c.ClientCAFile == "" {
			why := "true needs dtls.client_ca_file, the CA certificates that sensors' certificates are verified with"
			if certOK && keyOK && !certPair {
				why += ", and dtls.cert_file and dtls.key_file"
			}
			d.fail("dtls.require_client_cert", "%s", why)
		}
	}

	c.HandshakeTimeout, _ = d.duration("dtls.handshake_timeout", r.HandshakeTimeout, def.HandshakeTimeout, time.Second, 2*time.Minute)
	c.IdleTimeout, _ = d.duration("dtls.idle_timeout", r.IdleTimeout, def.IdleTimeout, time.Minute, 8760*time.Hour)
	maxHandshakes, _ := d.integer("dtls.max_handshakes", r.MaxHandshakes, int64(def.MaxHandshakes), 1, 100_000)
	c.MaxHandshakes = int(maxHandshakes)
	return c
}

// psks loads the PSK file at path, which checkFile accepted, and records its
// problems, which name that file.
func (d *decoder) psks(path string) PSKTable {
	t, err := LoadPSKFile(path)
	if err == nil {
		return t
	}
	for _, e := range unjoinErrors(err) {
		var ce *Error
		if errors.As(e, &ce) {
			d.errs = append(d.errs, ce)
			continue
		}
		// The file changed since checkFile looked at it.
		d.fail("dtls.psk_file", "cannot read %q: %s", path, pathReason(e))
	}
	return nil
}

// unjoinErrors returns the errors joined in err, or err alone.
func unjoinErrors(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func (d *decoder) upstream(r rawUpstream, def UpstreamConfig) UpstreamConfig {
	var u UpstreamConfig
	u.Broker, _ = d.str("upstream.broker", r.Broker, def.Broker)
	brokerOK := true
	if why := checkBroker(u.Broker); why != "" {
		d.fail("upstream.broker", "%s", why)
		brokerOK = false
	}
	u.Username, _ = d.str("upstream.username", r.Username, def.Username)
	u.Password, _ = d.str("upstream.password", r.Password, def.Password)

	if p, ok := d.str("upstream.client_id_prefix", r.ClientIDPrefix, def.ClientIDPrefix); ok {
		if why := checkClientIDPrefix(p); why != "" {
			d.fail("upstream.client_id_prefix", "%s", why)
		} else {
			u.ClientIDPrefix = p
		}
	}

	const caKey = "upstream.ca_file"
	if ca, ok := d.str(caKey, r.CAFile, def.CAFile); ok && ca != "" {
		// With a broken broker URL the scheme is unknown: that error is enough.
		switch {
		case !brokerOK:
		case !brokerTLS(u.Broker):
			d.fail(caKey, "only used with a tls:// or ssl:// broker; upstream.broker is %q", u.Broker)
		default:
			if why := checkFile(ca, "a PEM file"); why != "" {
				d.fail(caKey, "%s", why)
			} else {
				u.CAFile = ca
			}
		}
	}

	u.SessionExpiry, _ = d.duration("upstream.session_expiry", r.SessionExpiry, def.SessionExpiry, 0, 8760*time.Hour)
	u.KeepAlive, _ = d.seconds("upstream.keep_alive", r.KeepAlive, def.KeepAlive, 5*time.Second, 18*time.Hour)
	recvMax, _ := d.integer("upstream.receive_maximum", r.ReceiveMaximum, int64(def.ReceiveMaximum), 1, 65535)
	u.ReceiveMaximum = int(recvMax)
	u.Timeout, _ = d.duration("upstream.timeout", r.Timeout, def.Timeout, time.Second, 5*time.Minute)
	return u
}

func (d *decoder) embeddedBroker(r rawEmbeddedBroker, def EmbeddedBrokerConfig, used bool) EmbeddedBrokerConfig {
	listen, ok := d.str("embedded_broker.listen", r.Listen, def.Listen)
	if ok && used {
		if why := checkHostPort(listen); why != "" {
			d.fail("embedded_broker.listen", "%s", why)
		}
	}
	return EmbeddedBrokerConfig{Listen: listen}
}

func (d *decoder) session(r rawSession, def SessionConfig) SessionConfig {
	maxClients, _ := d.integer("session.max_clients", r.MaxClients, int64(def.MaxClients), 1, 1_000_000)
	maxIDLen, _ := d.integer("session.max_client_id_length", r.MaxClientIDLength, int64(def.MaxClientIDLength), 1, 65535)
	retry, _ := d.duration("session.retry_interval", r.RetryInterval, def.RetryInterval, 100*time.Millisecond, time.Hour)
	retries, _ := d.integer("session.max_retries", r.MaxRetries, int64(def.MaxRetries), 0, 100)
	maxTopics, _ := d.integer("session.max_topics", r.MaxTopics, int64(def.MaxTopics), 1, 65534)
	zeroKeepAlive, _ := d.boolean("session.allow_zero_keep_alive", r.AllowZeroKeepAlive, def.AllowZeroKeepAlive)
	return SessionConfig{
		MaxClients:         int(maxClients),
		MaxClientIDLength:  int(maxIDLen),
		RetryInterval:      retry,
		MaxRetries:         int(retries),
		MaxTopics:          int(maxTopics),
		AllowZeroKeepAlive: zeroKeepAlive,
	}
}

func (d *decoder) topics(raw []rawTopic) []PredefinedTopic {
	if len(raw) == 0 {
		return nil
	}
	topics := make([]PredefinedTopic, 0, len(raw))
	ids := make(map[int64]int)
	names := make(map[string]int)
	for i, r := range raw {
		idKey := fmt.Sprintf("predefined_topics[%d].id", i)
		topicKey := fmt.Sprintf("predefined_topics[%d].topic", i)

		id, idOK := int64(0), false
		switch n, isInt := r.ID.v.(int64); {
		case !r.ID.set:
			d.fail(idKey, "missing; every [[predefined_topics]] needs an id and a topic")
		case !isInt:
			d.fail(idKey, "must be an integer, not %s", describe(r.ID.v))
		case n == 0 || n == 0xFFFF:
			d.fail(idKey, "%d is reserved (use 1..65534)", n)
		case n < 1 || n > 0xFFFE:
			d.fail(idKey, "%d is out of range 1..65534", n)
		default:
			if j, dup := ids[n]; dup {
				d.fail(idKey, "%d is already used by predefined_topics[%d]", n, j)
				break
			}
			ids[n] = i
			id, idOK = n, true
		}

		name, nameOK := "", false
		switch s, isStr := r.Topic.v.(string); {
		case !r.Topic.set:
			d.fail(topicKey, "missing; every [[predefined_topics]] needs an id and a topic")
		case !isStr:
			d.fail(topicKey, "must be a string, not %s", describe(r.Topic.v))
		default:
			if why := checkTopic(s); why != "" {
				d.fail(topicKey, "%s", why)
				break
			}
			if j, dup := names[s]; dup {
				d.fail(topicKey, "%q is already used by predefined_topics[%d]", s, j)
				break
			}
			names[s] = i
			name, nameOK = s, true
		}

		if idOK && nameOK {
			topics = append(topics, PredefinedTopic{ID: uint16(id), Topic: name})
		}
	}
	return topics
}

func (d *decoder) discovery(r rawDiscovery, def DiscoveryConfig) DiscoveryConfig {
	c := def
	const ivKey = "discovery.advertise_interval"
	if iv, ok := d.seconds(ivKey, r.AdvertiseInterval, def.AdvertiseInterval, 0, 0xFFFF*time.Second); ok {
		c.AdvertiseInterval = iv
	}
	if s, ok := d.str("discovery.address", r.Address, def.Address.String()); ok {
		switch ap, err := netip.ParseAddrPort(s); {
		case err != nil:
			d.fail("discovery.address", "%q is not an IP address and port such as \"225.1.1.1:1884\" or \"[ff02::1]:1884\"", s)
		case !ap.Addr().IsMulticast():
			d.fail("discovery.address", "%s is not a multicast address (224.0.0.0/4 or ff00::/8)", ap.Addr())
		case ap.Port() == 0:
			d.fail("discovery.address", "%q has port 0", s)
		default:
			c.Address = ap
		}
	}
	if ttl, ok := d.integer("discovery.ttl", r.TTL, int64(def.TTL), 1, 255); ok {
		c.TTL = int(ttl)
	}
	c.ReplyMulticast, _ = d.boolean("discovery.reply_multicast", r.ReplyMulticast, def.ReplyMulticast)
	if dm, ok := d.duration("discovery.gwinfo_delay_max", r.GWInfoDelayMax, def.GWInfoDelayMax, 0, 10*time.Second); ok {
		c.GWInfoDelayMax = dm
	}
	return c
}

func (d *decoder) forwarder(r rawForwarder, def ForwarderConfig) ForwarderConfig {
	enabled, _ := d.boolean("forwarder.enabled", r.Enabled, def.Enabled)
	return ForwarderConfig{Enabled: enabled}
}

func (d *decoder) qosMinus1(r rawQoSMinus1, def QoSMinus1Config) QoSMinus1Config {
	enabled, _ := d.boolean("qos_minus1.enabled", r.Enabled, def.Enabled)
	return QoSMinus1Config{
		Enabled:        enabled,
		AllowedSenders: d.senders(r.AllowedSenders, def.AllowedSenders),
	}
}

// senders returns the qos_minus1.allowed_senders networks, masked, or a copy
// of def when the file does not set them. An empty list gives nil.
func (d *decoder) senders(v value, def []netip.Prefix) []netip.Prefix {
	const key = "qos_minus1.allowed_senders"
	if !v.set {
		return append([]netip.Prefix(nil), def...)
	}
	list, ok := v.v.([]any)
	if !ok {
		d.fail(key, "must be an array of network strings such as \"10.0.0.0/8\", not %s", describe(v.v))
		return def
	}
	var prefixes []netip.Prefix
	seen := make(map[netip.Prefix]int)
	for i, e := range list {
		k := fmt.Sprintf("%s[%d]", key, i)
		s, ok := e.(string)
		if !ok {
			d.fail(k, "must be a network string such as \"10.0.0.0/8\", not %s", describe(e))
			continue
		}
		p, why := parseSender(s)
		if why != "" {
			d.fail(k, "%s", why)
			continue
		}
		if j, dup := seen[p]; dup {
			shown := strconv.Quote(s)
			if p.String() != s {
				shown += " (" + p.String() + ")"
			}
			d.fail(k, "%s is already listed as %s[%d]", shown, key, j)
			continue
		}
		seen[p] = i
		prefixes = append(prefixes, p)
	}
	return prefixes
}

func (d *decoder) sleep(r rawSleep, def SleepConfig) SleepConfig {
	tolerance, _ := d.float("sleep.tolerance", r.Tolerance, def.Tolerance, 1, 10)
	maxMessages, _ := d.integer("sleep.max_messages", r.MaxMessages, int64(def.MaxMessages), 1, 100_000)
	maxBytes, _ := d.integer("sleep.max_bytes", r.MaxBytes, int64(def.MaxBytes), 1024, 64<<20)
	bufferQoS0, _ := d.boolean("sleep.buffer_qos0", r.BufferQoS0, def.BufferQoS0)
	addressChange, _ := d.boolean("sleep.allow_address_change", r.AllowAddressChange, def.AllowAddressChange)
	return SleepConfig{
		Tolerance:          tolerance,
		MaxMessages:        int(maxMessages),
		MaxBytes:           int(maxBytes),
		BufferQoS0:         bufferQoS0,
		AllowAddressChange: addressChange,
	}
}

func (d *decoder) log(r rawLog, def LogConfig) LogConfig {
	l := def
	if name, ok := d.str("log.level", r.Level, def.Level.String()); ok {
		if lvl, known := logLevels[name]; known {
			l.Level = lvl
		} else {
			d.fail("log.level", "%q is not a log level (use debug, info, warn or error)", name)
		}
	}
	if f, ok := d.str("log.format", r.Format, def.Format); ok {
		if f == FormatConsole || f == FormatJSON {
			l.Format = f
		} else {
			d.fail("log.format", "%q is not a log format (use console or json)", f)
		}
	}
	return l
}

// integer returns the integer at key, or def when the file does not set it,
// after checking that it lies in lo..hi. On failure it returns def and false.
func (d *decoder) integer(key string, v value, def, lo, hi int64) (int64, bool) {
	n := def
	if v.set {
		i, ok := v.v.(int64)
		if !ok {
			d.fail(key, "must be an integer, not %s", describe(v.v))
			return def, false
		}
		n = i
	}
	if n < lo || n > hi {
		d.fail(key, "%d is out of range %d..%d", n, lo, hi)
		return def, false
	}
	return n, true
}

// float returns the number at key, or def when the file does not set it,
// after checking that it is finite and lies in lo..hi. A TOML integer is
// taken as a float (1 is 1.0). On failure it returns def and false.
func (d *decoder) float(key string, v value, def, lo, hi float64) (float64, bool) {
	f, shown := def, formatFloat(def)
	if v.set {
		switch n := v.v.(type) {
		case float64:
			f, shown = n, formatFloat(n)
		case int64:
			f, shown = float64(n), strconv.FormatInt(n, 10)
		default:
			d.fail(key, "must be a number such as %s, not %s", formatFloat(def), describe(v.v))
			return def, false
		}
	}
	if math.IsNaN(f) || math.IsInf(f, 0) {
		d.fail(key, "%s is not a finite number (use %s..%s)", shown, formatFloat(lo), formatFloat(hi))
		return def, false
	}
	if f < lo || f > hi {
		d.fail(key, "%s is out of range %s..%s", shown, formatFloat(lo), formatFloat(hi))
		return def, false
	}
	return f, true
}

// str returns the string at key, or def when the file does not set it.
// On failure it returns def and false.
func (d *decoder) str(key string, v value, def string) (string, bool) {
	if !v.set {
		return def, true
	}
	s, ok := v.v.(string)
	if !ok {
		d.fail(key, "must be a string, not %s", describe(v.v))
		return def, false
	}
	return s, true
}

// boolean returns the boolean at key, or def when the file does not set it.
// On failure it returns def and false.
func (d *decoder) boolean(key string, v value, def bool) (bool, bool) {
	if !v.set {
		return def, true
	}
	b, ok := v.v.(bool)
	if !ok {
		d.fail(key, "must be a boolean (true or false), not %s", describe(v.v))
		return def, false
	}
	return b, true
}

// duration returns the duration at key, or def when the file does not set
// it, after checking that it lies in lo..hi. On failure it returns def and
// false.
func (d *decoder) duration(key string, v value, def, lo, hi time.Duration) (time.Duration, bool) {
	return d.durationIn(key, v, def, lo, hi, false)
}

// seconds is duration for a value counted in whole seconds on the wire,
// such as an MQTT keep-alive: "1.5s" is an error.
func (d *decoder) seconds(key string, v value, def, lo, hi time.Duration) (time.Duration, bool) {
	return d.durationIn(key, v, def, lo, hi, true)
}

// durationIn is duration, and with wholeSeconds also checks that the value
// is a whole number of seconds.
func (d *decoder) durationIn(key string, v value, def, lo, hi time.Duration, wholeSeconds bool) (time.Duration, bool) {
	if !v.set {
		return def, true
	}
	s, ok := v.v.(string)
	if !ok {
		d.fail(key, "must be a duration string such as \"10s\", not %s", describe(v.v))
		return def, false
	}
	dur, err := time.ParseDuration(s)
	if err != nil {
		d.fail(key, "%q is not a duration (use e.g. \"10s\")", s)
		return def, false
	}
	if wholeSeconds && dur%time.Second != 0 {
		d.fail(key, "%q is not a whole number of seconds", s)
		return def, false
	}
	if dur < lo || dur > hi {
		d.fail(key, "%q is out of range %s..%s", s, shortDuration(lo), shortDuration(hi))
		return def, false
	}
	return dur, true
}

// checkHostPort says what is wrong with a "host:port" address, or "" if
// nothing is. The host may be empty, an IP literal or a name; the port must be
// numeric, 0..65535.
func checkHostPort(s string) string {
	_, port, err := net.SplitHostPort(s)
	if err != nil {
		var ae *net.AddrError
		if errors.As(err, &ae) {
			return fmt.Sprintf("%q is not a host:port address: %s", s, ae.Err)
		}
		return fmt.Sprintf("%q is not a host:port address", s)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("%q: port %q is not a number in 0..65535", s, port)
	}
	return ""
}

// checkBroker says what is wrong with an upstream.broker value, or "" if
// nothing is.
func checkBroker(s string) string {
	if s == Embedded {
		return ""
	}
	const want = `use "embedded" or a URL such as "tcp://host:1883" or "tls://host:8883"`
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return fmt.Sprintf("%q is not a broker URL; %s", redact(s, u), want)
	}
	shown := redact(s, u)
	switch u.Scheme {
	case "tcp", "mqtt", "tls", "ssl":
	default:
		return fmt.Sprintf("%q: scheme %q is not supported (use tcp, mqtt, tls or ssl)", shown, u.Scheme)
	}
	switch {
	case u.User != nil:
		return fmt.Sprintf("%q: put credentials in upstream.username and upstream.password, not in the URL", shown)
	case u.Hostname() == "":
		return fmt.Sprintf("%q has no host; %s", shown, want)
	case u.Port() == "":
		return fmt.Sprintf("%q has no port; %s", shown, want)
	case (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "":
		return fmt.Sprintf("%q: a broker URL has no path, query or fragment", shown)
	}
	if p, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || p == 0 {
		return fmt.Sprintf("%q: port %q is not a number in 1..65535", shown, u.Port())
	}
	return ""
}

// brokerTLS reports whether the upstream.broker value s, already checked by
// checkBroker, is a tls:// or ssl:// URL.
func brokerTLS(s string) bool {
	if s == Embedded {
		return false
	}
	u, err := url.Parse(s) // lowercases the scheme
	return err == nil && (u.Scheme == "tls" || u.Scheme == "ssl")
}

// checkFile says what is wrong with the path of a file the gateway will
// read, such as upstream.ca_file, or "" if nothing is: it must name a
// readable file. kind names what the file should be, as in "a PEM file". A
// relative path is taken from the working directory, as the gateway will
// take it.
func checkFile(path, kind string) string {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Sprintf("cannot use %q: %s", path, pathReason(err))
	}
	if fi.IsDir() {
		return fmt.Sprintf("%q is a directory, not %s", path, kind)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("cannot read %q: %s", path, pathReason(err))
	}
	f.Close()
	return ""
}

// pathReason returns the reason of an os error without the operation and
// path that *fs.PathError adds, as the message names the path already.
func pathReason(err error) string {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return err.Error()
}

// checkClientIDPrefix says what is wrong with an upstream.client_id_prefix,
// or "" if nothing is.
func checkClientIDPrefix(s string) string {
	switch {
	case len(s) > 64:
		return fmt.Sprintf("is %d bytes long; the limit is 64", len(s))
	case strings.ContainsRune(s, 0):
		return fmt.Sprintf("%q contains a NUL character", s)
	case !utf8.ValidString(s):
		return fmt.Sprintf("%q is not valid UTF-8", s)
	}
	return ""
}

// parseSender parses one qos_minus1.allowed_senders entry: a network such
// as "10.0.0.0/8", or an address, which means that one host. It returns the
// masked prefix, or why s is neither.
//
// An IPv4-mapped IPv6 network (::ffff:10.0.0.0/104) is refused: the
// transport reports IPv4 senders as IPv4, so it would never match.
func parseSender(s string) (netip.Prefix, string) {
	const want = `use a network such as "10.0.0.0/8" or "fd00::/8", or an address`
	var p netip.Prefix
	if strings.Contains(s, "/") {
		var err error
		if p, err = netip.ParsePrefix(s); err != nil {
			return netip.Prefix{}, fmt.Sprintf("%q is not a network: %s; %s", s, netipReason(err), want)
		}
		p = p.Masked()
	} else {
		a, err := netip.ParseAddr(s)
		if err != nil {
			return netip.Prefix{}, fmt.Sprintf("%q is not an address: %s; %s", s, netipReason(err), want)
		}
		if a.Zone() != "" {
			return netip.Prefix{}, fmt.Sprintf("%q has an IPv6 zone (%%%s), which is not allowed here", s, a.Zone())
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if p.Addr().Is4In6() && p.Bits() >= 96 {
		v4 := netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		return netip.Prefix{}, fmt.Sprintf("%q is an IPv4-mapped IPv6 network, which never matches: IPv4 senders are seen as IPv4; write %q", s, v4.String())
	}
	return p, ""
}

// netipReason returns the reason of a net/netip parse error without the
// function name and input it starts with, as the message names the input.
func netipReason(err error) string {
	msg := err.Error()
	if _, after, found := strings.Cut(msg, "): "); found {
		return after
	}
	return msg
}

// redact returns s fit for an error message: without the password, if u
// parsed it.
func redact(s string, u *url.URL) string {
	if u == nil || u.User == nil {
		return s
	}
	return u.Redacted()
}

// checkTopic says what is wrong with a predefined topic name, or "" if
// nothing is.
func checkTopic(s string) string {
	switch {
	case s == "":
		return "must not be empty"
	case !utf8.ValidString(s):
		return fmt.Sprintf("%q is not valid UTF-8", s)
	case strings.ContainsRune(s, 0):
		return fmt.Sprintf("%q contains a NUL character", s)
	case strings.ContainsAny(s, "+#"):
		return fmt.Sprintf("%q contains a wildcard ('+' or '#'); a predefined topic is a topic name, not a filter", s)
	case len(s) > 65535:
		return fmt.Sprintf("is %d bytes long; the limit is 65535", len(s))
	}
	return ""
}

// describe names the TOML type of v, with v itself when it is short.
func describe(v any) string {
	switch v := v.(type) {
	case string:
		return fmt.Sprintf("the string %q", v)
	case int64:
		return fmt.Sprintf("the integer %d", v)
	case float64:
		return fmt.Sprintf("the float %v", v)
	case bool:
		return fmt.Sprintf("the boolean %t", v)
	case time.Time:
		return "a date-time"
	case map[string]any:
		return "a table"
	case []map[string]any:
		return "an array of tables"
	case []any:
		return "an array"
	default:
		return fmt.Sprintf("a %T", v)
	}
}

// formatFloat formats f as TOML writes it: 1.0 rather than 1, nan and inf
// rather than NaN and +Inf.
func formatFloat(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	s := strconv.FormatFloat(f, 'g', -1, 64)
	if !strings.ContainsAny(s, ".e") {
		s += ".0"
	}
	return s
}

// shortDuration formats d without zero units: 1h, not 1h0m0s.
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// oneLine replaces line breaks in s with spaces, so that every Error is one
// line.
func oneLine(s string) string {
	return strings.NewReplacer("\r\n", " ", "\n", " ", "\r", " ").Replace(s)
}
