package mqttsn

// Connect is the CONNECT message a client sends to set up a connection (§5.4.4).
// ProtocolId is not a field: it is always ProtocolID (0x01) and anything else
// is rejected.
type Connect struct {
	Will         bool   // the gateway is to prompt for a Will topic and message
	CleanSession bool   // discard the stored session
	Duration     uint16 // keep-alive period in seconds
	ClientID     string // 1 or more octets; the gateway enforces its own maximum (A15)
}

// ConnAck is the CONNACK message answering a CONNECT (§5.4.5).
type ConnAck struct {
	ReturnCode ReturnCode
}

// WillTopicReq is the WILLTOPICREQ message prompting for the Will topic (§5.4.6).
type WillTopicReq struct{}

// WillTopic is the WILLTOPIC message carrying the Will topic (§5.4.7). An
// empty Topic is the 2-octet form that deletes the Will topic and message; it
// carries no flags.
type WillTopic struct {
	QoS    QoS // Will QoS, 0..2
	Retain bool
	Topic  string
}

// WillMsgReq is the WILLMSGREQ message prompting for the Will message (§5.4.8).
type WillMsgReq struct{}

// WillMsg is the WILLMSG message carrying the Will message (§5.4.9).
type WillMsg struct {
	Message []byte
}

// WillTopicUpd is the WILLTOPICUPD message updating the Will topic (§5.4.22);
// an empty Topic deletes the Will topic and message.
type WillTopicUpd struct {
	QoS    QoS
	Retain bool
	Topic  string
}

// WillTopicResp is the WILLTOPICRESP message answering a WILLTOPICUPD (§5.4.23).
type WillTopicResp struct {
	ReturnCode ReturnCode
}

// WillMsgUpd is the WILLMSGUPD message updating the Will message (§5.4.24).
type WillMsgUpd struct {
	Message []byte
}

// WillMsgResp is the WILLMSGRESP message answering a WILLMSGUPD (§5.4.25).
type WillMsgResp struct {
	ReturnCode ReturnCode
}

// Type returns TypeConnect.
func (*Connect) Type() Type { return TypeConnect }

// AppendBinary appends the wire form of m to dst.
func (m *Connect) AppendBinary(dst []byte) ([]byte, error) {
	if m.ClientID == "" {
		return dst, invalid(TypeConnect, "empty ClientId")
	}
	if err := checkLen(TypeConnect, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeConnect, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *Connect) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Connect) bodyLen() int { return 4 + len(m.ClientID) }

func (m *Connect) appendBody(dst []byte) []byte {
	var f Flags
	if m.Will {
		f |= FlagWill
	}
	if m.CleanSession {
		f |= FlagCleanSession
	}
	dst = append(dst, byte(f), ProtocolID)
	return append(appendU16(dst, m.Duration), m.ClientID...)
}

func (m *Connect) decodeBody(b []byte) error {
	if err := wantBodyAtLeast(TypeConnect, b, 4); err != nil {
		return err
	}
	if b[1] != ProtocolID {
		return malformed(TypeConnect, "ProtocolId 0x"+hex2(b[1])+", expected 0x01")
	}
	if len(b) == 4 {
		return malformed(TypeConnect, "empty ClientId")
	}
	f := Flags(b[0])
	*m = Connect{
		Will:         f&FlagWill != 0,
		CleanSession: f&FlagCleanSession != 0,
		Duration:     u16(b[2:]),
		ClientID:     string(b[4:]),
	}
	return nil
}

// Type returns TypeConnAck.
func (*ConnAck) Type() Type { return TypeConnAck }

// AppendBinary appends the wire form of m to dst.
func (m *ConnAck) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeConnAck, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *ConnAck) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *ConnAck) bodyLen() int                 { return 1 }
func (m *ConnAck) appendBody(dst []byte) []byte { return append(dst, byte(m.ReturnCode)) }
func (m *ConnAck) decodeBody(b []byte) error {
	return decodeReturnCode(TypeConnAck, b, &m.ReturnCode)
}

// Type returns TypeWillTopicReq.
func (*WillTopicReq) Type() Type { return TypeWillTopicReq }

// AppendBinary appends the wire form of m to dst.
func (m *WillTopicReq) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeWillTopicReq, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillTopicReq) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillTopicReq) bodyLen() int                 { return 0 }
func (m *WillTopicReq) appendBody(dst []byte) []byte { return dst }
func (m *WillTopicReq) decodeBody(b []byte) error    { return wantBody(TypeWillTopicReq, b, 0) }

// Type returns TypeWillTopic.
func (*WillTopic) Type() Type { return TypeWillTopic }

// AppendBinary appends the wire form of m to dst.
func (m *WillTopic) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkWillQoS(TypeWillTopic, m.QoS); err != nil {
		return dst, err
	}
	if err := checkLen(TypeWillTopic, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeWillTopic, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillTopic) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillTopic) bodyLen() int { return willTopicLen(m.Topic) }
func (m *WillTopic) appendBody(dst []byte) []byte {
	return appendWillTopic(dst, m.QoS, m.Retain, m.Topic)
}
func (m *WillTopic) decodeBody(b []byte) (err error) {
	m.QoS, m.Retain, m.Topic, err = decodeWillTopic(TypeWillTopic, b)
	return err
}

