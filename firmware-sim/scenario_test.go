package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Every shipped scenario loads.
func TestShippedScenariosLoad(t *testing.T) {
	files, err := filepath.Glob("../testdata/scenarios/*.toml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "-gateway.toml") || strings.HasSuffix(f, ".psk.toml") {
			continue // a gateway config or a PSK file, not a scenario
		}
		sc, err := LoadScenario(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if len(sc.Groups) == 0 || sc.Name == "" {
			t.Errorf("%s: %+v", f, sc)
		}
	}
}

func TestParseScenarioValues(t *testing.T) {
	sc, err := ParseScenario("x.toml", []byte(`
gateway = "127.0.0.1:2000"
duration = "5s"
verify = true
[[group]]
name = "t"
count = 3
client_id = "t-{n}"
topic = "ab"
qos = -1
topic_type = "short"
interval = "100ms"
[[group]]
count = 2
topic = "a/{n}"
qos = 2
rate = 10.5
sleep = "10s"
awake = "1s"
command_topic = "cmd/{id}"
command_interval = "2s"
`))
	if err != nil {
		t.Fatal(err)
	}
	if sc.Gateway != "127.0.0.1:2000" || sc.Duration != 5*time.Second || !sc.Verify || sc.Broker != DefaultBroker {
		t.Errorf("top level: %+v", sc)
	}
	g := sc.Groups[0]
	if g.QoS != mqttsn.QoSMinus1 || g.TopicType != TopicShort || g.Count != 3 || !g.Publishes || g.Interval != 100*time.Millisecond || g.Window != 1 {
		t.Errorf("group 0: %+v", g)
	}
	g = sc.Groups[1]
	if g.Name != "group1" || g.ClientID != "group1-{n}" || g.QoS != mqttsn.QoS2 || g.Rate != 10.5 || g.CommandQoS != mqttsn.QoS1 || g.RetryInterval != DefaultRetryInterval {
		t.Errorf("group 1: %+v", g)
	}
	if got, want := g.PublishInterval(), 190476190*time.Nanosecond; got != want {
		t.Errorf("PublishInterval = %v", got)
	}
	if got := expand("s/{id}/{n}", 7, 4, "t-0007"); got != "s/t-0007/0007" {
		t.Errorf("expand = %q", got)
	}
	if got := filterOf("s/{id}/temp/x{n}"); got != "s/+/temp/+" {
		t.Errorf("filterOf = %q", got)
	}
}

// A bad file gives one error per problem, naming the file, the key and the
// reason.
func TestParseScenarioErrors(t *testing.T) {
	cases := []struct {
		name, file string
		want       []string
	}{
		{"syntax", "[[group]\n", []string{"bad.toml: "}},
		{"no groups", `duration = "1s"`, []string{"bad.toml: group: no [[group]] table"}},
		{"unknown keys", "colour = 1\n[[group]]\ncount = 1\nsped = 2\n", []string{
			"bad.toml: colour: unknown key", "bad.toml: group[0].sped: unknown key"}},
		{"types and ranges", "duration = 5\n[[group]]\ncount = -1\nqos = 3\nkeep_alive = \"ten\"\n", []string{
			`bad.toml: duration: 5 is an integer, want a duration string such as "10s"`,
			"bad.toml: group[0].count: -1 is out of range 0..1000000",
			"bad.toml: group[0].qos: 3 is out of range -1..2",
			`bad.toml: group[0].keep_alive: "ten" is not a duration (use e.g. "10s")`}},
		{"missing count", "[[group]]\nname = \"a\"\n", []string{"bad.toml: group[0].count: missing"}},
		{"qos -1 registered", "[[group]]\ncount = 1\nqos = -1\ntopic = \"a/b\"\ninterval = \"1s\"\n", []string{
			"bad.toml: group[0].qos: -1 needs topic_type predefined or short"}},
		{"short name", "[[group]]\ncount = 1\ntopic = \"abc\"\ntopic_type = \"short\"\ninterval = \"1s\"\n", []string{
			`bad.toml: group[0].topic: "abc": a short topic name is exactly 2 characters`}},
		{"shared id", "[[group]]\ncount = 2\nclient_id = \"x\"\n", []string{
			`bad.toml: group[0].client_id: "x" has no {n}`}},
		{"publishes nowhere", "[[group]]\ncount = 2\ninterval = \"1s\"\n", []string{
			"bad.toml: group[0].topic: missing"}},
		{"qos 0 back to back", "[[group]]\ncount = 2\ntopic = \"a\"\ninterval = \"0s\"\n", []string{
			"bad.toml: group[0].interval: 0s (back to back) needs qos 1 or 2"}},
		{"interval and rate", "[[group]]\ncount = 2\ntopic = \"a\"\ninterval = \"1s\"\nrate = 5\n", []string{
			"bad.toml: group[0].rate: give interval or rate, not both"}},
		{"duplicate names", "[[group]]\nname = \"a\"\ncount = 1\n[[group]]\nname = \"a\"\ncount = 1\n", []string{
			`bad.toml: group[1].name: "a" is already used by group[0]`}},
		{"transport", "[[group]]\ncount = 1\ntransport = \"tcp\"\n", []string{
			`bad.toml: group[0].transport: "tcp" is not one of udp, dtls`}},
		{"empty client id", "[[group]]\ncount = 1\nclient_id = \"\"\n", []string{
			"bad.toml: group[0].client_id: empty"}},
		{"client id with {id}", "[[group]]\ncount = 1\nclient_id = \"a-{id}\"\n", []string{
			`bad.toml: group[0].client_id: "a-{id}": {id} is the ClientId itself`}},
		{"client id with a quote", "[[group]]\ncount = 1\nclient_id = 'a\"{n}'\n", []string{
			`bad.toml: group[0].client_id: "a\"{n}": no quotes`}},
		{"client id too long", "[[group]]\ncount = 1\nclient_id = \"" + strings.Repeat("x", MaxClientIDLength-3) + "{n}\"\n", []string{
			`bad.toml: group[0].client_id: ClientId "xxxxxxxxxxxxxxxxxxxx"… is 65528 octets, longer than the 65527 a CONNECT can carry`}},
		{"client ids shared across groups", "[[group]]\nname = \"a\"\ncount = 3\nclient_id = \"s-{n}\"\n[[group]]\nname = \"b\"\ncount = 2\nclient_id = \"s-{n}\"\nfirst = 3\n", []string{
			`bad.toml: group[1].client_id: ClientId "s-0003" (sensor 1 of the group) is also one of group[0]'s`}},
		{"predefined topic per sensor", "[[group]]\ncount = 2\ntopic = \"t/{n}\"\ntopic_type = \"predefined\"\ntopic_id = 5\ninterval = \"1s\"\n" +
			"command_topic = \"c/{id}\"\ncommand_topic_type = \"predefined\"\ncommand_topic_id = 6\n", []string{
			`bad.toml: group[0].topic: "t/{n}": one predefined id (topic_id) serves the whole group, so the topic cannot hold {n} or {id}`,
			`bad.toml: group[0].command_topic: "c/{id}": one predefined id (command_topic_id) serves the whole group`}},
		{"sleep and jitter", "[[group]]\ncount = 1\nsleep = \"65000s\"\njitter = \"600s\"\n", []string{
			"bad.toml: group[0].sleep: sleep + jitter (18h13m20s) is longer than the 65535 s a DISCONNECT Duration can carry"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseScenario("bad.toml", []byte(c.file))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			for _, w := range c.want {
				if !strings.Contains(msg, w) {
					t.Errorf("error %q\nwant it to contain %q", msg, w)
				}
			}
			var se *ScenarioError
			if !errors.As(err, &se) || se.File != "bad.toml" {
				t.Errorf("error %v is not a *ScenarioError for bad.toml", err)
			}
			if n := strings.Count(msg, "\n") + 1; n != len(c.want) && c.name != "syntax" {
				t.Errorf("%d problems reported, want %d:\n%s", n, len(c.want), msg)
			}
		})
	}
}

