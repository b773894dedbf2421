package mqttsn

import "strconv"

// Type is the MsgType octet of an MQTT-SN message (§5.2.2).
type Type uint8

// Message types of MQTT-SN 1.2 (§5.2.2). 0x03, 0x11, 0x19, 0x1E..0xFD and
// 0xFF are reserved.
const (
	TypeAdvertise     Type = 0x00
	TypeSearchGW      Type = 0x01
	TypeGwInfo        Type = 0x02
	TypeConnect       Type = 0x04
	TypeConnAck       Type = 0x05
	TypeWillTopicReq  Type = 0x06
	TypeWillTopic     Type = 0x07
	TypeWillMsgReq    Type = 0x08
	TypeWillMsg       Type = 0x09
	TypeRegister      Type = 0x0A
	TypeRegAck        Type = 0x0B
	TypePublish       Type = 0x0C
	TypePubAck        Type = 0x0D
	TypePubComp       Type = 0x0E
	TypePubRec        Type = 0x0F
	TypePubRel        Type = 0x10
	TypeSubscribe     Type = 0x12
	TypeSubAck        Type = 0x13
	TypeUnsubscribe   Type = 0x14
	TypeUnsubAck      Type = 0x15
	TypePingReq       Type = 0x16
	TypePingResp      Type = 0x17
	TypeDisconnect    Type = 0x18
	TypeWillTopicUpd  Type = 0x1A
	TypeWillTopicResp Type = 0x1B
	TypeWillMsgUpd    Type = 0x1C
	TypeWillMsgResp   Type = 0x1D
	TypeEncapsulated  Type = 0xFE
)

var typeNames = [...]string{
	TypeAdvertise:     "ADVERTISE",
	TypeSearchGW:      "SEARCHGW",
	TypeGwInfo:        "GWINFO",
	TypeConnect:       "CONNECT",
	TypeConnAck:       "CONNACK",
	TypeWillTopicReq:  "WILLTOPICREQ",
	TypeWillTopic:     "WILLTOPIC",
	TypeWillMsgReq:    "WILLMSGREQ",
	TypeWillMsg:       "WILLMSG",
	TypeRegister:      "REGISTER",
	TypeRegAck:        "REGACK",
	TypePublish:       "PUBLISH",
	TypePubAck:        "PUBACK",
	TypePubComp:       "PUBCOMP",
	TypePubRec:        "PUBREC",
	TypePubRel:        "PUBREL",
	TypeSubscribe:     "SUBSCRIBE",
	TypeSubAck:        "SUBACK",
	TypeUnsubscribe:   "UNSUBSCRIBE",
	TypeUnsubAck:      "UNSUBACK",
	TypePingReq:       "PINGREQ",
	TypePingResp:      "PINGRESP",
	TypeDisconnect:    "DISCONNECT",
	TypeWillTopicUpd:  "WILLTOPICUPD",
	TypeWillTopicResp: "WILLTOPICRESP",
	TypeWillMsgUpd:    "WILLMSGUPD",
	TypeWillMsgResp:   "WILLMSGRESP",
}

// String returns the message type's name as the spec writes it, e.g.
// "PUBLISH", or "reserved(0x03)" for a reserved value.
func (t Type) String() string {
	if t == TypeEncapsulated {
		return "ENCAPSULATED"
	}
	if int(t) < len(typeNames) && typeNames[t] != "" {
		return typeNames[t]
	}
	return "reserved(0x" + hex2(uint8(t)) + ")"
}

// Valid reports whether t is a message type defined by MQTT-SN 1.2.
func (t Type) Valid() bool {
	return t == TypeEncapsulated || int(t) < len(typeNames) && typeNames[t] != ""
}

// QoS is a quality-of-service level as carried in the QoS bits (6-5) of the
// Flags octet (§5.3.4). The value is the two bits, so QoSMinus1 is 3 (0b11).
type QoS uint8

// QoS levels (§5.3.4, §6.8).
const (
	QoS0      QoS = 0 // at most once
	QoS1      QoS = 1 // at least once
	QoS2      QoS = 2 // exactly once
	QoSMinus1 QoS = 3 // QoS −1: PUBLISH without a connection, client to gateway only
)

// String returns "0", "1", "2" or "-1".
func (q QoS) String() string {
	switch q {
	case QoS0, QoS1, QoS2:
		return strconv.Itoa(int(q))
	case QoSMinus1:
		return "-1"
	}
	return "invalid(" + strconv.Itoa(int(q)) + ")"
}

