package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/BurntSushi/toml"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Defaults of a scenario's top-level keys and of a group's keys.
const (
	// DefaultGateway is the gateway's UDP address (top-level gateway).
	DefaultGateway = "127.0.0.1:1884"
	// DefaultBroker is the observer's broker URL (top-level broker).
	DefaultBroker = "tcp://127.0.0.1:1883"
	// DefaultDuration is the publishing phase (top-level duration).
	DefaultDuration = 30 * time.Second
	// DefaultKeepAlive is a sensor's CONNECT Duration (group keep_alive).
	DefaultKeepAlive = 60 * time.Second
	// DefaultRetryInterval is Tretry (group retry_interval).
	DefaultRetryInterval = 5 * time.Second
	// DefaultMaxRetries is Nretry (group max_retries).
	DefaultMaxRetries = 3
	// DefaultReconnectMin is the first reconnection back-off (group
	// reconnect_min).
	DefaultReconnectMin = time.Second
	// DefaultReconnectMax is the longest reconnection back-off (group
	// reconnect_max).
	DefaultReconnectMax = 30 * time.Second
	// DefaultIDWidth is the digits {n} is zero-padded to (group id_width).
	DefaultIDWidth = 4
)

// MaxClientIDLength is the longest ClientId a scenario may give a sensor:
// what a CONNECT can carry (MQTT-SN 1.2 §5.4.4, with the 3-octet Length).
// The gateway has its own, usually much smaller, limit
// (session.max_client_id_length; the spec recommends at most 23).
const MaxClientIDLength = mqttsn.MaxLength - 4 - 4

// TopicType is how a sensor names a topic on the wire: a registered topic
// id (REGISTER / SUBSCRIBE by name), a predefined id, or a short name.
type TopicType uint8

// Topic types, as written in a scenario file.
const (
	TopicRegistered TopicType = iota // "registered"
	TopicPredefined                  // "predefined"
	TopicShort                       // "short"
)

// String returns the scenario-file spelling of t.
func (t TopicType) String() string {
	switch t {
	case TopicPredefined:
		return "predefined"
	case TopicShort:
		return "short"
	}
	return "registered"
}

// wire returns the MQTT-SN TopicIdType of t.
func (t TopicType) wire() mqttsn.TopicIDType {
	switch t {
	case TopicPredefined:
		return mqttsn.TopicIDPredefined
	case TopicShort:
		return mqttsn.TopicIDShort
	}
	return mqttsn.TopicIDNormal
}

// Scenario is a parsed scenario file (or the flags' defaults).
//
// A scenario file (TOML) describes a fleet: where the gateway and the
// broker are, how long to run, and one [[group]] table per kind of sensor.
// Every key is optional except group.count; unknown keys are errors. The
// README section "Simulate a fleet: firmware-sim" lists the keys and their
// defaults; testdata/scenarios/*.toml are examples.
type Scenario struct {
	// Name is the file's base name without .toml, or "flags".
	Name string
	// File is the file name as given to ParseScenario, used in errors.
	File string
	// Gateway is the gateway's address, host:port.
	Gateway string
	// Broker is the observer's broker URL (tcp:// or mqtt://).
	Broker string
	// Duration is how long sensors publish and the observer sends commands.
	Duration time.Duration
	// Drain is how long to wait after Duration for messages still on their
	// way; 0 picks one long enough for every sleeping sensor to wake again.
	Drain time.Duration
	// Verify turns on the broker observer and the delivery report.
	Verify bool
	// Seed seeds the jitter; 0 means a random seed.
	Seed uint64
	// ObserverQoS is the observer's subscription QoS (default 2, so that
	// each message arrives at the QoS it was published with).
	ObserverQoS byte
	// DTLS is the [dtls] table: keys and certificates of DTLS groups.
	DTLS DTLSConfig
	// Groups are the [[group]] tables, in file order.
	Groups []Group
}

// DTLSConfig holds what DTLS groups need to handshake with the gateway.
type DTLSConfig struct {
	// Gateway is the gateway's DTLS address; empty means Scenario.Gateway.
	Gateway string
	// PSKFile is a PSK file in the gateway's format; a sensor uses the entry
	// whose client_id (default: identity) is its ClientId.
	PSKFile string
	// CAFile holds PEM CAs to verify the gateway's certificate with.
	CAFile string
	// CertFile and KeyFile are the sensor's certificate and key; "{id}" is
	// replaced by the ClientId, so that every sensor can have its own.
	CertFile, KeyFile string
	// ServerName is the name checked in the gateway's certificate; default:
	// the gateway's host.
	ServerName string
	// ConnectionID makes sensors use the RFC 9146 connection id the
	// gateway offers.
	ConnectionID bool
}

