package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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
		"upstream":        rawUpstream{},
		"embedded_broker": rawEmbeddedBroker{},
		"session":         rawSession{},
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
				c.Upstream = UpstreamConfig{Broker: "tcp://broker.example:1883", Username: "gw", Password: "secret"}
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
				c.Session = SessionConfig{MaxClients: 1_000_000, MaxClientIDLength: 65535, RetryInterval: 100 * time.Millisecond, MaxRetries: 0}
			},
		},
		{"retry interval 1h", `session.retry_interval = "1h"`, func(c *Config) { c.Session.RetryInterval = time.Hour }},
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
[session]
retry_interval = "ten"
max_retries = 1000
[log]
format = "xml"
`,
			[]problem{
				{"gateway.colour", "unknown key"},
				{"gateway.id", "300 is out of range 0..255"},
				{"session.retry_interval", `"ten" is not a duration`},
				{"session.max_retries", "1000 is out of range 0..100"},
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
// each an *Error whose one-line message names the file and the key.
func checkProblems(t *testing.T, err error, want []problem) {
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
		if ce.File != "test.toml" || ce.Key != want[i].key {
			t.Errorf("error %d: File %q Key %q, want %q %q", i, ce.File, ce.Key, "test.toml", want[i].key)
		}
		prefix := "test.toml: " + want[i].key + ": "
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
