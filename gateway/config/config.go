// Package config reads the gateway's TOML configuration file (gateway.toml).
//
// It is the only package that imports a TOML library. Load and Parse start
// from Default, lay the file on top of it, and check every key; all problems
// are reported together, one *Error per problem, so a user can fix a file in
// one pass.
package config

import (
	"fmt"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
)

// Embedded is the upstream.broker value that selects the embedded MQTT broker.
const Embedded = "embedded"

// Log formats accepted in log.format.
const (
	FormatConsole = "console" // human-readable, for a terminal
	FormatJSON    = "json"    // one JSON object per line, for log collectors
)

// Config is the whole gateway configuration, one field per TOML table.
type Config struct {
	Gateway          GatewayConfig
	UDP              UDPConfig
	DTLS             DTLSConfig
	Upstream         UpstreamConfig
	EmbeddedBroker   EmbeddedBrokerConfig
	Session          SessionConfig
	PredefinedTopics []PredefinedTopic // nil when the file has none
	QoSMinus1        QoSMinus1Config
	Forwarder        ForwarderConfig
	Discovery        DiscoveryConfig
	Sleep            SleepConfig
	Log              LogConfig
}

// GatewayConfig is the [gateway] table.
type GatewayConfig struct {
	// ID is the GwId announced in ADVERTISE and GWINFO (MQTT-SN 1.2 §5.4.2).
	ID uint8
}

// UDPConfig is the [udp] table.
type UDPConfig struct {
	// Listen holds the host:port addresses of the UDP sockets, IPv4 or IPv6;
	// never empty, no duplicates. The port may be 0 (any free port).
	Listen []string
	// MaxDatagram is the largest datagram accepted, in bytes, 16..65535;
	// larger ones are dropped and counted.
	MaxDatagram int
	// ReadBuffer is the socket receive buffer (SO_RCVBUF) in bytes,
	// 0..268435456; 0 keeps the OS default. Linux caps it at
	// net.core.rmem_max without an error.
	ReadBuffer int
}

// DTLSConfig is the [dtls] table: MQTT-SN over DTLS on UDP addresses of its
// own, beside plain UDP. DTLS is off when Listen is empty.
//
// Load and Parse check the files named here only when DTLS is on: each then
// existed and was readable, and the PSK file was loaded into PSKs. The PEM
// files are not parsed here; the transport does that. A relative path is
// taken from the working directory.
type DTLSConfig struct {
	// Listen holds the host:port addresses of the DTLS sockets, checked like
	// UDPConfig.Listen, but may be empty (the default). No address appears in
	// UDPConfig.Listen too, nor shares its port with a wildcard host there.
	Listen []string
	// PSKFile is the path of the PSK file (see ParsePSK); "" means no PSKs.
	// With DTLS on, PSKFile or CertFile and KeyFile are set.
	PSKFile string
	// CertFile and KeyFile are the PEM certificate chain and private key the
	// gateway presents; both or neither are set.
	CertFile string
	KeyFile  string
	// ClientCAFile is a PEM file of the CAs that sensors' certificates must
	// chain to; "" means sensors are not asked for certificates. Set only
	// with CertFile and KeyFile, as certificates are exchanged only in
	// certificate handshakes.
	ClientCAFile string
	// RequireClientCert makes a certificate handshake fail when the sensor
	// presents no certificate; without it a certificate is verified when
	// given. Set only with ClientCAFile.
	RequireClientCert bool
	// BindClientID refuses, with CONNACK 0x03, a CONNECT whose ClientID is
	// not the authenticated identity: the PSK entry's ClientID, or the
	// sensor certificate's Common Name or one of its DNS names.
	BindClientID bool
	// ConnectionID negotiates RFC 9146 Connection IDs, so that a sensor whose
	// source address changes (a NAT rebinding while it slept) keeps its DTLS
	// association, and with it its session.
	ConnectionID bool
	// HandshakeTimeout bounds one DTLS handshake, 1s..2m.
	HandshakeTimeout time.Duration
	// IdleTimeout closes an association that has carried nothing either
	// way for that long; the sensor handshakes again when it comes back.
	// At most 8760h, and no shorter than LongestSilence, so that no
	// session outlives its sensor's association unused.
	IdleTimeout time.Duration
	// MaxHandshakes is how many handshakes may run at once, 1..100,000; a
	// new handshake beyond it is dropped, so that a flood cannot starve the
	// sensors already connected.
	MaxHandshakes int
	// PSKs is the content of PSKFile, loaded by Load and Parse when DTLS is
	// on and PSKFile is set; nil otherwise. LoadPSKFile reloads it.
	PSKs PSKTable
}