// Group is one [[group]] table: Count sensors that behave alike. Patterns
// may hold {n}, the sensor's number zero-padded to IDWidth digits, and
// (but for ClientID) {id}, its ClientId.
type Group struct {
	// Name is the group's unique name (name; default group<i>).
	Name string
	// Count is the number of sensors (count).
	Count int
	// First is the number of the first sensor, {n} (first).
	First int
	// IDWidth is the digits {n} is zero-padded to (id_width).
	IDWidth int
	// ClientID is the ClientId pattern, with {n} (client_id).
	ClientID string
	// Transport is "udp" or "dtls" (transport).
	Transport string

	// KeepAlive is the CONNECT's Duration (keep_alive).
	KeepAlive time.Duration
	// CleanSession is the CONNECT's CleanSession flag (clean_session).
	CleanSession bool
	// WillTopic is the Will's topic pattern; empty: no Will (will_topic).
	WillTopic string
	// WillMessage is the Will's message (will_message).
	WillMessage string
	// WillQoS is the Will's QoS (will_qos).
	WillQoS mqttsn.QoS
	// WillRetain is the Will's retain flag (will_retain).
	WillRetain bool

	// Topic is the publish topic pattern: the MQTT topic the observer
	// sees, or the short name (topic).
	Topic string
	// TopicType is how the sensors name Topic on the wire (topic_type).
	TopicType TopicType
	// TopicID is the predefined topic id (topic_id).
	TopicID uint16
	// QoS is the publications' QoS, QoSMinus1 for -1 (qos).
	QoS mqttsn.QoS
	// Retain is the publications' retain flag (retain).
	Retain bool
	// Publishes is set when interval or rate is.
	Publishes bool
	// Interval is the time between two publications of one sensor; 0 with
	// QoS 1/2: back to back, paced by the acknowledgements (interval).
	Interval time.Duration
	// Rate is the offered msg/s of the whole group; it sets the interval
	// (rate).
	Rate float64
	// PayloadSize pads payloads to this many octets; 0: natural (payload_size).
	PayloadSize int
	// Window is the QoS 1/2 publications in flight per sensor (window).
	Window int
	// Jitter moves every interval, and sleep, by up to ± this (jitter).
	Jitter time.Duration
	// Ramp spreads the sensors' first CONNECTs over this time (ramp).
	Ramp time.Duration

	// RetryInterval is Tretry (retry_interval).
	RetryInterval time.Duration
	// MaxRetries is Nretry (max_retries).
	MaxRetries int
	// ReconnectMin is the first reconnection back-off (reconnect_min).
	ReconnectMin time.Duration
	// ReconnectMax is the longest reconnection back-off (reconnect_max).
	ReconnectMax time.Duration

	// Awake is the active time per sleep cycle (awake).
	Awake time.Duration
	// Sleep, when more than 0, makes the sensors sleep this long per cycle
	// (sleep).
	Sleep time.Duration

	// CommandTopic is the subscription's topic pattern; empty: none
	// (command_topic).
	CommandTopic string
	// CommandTopicType is how the sensors name CommandTopic on the wire
	// (command_topic_type).
	CommandTopicType TopicType
	// CommandTopicID is the predefined id of CommandTopic
	// (command_topic_id).
	CommandTopicID uint16
	// CommandQoS is the subscription's QoS, 0..2 (command_qos).
	CommandQoS mqttsn.QoS
	// CommandInterval is, with -verify, how often each sensor gets a
	// command; 0: never (command_interval).
	CommandInterval time.Duration
}

// PublishInterval returns the interval between two publications of one
// sensor of g, whichever of interval and rate the file gave.
func (g *Group) PublishInterval() time.Duration {
	if g.Rate > 0 && g.Count > 0 {
		return time.Duration(float64(g.Count) / g.Rate * float64(time.Second))
	}
	return g.Interval
}