// TopicIDType says what the 2-octet TopicId field of a PUBLISH, SUBSCRIBE or
// UNSUBSCRIBE holds (§5.3.4, Flags bits 1-0).
type TopicIDType uint8

// Topic-id types (§5.3.4). 0b11 is reserved.
const (
	TopicIDNormal     TopicIDType = 0 // a registered id; in SUBSCRIBE/UNSUBSCRIBE a topic name follows
	TopicIDPredefined TopicIDType = 1 // a pre-defined id known to client and gateway
	TopicIDShort      TopicIDType = 2 // a 2-character short topic name
)

// String returns "normal", "predefined" or "short".
func (t TopicIDType) String() string {
	switch t {
	case TopicIDNormal:
		return "normal"
	case TopicIDPredefined:
		return "predefined"
	case TopicIDShort:
		return "short"
	}
	return "reserved(" + strconv.Itoa(int(t)) + ")"
}

// ReturnCode is the ReturnCode octet of CONNACK, REGACK, PUBACK, SUBACK,
// WILLTOPICRESP and WILLMSGRESP (§5.3.10). A non-zero code is also an error.
type ReturnCode uint8

// Return codes (§5.3.10). 0x04..0xFF are reserved.
const (
	Accepted               ReturnCode = 0x00
	RejectedCongestion     ReturnCode = 0x01
	RejectedInvalidTopicID ReturnCode = 0x02
	RejectedNotSupported   ReturnCode = 0x03
)

// String returns the code's meaning, e.g. "rejected: congestion".
func (c ReturnCode) String() string {
	switch c {
	case Accepted:
		return "accepted"
	case RejectedCongestion:
		return "rejected: congestion"
	case RejectedInvalidTopicID:
		return "rejected: invalid topic ID"
	case RejectedNotSupported:
		return "rejected: not supported"
	}
	return "reserved return code 0x" + hex2(uint8(c))
}

// Error returns the same text as String, so that a refusal can travel as an
// error value.
func (c ReturnCode) Error() string { return c.String() }

// Flags is the Flags octet of CONNECT, WILLTOPIC, WILLTOPICUPD, PUBLISH,
// SUBSCRIBE, SUBACK and UNSUBSCRIBE (§5.3.4). The message types carry the
// bits they use as separate fields; Flags is the wire form and what logs print.
type Flags uint8

// Flag bits (§5.3.4).
const (
	FlagDUP          Flags = 0x80
	FlagQoSMask      Flags = 0x60
	FlagRetain       Flags = 0x10
	FlagWill         Flags = 0x08
	FlagCleanSession Flags = 0x04
	FlagTopicIDMask  Flags = 0x03
)

// QoS returns the QoS bits.
func (f Flags) QoS() QoS { return QoS(f&FlagQoSMask) >> 5 }

// TopicIDType returns the TopicIdType bits.
func (f Flags) TopicIDType() TopicIDType { return TopicIDType(f & FlagTopicIDMask) }

// String lists the set bits, e.g. "DUP|QoS1|Retain|short"; the topic-id
// type is always named and QoS only when non-zero.
func (f Flags) String() string {
	var b []byte
	add := func(s string) {
		if len(b) > 0 {
			b = append(b, '|')
		}
		b = append(b, s...)
	}
	if f&FlagDUP != 0 {
		add("DUP")
	}
	if q := f.QoS(); q != QoS0 {
		add("QoS" + q.String())
	}
	if f&FlagRetain != 0 {
		add("Retain")
	}
	if f&FlagWill != 0 {
		add("Will")
	}
	if f&FlagCleanSession != 0 {
		add("CleanSession")
	}
	add(f.TopicIDType().String())
	return string(b)
}

func makeFlags(dup bool, qos QoS, retain bool, topicIDType TopicIDType) Flags {
	f := Flags(qos&3)<<5 | Flags(topicIDType&3)
	if dup {
		f |= FlagDUP
	}
	if retain {
		f |= FlagRetain
	}
	return f
}

// ProtocolID is the only ProtocolId value of MQTT-SN 1.2 (§5.3.8).
const ProtocolID = 0x01

func hex2(v uint8) string {
	const digits = "0123456789abcdef"
	return string([]byte{digits[v>>4], digits[v&0x0f]})
}
