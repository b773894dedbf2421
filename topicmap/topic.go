package topicmap

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// MaxTopicLen is the length limit of a topic name in octets.
//
// MQTT encodes a topic name with a 2-octet length, so a longer name cannot be
// forwarded to the broker.
const MaxTopicLen = 65535

// ErrInvalidTopic reports a topic name that cannot be registered.
//
// Errors returned for an invalid name wrap it together with the name (quoted,
// shortened if long) and the reason.
var ErrInvalidTopic = errors.New("topicmap: invalid topic name")

// ErrExhausted reports that a client cannot get another topic id.
//
// Either the client holds the configured maximum of topics or no id is left in
// the 16-bit space. The gateway answers REGACK 0x01 (congestion) and keeps the
// session (decision A3).
var ErrExhausted = errors.New("topicmap: topic ids exhausted")

// quoteMax is how many octets of a topic name an error message quotes.
const quoteMax = 64

// topicProblem returns why name is not a valid topic name, or "" if it is.
//
// A topic name (unlike a topic filter) holds no wildcard; MQTT forbids U+0000
// and requires UTF-8.
func topicProblem(name string) string {
	switch {
	case name == "":
		return "empty"
	case len(name) > MaxTopicLen:
		return "longer than " + strconv.Itoa(MaxTopicLen) + " octets"
	case strings.ContainsAny(name, "+#"):
		return "contains a wildcard"
	case strings.IndexByte(name, 0) >= 0:
		return "contains U+0000"
	case !utf8.ValidString(name):
		return "not valid UTF-8"
	}
	return ""
}

// invalidTopic returns the error for name, which has the given problem.
func invalidTopic(name, problem string) error {
	return fmt.Errorf("%w %s: %s", ErrInvalidTopic, quoteTopic(name), problem)
}

// quoteTopic quotes name for an error message, shortened if it is long.
func quoteTopic(name string) string {
	if len(name) <= quoteMax {
		return strconv.Quote(name)
	}
	return strconv.Quote(name[:quoteMax]) + "… (" + strconv.Itoa(len(name)) + " octets)"
}

// ShortName returns the short topic name carried in the TopicId field id.
//
// The first octet of the name is the high octet of id (MQTT-SN 1.2 §6.7). The
// result may be an invalid topic name; [Registry.Lookup] with [KindShort]
// checks it.
func ShortName(id uint16) string {
	return string([]byte{byte(id >> 8), byte(id)})
}

// ShortID returns the TopicId that carries topic as a short topic name.
//
// It reports false unless topic is a valid topic name of exactly two octets
// (decision A12): a 1-octet name is not sent in short form, and wildcards make
// no sense in a short name.
func ShortID(topic string) (uint16, bool) {
	if len(topic) != 2 || !validShort(topic[0], topic[1]) {
		return 0, false
	}
	return uint16(topic[0])<<8 | uint16(topic[1]), true
}

// validShort reports whether the octets hi, lo form a valid topic name.
func validShort(hi, lo byte) bool {
	if hi == 0 || lo == 0 || hi == '+' || hi == '#' || lo == '+' || lo == '#' {
		return false
	}
	b := [2]byte{hi, lo}
	return utf8.Valid(b[:])
}
