package mqttsn

import (
	"encoding/binary"
	"errors"
	"strconv"
)

// ErrMalformed is wrapped by every decoding error: the datagram is not a
// valid MQTT-SN 1.2 message and should be counted and dropped.
var ErrMalformed = errors.New("malformed MQTT-SN message")

// ErrInvalid is wrapped by every encoding error: the message's fields cannot
// be put on the wire (for example an empty ClientId or a total over 65535 octets).
var ErrInvalid = errors.New("invalid MQTT-SN message")

// MalformedError says why a datagram was rejected. It wraps ErrMalformed.
type MalformedError struct {
	Type   Type   // the message type, when the header was readable
	Typed  bool   // whether Type is known
	Reason string // what was wrong, e.g. "5 octets, shorter than the 7-octet minimum"
}

// Error returns e.g. "mqttsn: PUBLISH: 5 octets, shorter than the 7-octet minimum".
func (e *MalformedError) Error() string {
	if e.Typed {
		return "mqttsn: " + e.Type.String() + ": " + e.Reason
	}
	return "mqttsn: " + e.Reason
}

// Unwrap returns ErrMalformed.
func (e *MalformedError) Unwrap() error { return ErrMalformed }

func malformed(t Type, reason string) error {
	return &MalformedError{Type: t, Typed: true, Reason: reason}
}

func malformedHeader(reason string) error {
	return &MalformedError{Reason: reason}
}

// encodeError says why a message cannot be encoded. It wraps ErrInvalid.
type encodeError struct {
	typ    Type
	reason string
}

func (e *encodeError) Error() string { return "mqttsn: encode " + e.typ.String() + ": " + e.reason }
func (e *encodeError) Unwrap() error { return ErrInvalid }

func invalid(t Type, reason string) error { return &encodeError{typ: t, reason: reason} }

// Message is one MQTT-SN message: a pointer to one of this package's message
// structs, e.g. *Publish.
type Message interface {
	// Type returns the message's MsgType.
	Type() Type
	// AppendBinary appends the message's wire form, header included, to dst.
	// It does not allocate when dst has room.
	AppendBinary(dst []byte) ([]byte, error)
	// UnmarshalBinary decodes one whole datagram of the message's own type
	// into the receiver, reusing the receiver's byte slices where it can.
	UnmarshalBinary(b []byte) error
}

// bodyCodec is what every message type but ENCAPSULATED implements: the
// size of its variable part, its encoder, and its decoder, which gets the
// variable part alone.
type bodyCodec interface {
	Message
	bodyLen() int
	appendBody(dst []byte) []byte
	decodeBody(body []byte) error
}

// Header is the parsed header of a datagram (§5.2).
type Header struct {
	Length int  // the Length field: the whole message in octets
	Long   bool // whether the 3-octet Length form was used
	Type   Type // MsgType
}

// Size returns the header's size: 2 for the 1-octet Length form, 4 for the
// 3-octet form.
func (h Header) Size() int {
	if h.Long {
		return 4
	}
	return 2
}

// ParseHeader reads the header of the datagram b and checks that the Length
// field equals len(b) (A14). It does not check the message type; an
// Encapsulated frame (§5.5) is reported with Type TypeEncapsulated and the
// Length of its encapsulation header, which does not cover the whole datagram.
func ParseHeader(b []byte) (Header, error) {
	switch {
	case len(b) == 0:
		return Header{}, malformedHeader("empty datagram")
	case len(b) == 1:
		return Header{}, malformedHeader("1-octet datagram, shorter than the 2-octet minimum")
	case b[0] == 0x01:
		if len(b) < 4 {
			return Header{}, malformedHeader("3-octet Length form truncated: " + strconv.Itoa(len(b)) + " octets")
		}
		n := int(binary.BigEndian.Uint16(b[1:3]))
		h := Header{Length: n, Long: true, Type: Type(b[3])}
		if n < 4 {
			return h, malformed(h.Type, "3-octet Length "+strconv.Itoa(n)+" cannot cover the 4-octet header")
		}
		if n != len(b) {
			return h, malformed(h.Type, "Length says "+strconv.Itoa(n)+" octets, datagram has "+strconv.Itoa(len(b)))
		}
		return h, nil
	case b[0] == 0x00:
		return Header{}, malformedHeader("Length 0")
	case b[1] == byte(TypeEncapsulated):
		return Header{Length: int(b[0]), Type: TypeEncapsulated}, nil
	default:
		h := Header{Length: int(b[0]), Type: Type(b[1])}
		if h.Length != len(b) {
			return h, malformed(h.Type, "Length says "+strconv.Itoa(h.Length)+" octets, datagram has "+strconv.Itoa(len(b)))
		}
		return h, nil
	}
}