// Enabled reports whether DTLS is on: whether Listen has an address.
func (c DTLSConfig) Enabled() bool { return len(c.Listen) > 0 }

// MaxDuration is the largest keep-alive or sleep Duration MQTT-SN 1.2 can
// carry: 16 bits of seconds.
const MaxDuration = 65535 * time.Second

// LongestSilence is how long a sensor may say nothing and keep its session:
// MaxDuration times the tolerance the gateway grants (silenceFactor). (A
// sensor allowed a keep-alive of 0 may stay silent for ever; its
// association stays open as long as the gateway sends to it.)
func (c Config) LongestSilence() time.Duration {
	return time.Duration(float64(MaxDuration) * c.silenceFactor())
}

// keepAliveTolerance is the gateway's, here for decode.go, where a local
// variable takes the package's name.
const keepAliveTolerance = gateway.KeepAliveTolerance

// silenceFactor is the larger of the tolerances the gateway grants:
// gateway.KeepAliveTolerance for a keep-alive, Sleep.Tolerance for a sleep.
func (c Config) silenceFactor() float64 {
	return max(keepAliveTolerance, c.Sleep.Tolerance)
}

// UpstreamConfig is the [upstream] table.
type UpstreamConfig struct {
	// Broker is Embedded or a URL "scheme://host:port" with scheme tcp, mqtt,
	// tls or ssl.
	Broker string
	// Username and Password are the credentials presented to the broker;
	// "" means none.
	Username string
	Password string
	// ClientIDPrefix is put before every sensor's ClientID on its broker
	// connection; at most 64 bytes, no NUL.
	ClientIDPrefix string
	// CAFile is a PEM file of CA certificates for a tls:// or ssl:// broker;
	// "" means the system roots. Set only with such a broker, and the file
	// existed and was readable when the configuration was loaded.
	CAFile string
	// SessionExpiry is how long the broker and the gateway keep a
	// CleanSession=0 sensor's session after its connection ends; 0s..8760h.
	SessionExpiry time.Duration
	// KeepAlive is the MQTT keep-alive of each broker connection, a whole
	// number of seconds in 5s..18h; the gateway pings the broker itself.
	KeepAlive time.Duration
	// ReceiveMaximum is how many QoS 1 and 2 messages the broker may have in
	// flight towards one sensor, 1..65535.
	ReceiveMaximum int
	// Timeout bounds one broker request (connect, publish acknowledgement,
	// subscribe); 1s..5m.
	Timeout time.Duration
}

// Embedded reports whether the gateway runs its own embedded MQTT broker.
func (u UpstreamConfig) Embedded() bool { return u.Broker == Embedded }

// EmbeddedBrokerConfig is the [embedded_broker] table.
type EmbeddedBrokerConfig struct {
	// Listen is the TCP host:port of the embedded broker; only used, and only
	// checked, when the upstream broker is Embedded.
	Listen string
}

// SessionConfig is the [session] table.
type SessionConfig struct {
	MaxClients        int           // 1..1,000,000
	MaxClientIDLength int           // 1..65535 bytes; MQTT-SN 1.2 says 23
	RetryInterval     time.Duration // Tretry, 100ms..1h
	MaxRetries        int           // Nretry, 0..100
	// MaxTopics is the number of topic IDs per sensor, 1..65534; a REGISTER
	// beyond it gets REGACK 0x01 (congestion).
	MaxTopics int
	// AllowZeroKeepAlive accepts CONNECT with keep-alive 0, which is refused
	// with CONNACK 0x03 otherwise: over UDP such a sensor can never be found
	// lost.
	AllowZeroKeepAlive bool
}

