package config

import (
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"unicode/utf8"

	"github.com/BurntSushi/toml"
)

// A PSK file lists the sensors that authenticate to DTLS with a pre-shared
// key (RFC 4279), one [[psk]] table each:
//
//	[[psk]]
//	identity = "temp-0001"       # the PSK identity the sensor presents
//	key = "7f3c9a0e5b1d2f48..."  # hex; 16 or 32 octets recommended
//	client_id = "temp-0001"      # optional; default: the identity
//
// It is a file of its own, apart from gateway.toml, so that it can be kept
// readable by the gateway alone and reloaded on SIGHUP.

// Limits of a PSK file's values, in octets.
const (
	maxPSKIdentity = 128 // RFC 4279 §5.3: at least 128 must be supported
	minPSKKey      = 4
	maxPSKKey      = 64 // RFC 4279 §5.3: at least 64 must be supported
	maxPSKClientID = 65535
)

// PSKEntry is one sensor of a PSK file.
type PSKEntry struct {
	// Key is the pre-shared key, 4..64 octets.
	Key []byte
	// ClientID is the MQTT-SN ClientId this identity may connect with when
	// dtls.bind_client_id is on: the entry's client_id, or its identity.
	ClientID string
}

// String describes e without its key, so that printing a Config (%v, %+v)
// does not reveal a secret.
func (e PSKEntry) String() string {
	return fmt.Sprintf("{Key:<%d octets> ClientID:%q}", len(e.Key), e.ClientID)
}

// GoString is String for %#v.
func (e PSKEntry) GoString() string {
	return fmt.Sprintf("config.PSKEntry{Key:<%d octets>, ClientID:%q}", len(e.Key), e.ClientID)
}

// PSKTable holds the entries of a PSK file by PSK identity.
type PSKTable map[string]PSKEntry

// LoadPSKFile reads the PSK file at path. Call it again to reload the file,
// e.g. on SIGHUP; on error keep the table in use.
//
// A file that cannot be read gives an error wrapping the os error (so
// errors.Is(err, fs.ErrNotExist) works). A file with problems gives the
// same errors as ParsePSK, naming path.
func LoadPSKFile(path string) (PSKTable, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read PSK file: %w", err)
	}
	return ParsePSK(path, data)
}

// ParsePSK decodes data as a PSK file and returns its entries by identity.
//
// name is the file name used in error messages. On failure the error is an
// errors.Join of *Error values, one per problem, each a single line such as
// `sensors.psk.toml: psk[3].identity: "temp-0001" is already used by psk[0]`,
// and the table is nil. A key is never shown in an error.
//
// Checks: the file has at least one [[psk]] table and no other key; each
// table has an identity (1..128 octets, no NUL, unique), a key (hex, 4..64
// octets once decoded) and maybe a client_id (1..65535 octets of UTF-8, no
// NUL), and no other key.
func ParsePSK(name string, data []byte) (PSKTable, error) {
	var doc map[string]any
	md, err := toml.Decode(string(data), &doc)
	if err != nil {
		var pe toml.ParseError
		if errors.As(err, &pe) {
			return nil, errors.Join(&Error{File: name, Line: pe.Position.Line, Reason: oneLine(pe.Message)})
		}
		return nil, errors.Join(&Error{File: name, Reason: oneLine(err.Error())})
	}
	p := &pskParser{file: name}

	// Top-level keys other than psk, in file order, each once.
	reported := make(map[string]bool)
	for _, k := range md.Keys() {
		if len(k) != 1 || k[0] == "psk" || reported[k[0]] {
			continue
		}
		reported[k[0]] = true
		p.unknown(k[0], "psk")
	}

	entries := p.tables(doc["psk"], md.IsDefined("psk"))
	table := make(PSKTable, len(entries))
	seen := make(map[string]int)
	for i, e := range entries {
		prefix := fmt.Sprintf("psk[%d]", i)
		keys := make([]string, 0, len(e))
		for k := range e {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			switch k {
			case "identity", "key", "client_id":
			default:
				p.unknown(prefix+"."+k, "identity", "key", "client_id")
			}
		}

		identity, idOK := p.identity(prefix+".identity", e)
		if idOK {
			if j, dup := seen[identity]; dup {
				p.fail(prefix+".identity", "%q is already used by psk[%d]", identity, j)
				idOK = false
			} else {
				seen[identity] = i
			}
		}
		key, keyOK := p.key(prefix+".key", e)
		clientID, cidOK := identity, true
		if v, set := e["client_id"]; set {
			clientID, cidOK = p.clientID(prefix+".client_id", v)
		}
		if idOK && keyOK && cidOK {
			table[identity] = PSKEntry{Key: key, ClientID: clientID}
		}
	}
	if len(p.errs) > 0 {
		return nil, errors.Join(p.errs...)
	}
	return table, nil
}

// pskParser collects the problems of one PSK file.
type pskParser struct {
	file string
	errs []error
}

func (p *pskParser) fail(key, format string, args ...any) {
	p.errs = append(p.errs, &Error{File: p.file, Key: key, Reason: oneLine(fmt.Sprintf(format, args...))})
}