// OfferedRate returns the group's offered publications per second (for a
// sleeping group, averaged over its awake and asleep time), or 0 when it
// does not publish or publishes back to back.
func (g *Group) OfferedRate() float64 {
	if !g.Publishes || g.Count == 0 {
		return 0
	}
	r := g.Rate
	if r == 0 {
		if g.Interval <= 0 {
			return 0
		}
		r = float64(g.Count) / g.Interval.Seconds()
	}
	if g.Sleep > 0 {
		r *= g.Awake.Seconds() / (g.Awake + g.Sleep).Seconds()
	}
	return r
}

// ScenarioError is one problem of a scenario file.
type ScenarioError struct {
	// File is the file name, as given.
	File string
	// Key is the key at fault, e.g. "group[2].qos"; empty for a syntax
	// error.
	Key string
	// Reason says what is wrong.
	Reason string
}

// Error returns e.g. `demo.toml: group[2].qos: 3 is not one of -1, 0, 1, 2`.
func (e *ScenarioError) Error() string {
	if e.Key == "" {
		return e.File + ": " + e.Reason
	}
	return e.File + ": " + e.Key + ": " + e.Reason
}

// LoadScenario reads and parses the scenario file at path.
func LoadScenario(path string) (*Scenario, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read scenario: %w", err)
	}
	sc, err := ParseScenario(path, data)
	if err != nil {
		return nil, err
	}
	sc.Name = strings.TrimSuffix(filepath.Base(path), ".toml")
	// Files named in the scenario are relative to it.
	dir := filepath.Dir(path)
	for _, f := range []*string{&sc.DTLS.PSKFile, &sc.DTLS.CAFile, &sc.DTLS.CertFile, &sc.DTLS.KeyFile} {
		if *f != "" && !filepath.IsAbs(*f) {
			*f = filepath.Join(dir, *f)
		}
	}
	return sc, nil
}

// DefaultScenario is the scenario of a run without a file: one group of
// ten sensors publishing at QoS 0 every second.
func DefaultScenario() *Scenario {
	sc, err := ParseScenario("defaults", []byte("[[group]]\ncount = 10\nname = \"sensor\"\ninterval = \"1s\"\n"))
	if err != nil {
		panic(err) // a constant that parses
	}
	sc.Name = "flags"
	return sc
}

// ParseScenario decodes data as a scenario file; name is used in errors.
// On failure the error is an errors.Join of *ScenarioError, one per problem.
func ParseScenario(name string, data []byte) (*Scenario, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(data), &raw); err != nil {
		return nil, &ScenarioError{File: name, Reason: strings.TrimPrefix(err.Error(), "toml: ")}
	}
	p := &parser{file: name}
	top := p.table("", raw)
	sc := &Scenario{
		File:        name,
		Gateway:     top.str("gateway", DefaultGateway),
		Broker:      top.str("broker", DefaultBroker),
		Duration:    top.dur("duration", DefaultDuration, time.Millisecond),
		Drain:       top.dur("drain", 0, 0),
		Verify:      top.boolean("verify", false),
		Seed:        uint64(top.integer("seed", 0, 0, math.MaxInt64)),
		ObserverQoS: byte(top.integer("observer_qos", 2, 0, 2)),
	}
	if d, ok := top.sub("dtls"); ok {
		sc.DTLS = DTLSConfig{
			Gateway:      d.str("gateway", ""),
			PSKFile:      d.str("psk_file", ""),
			CAFile:       d.str("ca_file", ""),
			CertFile:     d.str("cert_file", ""),
			KeyFile:      d.str("key_file", ""),
			ServerName:   d.str("server_name", ""),
			ConnectionID: d.boolean("connection_id", true),
		}
		if (sc.DTLS.CertFile == "") != (sc.DTLS.KeyFile == "") {
			p.errorf("dtls.cert_file", "cert_file and key_file go together")
		}
		d.done()
	} else {
		sc.DTLS.ConnectionID = true
	}
	groups := top.list("group")
	names := map[string]int{}
	for i, m := range groups {
		g := p.group(p.table(fmt.Sprintf("group[%d]", i), m), i, sc)
		if j, dup := names[g.Name]; dup {
			p.errorf(fmt.Sprintf("group[%d].name", i), fmt.Sprintf("%q is already used by group[%d]", g.Name, j))
		}
		names[g.Name] = i
		sc.Groups = append(sc.Groups, g)
	}
	if len(groups) == 0 && top.has("group") {
		p.errorf("group", "must be an array of tables ([[group]])")
	}
	top.done()
	if len(p.errs) == 0 { // the groups' own keys are right: check them together
		p.errs = sc.clientIDErrors("")
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	if len(sc.Groups) == 0 {
		return nil, &ScenarioError{File: name, Key: "group", Reason: "no [[group]] table: nothing to simulate"}
	}
	return sc, nil
}