// QoSMinus1Config is the [qos_minus1] table: PUBLISH with QoS -1, sent
// without a connection to a predefined topic ID or a short topic name
// (MQTT-SN 1.2 §6.8).
type QoSMinus1Config struct {
	// Enabled accepts QoS -1 PUBLISH; they are forwarded to the broker at
	// QoS 0 over one shared connection.
	Enabled bool
	// AllowedSenders are the source networks allowed to send QoS -1, each
	// masked (10.0.0.0/8, never 10.0.0.1/8), without duplicates; nil means
	// any sender. A single host is a /32 or /128 prefix.
	AllowedSenders []netip.Prefix
}

// DiscoveryConfig is the [discovery] table: gateway advertisement and
// discovery (MQTT-SN 1.2 §6.1).
type DiscoveryConfig struct {
	// AdvertiseInterval is the time between two ADVERTISE messages; 0
	// disables them. Whole seconds, 1s..18h12m15s (65535 s) otherwise.
	AdvertiseInterval time.Duration
	// Address is the multicast group and port ADVERTISE (and, with
	// ReplyMulticast, GWINFO) is sent to, out of the interface of the first
	// udp.listen address.
	Address netip.AddrPort
	// TTL is the multicast TTL (IPv6 hop limit), 1..255.
	TTL int
	// ReplyMulticast sends GWINFO to Address instead of to the SEARCHGW's
	// sender.
	ReplyMulticast bool
	// GWInfoDelayMax delays each GWINFO by a random time up to it, 0s..10s.
	GWInfoDelayMax time.Duration
}

// ForwarderConfig is the [forwarder] table: MQTT-SN frames relayed by a
// forwarder in the Encapsulated wrapper (MQTT-SN 1.2 §5.5).
type ForwarderConfig struct {
	// Enabled accepts encapsulated frames: each wireless node behind a
	// forwarder is a client of its own, and replies are wrapped with its
	// node id. False drops them (counted as malformed).
	Enabled bool
}

// SleepConfig is the [sleep] table: sleeping sensors (MQTT-SN 1.2 §6.14).
// A sensor that sends DISCONNECT with a Duration is asleep; the gateway
// buffers the messages for it until it wakes up with PINGREQ.
type SleepConfig struct {
	// Tolerance multiplies the sensor's sleep Duration to give the sleep
	// timer; a sensor silent for longer is lost and its Will is published.
	// Finite, 1.0..10.0.
	Tolerance float64
	// MaxMessages and MaxBytes bound the buffer of each sleeping sensor, in
	// messages (1..100,000) and in bytes of topic name plus payload
	// (1024..67,108,864). When either is reached, QoS 1 and 2 messages stay
	// with the broker (they are acknowledged to it only once the sensor has
	// acknowledged them, and come on a later wake-up); QoS 0 messages are
	// dropped and counted.
	MaxMessages int
	MaxBytes    int
	// BufferQoS0 buffers QoS 0 messages for sleeping sensors too; when false
	// they are dropped and counted.
	BufferQoS0 bool
	// AllowAddressChange lets a sleeping sensor that wakes up (PINGREQ with
	// its ClientID, or CONNECT) from another source address resume its
	// session there. When false, the new address gets DISCONNECT and the
	// session stays where it was: plain UDP cannot authenticate a sender, so
	// anyone knowing the ClientID could otherwise take the session and its
	// buffered messages.
	AllowAddressChange bool
}

// PredefinedTopic is one [[predefined_topics]] entry: a topic ID known to
// sensors and gateway in advance (MQTT-SN 1.2 §3.2.1, TopicIdType 0b01).
type PredefinedTopic struct {
	ID    uint16 // 1..65534; 0x0000 and 0xFFFF are reserved
	Topic string // a topic name, not a filter: no '+' or '#'
}