// unknown reports key, whose last part is none of known.
func (p *pskParser) unknown(key string, known ...string) {
	last := key[strings.LastIndexByte(key, '.')+1:]
	if slices.Contains(known, strings.ToLower(last)) {
		p.fail(key, "unknown key (keys are lower case)")
		return
	}
	p.fail(key, "unknown key")
}

// tables returns the [[psk]] tables of v, the value of the top-level psk key.
func (p *pskParser) tables(v any, defined bool) []map[string]any {
	const key = "psk"
	if !defined {
		p.fail(key, "missing; add one [[psk]] table per sensor, with its identity and key")
		return nil
	}
	switch v := v.(type) {
	case []map[string]any: // [[psk]]
		return v
	case []any: // psk = [{...}, ...]
		tables := make([]map[string]any, 0, len(v))
		for i, e := range v {
			t, ok := e.(map[string]any)
			if !ok {
				p.fail(fmt.Sprintf("%s[%d]", key, i), "must be a table such as {identity = \"s1\", key = \"...\"}, not %s", describe(e))
				continue
			}
			tables = append(tables, t)
		}
		if len(v) == 0 {
			p.fail(key, "must list at least one sensor")
		}
		if len(tables) < len(v) {
			return nil // indexes would not match the file
		}
		return tables
	default:
		p.fail(key, "must be an array of tables ([[psk]]), not %s", describe(v))
		return nil
	}
}

// identity returns the identity of entry e, checked.
func (p *pskParser) identity(key string, e map[string]any) (string, bool) {
	v, set := e["identity"]
	if !set {
		p.fail(key, "missing; every [[psk]] needs an identity and a key")
		return "", false
	}
	s, ok := v.(string)
	switch {
	case !ok:
		p.fail(key, "must be a string, not %s", describe(v))
	case s == "":
		p.fail(key, "must not be empty")
	case len(s) > maxPSKIdentity:
		p.fail(key, "is %d bytes long; the limit is %d", len(s), maxPSKIdentity)
	case strings.ContainsRune(s, 0):
		p.fail(key, "%q contains a NUL character", s)
	default:
		return s, true
	}
	return "", false
}

// key returns the decoded key of entry e, checked. The key is a secret:
// its problems are described without showing it.
func (p *pskParser) key(key string, e map[string]any) ([]byte, bool) {
	v, set := e["key"]
	if !set {
		p.fail(key, "missing; every [[psk]] needs an identity and a key")
		return nil, false
	}
	s, ok := v.(string)
	if !ok {
		shown := describe(v)
		if _, isInt := v.(int64); isInt {
			shown = "an integer" // may be a key written without quotes
		}
		p.fail(key, "must be a string of hex digits, not %s", shown)
		return nil, false
	}
	if why := hexReason(s); why != "" {
		p.fail(key, "%s", why)
		return nil, false
	}
	b, err := hex.DecodeString(s)
	if err != nil { // not expected: hexReason accepted s
		p.fail(key, "is not hexadecimal (the key is not shown)")
		return nil, false
	}
	if len(b) < minPSKKey || len(b) > maxPSKKey {
		p.fail(key, "is %d octets long; use %d..%d (16 or 32 recommended)", len(b), minPSKKey, maxPSKKey)
		return nil, false
	}
	return b, true
}

// hexReason says why s is not an even number of hex digits, or "" if it
// is, without showing s.
func hexReason(s string) string {
	const hint = `; write the key as hex digits only, e.g. from "openssl rand -hex 16"`
	if s == "" {
		return "must not be empty" + hint
	}
	if len(s) >= 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X') {
		return "starts with 0x" + hint
	}
	for i, r := range s {
		if r >= utf8.RuneSelf || unhex(byte(r)) == 0xFF {
			return fmt.Sprintf("is not hexadecimal: %q at position %d (the key is not shown)%s", r, utf8.RuneCountInString(s[:i])+1, hint)
		}
	}
	if len(s)%2 != 0 {
		return fmt.Sprintf("has an odd number of hex digits (%d); each octet is two", len(s))
	}
	return ""
}

// unhex returns the value of hex digit c, or 0xFF.
func unhex(c byte) byte {
	switch {
	case '0' <= c && c <= '9':
		return c - '0'
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10
	}
	return 0xFF
}

// clientID returns the client_id value v, checked.
func (p *pskParser) clientID(key string, v any) (string, bool) {
	s, ok := v.(string)
	switch {
	case !ok:
		p.fail(key, "must be a string, not %s", describe(v))
	case s == "":
		p.fail(key, "must not be empty; leave client_id out to use the identity")
	case len(s) > maxPSKClientID:
		p.fail(key, "is %d bytes long; the limit is %d", len(s), maxPSKClientID)
	case !utf8.ValidString(s):
		p.fail(key, "%q is not valid UTF-8", s)
	case strings.ContainsRune(s, 0):
		p.fail(key, "%q contains a NUL character", s)
	default:
		return s, true
	}
	return "", false
}
