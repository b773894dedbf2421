package topicmap

import "strconv"

// Kind is an MQTT-SN TopicIdType (MQTT-SN 1.2 §5.3.4).
//
// Its values are the wire values, the low two bits of the flags octet, so
// Kind(flags&0x03) converts a received flags octet.
type Kind uint8

// The topic id types of MQTT-SN 1.2 §5.3.4; 0b11 is reserved.
const (
	// KindNormal is a normal topic id, assigned by REGISTER or SUBACK.
	KindNormal Kind = 0b00
	// KindPredefined is a predefined topic id, known in advance from configuration.
	KindPredefined Kind = 0b01
	// KindShort is a short topic name: two octets carried in the TopicId field.
	KindShort Kind = 0b10
)

// String returns the name of k as used in logs.
func (k Kind) String() string {
	switch k {
	case KindNormal:
		return "normal"
	case KindPredefined:
		return "predefined"
	case KindShort:
		return "short"
	}
	return "reserved(" + strconv.Itoa(int(k)) + ")"
}
