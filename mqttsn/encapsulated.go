package mqttsn

import "strings"

// Encapsulated is a forwarder's Encapsulated frame (§5.5): an MQTT-SN message
// from or to the wireless node NodeID, relayed by a forwarder. Its Length
// octet covers only the encapsulation header; the inner message carries its
// own. Decision A17: 3 <= Length <= datagram, reserved Ctrl bits 0, no
// nesting.
type Encapsulated struct {
	Radius  uint8   // Ctrl bits 1-0: broadcast radius, meaningful gateway to forwarder
	NodeID  []byte  // the Wireless Node Id, opaque, at most MaxNodeIDLen octets
	Message Message // the inner message; never another *Encapsulated
}

// MaxNodeIDLen is the longest Wireless Node Id: the 1-octet Length covers
// it plus 3 octets.
const MaxNodeIDLen = 0xFF - 3

// Type returns TypeEncapsulated.
func (*Encapsulated) Type() Type { return TypeEncapsulated }

// AppendBinary appends the encapsulation header and the inner message to dst.
func (m *Encapsulated) AppendBinary(dst []byte) ([]byte, error) {
	if m.Message == nil {
		return dst, invalid(TypeEncapsulated, "no inner message")
	}
	if m.Message.Type() == TypeEncapsulated {
		return dst, invalid(TypeEncapsulated, "nested encapsulation")
	}
	dst, err := AppendEncapsulation(dst, m.Radius, m.NodeID)
	if err != nil {
		return dst, err
	}
	return m.Message.AppendBinary(dst)
}

// UnmarshalBinary decodes the datagram b, an Encapsulated frame, into m; the
// inner message is decoded with Decode.
func (m *Encapsulated) UnmarshalBinary(b []byte) error {
	radius, node, inner, err := Unwrap(b)
	if err != nil {
		return err
	}
	msg, err := Decode(inner)
	if err != nil {
		return innerMalformed(err)
	}
	m.Radius = radius
	m.NodeID = copyBytes(m.NodeID, node)
	m.Message = msg
	return nil
}

// AppendEncapsulation appends an encapsulation header for the node nodeID to
// dst; the caller appends the inner message after it. This is how the
// gateway wraps a reply without building an Encapsulated value.
func AppendEncapsulation(dst []byte, radius uint8, nodeID []byte) ([]byte, error) {
	if radius > 3 {
		return dst, invalid(TypeEncapsulated, "radius "+itoa(int(radius))+" does not fit the 2 Ctrl bits")
	}
	if len(nodeID) > MaxNodeIDLen {
		return dst, invalid(TypeEncapsulated, "Wireless Node Id of "+itoa(len(nodeID))+" octets, longer than 252")
	}
	dst = append(dst, byte(3+len(nodeID)), byte(TypeEncapsulated), radius)
	return append(dst, nodeID...), nil
}

// Unwrap splits the Encapsulated frame b into its radius, Wireless Node Id
// and inner message without copying or allocating; the slices alias b. It
// checks the wrapper (A17) and that the inner message has a valid header
// and is not itself encapsulated, but does not decode the inner message.
func Unwrap(b []byte) (radius uint8, nodeID, inner []byte, err error) {
	switch {
	case len(b) >= 4 && b[0] == 0x01 && b[3] == byte(TypeEncapsulated):
		return 0, nil, nil, malformed(TypeEncapsulated, "the 3-octet Length form is not allowed")
	case len(b) < 2 || b[0] == 0x01 || b[1] != byte(TypeEncapsulated):
		return 0, nil, nil, malformedHeader("not an Encapsulated frame")
	}
	n := int(b[0])
	switch {
	case n < 3:
		return 0, nil, nil, malformed(TypeEncapsulated, "Length "+itoa(n)+", below the 3-octet minimum")
	case n+2 > len(b):
		return 0, nil, nil, malformed(TypeEncapsulated, "Length "+itoa(n)+" leaves no room for an inner message in "+itoa(len(b))+" octets")
	case b[2]&^3 != 0:
		return 0, nil, nil, malformed(TypeEncapsulated, "reserved Ctrl bits set (0x"+hex2(b[2])+")")
	}
	inner = b[n:]
	h, err := ParseHeader(inner)
	if err != nil {
		return 0, nil, nil, innerMalformed(err)
	}
	if h.Type == TypeEncapsulated {
		return 0, nil, nil, malformed(TypeEncapsulated, "nested encapsulation")
	}
	return b[2] & 3, b[3:n], inner, nil
}

// innerMalformed restates a decoding error of an inner message as an error
// of the Encapsulated frame that carried it.
func innerMalformed(err error) error {
	return malformed(TypeEncapsulated, "inner message: "+strings.TrimPrefix(err.Error(), "mqttsn: "))
}