// clientIDErrors checks the ClientIds the groups' counts give: none empty
// or longer than MaxClientIDLength, no two sensors with one ClientId
// (within a group: a pattern without {n}; across groups: patterns whose
// ranges meet). note is added to the reasons (e.g. "after -sensors 50").
func (sc *Scenario) clientIDErrors(note string) []error {
	var errs []error
	bad := func(gi int, reason string) {
		if note != "" {
			reason += " (" + note + ")"
		}
		errs = append(errs, &ScenarioError{File: sc.File, Key: fmt.Sprintf("group[%d].client_id", gi), Reason: reason})
	}
	busy := 0
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		if g.Count == 0 {
			continue
		}
		busy++
		if !strings.Contains(g.ClientID, "{n}") && g.Count > 1 {
			bad(gi, fmt.Sprintf("%q has no {n}: %d sensors would share one ClientId", g.ClientID, g.Count))
		}
		// The last number is the longest.
		if id := expand(g.ClientID, g.First+g.Count-1, g.IDWidth, ""); len(id) > MaxClientIDLength {
			bad(gi, fmt.Sprintf("ClientId %.20q… is %d octets, longer than the %d a CONNECT can carry", id, len(id), MaxClientIDLength))
		}
	}
	if busy < 2 || len(errs) > 0 {
		return errs // within a group, {n} keeps ClientIds apart
	}
	owner := map[string]int{}
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		for i := range g.Count {
			id := expand(g.ClientID, g.First+i, g.IDWidth, "")
			if gj, dup := owner[id]; dup {
				bad(gi, fmt.Sprintf("ClientId %q (sensor %d of the group) is also one of group[%d]'s", id, i+1, gj))
				break
			}
			owner[id] = gi
		}
	}
	return errs
}