// LogConfig is the [log] table.
type LogConfig struct {
	// Level is the minimum level logged. The file names it as one of
	// debug, info, warn or error; no other zerolog level is accepted.
	Level zerolog.Level
	// Format is FormatConsole or FormatJSON.
	Format string
}

// Default returns the configuration used for every key the file leaves out.
func Default() Config {
	return Config{
		Gateway: GatewayConfig{ID: 1},
		UDP: UDPConfig{
			Listen:      []string{"127.0.0.1:1884"},
			MaxDatagram: 1500,
			ReadBuffer:  0,
		},
		DTLS: DTLSConfig{
			BindClientID:     true,
			ConnectionID:     true,
			HandshakeTimeout: 10 * time.Second,
			IdleTimeout:      28 * time.Hour,
			MaxHandshakes:    256,
		},
		Upstream: UpstreamConfig{
			Broker:         Embedded,
			SessionExpiry:  time.Hour,
			KeepAlive:      60 * time.Second,
			ReceiveMaximum: 16,
			Timeout:        10 * time.Second,
		},
		EmbeddedBroker: EmbeddedBrokerConfig{Listen: "127.0.0.1:1883"},
		Session: SessionConfig{
			MaxClients:         10000,
			MaxClientIDLength:  64,
			RetryInterval:      10 * time.Second,
			MaxRetries:         3,
			MaxTopics:          1000,
			AllowZeroKeepAlive: false,
		},
		QoSMinus1: QoSMinus1Config{Enabled: true},
		Forwarder: ForwarderConfig{Enabled: true},
		Discovery: DiscoveryConfig{
			AdvertiseInterval: 15 * time.Minute,
			Address:           netip.MustParseAddrPort("225.1.1.1:1884"),
			TTL:               1,
		},
		Sleep: SleepConfig{
			Tolerance:          1.5,
			MaxMessages:        100,
			MaxBytes:           64 << 10,
			BufferQoS0:         true,
			AllowAddressChange: false,
		},
		Log: LogConfig{Level: zerolog.InfoLevel, Format: FormatConsole},
	}
}

// Load reads the TOML file at path and returns Default overlaid with it.
//
// A file that cannot be read gives an error wrapping the os error (so
// errors.Is(err, fs.ErrNotExist) works). A file with problems gives the
// same errors as Parse.
func Load(path string) (Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Config{}, fmt.Errorf("read config: %w", err)
	}
	return Parse(path, data)
}

// Parse decodes data as TOML and returns Default overlaid with it.
//
// name is the file name used in error messages. On failure the error is an
// errors.Join of *Error values, one per problem, each a single line; the
// Config is then the zero value.
//
// Parse looks at the files the configuration names (upstream.ca_file, and
// the dtls files when DTLS is on), and reads the PSK file: a problem in that
// file is an *Error naming the PSK file and its own key, such as
// "sensors.psk.toml: psk[2].key: ...".
func Parse(name string, data []byte) (Config, error) {
	return parse(name, data)
}

// Error is one problem found in a configuration file.
//
// Its message is one line, "<file>: <key>: <reason>" for a problem with a key
// and "<file>: line <n>: <reason>" for a TOML syntax error. Keys are dotted
// paths with 0-based indexes, such as "udp.listen[1]",
// "predefined_topics[2].id" or "qos_minus1.allowed_senders[0]".
type Error struct {
	File   string
	Line   int    // 1-based line of a syntax error; 0 when not known
	Key    string // empty for a syntax error
	Reason string
}

// Error returns the one-line message.
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		b.WriteString(": line ")
		b.WriteString(strconv.Itoa(e.Line))
	}
	if e.Key != "" {
		b.WriteString(": ")
		b.WriteString(e.Key)
	}
	b.WriteString(": ")
	b.WriteString(e.Reason)
	return b.String()
}
