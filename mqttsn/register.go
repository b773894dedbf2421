package mqttsn

// Register is the REGISTER message (§5.4.10). A client sends it with TopicID
// 0x0000 to ask for an id for TopicName; a gateway sends it with the id it
// assigned, before the first PUBLISH on that topic.
type Register struct {
	TopicID   uint16
	MsgID     uint16
	TopicName string // at least 1 octet
}

// RegAck is the REGACK message answering a REGISTER (§5.4.11).
type RegAck struct {
	TopicID    uint16
	MsgID      uint16
	ReturnCode ReturnCode
}

// Type returns TypeRegister.
func (*Register) Type() Type { return TypeRegister }

// AppendBinary appends the wire form of m to dst.
func (m *Register) AppendBinary(dst []byte) ([]byte, error) {
	if m.TopicName == "" {
		return dst, invalid(TypeRegister, "empty TopicName")
	}
	if err := checkLen(TypeRegister, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeRegister, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *Register) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Register) bodyLen() int { return 4 + len(m.TopicName) }

func (m *Register) appendBody(dst []byte) []byte {
	return append(appendU16(appendU16(dst, m.TopicID), m.MsgID), m.TopicName...)
}

func (m *Register) decodeBody(b []byte) error {
	if err := wantBodyAtLeast(TypeRegister, b, 5); err != nil {
		return err
	}
	*m = Register{TopicID: u16(b), MsgID: u16(b[2:]), TopicName: string(b[4:])}
	return nil
}

// Type returns TypeRegAck.
func (*RegAck) Type() Type { return TypeRegAck }

// AppendBinary appends the wire form of m to dst.
func (m *RegAck) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeRegAck, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *RegAck) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *RegAck) bodyLen() int { return 5 }

func (m *RegAck) appendBody(dst []byte) []byte {
	return append(appendU16(appendU16(dst, m.TopicID), m.MsgID), byte(m.ReturnCode))
}

func (m *RegAck) decodeBody(b []byte) error {
	if err := wantBody(TypeRegAck, b, 5); err != nil {
		return err
	}
	*m = RegAck{TopicID: u16(b), MsgID: u16(b[2:]), ReturnCode: ReturnCode(b[4])}
	return nil
}