// Decode decodes one datagram into a new message. It never panics and copies
// what it keeps, so b may be reused afterwards. The concrete type is a
// pointer to one of this package's message structs, e.g. *Publish.
func Decode(b []byte) (Message, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return nil, err
	}
	if h.Type == TypeEncapsulated {
		e := new(Encapsulated)
		if err := e.UnmarshalBinary(b); err != nil {
			return nil, err
		}
		return e, nil
	}
	body := b[h.Size():]
	if h.Type == TypePublish {
		return decodePublish(body)
	}
	m := newMessage(h.Type)
	if m == nil {
		return nil, malformedHeader("reserved message type 0x" + hex2(uint8(h.Type)))
	}
	if err := m.decodeBody(body); err != nil {
		return nil, err
	}
	return m, nil
}

// newMessage returns a zero message of type t, or nil for a reserved type
// and for the two types Decode builds itself (PUBLISH and ENCAPSULATED).
func newMessage(t Type) bodyCodec {
	switch t {
	case TypeAdvertise:
		return new(Advertise)
	case TypeSearchGW:
		return new(SearchGW)
	case TypeGwInfo:
		return new(GwInfo)
	case TypeConnect:
		return new(Connect)
	case TypeConnAck:
		return new(ConnAck)
	case TypeWillTopicReq:
		return new(WillTopicReq)
	case TypeWillTopic:
		return new(WillTopic)
	case TypeWillMsgReq:
		return new(WillMsgReq)
	case TypeWillMsg:
		return new(WillMsg)
	case TypeRegister:
		return new(Register)
	case TypeRegAck:
		return new(RegAck)
	case TypePubAck:
		return new(PubAck)
	case TypePubComp:
		return new(PubComp)
	case TypePubRec:
		return new(PubRec)
	case TypePubRel:
		return new(PubRel)
	case TypeSubscribe:
		return new(Subscribe)
	case TypeSubAck:
		return new(SubAck)
	case TypeUnsubscribe:
		return new(Unsubscribe)
	case TypeUnsubAck:
		return new(UnsubAck)
	case TypePingReq:
		return new(PingReq)
	case TypePingResp:
		return new(PingResp)
	case TypeDisconnect:
		return new(Disconnect)
	case TypeWillTopicUpd:
		return new(WillTopicUpd)
	case TypeWillTopicResp:
		return new(WillTopicResp)
	case TypeWillMsgUpd:
		return new(WillMsgUpd)
	case TypeWillMsgResp:
		return new(WillMsgResp)
	}
	return nil
}

// MaxLength is the largest total size of a message (3-octet Length form).
const MaxLength = 0xFFFF

// appendHeader writes the header of a message of type t whose variable part
// is n octets: the 1-octet Length form up to a total of 255, else the 3-octet
// form (A14). Messages whose size varies call checkLen first.
func appendHeader(dst []byte, t Type, n int) []byte {
	if n+2 <= 0xFF {
		return append(dst, byte(n+2), byte(t))
	}
	return append(dst, 0x01, byte((n+4)>>8), byte(n+4), byte(t))
}

// checkLen reports a variable part of n octets that makes the message
// longer than MaxLength.
func checkLen(t Type, n int) error {
	if n+4 > MaxLength {
		return invalid(t, strconv.Itoa(n+4)+" octets, longer than the 65535-octet maximum")
	}
	return nil
}

// unmarshal is UnmarshalBinary for every message type but ENCAPSULATED:
// header, type check, then the body.
func unmarshal(m bodyCodec, b []byte) error {
	h, err := ParseHeader(b)
	if err != nil {
		return err
	}
	if h.Type != m.Type() {
		return malformed(h.Type, "expected "+m.Type().String())
	}
	return m.decodeBody(b[h.Size():])
}

// Size checks for the variable part; the reasons speak of whole-message
// totals in the 1-octet Length form, as the spec's tables do.

func wantBody(t Type, body []byte, n int) error {
	if len(body) != n {
		return malformed(t, strconv.Itoa(len(body)+2)+" octets, expected "+strconv.Itoa(n+2))
	}
	return nil
}

func wantBodyAtLeast(t Type, body []byte, n int) error {
	if len(body) < n {
		return malformed(t, strconv.Itoa(len(body)+2)+" octets, shorter than the "+strconv.Itoa(n+2)+"-octet minimum")
	}
	return nil
}

func u16(b []byte) uint16 { return binary.BigEndian.Uint16(b) }

func appendU16(dst []byte, v uint16) []byte { return append(dst, byte(v>>8), byte(v)) }

func itoa(n int) string { return strconv.Itoa(n) }