// group parses one [[group]] table.
func (p *parser) group(t *table, i int, sc *Scenario) Group {
	g := Group{
		Name:      t.str("name", "group"+strconv.Itoa(i)),
		Count:     int(t.integer("count", -1, 0, 1_000_000)),
		First:     int(t.integer("first", 1, 0, 1_000_000_000)),
		IDWidth:   int(t.integer("id_width", DefaultIDWidth, 1, 12)),
		Transport: t.oneOf("transport", "udp", "udp", "dtls"),

		KeepAlive:    t.dur("keep_alive", DefaultKeepAlive, time.Second),
		CleanSession: t.boolean("clean_session", true),
		WillTopic:    t.str("will_topic", ""),
		WillMessage:  t.str("will_message", "offline"),
		WillQoS:      mqttsn.QoS(t.integer("will_qos", 0, 0, 2)),
		WillRetain:   t.boolean("will_retain", false),

		Topic:       t.str("topic", ""),
		TopicType:   t.topicType("topic_type"),
		Retain:      t.boolean("retain", false),
		PayloadSize: int(t.integer("payload_size", 0, 0, 60000)),
		Window:      int(t.integer("window", 1, 1, 1000)),
		Jitter:      t.dur("jitter", 0, 0),
		Ramp:        t.dur("ramp", 0, 0),

		RetryInterval: t.dur("retry_interval", DefaultRetryInterval, time.Millisecond),
		MaxRetries:    int(t.integer("max_retries", DefaultMaxRetries, 0, 100)),
		ReconnectMin:  t.dur("reconnect_min", DefaultReconnectMin, time.Millisecond),
		ReconnectMax:  t.dur("reconnect_max", DefaultReconnectMax, time.Millisecond),

		Awake: t.dur("awake", 0, 0),
		Sleep: t.dur("sleep", 0, 0),

		CommandTopic:     t.str("command_topic", ""),
		CommandTopicType: t.topicType("command_topic_type"),
		CommandQoS:       mqttsn.QoS(t.integer("command_qos", 1, 0, 2)),
		CommandInterval:  t.dur("command_interval", 0, 0),
	}
	g.ClientID = t.str("client_id", g.Name+"-{n}")
	switch {
	case g.ClientID == "":
		t.p.errorf(t.key("client_id"), "empty: every sensor needs a ClientId")
	case strings.Contains(g.ClientID, "{id}"):
		t.p.errorf(t.key("client_id"), fmt.Sprintf("%q: {id} is the ClientId itself; use {n}", g.ClientID))
	case strings.ContainsFunc(g.ClientID, func(r rune) bool { return r == '"' || r == '\\' || r < 0x20 || r == 0x7f }):
		t.p.errorf(t.key("client_id"), fmt.Sprintf("%q: no quotes, backslashes or control characters (payloads carry the ClientId)", g.ClientID))
	}
	if !t.has("count") {
		t.p.errorf(t.key("count"), "missing: how many sensors")
	}
	qos := t.integer("qos", 0, -1, 2)
	g.QoS = mqttsn.QoS(qos)
	if qos == -1 {
		g.QoS = mqttsn.QoSMinus1
	}
	g.TopicID = uint16(t.integer("topic_id", 0, 0, 0xFFFE))
	g.CommandTopicID = uint16(t.integer("command_topic_id", 0, 0, 0xFFFE))
	if t.has("interval") {
		g.Publishes = true
		g.Interval = t.dur("interval", 0, 0)
	}
	if t.has("rate") {
		g.Publishes = true
		g.Rate = t.float("rate", 0)
		if g.Rate <= 0 && t.has("rate") {
			t.p.errorf(t.key("rate"), "must be more than 0 (msg/s for the whole group)")
		}
		if t.has("interval") {
			t.p.errorf(t.key("rate"), "give interval or rate, not both")
		}
	}
	t.done()

	// Checks across keys. (ClientIds shared across groups, and their
	// length: see clientIDErrors.)
	if !strings.Contains(g.ClientID, "{n}") && g.Count > 1 {
		t.p.errorf(t.key("client_id"), fmt.Sprintf("%q has no {n}: %d sensors would share one ClientId", g.ClientID, g.Count))
	}
	if g.Publishes {
		switch {
		case g.Topic == "":
			t.p.errorf(t.key("topic"), "missing: the group publishes (interval or rate) but has no topic")
		case g.Interval == 0 && g.Rate == 0 && (g.QoS == mqttsn.QoS0 || g.QoS == mqttsn.QoSMinus1):
			t.p.errorf(t.key("interval"), "0s (back to back) needs qos 1 or 2, whose acknowledgements pace it")
		}
	}
	checkTopic := func(key, typKey, idKey string, topic string, typ TopicType, id uint16, present bool) {
		if !present {
			return
		}
		switch typ {
		case TopicShort:
			if strings.Contains(topic, "{") || len(topic) != 2 {
				t.p.errorf(t.key(key), fmt.Sprintf("%q: a short topic name is exactly 2 characters", topic))
			}
		case TopicPredefined:
			if id == 0 {
				t.p.errorf(t.key(idKey), "missing: "+typKey+" is predefined")
			}
			if strings.Contains(topic, "{n}") || strings.Contains(topic, "{id}") {
				t.p.errorf(t.key(key), fmt.Sprintf("%q: one predefined id (%s) serves the whole group, so the topic cannot hold {n} or {id}", topic, idKey))
			}
		case TopicRegistered:
			if strings.ContainsAny(topic, "+#") {
				t.p.errorf(t.key(key), fmt.Sprintf("%q: no wildcards in a topic to publish to", topic))
			}
		}
	}
	checkTopic("topic", "topic_type", "topic_id", g.Topic, g.TopicType, g.TopicID, g.Topic != "")
	checkTopic("command_topic", "command_topic_type", "command_topic_id", g.CommandTopic, g.CommandTopicType, g.CommandTopicID, g.CommandTopic != "")
	if g.QoS == mqttsn.QoSMinus1 {
		if g.Topic != "" && g.TopicType == TopicRegistered {
			t.p.errorf(t.key("qos"), "-1 needs topic_type predefined or short (no CONNECT, so no REGISTER)")
		}
		if g.CommandTopic != "" || g.Sleep > 0 || g.WillTopic != "" {
			t.p.errorf(t.key("qos"), "-1 sensors never connect: no command_topic, sleep or will_topic")
		}
		if g.Transport == "dtls" {
			t.p.errorf(t.key("transport"), "qos -1 over DTLS is not supported by the simulator")
		}
	}
	if g.Sleep > 0 && g.Sleep+g.Jitter > 65535*time.Second {
		t.p.errorf(t.key("sleep"), fmt.Sprintf("sleep + jitter (%v) is longer than the 65535 s a DISCONNECT Duration can carry", g.Sleep+g.Jitter))
	}
	if g.Sleep > 0 && g.Publishes && g.Awake == 0 {
		t.p.errorf(t.key("awake"), "missing: a sleeping group that publishes needs the time it stays awake")
	}
	if g.KeepAlive > 65535*time.Second {
		t.p.errorf(t.key("keep_alive"), "longer than 65535 s")
	}
	if g.ReconnectMax < g.ReconnectMin {
		t.p.errorf(t.key("reconnect_max"), "shorter than reconnect_min")
	}
	if g.CommandInterval > 0 && g.CommandTopic == "" {
		t.p.errorf(t.key("command_interval"), "set, but the group has no command_topic")
	}
	if g.CommandTopic != "" && g.CommandTopicType == TopicRegistered && strings.ContainsAny(g.CommandTopic, "+#") && g.CommandInterval > 0 {
		t.p.errorf(t.key("command_topic"), "commands cannot be sent to a wildcard; subscribe to the concrete topic")
	}
	return g
}