// Type returns TypeWillMsgReq.
func (*WillMsgReq) Type() Type { return TypeWillMsgReq }

// AppendBinary appends the wire form of m to dst.
func (m *WillMsgReq) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeWillMsgReq, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillMsgReq) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillMsgReq) bodyLen() int                 { return 0 }
func (m *WillMsgReq) appendBody(dst []byte) []byte { return dst }
func (m *WillMsgReq) decodeBody(b []byte) error    { return wantBody(TypeWillMsgReq, b, 0) }

// Type returns TypeWillMsg.
func (*WillMsg) Type() Type { return TypeWillMsg }

// AppendBinary appends the wire form of m to dst.
func (m *WillMsg) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkLen(TypeWillMsg, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeWillMsg, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillMsg) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillMsg) bodyLen() int                 { return len(m.Message) }
func (m *WillMsg) appendBody(dst []byte) []byte { return append(dst, m.Message...) }
func (m *WillMsg) decodeBody(b []byte) error {
	m.Message = copyBytes(m.Message, b)
	return nil
}

// Type returns TypeWillTopicUpd.
func (*WillTopicUpd) Type() Type { return TypeWillTopicUpd }

// AppendBinary appends the wire form of m to dst.
func (m *WillTopicUpd) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkWillQoS(TypeWillTopicUpd, m.QoS); err != nil {
		return dst, err
	}
	if err := checkLen(TypeWillTopicUpd, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeWillTopicUpd, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillTopicUpd) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillTopicUpd) bodyLen() int { return willTopicLen(m.Topic) }
func (m *WillTopicUpd) appendBody(dst []byte) []byte {
	return appendWillTopic(dst, m.QoS, m.Retain, m.Topic)
}
func (m *WillTopicUpd) decodeBody(b []byte) (err error) {
	m.QoS, m.Retain, m.Topic, err = decodeWillTopic(TypeWillTopicUpd, b)
	return err
}

// Type returns TypeWillTopicResp.
func (*WillTopicResp) Type() Type { return TypeWillTopicResp }

// AppendBinary appends the wire form of m to dst.
func (m *WillTopicResp) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeWillTopicResp, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillTopicResp) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillTopicResp) bodyLen() int                 { return 1 }
func (m *WillTopicResp) appendBody(dst []byte) []byte { return append(dst, byte(m.ReturnCode)) }
func (m *WillTopicResp) decodeBody(b []byte) error {
	return decodeReturnCode(TypeWillTopicResp, b, &m.ReturnCode)
}

// Type returns TypeWillMsgUpd.
func (*WillMsgUpd) Type() Type { return TypeWillMsgUpd }

// AppendBinary appends the wire form of m to dst.
func (m *WillMsgUpd) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkLen(TypeWillMsgUpd, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeWillMsgUpd, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillMsgUpd) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillMsgUpd) bodyLen() int                 { return len(m.Message) }
func (m *WillMsgUpd) appendBody(dst []byte) []byte { return append(dst, m.Message...) }
func (m *WillMsgUpd) decodeBody(b []byte) error {
	m.Message = copyBytes(m.Message, b)
	return nil
}

// Type returns TypeWillMsgResp.
func (*WillMsgResp) Type() Type { return TypeWillMsgResp }

// AppendBinary appends the wire form of m to dst.
func (m *WillMsgResp) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeWillMsgResp, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *WillMsgResp) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *WillMsgResp) bodyLen() int                 { return 1 }
func (m *WillMsgResp) appendBody(dst []byte) []byte { return append(dst, byte(m.ReturnCode)) }
func (m *WillMsgResp) decodeBody(b []byte) error {
	return decodeReturnCode(TypeWillMsgResp, b, &m.ReturnCode)
}

// decodeReturnCode decodes a variable part that is one ReturnCode octet.
// Reserved codes (0x04..0xFF) are kept: the receiver decides what a code it
// does not know means.
func decodeReturnCode(t Type, b []byte, rc *ReturnCode) error {
	if err := wantBody(t, b, 1); err != nil {
		return err
	}
	*rc = ReturnCode(b[0])
	return nil
}

// The shared layout of WILLTOPIC and WILLTOPICUPD: Flags then the topic, or
// nothing at all for the empty form.

func checkWillQoS(t Type, q QoS) error {
	if q > QoS2 {
		return invalid(t, "Will QoS "+q.String())
	}
	return nil
}

func willTopicLen(topic string) int {
	if topic == "" {
		return 0
	}
	return 1 + len(topic)
}

func appendWillTopic(dst []byte, q QoS, retain bool, topic string) []byte {
	if topic == "" {
		return dst
	}
	return append(append(dst, byte(makeFlags(false, q, retain, 0))), topic...)
}

func decodeWillTopic(t Type, b []byte) (QoS, bool, string, error) {
	switch len(b) {
	case 0:
		return QoS0, false, "", nil
	case 1:
		return 0, false, "", malformed(t, "Flags without a topic (only the 2-octet form is empty)")
	}
	f := Flags(b[0])
	if f.QoS() == QoSMinus1 {
		return 0, false, "", malformed(t, "Will QoS 0b11")
	}
	return f.QoS(), f&FlagRetain != 0, string(b[1:]), nil
}
