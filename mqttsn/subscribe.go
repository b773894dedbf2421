package mqttsn

// Subscribe is the SUBSCRIBE message (§5.4.15). With TopicIDTypeNormal it
// carries TopicName (which may hold the wildcards + and #); with
// TopicIDPredefined or TopicIDShort it carries TopicID instead.
type Subscribe struct {
	DUP         bool
	QoS         QoS // requested QoS, 0..2
	TopicIDType TopicIDType
	MsgID       uint16
	TopicName   string // TopicIDNormal only, at least 1 octet
	TopicID     uint16 // TopicIDPredefined and TopicIDShort only
}

// SubAck is the SUBACK message answering a SUBSCRIBE (§5.4.16).
type SubAck struct {
	QoS        QoS    // granted QoS, 0..2
	TopicID    uint16 // see decision A11 for its value
	MsgID      uint16
	ReturnCode ReturnCode
}

// Unsubscribe is the UNSUBSCRIBE message (§5.4.17), laid out as SUBSCRIBE
// but with only TopicIdType used in its Flags.
type Unsubscribe struct {
	TopicIDType TopicIDType
	MsgID       uint16
	TopicName   string // TopicIDNormal only, at least 1 octet
	TopicID     uint16 // TopicIDPredefined and TopicIDShort only
}

// UnsubAck is the UNSUBACK message answering an UNSUBSCRIBE (§5.4.18).
type UnsubAck struct{ MsgID uint16 }

// ShortTopic returns the short topic name carried in TopicID. It is
// meaningful only when TopicIDType is TopicIDShort.
func (m *Subscribe) ShortTopic() string { return ShortTopic(m.TopicID) }

// Type returns TypeSubscribe.
func (*Subscribe) Type() Type { return TypeSubscribe }

// AppendBinary appends the wire form of m to dst.
func (m *Subscribe) AppendBinary(dst []byte) ([]byte, error) {
	if m.QoS > QoS2 {
		return dst, invalid(TypeSubscribe, "requested QoS "+m.QoS.String())
	}
	if err := checkTopicRef(TypeSubscribe, m.TopicIDType, m.TopicName); err != nil {
		return dst, err
	}
	if err := checkLen(TypeSubscribe, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeSubscribe, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *Subscribe) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Subscribe) bodyLen() int { return 3 + topicRefLen(m.TopicIDType, m.TopicName) }

func (m *Subscribe) appendBody(dst []byte) []byte {
	dst = appendU16(append(dst, byte(makeFlags(m.DUP, m.QoS, false, m.TopicIDType))), m.MsgID)
	return appendTopicRef(dst, m.TopicIDType, m.TopicName, m.TopicID)
}

func (m *Subscribe) decodeBody(b []byte) error {
	f, name, id, err := decodeTopicRef(TypeSubscribe, b)
	if err != nil {
		return err
	}
	if f.QoS() == QoSMinus1 {
		return malformed(TypeSubscribe, "requested QoS 0b11")
	}
	*m = Subscribe{
		DUP:         f&FlagDUP != 0,
		QoS:         f.QoS(),
		TopicIDType: f.TopicIDType(),
		MsgID:       u16(b[1:]),
		TopicName:   name,
		TopicID:     id,
	}
	return nil
}

// Type returns TypeSubAck.
func (*SubAck) Type() Type { return TypeSubAck }

// AppendBinary appends the wire form of m to dst.
func (m *SubAck) AppendBinary(dst []byte) ([]byte, error) {
	if m.QoS > QoS2 {
		return dst, invalid(TypeSubAck, "granted QoS "+m.QoS.String())
	}
	if err := checkLen(TypeSubAck, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeSubAck, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *SubAck) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *SubAck) bodyLen() int { return 6 }

func (m *SubAck) appendBody(dst []byte) []byte {
	dst = append(dst, byte(makeFlags(false, m.QoS, false, 0)))
	return append(appendU16(appendU16(dst, m.TopicID), m.MsgID), byte(m.ReturnCode))
}