// parser collects the problems of one file.
type parser struct {
	file string
	errs []error
}

func (p *parser) errorf(key, reason string) {
	p.errs = append(p.errs, &ScenarioError{File: p.file, Key: key, Reason: reason})
}

// table is one TOML table being read key by key; done reports the keys
// nobody asked for.
type table struct {
	p      *parser
	prefix string
	m      map[string]any
	used   map[string]bool
}

func (p *parser) table(prefix string, m map[string]any) *table {
	return &table{p: p, prefix: prefix, m: m, used: map[string]bool{}}
}

func (t *table) key(k string) string {
	if t.prefix == "" {
		return k
	}
	return t.prefix + "." + k
}

func (t *table) has(k string) bool { _, ok := t.m[k]; return ok }

func (t *table) get(k string) (any, bool) {
	t.used[k] = true
	v, ok := t.m[k]
	return v, ok
}

func (t *table) wrongType(k string, v any, want string) {
	t.p.errorf(t.key(k), fmt.Sprintf("%s is %s, want %s", show(v), typeName(v), want))
}

func (t *table) str(k, def string) string {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.wrongType(k, v, "a string")
		return def
	}
	return s
}

func (t *table) oneOf(k, def string, allowed ...string) string {
	s := t.str(k, def)
	if !slices.Contains(allowed, s) {
		t.p.errorf(t.key(k), fmt.Sprintf("%q is not one of %s", s, strings.Join(allowed, ", ")))
		return def
	}
	return s
}

func (t *table) topicType(k string) TopicType {
	switch t.oneOf(k, "registered", "registered", "predefined", "short") {
	case "predefined":
		return TopicPredefined
	case "short":
		return TopicShort
	}
	return TopicRegistered
}

func (t *table) boolean(k string, def bool) bool {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	b, ok := v.(bool)
	if !ok {
		t.wrongType(k, v, "true or false")
		return def
	}
	return b
}

func (t *table) integer(k string, def, lo, hi int64) int64 {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	n, ok := v.(int64)
	if !ok {
		t.wrongType(k, v, "an integer")
		return def
	}
	if n < lo || n > hi {
		t.p.errorf(t.key(k), fmt.Sprintf("%d is out of range %d..%d", n, lo, hi))
		return def
	}
	return n
}

func (t *table) float(k string, def float64) float64 {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	switch n := v.(type) {
	case int64:
		return float64(n)
	case float64:
		if math.IsNaN(n) || math.IsInf(n, 0) {
			t.p.errorf(t.key(k), fmt.Sprintf("%v is not a finite number", n))
			return def
		}
		return n
	}
	t.wrongType(k, v, "a number")
	return def
}

// dur reads a duration written as a string ("10s"); it must be at least
// min and never negative.
func (t *table) dur(k string, def, min time.Duration) time.Duration {
	v, ok := t.get(k)
	if !ok {
		return def
	}
	s, ok := v.(string)
	if !ok {
		t.wrongType(k, v, `a duration string such as "10s"`)
		return def
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		t.p.errorf(t.key(k), fmt.Sprintf("%q is not a duration (use e.g. \"10s\")", s))
		return def
	}
	if d < min || d < 0 {
		t.p.errorf(t.key(k), fmt.Sprintf("%q is shorter than %v", s, min))
		return def
	}
	return d
}

