package mqttsn

// Publish is the PUBLISH message (§5.4.12), in both directions.
//
// TopicID holds a registered id (TopicIDNormal), a pre-defined id
// (TopicIDPredefined) or the two characters of a short topic name
// (TopicIDShort; see ShortTopic and ShortTopicID). QoS −1 (QoSMinus1) is only
// valid with a pre-defined id or a short name (§6.8). MsgID is 0 for QoS 0
// and −1.
type Publish struct {
	DUP         bool
	QoS         QoS
	Retain      bool
	TopicIDType TopicIDType
	TopicID     uint16
	MsgID       uint16
	Data        []byte
}

// PubAck is the PUBACK message (§5.4.13): the acknowledgement of a QoS 1
// PUBLISH, or a refusal of a PUBLISH of any QoS.
type PubAck struct {
	TopicID    uint16
	MsgID      uint16
	ReturnCode ReturnCode
}

// PubRec is the PUBREC message, the first answer to a QoS 2 PUBLISH (§5.4.14).
type PubRec struct{ MsgID uint16 }

// PubRel is the PUBREL message answering a PUBREC (§5.4.14).
type PubRel struct{ MsgID uint16 }

// PubComp is the PUBCOMP message completing a QoS 2 exchange (§5.4.14).
type PubComp struct{ MsgID uint16 }

// ShortTopic returns the short topic name carried in TopicID. It is
// meaningful only when TopicIDType is TopicIDShort.
func (m *Publish) ShortTopic() string { return ShortTopic(m.TopicID) }

// ShortTopic returns the 2-character short topic name whose octets are id,
// big-endian (§6.7).
func ShortTopic(id uint16) string { return string([]byte{byte(id >> 8), byte(id)}) }

// ShortTopicID returns the TopicId value carrying the short topic name s,
// and false unless s is exactly 2 octets long.
func ShortTopicID(s string) (uint16, bool) {
	if len(s) != 2 {
		return 0, false
	}
	return uint16(s[0])<<8 | uint16(s[1]), true
}

// Type returns TypePublish.
func (*Publish) Type() Type { return TypePublish }

// AppendBinary appends the wire form of m to dst; with room in dst it does
// not allocate.
func (m *Publish) AppendBinary(dst []byte) ([]byte, error) {
	switch {
	case m.TopicIDType > TopicIDShort:
		return dst, invalid(TypePublish, "reserved TopicIdType 0b11")
	case m.QoS > QoSMinus1:
		return dst, invalid(TypePublish, "QoS "+m.QoS.String())
	case m.QoS == QoSMinus1 && m.TopicIDType == TopicIDNormal:
		return dst, invalid(TypePublish, "QoS -1 with a normal topic id")
	}
	if err := checkLen(TypePublish, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypePublish, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m. Data reuses m.Data's storage
// when it is large enough, so decoding into one Publish again and again does
// not allocate.
func (m *Publish) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Publish) bodyLen() int { return 5 + len(m.Data) }

func (m *Publish) appendBody(dst []byte) []byte {
	dst = append(dst, byte(makeFlags(m.DUP, m.QoS, m.Retain, m.TopicIDType)))
	return append(appendU16(appendU16(dst, m.TopicID), m.MsgID), m.Data...)
}

func (m *Publish) decodeBody(b []byte) error {
	if err := checkPublish(b); err != nil {
		return err
	}
	m.setFields(b)
	m.Data = copyBytes(m.Data, b[5:])
	return nil
}

// checkPublish validates a PUBLISH variable part.
func checkPublish(b []byte) error {
	if err := wantBodyAtLeast(TypePublish, b, 5); err != nil {
		return err
	}
	f := Flags(b[0])
	switch {
	case f.TopicIDType() > TopicIDShort:
		return malformed(TypePublish, "reserved TopicIdType 0b11")
	case f.QoS() == QoSMinus1 && f.TopicIDType() == TopicIDNormal:
		return malformed(TypePublish, "QoS -1 with a normal topic id (only pre-defined ids and short names, §6.8)")
	}
	return nil
}

// setFields sets every field but Data from a checked variable part.
func (m *Publish) setFields(b []byte) {
	f := Flags(b[0])
	m.DUP = f&FlagDUP != 0
	m.QoS = f.QoS()
	m.Retain = f&FlagRetain != 0
	m.TopicIDType = f.TopicIDType()
	m.TopicID = u16(b[1:])
	m.MsgID = u16(b[3:])
}

// Decode stores a payload of up to inlineData octets in the same
// allocation as its Publish, in the smallest of three boxes that holds it,
// so that a PUBLISH of a sensor's usual size costs one allocation. (A
// payload kept, in a queue, keeps its whole box: at most twice its size,
// or 64 octets.)
const inlineData = 256

// Publishes with room for a payload beside them.
type (
	publishWith64 struct {
		Publish
		data [64]byte
	}
	publishWith128 struct {
		Publish
		data [128]byte
	}
	publishWith256 struct {
		Publish
		data [inlineData]byte
	}
)

// decodePublish is Decode's path for PUBLISH, the hot one.
func decodePublish(b []byte) (Message, error) {
	if err := checkPublish(b); err != nil {
		return nil, err
	}
	data := b[5:]
	var (
		m    *Publish
		room []byte
	)
	switch n := len(data); {
	case n <= 64:
		box := new(publishWith64)
		m, room = &box.Publish, box.data[:]
	case n <= 128:
		box := new(publishWith128)
		m, room = &box.Publish, box.data[:]
	case n <= inlineData:
		box := new(publishWith256)
		m, room = &box.Publish, box.data[:]
	default:
		m, room = new(Publish), make([]byte, n)
	}
	m.setFields(b)
	if len(data) > 0 {
		m.Data = room[:len(data):len(data)]
		copy(m.Data, data)
	}
	return m, nil
}

// Type returns TypePubAck.
func (*PubAck) Type() Type { return TypePubAck }

// AppendBinary appends the wire form of m to dst.
func (m *PubAck) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypePubAck, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *PubAck) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *PubAck) bodyLen() int { return 5 }

