// Package config reads the gateway's TOML configuration file (gateway.toml).
//
// It is the only package that imports a TOML library. Load and Parse start
// from Default, lay the file on top of it, and check every key; all problems
// are reported together, one *Error per problem, so a user can fix a file in
// one pass.
package config

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
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
	Upstream         UpstreamConfig
	EmbeddedBroker   EmbeddedBrokerConfig
	Session          SessionConfig
	PredefinedTopics []PredefinedTopic // nil when the file has none
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
}

// UpstreamConfig is the [upstream] table.
type UpstreamConfig struct {
	// Broker is Embedded or a URL "scheme://host:port" with scheme tcp, mqtt,
	// tls or ssl.
	Broker   string
	Username string
	Password string
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
		Gateway:        GatewayConfig{ID: 1},
		UDP:            UDPConfig{Listen: []string{"127.0.0.1:1884"}},
		Upstream:       UpstreamConfig{Broker: Embedded},
		EmbeddedBroker: EmbeddedBrokerConfig{Listen: "127.0.0.1:1883"},
		Session: SessionConfig{
			MaxClients:        10000,
			MaxClientIDLength: 64,
			RetryInterval:     10 * time.Second,
			MaxRetries:        3,
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
func Parse(name string, data []byte) (Config, error) {
	return parse(name, data)
}

// Error is one problem found in a configuration file.
//
// Its message is one line, "<file>: <key>: <reason>" for a problem with a key
// and "<file>: line <n>: <reason>" for a TOML syntax error. Keys are dotted
// paths with 0-based indexes, such as "udp.listen[1]" or
// "predefined_topics[2].id".
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