func (t *table) sub(k string) (*table, bool) {
	v, ok := t.get(k)
	if !ok {
		return nil, false
	}
	m, ok := v.(map[string]any)
	if !ok {
		t.wrongType(k, v, "a table")
		return nil, false
	}
	return t.p.table(t.key(k), m), true
}

func (t *table) list(k string) []map[string]any {
	v, ok := t.get(k)
	if !ok {
		return nil
	}
	switch l := v.(type) {
	case []map[string]any:
		return l
	case []any:
		var out []map[string]any
		for i, e := range l {
			m, ok := e.(map[string]any)
			if !ok {
				t.p.errorf(fmt.Sprintf("%s[%d]", t.key(k), i), "must be a table")
				continue
			}
			out = append(out, m)
		}
		return out
	}
	t.wrongType(k, v, "an array of tables ([[group]])")
	return nil
}

// done reports every key of the table that was not read.
func (t *table) done() {
	keys := make([]string, 0, len(t.m))
	for k := range t.m {
		if !t.used[k] {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		t.p.errorf(t.key(k), "unknown key")
	}
}

func show(v any) string {
	if s, ok := v.(string); ok {
		return strconv.Quote(s)
	}
	return fmt.Sprint(v)
}

func typeName(v any) string {
	switch v.(type) {
	case string:
		return "a string"
	case int64:
		return "an integer"
	case float64:
		return "a float"
	case bool:
		return "a boolean"
	case map[string]any:
		return "a table"
	case []any, []map[string]any:
		return "an array"
	}
	return fmt.Sprintf("%T", v)
}

// expand replaces {n} with the sensor's number, zero-padded to width, and
// {id} with its ClientId.
func expand(pattern string, n, width int, clientID string) string {
	if !strings.Contains(pattern, "{") {
		return pattern
	}
	num := strconv.Itoa(n)
	if len(num) < width {
		num = strings.Repeat("0", width-len(num)) + num
	}
	s := strings.ReplaceAll(pattern, "{n}", num)
	return strings.ReplaceAll(s, "{id}", clientID)
}

// filterOf returns the MQTT subscription filter matching pattern for every
// sensor: each topic level holding a placeholder becomes "+".
func filterOf(pattern string) string {
	levels := strings.Split(pattern, "/")
	for i, l := range levels {
		if strings.Contains(l, "{n}") || strings.Contains(l, "{id}") {
			levels[i] = "+"
		}
	}
	return strings.Join(levels, "/")
}

// ScaleSensors sets the groups' counts so that they add up to n: the only
// group gets n; several groups are scaled in proportion to their counts
// (largest remainder), so a group's rate stays the group's total. The
// error, a join of *ScenarioError, names ClientIds the new counts make
// shared or too long.
func (sc *Scenario) ScaleSensors(n int) error {
	sc.scale(n)
	if errs := sc.clientIDErrors(fmt.Sprintf("after -sensors %d", n)); len(errs) > 0 {
		return errors.Join(errs...)
	}
	return nil
}

// scale sets the counts as ScaleSensors says.
func (sc *Scenario) scale(n int) {
	total := 0
	for _, g := range sc.Groups {
		total += g.Count
	}
	if len(sc.Groups) == 1 || total == 0 {
		sc.Groups[0].Count = n
		for i := 1; i < len(sc.Groups); i++ {
			sc.Groups[i].Count = 0
		}
		return
	}
	type rem struct {
		i int
		r float64
	}
	var rems []rem
	sum := 0
	for i := range sc.Groups {
		exact := float64(sc.Groups[i].Count) * float64(n) / float64(total)
		sc.Groups[i].Count = int(exact)
		sum += sc.Groups[i].Count
		rems = append(rems, rem{i, exact - math.Floor(exact)})
	}
	slices.SortStableFunc(rems, func(a, b rem) int {
		switch {
		case a.r > b.r:
			return -1
		case a.r < b.r:
			return 1
		}
		return 0
	})
	for k := 0; sum < n; k++ {
		sc.Groups[rems[k%len(rems)].i].Count++
		sum++
	}
}
