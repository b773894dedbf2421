package config

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/BurntSushi/toml"
	"github.com/rs/zerolog"
)

const shipped = "../../gateway.toml"

// TestShippedFileIsDefault keeps the documented gateway.toml and Default in step.
func TestShippedFileIsDefault(t *testing.T) {
	cfg, err := Load(shipped)
	if err != nil {
		t.Fatalf("Load(%s): %v", shipped, err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("%s differs from Default():\n got %+v\nwant %+v", shipped, cfg, Default())
	}
}

// TestShippedFileHasEveryKey checks that the shipped file spells out every
// key of the schema, not only that its values match the defaults.
func TestShippedFileHasEveryKey(t *testing.T) {
	data, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	md, err := toml.Decode(string(data), &m)
	if err != nil {
		t.Fatal(err)
	}
	tables := map[string]any{
		"gateway":         rawGateway{},
		"udp":             rawUDP{},
		"dtls":            rawDTLS{},
		"upstream":        rawUpstream{},
		"embedded_broker": rawEmbeddedBroker{},
		"session":         rawSession{},
		"qos_minus1":      rawQoSMinus1{},
		"forwarder":       rawForwarder{},
		"discovery":       rawDiscovery{},
		"sleep":           rawSleep{},
		"log":             rawLog{},
	}
	for _, table := range tomlTags(t, document{}) {
		if table == "predefined_topics" {
			// Commented out in the shipped file, which has none by default;
			// TestShippedExample checks the example.
			for _, key := range tomlTags(t, rawTopic{}) {
				if !regexp.MustCompile(`(?m)^# ` + key + ` = `).Match(data) {
					t.Errorf("%s: the [[predefined_topics]] example lacks %q", shipped, key)
				}
			}
			continue
		}
		raw, ok := tables[table]
		if !ok {
			t.Errorf("table [%s] is missing from this test", table)
			continue
		}
		for _, key := range tomlTags(t, raw) {
			if !md.IsDefined(table, key) {
				t.Errorf("%s lacks %s.%s", shipped, table, key)
			}
		}
	}
}

// tomlTags returns the toml tags of the fields of struct v.
func tomlTags(t *testing.T, v any) []string {
	t.Helper()
	var tags []string
	rt := reflect.TypeOf(v)
	for i := range rt.NumField() {
		tag := rt.Field(i).Tag.Get("toml")
		if tag == "" {
			t.Fatalf("%s.%s has no toml tag", rt.Name(), rt.Field(i).Name)
		}
		tags = append(tags, tag)
	}
	return tags
}

// TestShippedExample checks the commented-out [[predefined_topics]] example.
func TestShippedExample(t *testing.T) {
	data, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	uncommented := regexp.MustCompile(`(?m)^# (\[\[predefined_topics\]\]|id = |topic = )`).ReplaceAll(data, []byte("$1"))
	cfg, err := Parse("example.toml", uncommented)
	if err != nil {
		t.Fatalf("the uncommented example does not parse: %v", err)
	}
	want := []PredefinedTopic{{ID: 1, Topic: "sensors/alerts"}}
	if !reflect.DeepEqual(cfg.PredefinedTopics, want) {
		t.Errorf("PredefinedTopics = %+v, want %+v", cfg.PredefinedTopics, want)
	}
}

func TestParseEmptyIsDefault(t *testing.T) {
	cfg, err := Parse("empty.toml", nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, Default()) {
		t.Errorf("got %+v, want Default()", cfg)
	}
}

func TestParseValid(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want func(*Config)
	}{
		{"gateway id 0", "[gateway]\nid = 0", func(c *Config) { c.Gateway.ID = 0 }},
		{"gateway id 255", "[gateway]\nid = 255", func(c *Config) { c.Gateway.ID = 255 }},
		{
			"several listeners, IPv6, all interfaces, names, port 0",
			`[udp]
listen = ["127.0.0.1:0", "[::1]:1884", ":1885", "localhost:1886", "[fe80::1%eth0]:1887"]`,
			func(c *Config) {
				c.UDP.Listen = []string{"127.0.0.1:0", "[::1]:1884", ":1885", "localhost:1886", "[fe80::1%eth0]:1887"}
			},
		},
		{
			"external broker over TCP",
			"[upstream]\nbroker = \"tcp://broker.example:1883\"\nusername = \"gw\"\npassword = \"secret\"",
			func(c *Config) {
				c.Upstream.Broker, c.Upstream.Username, c.Upstream.Password = "tcp://broker.example:1883", "gw", "secret"
			},
		},
		{"mqtt scheme", `upstream.broker = "mqtt://10.0.0.1:1883"`, func(c *Config) { c.Upstream.Broker = "mqtt://10.0.0.1:1883" }},
		{"tls scheme IPv6", `upstream.broker = "tls://[::1]:8883"`, func(c *Config) { c.Upstream.Broker = "tls://[::1]:8883" }},
		{"ssl scheme trailing slash", `upstream.broker = "ssl://h:8883/"`, func(c *Config) { c.Upstream.Broker = "ssl://h:8883/" }},
		{
			"embedded listen not checked for an external broker",
			"[upstream]\nbroker = \"tcp://h:1883\"\n[embedded_broker]\nlisten = \"nonsense\"",
			func(c *Config) { c.Upstream.Broker = "tcp://h:1883"; c.EmbeddedBroker.Listen = "nonsense" },
		},
		{
			"session bounds",
			`[session]
max_clients = 1_000_000
max_client_id_length = 65535
retry_interval = "100ms"
max_retries = 0`,
			func(c *Config) {
				c.Session.MaxClients, c.Session.MaxClientIDLength = 1_000_000, 65535
				c.Session.RetryInterval, c.Session.MaxRetries = 100*time.Millisecond, 0
			},
		},
		{"retry interval 1h", `session.retry_interval = "1h"`, func(c *Config) { c.Session.RetryInterval = time.Hour }},
		{
			"session new keys",
			"[session]\nmax_topics = 1\nallow_zero_keep_alive = true",
			func(c *Config) { c.Session.MaxTopics, c.Session.AllowZeroKeepAlive = 1, true },
		},
		{"max topics 65534", `session.max_topics = 65534`, func(c *Config) { c.Session.MaxTopics = 65534 }},
		{"allow zero keep alive false", `session.allow_zero_keep_alive = false`, func(c *Config) {}},

		// [udp] sizes
		{"udp smallest", "[udp]\nmax_datagram = 16\nread_buffer = 0", func(c *Config) { c.UDP.MaxDatagram = 16 }},
		{
			"udp largest",
			"[udp]\nmax_datagram = 65535\nread_buffer = 268_435_456",
			func(c *Config) { c.UDP.MaxDatagram, c.UDP.ReadBuffer = 65535, 268435456 },
		},
		{"udp read buffer 4 MiB", `udp.read_buffer = 4194304`, func(c *Config) { c.UDP.ReadBuffer = 4 << 20 }},

		// [upstream] new keys
		{
			"upstream lower bounds",
			`[upstream]
client_id_prefix = "sn-"
session_expiry = "0s"
keep_alive = "5s"
receive_maximum = 1
timeout = "1s"`,
			func(c *Config) {
				c.Upstream.ClientIDPrefix = "sn-"
				c.Upstream.SessionExpiry, c.Upstream.KeepAlive, c.Upstream.Timeout = 0, 5*time.Second, time.Second
				c.Upstream.ReceiveMaximum = 1
			},
		},
		{
			"upstream upper bounds",
			`[upstream]
client_id_prefix = "` + strings.Repeat("p", 64) + `"
session_expiry = "8760h"
keep_alive = "18h"
receive_maximum = 65535
timeout = "5m"`,
			func(c *Config) {
				c.Upstream.ClientIDPrefix = strings.Repeat("p", 64)
				c.Upstream.SessionExpiry, c.Upstream.KeepAlive, c.Upstream.Timeout = 8760*time.Hour, 18*time.Hour, 5*time.Minute
				c.Upstream.ReceiveMaximum = 65535
			},
		},
		{"keep alive in minutes", `upstream.keep_alive = "1m30s"`, func(c *Config) { c.Upstream.KeepAlive = 90 * time.Second }},
		{"keep alive 1000ms", `upstream.keep_alive = "5000ms"`, func(c *Config) { c.Upstream.KeepAlive = 5 * time.Second }},
		{"ca file empty with embedded broker", `upstream.ca_file = ""`, func(c *Config) {}},

		// [discovery]
		{"advertise off", "[discovery]\nadvertise_interval = \"0s\"", func(c *Config) { c.Discovery.AdvertiseInterval = 0 }},
		{"ipv6 group", "[discovery]\naddress = \"[ff02::1]:1884\"\nttl = 3", func(c *Config) {
			c.Discovery.Address = netip.MustParseAddrPort("[ff02::1]:1884")
			c.Discovery.TTL = 3
		}},
		// [forwarder]
		{"forwarders refused", "[forwarder]\nenabled = false", func(c *Config) { c.Forwarder.Enabled = false }},
		// [qos_minus1]
		{"qos -1 disabled", "[qos_minus1]\nenabled = false", func(c *Config) { c.QoSMinus1.Enabled = false }},
		{"qos -1 no senders listed", "[qos_minus1]\nallowed_senders = []", func(c *Config) {}},
		{
			"qos -1 senders, masked, bare addresses",
			`[qos_minus1]
allowed_senders = ["127.0.0.1/32", "10.1.2.3/8", "::1/128", "192.168.1.7", "fd00::1", "2001:db8::1/32", "0.0.0.0/0", "::/0"]`,
			func(c *Config) {
				c.QoSMinus1.AllowedSenders = []netip.Prefix{
					netip.MustParsePrefix("127.0.0.1/32"),
					netip.MustParsePrefix("10.0.0.0/8"),
					netip.MustParsePrefix("::1/128"),
					netip.MustParsePrefix("192.168.1.7/32"),
					netip.MustParsePrefix("fd00::1/128"),
					netip.MustParsePrefix("2001:db8::/32"),
					netip.MustParsePrefix("0.0.0.0/0"),
					netip.MustParsePrefix("::/0"),
				}
			},
		},
		{
			"predefined topics",
			`[[predefined_topics]]
id = 1
topic = "sensors/alerts"
[[predefined_topics]]
id = 65534
topic = "ünïcode/$x"`,
			func(c *Config) {
				c.PredefinedTopics = []PredefinedTopic{{1, "sensors/alerts"}, {65534, "ünïcode/$x"}}
			},
		},
		{
			"predefined topics inline",
			`predefined_topics = [{id = 7, topic = "a"}]`,
			func(c *Config) { c.PredefinedTopics = []PredefinedTopic{{7, "a"}} },
		},
		// [sleep]
		{
			"sleep lower bounds",
			`[sleep]
tolerance = 1.0
max_messages = 1
max_bytes = 1024
buffer_qos0 = false
allow_address_change = true`,
			func(c *Config) {
				c.Sleep = SleepConfig{Tolerance: 1, MaxMessages: 1, MaxBytes: 1024, BufferQoS0: false, AllowAddressChange: true}
			},
		},
		{
			"sleep upper bounds",
			"[sleep]\ntolerance = 10.0\nmax_messages = 100_000\nmax_bytes = 67_108_864",
			func(c *Config) { c.Sleep.Tolerance, c.Sleep.MaxMessages, c.Sleep.MaxBytes = 10, 100000, 64<<20 },
		},
		{"sleep tolerance integer 1", `sleep.tolerance = 1`, func(c *Config) { c.Sleep.Tolerance = 1 }},
		{"sleep tolerance integer 10", `sleep.tolerance = 10`, func(c *Config) { c.Sleep.Tolerance = 10 }},
		{"sleep tolerance exponent", `sleep.tolerance = 25e-1`, func(c *Config) { c.Sleep.Tolerance = 2.5 }},
		{"sleep tolerance 1.25", "[sleep]\ntolerance = 1.25", func(c *Config) { c.Sleep.Tolerance = 1.25 }},
		{"sleep empty table", "[sleep]", func(c *Config) {}},
		{
			"log",
			"[log]\nlevel = \"debug\"\nformat = \"json\"",
			func(c *Config) { c.Log = LogConfig{Level: zerolog.DebugLevel, Format: FormatJSON} },
		},
		{"log warn", `log.level = "warn"`, func(c *Config) { c.Log.Level = zerolog.WarnLevel }},
		{"log error", `log.level = "error"`, func(c *Config) { c.Log.Level = zerolog.ErrorLevel }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Parse("test.toml", []byte(tt.toml))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			want := Default()
			tt.want(&want)
			if !reflect.DeepEqual(got, want) {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// problem is one expected error line: its key and a part of its reason.
type problem struct {
	key    string
	reason string
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []problem
	}{
		// [gateway]
		{"gateway id 300", "[gateway]\nid = 300", []problem{{"gateway.id", "300 is out of range 0..255"}}},
		{"gateway id -1", "[gateway]\nid = -1", []problem{{"gateway.id", "-1 is out of range 0..255"}}},
		{"gateway id string", "[gateway]\nid = \"1\"", []problem{{"gateway.id", `must be an integer, not the string "1"`}}},
		{"gateway id float", "[gateway]\nid = 1.5", []problem{{"gateway.id", "must be an integer, not the float 1.5"}}},
		{"gateway id table", "[gateway.id]\nx = 1", []problem{{"gateway.id", "must be an integer, not a table"}}},
		{"gateway not a table", "gateway = 5", []problem{{"gateway", "must be a table ([gateway]), not the integer 5"}}},

		// unknown keys
		{"unknown key", "[gateway]\nid = 1\nfoo = 2", []problem{{"gateway.foo", "unknown key"}}},
		{"unknown table reported once", "[foo]\nbar = 1\nbaz = 2", []problem{{"foo", "unknown key"}}},
		{"unknown top-level key", "id = 1", []problem{{"id", "unknown key"}}},
		{"unknown subtable", "[gateway.extra]\nx = 1", []problem{{"gateway.extra", "unknown key"}}},
		{"upper-case key", "[gateway]\nID = 1", []problem{{"gateway.ID", "unknown key (keys are lower case)"}}},
		{"upper-case table", "[Gateway]\nid = 1", []problem{{"Gateway", "unknown key (keys are lower case)"}}},
		{
			"unknown key in a predefined topic, reported once",
			"[[predefined_topics]]\nid = 1\ntopic = \"a\"\nqos = 1\n[[predefined_topics]]\nid = 2\ntopic = \"b\"\nqos = 1",
			[]problem{{"predefined_topics.qos", "unknown key"}},
		},

		// [udp]
		{"udp listen empty", "[udp]\nlisten = []", []problem{{"udp.listen", "must list at least one address"}}},
		{"udp listen string", "[udp]\nlisten = \"127.0.0.1:1884\"", []problem{{"udp.listen", `must be an array of "host:port" strings, not the string "127.0.0.1:1884"`}}},
		{"udp listen element type", "[udp]\nlisten = [\"127.0.0.1:1884\", 1884]", []problem{{"udp.listen[1]", "must be a \"host:port\" string, not the integer 1884"}}},
		{"udp listen no port", "[udp]\nlisten = [\"127.0.0.1\"]", []problem{{"udp.listen[0]", `"127.0.0.1" is not a host:port address: missing port in address`}}},
		{"udp listen IPv6 without brackets", "[udp]\nlisten = [\"::1:1884\"]", []problem{{"udp.listen[0]", "too many colons"}}},
		{"udp listen named port", "[udp]\nlisten = [\"127.0.0.1:mqtt\"]", []problem{{"udp.listen[0]", `port "mqtt" is not a number in 0..65535`}}},
		{"udp listen port too big", "[udp]\nlisten = [\"127.0.0.1:65536\"]", []problem{{"udp.listen[0]", `port "65536" is not a number in 0..65535`}}},
		{
			"udp listen duplicate",
			"[udp]\nlisten = [\"127.0.0.1:1884\", \"[::1]:1884\", \"127.0.0.1:1884\"]",
			[]problem{{"udp.listen[2]", `"127.0.0.1:1884" is already listed as udp.listen[0]`}},
		},
		{
			"udp listen wildcard twice, written differently",
			"[udp]\nlisten = [\":1884\", \"0.0.0.0:1884\"]",
			[]problem{{"udp.listen[1]", `"0.0.0.0:1884" is already listed as udp.listen[0] (written ":1884")`}},
		},
		{
			"udp listen wildcard and a host on one port",
			"[udp]\nlisten = [\"[::1]:1884\", \"[::]:1884\"]",
			[]problem{{"udp.listen[1]", `"[::]:1884" and udp.listen[0] "[::1]:1884" share port 1884, and a wildcard host takes it on every interface`}},
		},

		// [upstream]
		{"broker scheme", "[upstream]\nbroker = \"http://h:1883\"", []problem{{"upstream.broker", `scheme "http" is not supported`}}},
		{"broker websocket", "[upstream]\nbroker = \"ws://h:1883\"", []problem{{"upstream.broker", `scheme "ws" is not supported`}}},
		{"broker not a URL", "[upstream]\nbroker = \"localhost\"", []problem{{"upstream.broker", `"localhost" is not a broker URL`}}},
		{"broker no port", "[upstream]\nbroker = \"tcp://h\"", []problem{{"upstream.broker", `"tcp://h" has no port`}}},
		{"broker no host", "[upstream]\nbroker = \"tcp://:1883\"", []problem{{"upstream.broker", `"tcp://:1883" has no host`}}},
		{"broker port 0", "[upstream]\nbroker = \"tcp://h:0\"", []problem{{"upstream.broker", `port "0" is not a number in 1..65535`}}},
		{"broker path", "[upstream]\nbroker = \"tcp://h:1883/x\"", []problem{{"upstream.broker", "no path, query or fragment"}}},
		{"broker opaque", "[upstream]\nbroker = \"tcp:h:1883\"", []problem{{"upstream.broker", `"tcp:h:1883" has no host`}}},
		{
			"broker credentials in URL, password not echoed",
			"[upstream]\nbroker = \"tcp://u:hunter2@h:1883\"",
			[]problem{{"upstream.broker", `"tcp://u:xxxxx@h:1883": put credentials in upstream.username and upstream.password`}},
		},
		{"broker type", "[upstream]\nbroker = true", []problem{{"upstream.broker", "must be a string, not the boolean true"}}},
		{"username type", "[upstream]\nusername = 1", []problem{{"upstream.username", "must be a string"}}},
		{"password type", "[upstream]\npassword = [\"x\"]", []problem{{"upstream.password", "must be a string, not an array"}}},
		{"client id prefix type", "[upstream]\nclient_id_prefix = 1", []problem{{"upstream.client_id_prefix", "must be a string, not the integer 1"}}},
		{
			"client id prefix too long",
			"[upstream]\nclient_id_prefix = \"" + strings.Repeat("p", 65) + "\"",
			[]problem{{"upstream.client_id_prefix", "is 65 bytes long; the limit is 64"}},
		},
		{
			"client id prefix multi-byte too long",
			"[upstream]\nclient_id_prefix = \"" + strings.Repeat("ü", 33) + "\"",
			[]problem{{"upstream.client_id_prefix", "is 66 bytes long; the limit is 64"}},
		},
		{"client id prefix NUL", "[upstream]\nclient_id_prefix = \"a\\u0000b\"", []problem{{"upstream.client_id_prefix", "contains a NUL character"}}},
		{"ca file type", "[upstream]\nca_file = true", []problem{{"upstream.ca_file", "must be a string, not the boolean true"}}},
		{
			"ca file with the embedded broker",
			"[upstream]\nca_file = \"/etc/ssl/certs/ca-certificates.crt\"",
			[]problem{{"upstream.ca_file", `only used with a tls:// or ssl:// broker; upstream.broker is "embedded"`}},
		},
		{
			"ca file with a tcp broker",
			"[upstream]\nbroker = \"tcp://h:1883\"\nca_file = \"ca.pem\"",
			[]problem{{"upstream.ca_file", `only used with a tls:// or ssl:// broker; upstream.broker is "tcp://h:1883"`}},
		},
		{
			"ca file with a broken broker URL: only the URL reported",
			"[upstream]\nbroker = \"tls://h\"\nca_file = \"ca.pem\"",
			[]problem{{"upstream.broker", `"tls://h" has no port`}},
		},
		{
			"ca file missing",
			"[upstream]\nbroker = \"tls://h:8883\"\nca_file = \"testdata/no-such-ca.pem\"",
			[]problem{{"upstream.ca_file", `cannot use "testdata/no-such-ca.pem": no such file or directory`}},
		},
		{"session expiry negative", "[upstream]\nsession_expiry = \"-1s\"", []problem{{"upstream.session_expiry", `"-1s" is out of range 0s..8760h`}}},
		{"session expiry too long", "[upstream]\nsession_expiry = \"8761h\"", []problem{{"upstream.session_expiry", `"8761h" is out of range 0s..8760h`}}},
		{"session expiry integer", "[upstream]\nsession_expiry = 3600", []problem{{"upstream.session_expiry", `must be a duration string such as "10s", not the integer 3600`}}},
		{"session expiry days", "[upstream]\nsession_expiry = \"1d\"", []problem{{"upstream.session_expiry", `"1d" is not a duration`}}},
		{"keep alive fraction", "[upstream]\nkeep_alive = \"1.5s\"", []problem{{"upstream.keep_alive", `"1.5s" is not a whole number of seconds`}}},
		{"keep alive fraction in range", "[upstream]\nkeep_alive = \"60500ms\"", []problem{{"upstream.keep_alive", `"60500ms" is not a whole number of seconds`}}},
		{"keep alive too short", "[upstream]\nkeep_alive = \"4s\"", []problem{{"upstream.keep_alive", `"4s" is out of range 5s..18h`}}},
		{"keep alive too long", "[upstream]\nkeep_alive = \"18h0m1s\"", []problem{{"upstream.keep_alive", `"18h0m1s" is out of range 5s..18h`}}},
		{"keep alive integer", "[upstream]\nkeep_alive = 60", []problem{{"upstream.keep_alive", `must be a duration string such as "10s", not the integer 60`}}},
		{"receive maximum 0", "[upstream]\nreceive_maximum = 0", []problem{{"upstream.receive_maximum", "0 is out of range 1..65535"}}},
		{"receive maximum too big", "[upstream]\nreceive_maximum = 65536", []problem{{"upstream.receive_maximum", "65536 is out of range 1..65535"}}},
		{"receive maximum string", "[upstream]\nreceive_maximum = \"16\"", []problem{{"upstream.receive_maximum", `must be an integer, not the string "16"`}}},
		{"timeout too short", "[upstream]\ntimeout = \"999ms\"", []problem{{"upstream.timeout", `"999ms" is out of range 1s..5m`}}},
		{"timeout too long", "[upstream]\ntimeout = \"5m1s\"", []problem{{"upstream.timeout", `"5m1s" is out of range 1s..5m`}}},
		{"timeout float", "[upstream]\ntimeout = 1.5", []problem{{"upstream.timeout", `must be a duration string such as "10s", not the float 1.5`}}},

		// [embedded_broker]
		{"embedded listen", "[embedded_broker]\nlisten = \"1883\"", []problem{{"embedded_broker.listen", `"1883" is not a host:port address`}}},
		{"embedded listen type", "[embedded_broker]\nlisten = 1883", []problem{{"embedded_broker.listen", "must be a string, not the integer 1883"}}},

		// [session]
		{"max clients 0", "[session]\nmax_clients = 0", []problem{{"session.max_clients", "0 is out of range 1..1000000"}}},
		{"max clients too many", "[session]\nmax_clients = 1000001", []problem{{"session.max_clients", "1000001 is out of range 1..1000000"}}},
		{"max client id length 0", "[session]\nmax_client_id_length = 0", []problem{{"session.max_client_id_length", "0 is out of range 1..65535"}}},
		{"max client id length too long", "[session]\nmax_client_id_length = 65536", []problem{{"session.max_client_id_length", "65536 is out of range 1..65535"}}},
		{"retry interval ten", "[session]\nretry_interval = \"ten\"", []problem{{"session.retry_interval", `"ten" is not a duration (use e.g. "10s")`}}},
		{"retry interval integer", "[session]\nretry_interval = 10", []problem{{"session.retry_interval", `must be a duration string such as "10s", not the integer 10`}}},
		{"retry interval too short", "[session]\nretry_interval = \"50ms\"", []problem{{"session.retry_interval", `"50ms" is out of range 100ms..1h`}}},
		{"retry interval too long", "[session]\nretry_interval = \"61m\"", []problem{{"session.retry_interval", `"61m" is out of range 100ms..1h`}}},
		{"max retries negative", "[session]\nmax_retries = -1", []problem{{"session.max_retries", "-1 is out of range 0..100"}}},
		{"max retries too many", "[session]\nmax_retries = 101", []problem{{"session.max_retries", "101 is out of range 0..100"}}},
		{"max topics 0", "[session]\nmax_topics = 0", []problem{{"session.max_topics", "0 is out of range 1..65534"}}},
		{"max topics 65535", "[session]\nmax_topics = 65535", []problem{{"session.max_topics", "65535 is out of range 1..65534"}}},
		{"max topics float", "[session]\nmax_topics = 1e3", []problem{{"session.max_topics", "must be an integer, not the float 1000"}}},
		{
			"allow zero keep alive string",
			"[session]\nallow_zero_keep_alive = \"yes\"",
			[]problem{{"session.allow_zero_keep_alive", `must be a boolean (true or false), not the string "yes"`}},
		},
		{
			"allow zero keep alive integer",
			"[session]\nallow_zero_keep_alive = 1",
			[]problem{{"session.allow_zero_keep_alive", "must be a boolean (true or false), not the integer 1"}},
		},

		// [udp] sizes
		{"max datagram too small", "[udp]\nmax_datagram = 15", []problem{{"udp.max_datagram", "15 is out of range 16..65535"}}},
		{"max datagram too big", "[udp]\nmax_datagram = 65536", []problem{{"udp.max_datagram", "65536 is out of range 16..65535"}}},
		{"max datagram string", "[udp]\nmax_datagram = \"1500\"", []problem{{"udp.max_datagram", `must be an integer, not the string "1500"`}}},
		{"read buffer negative", "[udp]\nread_buffer = -1", []problem{{"udp.read_buffer", "-1 is out of range 0..268435456"}}},
		{"read buffer too big", "[udp]\nread_buffer = 268435457", []problem{{"udp.read_buffer", "268435457 is out of range 0..268435456"}}},
		{"read buffer string", "[udp]\nread_buffer = \"4M\"", []problem{{"udp.read_buffer", `must be an integer, not the string "4M"`}}},
		{
			"udp problems in listen and sizes together",
			"[udp]\nlisten = []\nmax_datagram = 0\nread_buffer = -5",
			[]problem{
				{"udp.listen", "must list at least one address"},
				{"udp.max_datagram", "0 is out of range 16..65535"},
				{"udp.read_buffer", "-5 is out of range 0..268435456"},
			},
		},

		// [discovery]
		{"discovery not multicast", "[discovery]\naddress = \"10.0.0.1:1884\"", []problem{{"discovery.address", "10.0.0.1 is not a multicast address (224.0.0.0/4 or ff00::/8)"}}},
		{"discovery ttl", "[discovery]\nttl = 0", []problem{{"discovery.ttl", "0 is out of range 1..255"}}},
		{"discovery delay", "[discovery]\ngwinfo_delay_max = \"1m\"", []problem{{"discovery.gwinfo_delay_max", "\"1m\" is out of range 0s..10s"}}},
		// [forwarder]
		{"forwarder enabled not a boolean", "[forwarder]\nenabled = 1", []problem{{"forwarder.enabled", "must be a boolean (true or false), not the integer 1"}}},
		// [qos_minus1]
		{"qos -1 not a table", "qos_minus1 = true", []problem{{"qos_minus1", "must be a table ([qos_minus1]), not the boolean true"}}},
		{"qos -1 unknown key", "[qos_minus1]\nsenders = []", []problem{{"qos_minus1.senders", "unknown key"}}},
		{"qos -1 enabled string", "[qos_minus1]\nenabled = \"true\"", []problem{{"qos_minus1.enabled", `must be a boolean (true or false), not the string "true"`}}},
		{
			"qos -1 senders a string",
			"[qos_minus1]\nallowed_senders = \"10.0.0.0/8\"",
			[]problem{{"qos_minus1.allowed_senders", `must be an array of network strings such as "10.0.0.0/8", not the string "10.0.0.0/8"`}},
		},
		{
			"qos -1 sender not a string",
			"[qos_minus1]\nallowed_senders = [\"10.0.0.0/8\", 10]",
			[]problem{{"qos_minus1.allowed_senders[1]", `must be a network string such as "10.0.0.0/8", not the integer 10`}},
		},
		{
			"qos -1 sender prefix too long",
			"[qos_minus1]\nallowed_senders = [\"10.0.0.0/33\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `"10.0.0.0/33" is not a network: prefix length out of range`}},
		},
		{
			"qos -1 sender bad address",
			"[qos_minus1]\nallowed_senders = [\"::1/128\", \"10.0.0.256\"]",
			[]problem{{"qos_minus1.allowed_senders[1]", `"10.0.0.256" is not an address: IPv4 field has value >255`}},
		},
		{
			"qos -1 sender host name",
			"[qos_minus1]\nallowed_senders = [\"sensors.example\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `"sensors.example" is not an address`}},
		},
		{
			"qos -1 sender empty",
			"[qos_minus1]\nallowed_senders = [\"\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `"" is not an address`}},
		},
		{
			"qos -1 sender with a zone",
			"[qos_minus1]\nallowed_senders = [\"fe80::1%eth0\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `"fe80::1%eth0" has an IPv6 zone (%eth0), which is not allowed here`}},
		},
		{
			"qos -1 sender IPv4-mapped network",
			"[qos_minus1]\nallowed_senders = [\"::ffff:10.1.0.0/104\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `"::ffff:10.1.0.0/104" is an IPv4-mapped IPv6 network, which never matches: IPv4 senders are seen as IPv4; write "10.0.0.0/8"`}},
		},
		{
			"qos -1 sender IPv4-mapped address",
			"[qos_minus1]\nallowed_senders = [\"::ffff:10.0.0.7\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `write "10.0.0.7/32"`}},
		},
		{
			"qos -1 sender prefix with a zone",
			"[qos_minus1]\nallowed_senders = [\"fe80::%eth0/64\"]",
			[]problem{{"qos_minus1.allowed_senders[0]", `"fe80::%eth0/64" is not a network`}},
		},
		{
			"qos -1 duplicate sender after masking",
			"[qos_minus1]\nallowed_senders = [\"10.0.0.0/8\", \"::1\", \"10.9.9.9/8\"]",
			[]problem{{"qos_minus1.allowed_senders[2]", `"10.9.9.9/8" (10.0.0.0/8) is already listed as qos_minus1.allowed_senders[0]`}},
		},
		{
			"qos -1 duplicate host, bare and as a prefix",
			"[qos_minus1]\nallowed_senders = [\"127.0.0.1\", \"127.0.0.1/32\", \"127.0.0.1\"]",
			[]problem{
				{"qos_minus1.allowed_senders[1]", `"127.0.0.1/32" is already listed as qos_minus1.allowed_senders[0]`},
				{"qos_minus1.allowed_senders[2]", `"127.0.0.1" (127.0.0.1/32) is already listed as qos_minus1.allowed_senders[0]`},
			},
		},
		{
			"qos -1 duplicate sender as written",
			"[qos_minus1]\nallowed_senders = [\"fd00::/8\", \"fd00::/8\"]",
			[]problem{{"qos_minus1.allowed_senders[1]", `"fd00::/8" is already listed as qos_minus1.allowed_senders[0]`}},
		},

		// [[predefined_topics]]
		{"topic id 0", topics(`id = 0`, `topic = "a"`), []problem{{"predefined_topics[0].id", "0 is reserved (use 1..65534)"}}},
		{"topic id 0xFFFF", topics(`id = 0xFFFF`, `topic = "a"`), []problem{{"predefined_topics[0].id", "65535 is reserved (use 1..65534)"}}},
		{"topic id 70000", topics(`id = 70000`, `topic = "a"`), []problem{{"predefined_topics[0].id", "70000 is out of range 1..65534"}}},
		{"topic id -1", topics(`id = -1`, `topic = "a"`), []problem{{"predefined_topics[0].id", "-1 is out of range 1..65534"}}},
		{"topic id string", topics(`id = "1"`, `topic = "a"`), []problem{{"predefined_topics[0].id", "must be an integer"}}},
		{"topic id missing", topics(`topic = "a"`), []problem{{"predefined_topics[0].id", "missing"}}},
		{"topic missing", topics(`id = 1`), []problem{{"predefined_topics[0].topic", "missing"}}},
		{"topic empty", topics(`id = 1`, `topic = ""`), []problem{{"predefined_topics[0].topic", "must not be empty"}}},
		{"topic plus", topics(`id = 1`, `topic = "a/+/c"`), []problem{{"predefined_topics[0].topic", `"a/+/c" contains a wildcard`}}},
		{"topic hash", topics(`id = 1`, `topic = "a/#"`), []problem{{"predefined_topics[0].topic", `"a/#" contains a wildcard`}}},
		{"topic NUL", topics(`id = 1`, `topic = "a\u0000b"`), []problem{{"predefined_topics[0].topic", "contains a NUL character"}}},
		{"topic type", topics(`id = 1`, `topic = 5`), []problem{{"predefined_topics[0].topic", "must be a string, not the integer 5"}}},
		{
			"topic duplicate id",
			topics(`id = 1`, `topic = "a"`) + topics(`id = 2`, `topic = "b"`) + topics(`id = 1`, `topic = "c"`),
			[]problem{{"predefined_topics[2].id", "1 is already used by predefined_topics[0]"}},
		},
		{
			"topic duplicate name",
			topics(`id = 1`, `topic = "a"`) + topics(`id = 2`, `topic = "a"`),
			[]problem{{"predefined_topics[1].topic", `"a" is already used by predefined_topics[0]`}},
		},
		{
			"predefined topics as a single table",
			"[predefined_topics]\nid = 1\ntopic = \"a\"",
			[]problem{{"predefined_topics", "must be an array of tables ([[predefined_topics]]), not a table"}},
		},
		{
			"predefined topics element not a table",
			`predefined_topics = [{id = 1, topic = "a"}, 5]`,
			[]problem{{"predefined_topics[1]", "must be a table"}},
		},

		// [sleep]
		{"sleep not a table", "sleep = 1.5", []problem{{"sleep", "must be a table ([sleep]), not the float 1.5"}}},
		{"sleep unknown key", "[sleep]\nmax_message = 10", []problem{{"sleep.max_message", "unknown key"}}},
		{"sleep upper-case key", "[sleep]\nBuffer_QoS0 = true", []problem{{"sleep.Buffer_QoS0", "unknown key (keys are lower case)"}}},
		{"tolerance below 1", "[sleep]\ntolerance = 0.99", []problem{{"sleep.tolerance", "0.99 is out of range 1.0..10.0"}}},
		{"tolerance above 10", "[sleep]\ntolerance = 10.5", []problem{{"sleep.tolerance", "10.5 is out of range 1.0..10.0"}}},
		{"tolerance 0", "[sleep]\ntolerance = 0.0", []problem{{"sleep.tolerance", "0.0 is out of range 1.0..10.0"}}},
		{"tolerance negative", "[sleep]\ntolerance = -1.5", []problem{{"sleep.tolerance", "-1.5 is out of range 1.0..10.0"}}},
		{"tolerance integer 0", "[sleep]\ntolerance = 0", []problem{{"sleep.tolerance", "0 is out of range 1.0..10.0"}}},
		{"tolerance integer 11", "[sleep]\ntolerance = 11", []problem{{"sleep.tolerance", "11 is out of range 1.0..10.0"}}},
		{
			"tolerance huge integer shown as written",
			"[sleep]\ntolerance = 9223372036854775807",
			[]problem{{"sleep.tolerance", "9223372036854775807 is out of range 1.0..10.0"}},
		},
		{"tolerance huge float", "[sleep]\ntolerance = 1e300", []problem{{"sleep.tolerance", "1e+300 is out of range 1.0..10.0"}}},
		{"tolerance nan", "[sleep]\ntolerance = nan", []problem{{"sleep.tolerance", "nan is not a finite number (use 1.0..10.0)"}}},
		{"tolerance -nan", "[sleep]\ntolerance = -nan", []problem{{"sleep.tolerance", "nan is not a finite number (use 1.0..10.0)"}}},
		{"tolerance inf", "[sleep]\ntolerance = inf", []problem{{"sleep.tolerance", "inf is not a finite number (use 1.0..10.0)"}}},
		{"tolerance +inf", "[sleep]\ntolerance = +inf", []problem{{"sleep.tolerance", "inf is not a finite number (use 1.0..10.0)"}}},
		{"tolerance -inf", "[sleep]\ntolerance = -inf", []problem{{"sleep.tolerance", "-inf is not a finite number (use 1.0..10.0)"}}},
		{"tolerance string", "[sleep]\ntolerance = \"1.5\"", []problem{{"sleep.tolerance", `must be a number such as 1.5, not the string "1.5"`}}},
		{"tolerance boolean", "[sleep]\ntolerance = true", []problem{{"sleep.tolerance", "must be a number such as 1.5, not the boolean true"}}},
		{"tolerance array", "[sleep]\ntolerance = [1.5]", []problem{{"sleep.tolerance", "must be a number such as 1.5, not an array"}}},
		{"max messages 0", "[sleep]\nmax_messages = 0", []problem{{"sleep.max_messages", "0 is out of range 1..100000"}}},
		{"max messages too many", "[sleep]\nmax_messages = 100001", []problem{{"sleep.max_messages", "100001 is out of range 1..100000"}}},
		{"max messages float", "[sleep]\nmax_messages = 100.0", []problem{{"sleep.max_messages", "must be an integer, not the float 100"}}},
		{"max messages string", "[sleep]\nmax_messages = \"100\"", []problem{{"sleep.max_messages", `must be an integer, not the string "100"`}}},
		{"max bytes too small", "[sleep]\nmax_bytes = 1023", []problem{{"sleep.max_bytes", "1023 is out of range 1024..67108864"}}},
		{"max bytes too big", "[sleep]\nmax_bytes = 67108865", []problem{{"sleep.max_bytes", "67108865 is out of range 1024..67108864"}}},
		{"max bytes negative", "[sleep]\nmax_bytes = -1", []problem{{"sleep.max_bytes", "-1 is out of range 1024..67108864"}}},
		{"max bytes string", "[sleep]\nmax_bytes = \"64KiB\"", []problem{{"sleep.max_bytes", `must be an integer, not the string "64KiB"`}}},
		{"buffer qos0 string", "[sleep]\nbuffer_qos0 = \"true\"", []problem{{"sleep.buffer_qos0", `must be a boolean (true or false), not the string "true"`}}},
		{"buffer qos0 integer", "[sleep]\nbuffer_qos0 = 0", []problem{{"sleep.buffer_qos0", "must be a boolean (true or false), not the integer 0"}}},
		{
			"allow address change string",
			"[sleep]\nallow_address_change = \"no\"",
			[]problem{{"sleep.allow_address_change", `must be a boolean (true or false), not the string "no"`}},
		},
		{
			"allow address change integer",
			"[sleep]\nallow_address_change = 1",
			[]problem{{"sleep.allow_address_change", "must be a boolean (true or false), not the integer 1"}},
		},
		{
			"sleep problems together, in key order",
			"[sleep]\nallow_address_change = 1\nbuffer_qos0 = 1\nmax_bytes = 0\nmax_messages = 0\ntolerance = nan",
			[]problem{
				{"sleep.tolerance", "nan is not a finite number"},
				{"sleep.max_messages", "0 is out of range 1..100000"},
				{"sleep.max_bytes", "0 is out of range 1024..67108864"},
				{"sleep.buffer_qos0", "must be a boolean"},
				{"sleep.allow_address_change", "must be a boolean"},
			},
		},

		// [log]
		{"log level", "[log]\nlevel = \"verbose\"", []problem{{"log.level", `"verbose" is not a log level (use debug, info, warn or error)`}}},
		{"log level trace", "[log]\nlevel = \"trace\"", []problem{{"log.level", `"trace" is not a log level`}}},
		{"log level case", "[log]\nlevel = \"INFO\"", []problem{{"log.level", `"INFO" is not a log level`}}},
		{"log format", "[log]\nformat = \"xml\"", []problem{{"log.format", `"xml" is not a log format (use console or json)`}}},

		// several at once, in order: unknown keys first, then by table
		{
			"several problems",
			`[gateway]
id = 300
colour = "blue"
[upstream]
keep_alive = "2.5s"
[session]
retry_interval = "ten"
max_retries = 1000
max_topics = 0
[qos_minus1]
enabled = "no"
allowed_senders = ["10.0.0.0/8", "10.0.0.0/8"]
[sleep]
tolerance = "1.5"
max_bytes = 512
[log]
format = "xml"
`,
			[]problem{
				{"gateway.colour", "unknown key"},
				{"gateway.id", "300 is out of range 0..255"},
				{"upstream.keep_alive", `"2.5s" is not a whole number of seconds`},
				{"session.retry_interval", `"ten" is not a duration`},
				{"session.max_retries", "1000 is out of range 0..100"},
				{"session.max_topics", "0 is out of range 1..65534"},
				{"qos_minus1.enabled", `must be a boolean (true or false), not the string "no"`},
				{"qos_minus1.allowed_senders[1]", `is already listed as qos_minus1.allowed_senders[0]`},
				{"sleep.tolerance", `must be a number such as 1.5, not the string "1.5"`},
				{"sleep.max_bytes", "512 is out of range 1024..67108864"},
				{"log.format", `"xml" is not a log format`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("test.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want errors %v", cfg, tt.want)
			}
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("Parse returned a non-zero Config with an error: %+v", cfg)
			}
			checkProblems(t, err, tt.want)
		})
	}
}

// topics returns one [[predefined_topics]] table with the given lines.
func topics(lines ...string) string {
	return "[[predefined_topics]]\n" + strings.Join(lines, "\n") + "\n"
}

// checkProblems checks that err holds exactly the wanted problems, in order,
// each an *Error whose one-line message names the file test.toml and the key.
func checkProblems(t *testing.T, err error, want []problem) {
	t.Helper()
	fps := make([]fileProblem, len(want))
	for i, p := range want {
		fps[i] = fileProblem{"test.toml", p.key, p.reason}
	}
	checkFileProblems(t, err, fps)
}

// fileProblem is one expected error line: its file, its key and a part of
// its reason.
type fileProblem struct {
	file   string
	key    string
	reason string
}

// checkFileProblems checks that err holds exactly the wanted problems, in
// order, each an *Error whose one-line message names the file and the key.
func checkFileProblems(t *testing.T, err error, want []fileProblem) {
	t.Helper()
	errs := unjoin(err)
	lines := strings.Split(err.Error(), "\n")
	if len(errs) != len(want) || len(lines) != len(want) {
		t.Fatalf("got %d errors (%d lines), want %d:\n%v", len(errs), len(lines), len(want), err)
	}
	for i, e := range errs {
		var ce *Error
		if !errors.As(e, &ce) {
			t.Errorf("error %d is a %T, want *Error: %v", i, e, e)
			continue
		}
		if ce.File != want[i].file || ce.Key != want[i].key {
			t.Errorf("error %d: File %q Key %q, want %q %q", i, ce.File, ce.Key, want[i].file, want[i].key)
		}
		prefix := want[i].file + ": " + want[i].key + ": "
		if !strings.HasPrefix(lines[i], prefix) || !strings.Contains(lines[i], want[i].reason) {
			t.Errorf("error %d = %q, want %q...%q", i, lines[i], prefix, want[i].reason)
		}
	}
}

// unjoin returns the errors joined in err, or err alone.
func unjoin(err error) []error {
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		return j.Unwrap()
	}
	return []error{err}
}

func TestParseSyntaxError(t *testing.T) {
	_, err := Parse("gateway.toml", []byte("[gateway]\nid = 1\nid 2\n"))
	if err == nil {
		t.Fatal("Parse succeeded")
	}
	errs := unjoin(err)
	var ce *Error
	if len(errs) != 1 || !errors.As(errs[0], &ce) {
		t.Fatalf("got %#v, want one *Error", errs)
	}
	if ce.Line != 3 || ce.Key != "" {
		t.Errorf("Line %d Key %q, want line 3 and no key", ce.Line, ce.Key)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, "gateway.toml: line 3: ") || strings.Contains(msg, "\n") {
		t.Errorf("message %q, want one line starting %q", msg, "gateway.toml: line 3: ")
	}
}

func TestParseDuplicateKey(t *testing.T) {
	_, err := Parse("gateway.toml", []byte("[gateway]\nid = 1\nid = 2\n"))
	if err == nil || !strings.HasPrefix(err.Error(), "gateway.toml: line 3: ") {
		t.Errorf("got %v, want a syntax error on line 3", err)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gw.toml")
	if err := os.WriteFile(path, []byte("[gateway]\nid = 300\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	if want := path + ": gateway.id: 300 is out of range 0..255"; err == nil || err.Error() != want {
		t.Errorf("Load: %v, want %q", err, want)
	}

	_, err = Load(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
	if err == nil || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("Load of a missing file: %v, want the path in the message", err)
	}
}

// TestCAFile checks upstream.ca_file against files on disk.
func TestCAFile(t *testing.T) {
	dir := t.TempDir()
	ca := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, broker := range []string{"tls://h:8883", "ssl://h:8883", "TLS://h:8883"} {
		doc := "[upstream]\nbroker = " + quote(broker) + "\nca_file = " + quote(ca)
		cfg, err := Parse("test.toml", []byte(doc))
		if err != nil {
			t.Errorf("%s: %v", broker, err)
			continue
		}
		want := Default()
		want.Upstream.Broker, want.Upstream.CAFile = broker, ca
		if !reflect.DeepEqual(cfg, want) {
			t.Errorf("%s: got %+v\nwant %+v", broker, cfg, want)
		}
	}

	t.Run("relative to the working directory", func(t *testing.T) {
		t.Chdir(dir)
		doc := "[upstream]\nbroker = \"tls://h:8883\"\nca_file = \"ca.pem\""
		if _, err := Parse("test.toml", []byte(doc)); err != nil {
			t.Error(err)
		}
	})

	errorTests := []struct {
		name string
		path string
		want string
	}{
		{"missing", filepath.Join(dir, "missing.pem"), "cannot use " + quote(filepath.Join(dir, "missing.pem")) + ": no such file or directory"},
		{"directory", dir, quote(dir) + " is a directory, not a PEM file"},
		{"below a file", filepath.Join(ca, "x"), "cannot use " + quote(filepath.Join(ca, "x")) + ": not a directory"},
	}
	if os.Geteuid() != 0 { // root reads any file
		unreadable := filepath.Join(dir, "unreadable.pem")
		if err := os.WriteFile(unreadable, nil, 0o000); err != nil {
			t.Fatal(err)
		}
		errorTests = append(errorTests, struct{ name, path, want string }{
			"unreadable", unreadable, "cannot read " + quote(unreadable) + ": permission denied",
		})
	}
	for _, tt := range errorTests {
		t.Run(tt.name, func(t *testing.T) {
			doc := "[upstream]\nbroker = \"tls://h:8883\"\nca_file = " + quote(tt.path)
			cfg, err := Parse("test.toml", []byte(doc))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v", cfg)
			}
			checkProblems(t, err, []problem{{"upstream.ca_file", tt.want}})
		})
	}
}

// quote returns s as a TOML basic string, which is also how %q shows the
// paths used here.
func quote(s string) string { return strconv.Quote(s) }

func TestErrorMessage(t *testing.T) {
	tests := []struct {
		err  Error
		want string
	}{
		{Error{File: "f.toml", Key: "gateway.id", Reason: "bad"}, "f.toml: gateway.id: bad"},
		{Error{File: "f.toml", Line: 3, Reason: "bad"}, "f.toml: line 3: bad"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("got %q, want %q", got, tt.want)
		}
	}
}

// FuzzParse checks that Parse never panics, and that it returns either a
// config or one-line *Error values.
func FuzzParse(f *testing.F) {
	if data, err := os.ReadFile(shipped); err == nil {
		f.Add(data)
	}
	f.Add([]byte("[gateway]\nid = 300\nfoo = 1\n[[predefined_topics]]\nid = 0\n"))
	f.Add([]byte("gateway = 5\npredefined_topics = [1, {id = 2}]\n"))
	f.Add([]byte("[udp]\nlisten = [\"\", \"[::1]:1\", 3]\n"))
	f.Add([]byte("[sleep]\ntolerance = nan\nmax_messages = 1.5\nmax_bytes = \"x\"\nbuffer_qos0 = 1\n"))
	f.Add([]byte("[qos_minus1]\nenabled = 1\nallowed_senders = [\"::1\", \"10.0.0.1/8\", \"x/\", 4]\n[upstream]\nkeep_alive = \"1.5s\"\n"))
	f.Add([]byte("[udp]\nlisten = [\":1884\"]\n[dtls]\nlisten = [\"127.0.0.1:1884\", 5684]\nmax_handshakes = 0\nbind_client_id = 1\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		_, err := Parse("fuzz.toml", data)
		if err == nil {
			return
		}
		for _, e := range unjoin(err) {
			var ce *Error
			if !errors.As(e, &ce) {
				t.Fatalf("error %T is not an *Error: %v", e, e)
			}
			if strings.ContainsAny(e.Error(), "\r\n") {
				t.Fatalf("error is not one line: %q", e.Error())
			}
		}
	})
}
