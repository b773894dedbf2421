package config

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

const examplePSK = "../../testdata/dtls/sensors.psk.toml"

// mustHex returns the octets of hex string s.
func mustHex(t *testing.T, s string) []byte {
	t.Helper()
	b := make([]byte, len(s)/2)
	if _, err := fmt.Sscanf(s, "%x", &b); err != nil {
		t.Fatalf("bad test hex %q: %v", s, err)
	}
	return b
}

// writeFile writes data to name in dir and returns its path.
func writeFile(t *testing.T, dir, name, data string) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

const key16 = "7f3c9a0e5b1d2f4861a0c3e5f7092b4d"

// psk returns one [[psk]] table with the given lines.
func psk(lines ...string) string {
	return "[[psk]]\n" + strings.Join(lines, "\n") + "\n"
}

func TestExamplePSKFile(t *testing.T) {
	got, err := LoadPSKFile(examplePSK)
	if err != nil {
		t.Fatal(err)
	}
	want := PSKTable{
		"temp-0001": {Key: mustHex(t, key16), ClientID: "temp-0001"},
		"hum-0002": {
			Key:      mustHex(t, "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"),
			ClientID: "greenhouse/humidity-2",
		},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got  %v\nwant %v", got, want)
	}
}

func TestParsePSKValid(t *testing.T) {
	tests := []struct {
		name string
		file string
		want PSKTable
	}{
		{
			"client id defaults to the identity",
			psk(`identity = "temp-0001"`, `key = "`+key16+`"`),
			PSKTable{"temp-0001": {Key: mustHex(t, key16), ClientID: "temp-0001"}},
		},
		{
			"client id given, upper-case hex, shortest key",
			psk(`identity = "a"`, `key = "DEADBEEF"`, `client_id = "sensors/ä"`),
			PSKTable{"a": {Key: []byte{0xde, 0xad, 0xbe, 0xef}, ClientID: "sensors/ä"}},
		},
		{
			"longest key and identity",
			psk(`identity = "`+strings.Repeat("i", 128)+`"`, `key = "`+strings.Repeat("ab", 64)+`"`),
			PSKTable{strings.Repeat("i", 128): {Key: bytes.Repeat([]byte{0xab}, 64), ClientID: strings.Repeat("i", 128)}},
		},
		{
			"two identities, same client id (key rotation)",
			psk(`identity = "s1-old"`, `key = "01020304"`, `client_id = "s1"`) +
				psk(`identity = "s1-new"`, `key = "05060708"`, `client_id = "s1"`),
			PSKTable{
				"s1-old": {Key: []byte{1, 2, 3, 4}, ClientID: "s1"},
				"s1-new": {Key: []byte{5, 6, 7, 8}, ClientID: "s1"},
			},
		},
		{
			"identities differ in case only",
			psk(`identity = "s"`, `key = "01020304"`) + psk(`identity = "S"`, `key = "01020304"`),
			PSKTable{"s": {Key: []byte{1, 2, 3, 4}, ClientID: "s"}, "S": {Key: []byte{1, 2, 3, 4}, ClientID: "S"}},
		},
		{
			"inline array",
			`psk = [{identity = "a", key = "01020304"}]`,
			PSKTable{"a": {Key: []byte{1, 2, 3, 4}, ClientID: "a"}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePSK("test.psk.toml", []byte(tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got  %v\nwant %v", got, tt.want)
			}
		})
	}
}

func TestParsePSKErrors(t *testing.T) {
	ok := psk(`identity = "ok"`, `key = "`+key16+`"`)
	tests := []struct {
		name string
		file string
		want []problem
	}{
		// the file
		{"empty file", "", []problem{{"psk", "missing; add one [[psk]] table per sensor"}}},
		{"syntax", "[[psk]]\nidentity = \n", nil}, // checked below: a line error
		{"single table", "[psk]\nidentity = \"a\"\nkey = \"01020304\"", []problem{{"psk", "must be an array of tables ([[psk]]), not a table"}}},
		{"string", `psk = "a"`, []problem{{"psk", `must be an array of tables ([[psk]]), not the string "a"`}}},
		{"empty array", `psk = []`, []problem{{"psk", "must list at least one sensor"}}},
		{"element not a table", `psk = [{identity = "a", key = "01020304"}, 5]`, []problem{{"psk[1]", "must be a table such as {identity ="}}},
		{"unknown top-level key", ok + "[sensors]\nx = 1\n", []problem{{"sensors", "unknown key"}}},
		{"unknown top-level keys once each", "a = 1\n" + ok + "[[b]]\n[[b]]\n", []problem{{"a", "unknown key"}, {"b", "unknown key"}}},
		{"upper-case top-level key", psk(`identity = "a"`, `key = "01020304"`) + "[[PSK]]\n", []problem{{"PSK", "unknown key (keys are lower case)"}}},

		// keys of an entry
		{"unknown key", ok + psk(`identity = "a"`, `key = "01020304"`, `qos = 1`), []problem{{"psk[1].qos", "unknown key"}}},
		{
			"unknown keys sorted",
			psk(`identity = "a"`, `key = "01020304"`, `z = 1`, `Key = "x"`, `clientid = "c"`),
			[]problem{{"psk[0].Key", "unknown key (keys are lower case)"}, {"psk[0].clientid", "unknown key"}, {"psk[0].z", "unknown key"}},
		},

		// identity
		{"identity missing", psk(`key = "01020304"`), []problem{{"psk[0].identity", "missing; every [[psk]] needs an identity and a key"}}},
		{"identity empty", psk(`identity = ""`, `key = "01020304"`), []problem{{"psk[0].identity", "must not be empty"}}},
		{"identity integer", psk(`identity = 1`, `key = "01020304"`), []problem{{"psk[0].identity", "must be a string, not the integer 1"}}},
		{
			"identity too long",
			psk(`identity = "`+strings.Repeat("i", 129)+`"`, `key = "01020304"`),
			[]problem{{"psk[0].identity", "is 129 bytes long; the limit is 128"}},
		},
		{
			"identity too long in octets",
			psk(`identity = "`+strings.Repeat("é", 65)+`"`, `key = "01020304"`),
			[]problem{{"psk[0].identity", "is 130 bytes long; the limit is 128"}},
		},
		{"identity NUL", psk(`identity = "a\u0000b"`, `key = "01020304"`), []problem{{"psk[0].identity", `"a\x00b" contains a NUL character`}}},
		{
			"identity duplicate",
			psk(`identity = "temp-0001"`, `key = "01020304"`) + ok + psk(`identity = "x"`, `key = "01020304"`) +
				psk(`identity = "temp-0001"`, `key = "05060708"`),
			[]problem{{"psk[3].identity", `"temp-0001" is already used by psk[0]`}},
		},

		// key
		{"key missing", psk(`identity = "a"`), []problem{{"psk[0].key", "missing; every [[psk]] needs an identity and a key"}}},
		{"key not hex", psk(`identity = "a"`, `key = "zz"`), []problem{{"psk[0].key", `is not hexadecimal: 'z' at position 1 (the key is not shown)`}}},
		{"key not hex later", psk(`identity = "a"`, `key = "0102g304"`), []problem{{"psk[0].key", `is not hexadecimal: 'g' at position 5`}}},
		{"key with colons", psk(`identity = "a"`, `key = "01:02:03:04"`), []problem{{"psk[0].key", `is not hexadecimal: ':' at position 3`}}},
		{"key non-ASCII", psk(`identity = "a"`, `key = "0102é304"`), []problem{{"psk[0].key", `is not hexadecimal: 'é' at position 5`}}},
		{"key 0x", psk(`identity = "a"`, `key = "0x01020304"`), []problem{{"psk[0].key", `starts with 0x; write the key as hex digits only`}}},
		{"key odd", psk(`identity = "a"`, `key = "0102030"`), []problem{{"psk[0].key", "has an odd number of hex digits (7)"}}},
		{"key empty", psk(`identity = "a"`, `key = ""`), []problem{{"psk[0].key", "must not be empty"}}},
		{"key too short", psk(`identity = "a"`, `key = "010203"`), []problem{{"psk[0].key", "is 3 octets long; use 4..64 (16 or 32 recommended)"}}},
		{"key too long", psk(`identity = "a"`, `key = "`+strings.Repeat("00", 65)+`"`), []problem{{"psk[0].key", "is 65 octets long; use 4..64"}}},
		{"key integer", psk(`identity = "a"`, `key = 1234567890`), []problem{{"psk[0].key", "must be a string of hex digits, not an integer"}}},
		{"key array", psk(`identity = "a"`, `key = [1, 2]`), []problem{{"psk[0].key", "must be a string of hex digits, not an array"}}},

		// client_id
		{"client id empty", psk(`identity = "a"`, `key = "01020304"`, `client_id = ""`), []problem{{"psk[0].client_id", "must not be empty; leave client_id out to use the identity"}}},
		{"client id integer", psk(`identity = "a"`, `key = "01020304"`, `client_id = 7`), []problem{{"psk[0].client_id", "must be a string, not the integer 7"}}},
		{"client id NUL", psk(`identity = "a"`, `key = "01020304"`, `client_id = "a\u0000"`), []problem{{"psk[0].client_id", `"a\x00" contains a NUL character`}}},
		{
			"client id too long",
			psk(`identity = "a"`, `key = "01020304"`, `client_id = "`+strings.Repeat("c", 65536)+`"`),
			[]problem{{"psk[0].client_id", "is 65536 bytes long; the limit is 65535"}},
		},

		// all together
		{
			"several problems, by entry",
			psk(`identity = "a"`, `key = "zz"`, `extra = 1`) + psk(`identity = ""`, `key = "01"`, `client_id = ""`) +
				psk(`identity = "a"`, `key = "01020304"`),
			[]problem{
				{"psk[0].extra", "unknown key"},
				{"psk[0].key", "is not hexadecimal"},
				{"psk[1].identity", "must not be empty"},
				{"psk[1].key", "is 1 octets long"},
				{"psk[1].client_id", "must not be empty"},
				{"psk[2].identity", `"a" is already used by psk[0]`},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePSK("sensors.psk.toml", []byte(tt.file))
			if err == nil {
				t.Fatalf("ParsePSK succeeded with %v", got)
			}
			if got != nil {
				t.Errorf("ParsePSK returned a table with an error: %v", got)
			}
			if strings.Contains(err.Error(), "deadbeef") {
				t.Errorf("error shows a key: %v", err)
			}
			if tt.want == nil {
				if msg := err.Error(); !strings.HasPrefix(msg, "sensors.psk.toml: line 2: ") || strings.Contains(msg, "\n") {
					t.Errorf("got %q, want one line starting %q", msg, "sensors.psk.toml: line 2: ")
				}
				return
			}
			fps := make([]fileProblem, len(tt.want))
			for i, p := range tt.want {
				fps[i] = fileProblem{"sensors.psk.toml", p.key, p.reason}
			}
			checkFileProblems(t, err, fps)
		})
	}
}

// TestPSKKeyNotShown checks that a key is never in an error message, even
// one that is almost right, nor in a printed entry.
func TestPSKKeyNotShown(t *testing.T) {
	const secret = "0123456789abcdef0123456789abcdeX"
	_, err := ParsePSK("s.toml", []byte(psk(`identity = "a"`, `key = "`+secret+`"`)))
	if err == nil || strings.Contains(err.Error(), secret[:8]) {
		t.Errorf("error %v shows the key", err)
	}
	e := PSKEntry{Key: []byte{0xde, 0xad, 0xbe, 0xef}, ClientID: "c"}
	cfg := Default()
	cfg.DTLS.PSKs = PSKTable{"a": e}
	for _, format := range []string{"%v", "%+v", "%#v", "%s"} {
		s := fmt.Sprintf(format, cfg)
		if strings.Contains(strings.ToLower(s), "de ad") || strings.Contains(s, "222 173") || strings.Contains(s, "0xde") {
			t.Errorf("%s shows the key: %s", format, s)
		}
		if !strings.Contains(s, "4 octets") {
			t.Errorf("%s lacks the key length: %s", format, s)
		}
	}
}

func TestLoadPSKFile(t *testing.T) {
	dir := t.TempDir()
	_, err := LoadPSKFile(filepath.Join(dir, "missing.toml"))
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("LoadPSKFile of a missing file: %v, want fs.ErrNotExist and the path", err)
	}
	path := writeFile(t, dir, "bad.psk.toml", psk(`identity = "a"`, `key = "zz"`))
	_, err = LoadPSKFile(path)
	if want := path + ": psk[0].key: is not hexadecimal"; err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("LoadPSKFile: %v, want %q...", err, want)
	}
}