func TestLoadScenarioMissingFile(t *testing.T) {
	if _, err := LoadScenario("no/such.toml"); err == nil || !strings.Contains(err.Error(), "no/such.toml") {
		t.Errorf("err = %v", err)
	}
}

func TestScaleSensors(t *testing.T) {
	g := func(name string, n int) Group {
		return Group{Name: name, Count: n, ClientID: name + "-{n}", First: 1, IDWidth: 4}
	}
	sc := &Scenario{Groups: []Group{g("a", 14), g("b", 4), g("c", 1), g("d", 1)}}
	if err := sc.ScaleSensors(100); err != nil {
		t.Fatal(err)
	}
	got := []int{sc.Groups[0].Count, sc.Groups[1].Count, sc.Groups[2].Count, sc.Groups[3].Count}
	if got[0]+got[1]+got[2]+got[3] != 100 || got[0] != 70 || got[1] != 20 || got[2] != 5 || got[3] != 5 {
		t.Errorf("scaled to %v", got)
	}
	one := &Scenario{Groups: []Group{g("a", 3)}}
	if err := one.ScaleSensors(7); err != nil || one.Groups[0].Count != 7 {
		t.Errorf("one group scaled to %d (%v)", one.Groups[0].Count, err)
	}
}

// -sensors that makes sensors share a ClientId (a group without {n}, or
// groups whose ranges now meet) is a scenario error naming file and key,
// and exit status 2.
func TestScaleSensorsSharedClientIDs(t *testing.T) {
	sc, err := ParseScenario("x.toml", []byte("[[group]]\nname = \"a\"\ncount = 1\nclient_id = \"solo\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = sc.ScaleSensors(3)
	if err == nil || err.Error() != `x.toml: group[0].client_id: "solo" has no {n}: 3 sensors would share one ClientId (after -sensors 3)` {
		t.Errorf("err = %v", err)
	}
	sc, err = ParseScenario("y.toml", []byte("[[group]]\nname = \"a\"\ncount = 2\nclient_id = \"s-{n}\"\n"+
		"[[group]]\nname = \"b\"\ncount = 2\nclient_id = \"s-{n}\"\nfirst = 11\n"))
	if err != nil {
		t.Fatal(err)
	}
	err = sc.ScaleSensors(40) // 20 each: s-0001..s-0020 and s-0011..s-0030
	var se *ScenarioError
	if !errors.As(err, &se) || se.File != "y.toml" || se.Key != "group[1].client_id" || !strings.Contains(se.Reason, `"s-0011"`) {
		t.Errorf("err = %v", err)
	}

	path := filepath.Join(t.TempDir(), "solo.toml")
	if err := os.WriteFile(path, []byte("[[group]]\ncount = 1\nclient_id = \"solo\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if code := run([]string{"-scenario", path, "-sensors", "2", "-quiet"}, &stdout, &stderr); code != 2 ||
		!strings.Contains(stderr.String(), "solo.toml: group[0].client_id: ") {
		t.Errorf("exit status %d, stderr %q; want 2 and the file and key", code, stderr.String())
	}
}