func (m *SubAck) decodeBody(b []byte) error {
	if err := wantBody(TypeSubAck, b, 6); err != nil {
		return err
	}
	f := Flags(b[0])
	if f.QoS() == QoSMinus1 {
		return malformed(TypeSubAck, "granted QoS 0b11")
	}
	*m = SubAck{QoS: f.QoS(), TopicID: u16(b[1:]), MsgID: u16(b[3:]), ReturnCode: ReturnCode(b[5])}
	return nil
}

// ShortTopic returns the short topic name carried in TopicID. It is
// meaningful only when TopicIDType is TopicIDShort.
func (m *Unsubscribe) ShortTopic() string { return ShortTopic(m.TopicID) }

// Type returns TypeUnsubscribe.
func (*Unsubscribe) Type() Type { return TypeUnsubscribe }

// AppendBinary appends the wire form of m to dst.
func (m *Unsubscribe) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkTopicRef(TypeUnsubscribe, m.TopicIDType, m.TopicName); err != nil {
		return dst, err
	}
	if err := checkLen(TypeUnsubscribe, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeUnsubscribe, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *Unsubscribe) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Unsubscribe) bodyLen() int { return 3 + topicRefLen(m.TopicIDType, m.TopicName) }

func (m *Unsubscribe) appendBody(dst []byte) []byte {
	dst = appendU16(append(dst, byte(makeFlags(false, 0, false, m.TopicIDType))), m.MsgID)
	return appendTopicRef(dst, m.TopicIDType, m.TopicName, m.TopicID)
}

func (m *Unsubscribe) decodeBody(b []byte) error {
	f, name, id, err := decodeTopicRef(TypeUnsubscribe, b)
	if err != nil {
		return err
	}
	*m = Unsubscribe{TopicIDType: f.TopicIDType(), MsgID: u16(b[1:]), TopicName: name, TopicID: id}
	return nil
}

// Type returns TypeUnsubAck.
func (*UnsubAck) Type() Type { return TypeUnsubAck }

// AppendBinary appends the wire form of m to dst.
func (m *UnsubAck) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeUnsubAck, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *UnsubAck) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *UnsubAck) bodyLen() int                 { return 2 }
func (m *UnsubAck) appendBody(dst []byte) []byte { return appendU16(dst, m.MsgID) }
func (m *UnsubAck) decodeBody(b []byte) error    { return decodeMsgID(TypeUnsubAck, b, &m.MsgID) }

// The shared layout of SUBSCRIBE and UNSUBSCRIBE: Flags, MsgId, then a
// topic name (TopicIdType 0b00) or a 2-octet id (0b01, 0b10).

func checkTopicRef(t Type, typ TopicIDType, name string) error {
	switch {
	case typ > TopicIDShort:
		return invalid(t, "reserved TopicIdType 0b11")
	case typ == TopicIDNormal && name == "":
		return invalid(t, "empty TopicName")
	}
	return nil
}

func topicRefLen(typ TopicIDType, name string) int {
	if typ == TopicIDNormal {
		return len(name)
	}
	return 2
}

func appendTopicRef(dst []byte, typ TopicIDType, name string, id uint16) []byte {
	if typ == TopicIDNormal {
		return append(dst, name...)
	}
	return appendU16(dst, id)
}

func decodeTopicRef(t Type, b []byte) (f Flags, name string, id uint16, err error) {
	if err := wantBodyAtLeast(t, b, 4); err != nil {
		return 0, "", 0, err
	}
	f = Flags(b[0])
	switch f.TopicIDType() {
	case TopicIDNormal:
		return f, string(b[3:]), 0, nil
	case TopicIDPredefined, TopicIDShort:
		if err := wantBody(t, b, 5); err != nil {
			return 0, "", 0, err
		}
		return f, "", u16(b[3:]), nil
	}
	return 0, "", 0, malformed(t, "reserved TopicIdType 0b11")
}