func TestParseDTLSValid(t *testing.T) {
	dir := t.TempDir()
	pskFile := writeFile(t, dir, "sensors.psk.toml", psk(`identity = "s1"`, `key = "`+key16+`"`))
	cert := writeFile(t, dir, "gw.crt", "-----BEGIN CERTIFICATE-----\n")
	key := writeFile(t, dir, "gw.key", "-----BEGIN PRIVATE KEY-----\n")
	ca := writeFile(t, dir, "ca.pem", "-----BEGIN CERTIFICATE-----\n")
	table := PSKTable{"s1": {Key: mustHex(t, key16), ClientID: "s1"}}

	tests := []struct {
		name string
		toml string
		want func(*Config)
	}{
		{"off, empty listen", "[dtls]\nlisten = []", func(c *Config) {}},
		{
			"off: files not looked at, pairs not checked",
			`[dtls]
psk_file = "/nonexistent/psk.toml"
cert_file = "/nonexistent/gw.crt"
client_ca_file = "/nonexistent/ca.pem"
require_client_cert = true`,
			func(c *Config) {
				c.DTLS.PSKFile, c.DTLS.CertFile = "/nonexistent/psk.toml", "/nonexistent/gw.crt"
				c.DTLS.ClientCAFile, c.DTLS.RequireClientCert = "/nonexistent/ca.pem", true
			},
		},
		{
			"PSK only",
			"[dtls]\nlisten = [\"127.0.0.1:5684\"]\npsk_file = " + quote(pskFile),
			func(c *Config) {
				c.DTLS.Listen, c.DTLS.PSKFile, c.DTLS.PSKs = []string{"127.0.0.1:5684"}, pskFile, table
			},
		},
		{
			"certificates only, all keys",
			`[dtls]
listen = ["[::1]:5684", "127.0.0.1:5684", ":5685"]
cert_file = ` + quote(cert) + `
key_file = ` + quote(key) + `
client_ca_file = ` + quote(ca) + `
require_client_cert = true
bind_client_id = false
connection_id = false
handshake_timeout = "2m"
idle_timeout = "8760h"
max_handshakes = 100_000`,
			func(c *Config) {
				c.DTLS = DTLSConfig{
					Listen:   []string{"[::1]:5684", "127.0.0.1:5684", ":5685"},
					CertFile: cert, KeyFile: key, ClientCAFile: ca, RequireClientCert: true,
					HandshakeTimeout: 2 * time.Minute, IdleTimeout: 8760 * time.Hour, MaxHandshakes: 100_000,
				}
			},
		},
		{
			"PSK and certificates, verified when given",
			"[dtls]\nlisten = [\":5684\"]\npsk_file = " + quote(pskFile) + "\ncert_file = " + quote(cert) + "\nkey_file = " + quote(key) + "\nclient_ca_file = " + quote(ca),
			func(c *Config) {
				c.DTLS.Listen, c.DTLS.PSKFile, c.DTLS.PSKs = []string{":5684"}, pskFile, table
				c.DTLS.CertFile, c.DTLS.KeyFile, c.DTLS.ClientCAFile = cert, key, ca
			},
		},
		{
			"idle timeout not checked against sleep with DTLS off",
			"[dtls]\nidle_timeout = \"1m\"\n[sleep]\ntolerance = 2",
			func(c *Config) { c.DTLS.IdleTimeout, c.Sleep.Tolerance = time.Minute, 2 },
		},
		{
			"lower bounds",
			"[dtls]\nhandshake_timeout = \"1s\"\nmax_handshakes = 1",
			func(c *Config) { c.DTLS.HandshakeTimeout, c.DTLS.MaxHandshakes = time.Second, 1 },
		},
		{
			"same port as udp, other host",
			"[udp]\nlisten = [\"127.0.0.1:1884\"]\n[dtls]\nlisten = [\"10.0.0.1:1884\", \"127.0.0.2:1884\"]\npsk_file = " + quote(pskFile),
			func(c *Config) {
				c.DTLS.Listen, c.DTLS.PSKFile, c.DTLS.PSKs = []string{"10.0.0.1:1884", "127.0.0.2:1884"}, pskFile, table
			},
		},
		{
			"port 0 beside udp port 0",
			"[udp]\nlisten = [\":0\"]\n[dtls]\nlisten = [\"127.0.0.1:0\", \":0\"]\npsk_file = " + quote(pskFile),
			func(c *Config) {
				c.UDP.Listen = []string{":0"}
				c.DTLS.Listen, c.DTLS.PSKFile, c.DTLS.PSKs = []string{"127.0.0.1:0", ":0"}, pskFile, table
			},
		},
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
				t.Errorf("got  %+v\nwant %+v", got.DTLS, want.DTLS)
			}
			if got.DTLS.Enabled() != (len(want.DTLS.Listen) > 0) {
				t.Errorf("Enabled() = %t", got.DTLS.Enabled())
			}
		})
	}

	t.Run("relative to the working directory", func(t *testing.T) {
		t.Chdir(dir)
		doc := "[dtls]\nlisten = [\":5684\"]\npsk_file = \"sensors.psk.toml\"\ncert_file = \"gw.crt\"\nkey_file = \"gw.key\"\nclient_ca_file = \"ca.pem\""
		cfg, err := Parse("test.toml", []byte(doc))
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cfg.DTLS.PSKs, table) {
			t.Errorf("PSKs = %v, want %v", cfg.DTLS.PSKs, table)
		}
	})
}