func (m *PubAck) appendBody(dst []byte) []byte {
	return append(appendU16(appendU16(dst, m.TopicID), m.MsgID), byte(m.ReturnCode))
}

func (m *PubAck) decodeBody(b []byte) error {
	if err := wantBody(TypePubAck, b, 5); err != nil {
		return err
	}
	*m = PubAck{TopicID: u16(b), MsgID: u16(b[2:]), ReturnCode: ReturnCode(b[4])}
	return nil
}

// Type returns TypePubRec.
func (*PubRec) Type() Type { return TypePubRec }

// AppendBinary appends the wire form of m to dst.
func (m *PubRec) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypePubRec, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *PubRec) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *PubRec) bodyLen() int                 { return 2 }
func (m *PubRec) appendBody(dst []byte) []byte { return appendU16(dst, m.MsgID) }
func (m *PubRec) decodeBody(b []byte) error    { return decodeMsgID(TypePubRec, b, &m.MsgID) }

// Type returns TypePubRel.
func (*PubRel) Type() Type { return TypePubRel }

// AppendBinary appends the wire form of m to dst.
func (m *PubRel) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypePubRel, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *PubRel) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *PubRel) bodyLen() int                 { return 2 }
func (m *PubRel) appendBody(dst []byte) []byte { return appendU16(dst, m.MsgID) }
func (m *PubRel) decodeBody(b []byte) error    { return decodeMsgID(TypePubRel, b, &m.MsgID) }

// Type returns TypePubComp.
func (*PubComp) Type() Type { return TypePubComp }

// AppendBinary appends the wire form of m to dst.
func (m *PubComp) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypePubComp, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *PubComp) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *PubComp) bodyLen() int                 { return 2 }
func (m *PubComp) appendBody(dst []byte) []byte { return appendU16(dst, m.MsgID) }
func (m *PubComp) decodeBody(b []byte) error    { return decodeMsgID(TypePubComp, b, &m.MsgID) }

// decodeMsgID decodes a variable part that is one MsgId.
func decodeMsgID(t Type, b []byte, id *uint16) error {
	if err := wantBody(t, b, 2); err != nil {
		return err
	}
	*id = u16(b)
	return nil
}