func TestParseDTLSErrors(t *testing.T) {
	tests := []struct {
		name string
		toml string
		want []problem
	}{
		{"not a table", "dtls = true", []problem{{"dtls", "must be a table ([dtls]), not the boolean true"}}},
		{"unknown key", "[dtls]\npsk = \"x\"", []problem{{"dtls.psk", "unknown key"}}},
		{"upper-case key", "[dtls]\nPSK_File = \"x\"", []problem{{"dtls.PSK_File", "unknown key (keys are lower case)"}}},

		// listen
		{"listen string", "[dtls]\nlisten = \":5684\"", []problem{{"dtls.listen", `must be an array of "host:port" strings, not the string ":5684"`}}},
		{"listen element type", "[dtls]\nlisten = [5684]", []problem{{"dtls.listen[0]", `must be a "host:port" string, not the integer 5684`}, {"dtls.psk_file", "no credentials"}}},
		{"listen no port", "[dtls]\nlisten = [\"127.0.0.1\"]", []problem{{"dtls.listen[0]", `"127.0.0.1" is not a host:port address: missing port in address`}, {"dtls.psk_file", "no credentials"}}},
		{"listen IPv6 without brackets", "[dtls]\nlisten = [\"::1:5684\"]", []problem{{"dtls.listen[0]", "too many colons"}, {"dtls.psk_file", "no credentials"}}},
		{"listen port too big", "[dtls]\nlisten = [\":65536\"]", []problem{{"dtls.listen[0]", `port "65536" is not a number in 0..65535`}, {"dtls.psk_file", "no credentials"}}},
		{
			"listen duplicate",
			"[dtls]\nlisten = [\":5684\", \"[::1]:5685\", \":5684\"]",
			[]problem{{"dtls.listen[2]", `":5684" is already listed as dtls.listen[0]`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"listen duplicate written differently",
			"[dtls]\nlisten = [\"[::1]:5684\", \"[0:0::1]:05684\"]",
			[]problem{{"dtls.listen[1]", `"[0:0::1]:05684" is already listed as dtls.listen[0] (written "[::1]:5684")`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"listen wildcard and a host on one port",
			"[dtls]\nlisten = [\"0.0.0.0:5684\", \"127.0.0.1:5684\"]",
			[]problem{{"dtls.listen[1]", `"127.0.0.1:5684" and dtls.listen[0] "0.0.0.0:5684" share port 5684, and a wildcard host takes it on every interface`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"listen also in udp.listen (the default)",
			"[dtls]\nlisten = [\"127.0.0.1:1884\"]",
			[]problem{{"dtls.listen[0]", `"127.0.0.1:1884" is already listed as udp.listen[0]; DTLS needs a port of its own`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"listen also in udp.listen, IPv4-mapped",
			"[udp]\nlisten = [\"[::1]:1884\", \"10.0.0.1:1884\"]\n[dtls]\nlisten = [\"[::ffff:10.0.0.1]:1884\"]",
			[]problem{{"dtls.listen[0]", `"[::ffff:10.0.0.1]:1884" is already listed as udp.listen[1] (written "10.0.0.1:1884"); DTLS needs a port of its own`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"listen on a port udp takes on every interface",
			"[udp]\nlisten = [\":1884\"]\n[dtls]\nlisten = [\"127.0.0.1:5684\", \"127.0.0.1:1884\"]",
			[]problem{{"dtls.listen[1]", `"127.0.0.1:1884" and udp.listen[0] ":1884" share port 1884, and a wildcard host takes it on every interface; DTLS needs a port of its own`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"wildcard listen on a udp port",
			"[dtls]\nlisten = [\"[::]:1884\"]",
			[]problem{{"dtls.listen[0]", `"[::]:1884" and udp.listen[0] "127.0.0.1:1884" share port 1884`}, {"dtls.psk_file", "no credentials"}},
		},
		{
			"host names compared as written",
			"[udp]\nlisten = [\"LocalHost:1884\"]\n[dtls]\nlisten = [\"localhost:1884\"]",
			[]problem{{"dtls.listen[0]", `"localhost:1884" is already listed as udp.listen[0] (written "LocalHost:1884")`}, {"dtls.psk_file", "no credentials"}},
		},

		// types and ranges, checked with DTLS off too
		{"psk file type", "[dtls]\npsk_file = 1", []problem{{"dtls.psk_file", "must be a string, not the integer 1"}}},
		{"cert file type", "[dtls]\ncert_file = true", []problem{{"dtls.cert_file", "must be a string, not the boolean true"}}},
		{"key file type", "[dtls]\nkey_file = []", []problem{{"dtls.key_file", "must be a string, not an array"}}},
		{"client ca file type", "[dtls]\nclient_ca_file = 1.5", []problem{{"dtls.client_ca_file", "must be a string, not the float 1.5"}}},
		{"require client cert type", "[dtls]\nrequire_client_cert = \"yes\"", []problem{{"dtls.require_client_cert", `must be a boolean (true or false), not the string "yes"`}}},
		{"bind client id type", "[dtls]\nbind_client_id = 1", []problem{{"dtls.bind_client_id", "must be a boolean (true or false), not the integer 1"}}},
		{"connection id type", "[dtls]\nconnection_id = \"true\"", []problem{{"dtls.connection_id", `must be a boolean (true or false), not the string "true"`}}},
		{"handshake timeout too short", "[dtls]\nhandshake_timeout = \"999ms\"", []problem{{"dtls.handshake_timeout", `"999ms" is out of range 1s..2m`}}},
		{"handshake timeout too long", "[dtls]\nhandshake_timeout = \"2m1s\"", []problem{{"dtls.handshake_timeout", `"2m1s" is out of range 1s..2m`}}},
		{"handshake timeout integer", "[dtls]\nhandshake_timeout = 10", []problem{{"dtls.handshake_timeout", `must be a duration string such as "10s", not the integer 10`}}},
		{"handshake timeout not a duration", "[dtls]\nhandshake_timeout = \"10\"", []problem{{"dtls.handshake_timeout", `"10" is not a duration`}}},
		{"idle timeout too short", "[dtls]\nidle_timeout = \"59s\"", []problem{{"dtls.idle_timeout", `"59s" is out of range 1m..8760h`}}},
		{"idle timeout too long", "[dtls]\nidle_timeout = \"8761h\"", []problem{{"dtls.idle_timeout", `"8761h" is out of range 1m..8760h`}}},
		{"max handshakes 0", "[dtls]\nmax_handshakes = 0", []problem{{"dtls.max_handshakes", "0 is out of range 1..100000"}}},
		{"max handshakes too many", "[dtls]\nmax_handshakes = 100001", []problem{{"dtls.max_handshakes", "100001 is out of range 1..100000"}}},
		{"max handshakes string", "[dtls]\nmax_handshakes = \"256\"", []problem{{"dtls.max_handshakes", `must be an integer, not the string "256"`}}},

		// credentials, with DTLS on
		{
			"listen without credentials",
			"[dtls]\nlisten = [\":5684\"]",
			[]problem{{"dtls.psk_file", "dtls.listen is set but DTLS has no credentials: set dtls.psk_file, or dtls.cert_file and dtls.key_file, or both"}},
		},
		{
			"idle timeout shorter than the longest keep-alive",
			"[dtls]\nlisten = [\":5684\"]\nidle_timeout = \"27h\"",
			[]problem{
				{"dtls.psk_file", "no credentials"},
				{"dtls.idle_timeout", `"27h" is shorter than the longest silence a session allows (65535 s × 1.5 = 27h18m23s): a silent sensor's association would close under its session (the larger of the keep-alive's 1.5 and sleep.tolerance); make it at least "28h"`},
			},
		},
		{
			"sleep tolerance beyond the idle timeout",
			"[dtls]\nlisten = [\":5684\"]\n[sleep]\ntolerance = 2",
			[]problem{
				{"dtls.psk_file", "no credentials"},
				{"dtls.idle_timeout", `"28h" is shorter than the longest silence a session allows (65535 s × 2 = 36h24m30s): a silent sensor's association would close under its session (the larger of the keep-alive's 1.5 and sleep.tolerance); make it at least "37h"`},
			},
		},
		{
			"missing PSK file",
			"[dtls]\nlisten = [\":5684\"]\npsk_file = \"testdata/no-such.psk.toml\"",
			[]problem{{"dtls.psk_file", `cannot use "testdata/no-such.psk.toml": no such file or directory`}},
		},
		{
			"missing PEM files, all named",
			"[dtls]\nlisten = [\":5684\"]\ncert_file = \"no/gw.crt\"\nkey_file = \"no/gw.key\"\nclient_ca_file = \"no/ca.pem\"",
			[]problem{
				{"dtls.cert_file", `cannot use "no/gw.crt": no such file or directory`},
				{"dtls.key_file", `cannot use "no/gw.key": no such file or directory`},
				{"dtls.client_ca_file", `cannot use "no/ca.pem": no such file or directory`},
			},
		},
		{
			"several problems in order",
			"[dtls]\nlisten = [\":5684\", 1]\nmax_handshakes = 0\nbind_client_id = 1\nhandshake_timeout = \"0s\"",
			[]problem{
				{"dtls.listen[1]", "must be a \"host:port\" string"},
				{"dtls.bind_client_id", "must be a boolean"},
				{"dtls.psk_file", "no credentials"},
				{"dtls.handshake_timeout", `"0s" is out of range 1s..2m`},
				{"dtls.max_handshakes", "0 is out of range 1..100000"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("test.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v; want errors %v", cfg.DTLS, tt.want)
			}
			if !reflect.DeepEqual(cfg, Config{}) {
				t.Errorf("Parse returned a non-zero Config with an error: %+v", cfg)
			}
			checkProblems(t, err, tt.want)
		})
	}
}

// TestParseDTLSFiles checks the [dtls] rules that need files on disk.
func TestParseDTLSFiles(t *testing.T) {
	dir := t.TempDir()
	pskFile := writeFile(t, dir, "sensors.psk.toml", psk(`identity = "s1"`, `key = "`+key16+`"`))
	cert := writeFile(t, dir, "gw.crt", "")
	key := writeFile(t, dir, "gw.key", "")
	ca := writeFile(t, dir, "ca.pem", "")
	badPSK := writeFile(t, dir, "bad.psk.toml", psk(`identity = "s1"`, `key = "zz"`)+psk(`identity = "s1"`, `key = "01020304"`))
	on := "[dtls]\nlisten = [\":5684\"]\n"

	tests := []struct {
		name string
		toml string
		want []fileProblem
	}{
		{
			"cert without key",
			on + "cert_file = " + quote(cert),
			[]fileProblem{{"test.toml", "dtls.key_file", "must be set with dtls.cert_file"}},
		},
		{
			"key without cert, beside a PSK file",
			on + "psk_file = " + quote(pskFile) + "\nkey_file = " + quote(key),
			[]fileProblem{{"test.toml", "dtls.cert_file", "must be set with dtls.key_file"}},
		},
		{
			"require client cert without client ca file",
			on + "cert_file = " + quote(cert) + "\nkey_file = " + quote(key) + "\nrequire_client_cert = true",
			[]fileProblem{{"test.toml", "dtls.require_client_cert", "true needs dtls.client_ca_file, the CA certificates that sensors' certificates are verified with"}},
		},
		{
			"require client cert with PSK only",
			on + "psk_file = " + quote(pskFile) + "\nrequire_client_cert = true",
			[]fileProblem{{"test.toml", "dtls.require_client_cert", "true needs dtls.client_ca_file, the CA certificates that sensors' certificates are verified with, and dtls.cert_file and dtls.key_file"}},
		},
		{
			"client ca file with PSK only",
			on + "psk_file = " + quote(pskFile) + "\nclient_ca_file = " + quote(ca),
			[]fileProblem{{"test.toml", "dtls.client_ca_file", "only used with dtls.cert_file and dtls.key_file"}},
		},
		{
			"directory",
			on + "psk_file = " + quote(dir),
			[]fileProblem{{"test.toml", "dtls.psk_file", quote(dir) + " is a directory, not a PSK file"}},
		},
		{
			"cert is a directory",
			on + "cert_file = " + quote(dir) + "\nkey_file = " + quote(key),
			[]fileProblem{{"test.toml", "dtls.cert_file", quote(dir) + " is a directory, not a PEM file"}},
		},
		{
			"bad PSK file: its own name and keys",
			on + "psk_file = " + quote(badPSK) + "\nmax_handshakes = 0",
			[]fileProblem{
				{badPSK, "psk[0].key", "is not hexadecimal"},
				{badPSK, "psk[1].identity", `"s1" is already used by psk[0]`},
				{"test.toml", "dtls.max_handshakes", "0 is out of range"},
			},
		},
	}
	if os.Geteuid() != 0 { // root reads any file
		unreadable := writeFile(t, dir, "unreadable.pem", "")
		if err := os.Chmod(unreadable, 0); err != nil {
			t.Fatal(err)
		}
		tests = append(tests, struct {
			name string
			toml string
			want []fileProblem
		}{
			"unreadable",
			on + "psk_file = " + quote(pskFile) + "\ncert_file = " + quote(cert) + "\nkey_file = " + quote(unreadable),
			[]fileProblem{{"test.toml", "dtls.key_file", "cannot read " + quote(unreadable) + ": permission denied"}},
		})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := Parse("test.toml", []byte(tt.toml))
			if err == nil {
				t.Fatalf("Parse succeeded with %+v", cfg.DTLS)
			}
			checkFileProblems(t, err, tt.want)
		})
	}

	t.Run("bad PSK file relative to the working directory", func(t *testing.T) {
		t.Chdir(dir)
		_, err := Parse("gateway.toml", []byte(on+`psk_file = "bad.psk.toml"`))
		want := "bad.psk.toml: psk[0].key: is not hexadecimal"
		if err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("got %v, want %q...", err, want)
		}
	})

	t.Run("Load", func(t *testing.T) {
		path := writeFile(t, dir, "gw.toml", on)
		_, err := Load(path)
		if want := path + ": dtls.psk_file: dtls.listen is set but DTLS has no credentials"; err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Load: %v, want %q...", err, want)
		}
	})
}

// TestShippedPSKExample checks that the shipped gateway.toml with DTLS
// turned on and the example PSK file loads.
func TestShippedPSKExample(t *testing.T) {
	data, err := os.ReadFile(shipped)
	if err != nil {
		t.Fatal(err)
	}
	on := bytes.Replace(data, []byte("\nlisten = []\n"), []byte("\nlisten = [\"127.0.0.1:5684\"]\n"), 1)
	on = bytes.Replace(on, []byte("\npsk_file = \"\"\n"), []byte("\npsk_file = "+quote(examplePSK)+"\n"), 1)
	cfg, err := Parse("gateway.toml", on)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.DTLS.Enabled() || len(cfg.DTLS.PSKs) != 2 || cfg.DTLS.PSKs["hum-0002"].ClientID != "greenhouse/humidity-2" {
		t.Errorf("DTLS = %+v", cfg.DTLS)
	}
}

// FuzzParsePSK checks that ParsePSK never panics, and that it returns either
// a table of valid entries or one-line *Error values.
func FuzzParsePSK(f *testing.F) {
	if data, err := os.ReadFile(examplePSK); err == nil {
		f.Add(data)
	}
	f.Add([]byte(psk(`identity = "a"`, `key = "zz"`, `x = 1`) + psk(`identity = "a"`, `key = "0x1"`, `client_id = ""`)))
	f.Add([]byte("psk = [1, {identity = 2}]\n[other]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		table, err := ParsePSK("fuzz.toml", data)
		if err == nil {
			for id, e := range table {
				if id == "" || len(id) > maxPSKIdentity || len(e.Key) < minPSKKey || len(e.Key) > maxPSKKey || e.ClientID == "" {
					t.Fatalf("invalid entry %q: %v", id, e)
				}
			}
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
