package mqttsn

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestNames(t *testing.T) {
	cases := []struct{ got, want string }{
		{TypePublish.String(), "PUBLISH"},
		{TypeWillMsgResp.String(), "WILLMSGRESP"},
		{TypeEncapsulated.String(), "ENCAPSULATED"},
		{Type(0x03).String(), "reserved(0x03)"},
		{Type(0x1e).String(), "reserved(0x1e)"},
		{QoS0.String(), "0"},
		{QoS2.String(), "2"},
		{QoSMinus1.String(), "-1"},
		{TopicIDPredefined.String(), "predefined"},
		{TopicIDType(3).String(), "reserved(3)"},
		{RejectedCongestion.Error(), "rejected: congestion"},
		{ReturnCode(9).String(), "reserved return code 0x09"},
		{(FlagDUP | Flags(QoS1)<<5 | FlagRetain | Flags(TopicIDShort)).String(), "DUP|QoS1|Retain|short"},
		{(FlagWill | FlagCleanSession).String(), "Will|CleanSession|normal"},
	}
	for _, c := range cases {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
	for v := 0; v < 256; v++ {
		typ := Type(v)
		if typ.Valid() == strings.HasPrefix(typ.String(), "reserved") {
			t.Errorf("Type(0x%02x): Valid() = %v but String() = %q", v, typ.Valid(), typ)
		}
	}
	var err error = RejectedInvalidTopicID
	if !errors.Is(err, RejectedInvalidTopicID) {
		t.Error("a ReturnCode is not usable as an error value")
	}
}

func TestEncodeRejectsUnencodableMessages(t *testing.T) {
	cases := []struct {
		name string
		m    Message
	}{
		{"CONNECT without ClientId", &Connect{Duration: 10}},
		{"REGISTER without TopicName", &Register{MsgID: 1}},
		{"PUBLISH QoS -1 with a normal id", &Publish{QoS: QoSMinus1, TopicID: 1}},
		{"PUBLISH reserved TopicIdType", &Publish{TopicIDType: 3, TopicID: 1}},
		{"PUBLISH QoS 4", &Publish{QoS: 4, TopicID: 1}},
		{"PUBLISH over 65535 octets", &Publish{TopicID: 1, Data: make([]byte, 65527)}},
		{"SUBSCRIBE QoS -1", &Subscribe{QoS: QoSMinus1, TopicName: "a"}},
		{"SUBSCRIBE without TopicName", &Subscribe{MsgID: 1}},
		{"UNSUBSCRIBE reserved TopicIdType", &Unsubscribe{TopicIDType: 3, TopicID: 1}},
		{"SUBACK QoS -1", &SubAck{QoS: QoSMinus1}},
		{"WILLTOPIC QoS -1", &WillTopic{QoS: QoSMinus1, Topic: "a"}},
		{"WILLTOPICUPD QoS -1", &WillTopicUpd{QoS: QoSMinus1, Topic: "a"}},
		{"ENCAPSULATED without inner message", &Encapsulated{NodeID: []byte{1}}},
		{"ENCAPSULATED nested", &Encapsulated{Message: &Encapsulated{Message: &PingReq{}}}},
		{"ENCAPSULATED radius 4", &Encapsulated{Radius: 4, Message: &PingReq{}}},
		{"ENCAPSULATED node id of 253 octets", &Encapsulated{NodeID: make([]byte, 253), Message: &PingReq{}}},
	}
	for _, c := range cases {
		dst := []byte("keep")
		got, err := c.m.AppendBinary(dst)
		if err == nil {
			t.Errorf("%s: encoded to %x, want an error", c.name, got)
			continue
		}
		if !errors.Is(err, ErrInvalid) {
			t.Errorf("%s: error %v does not wrap ErrInvalid", c.name, err)
		}
		if !strings.Contains(err.Error(), c.m.Type().String()) {
			t.Errorf("%s: error %q does not name %v", c.name, err, c.m.Type())
		}
		if string(got) != "keep" {
			t.Errorf("%s: dst changed to %q on error", c.name, got)
		}
	}
}

// TestLengthForms checks the encoder's switch from the 1-octet to the
// 3-octet Length form (A14) and the largest message.
func TestLengthForms(t *testing.T) {
	cases := []struct {
		data   int
		total  int
		header []byte
	}{
		{248, 255, []byte{0xff, 0x0c}},
		{249, 258, []byte{0x01, 0x01, 0x02, 0x0c}},
		{65526, 65535, []byte{0x01, 0xff, 0xff, 0x0c}},
	}
	for _, c := range cases {
		p := &Publish{TopicID: 2, Data: bytes.Repeat([]byte{7}, c.data)}
		b, err := p.AppendBinary(nil)
		if err != nil {
			t.Fatalf("%d-octet payload: %v", c.data, err)
		}
		if len(b) != c.total || !bytes.HasPrefix(b, c.header) {
			t.Errorf("%d-octet payload: %d octets starting %x, want %d starting %x", c.data, len(b), b[:4], c.total, c.header)
		}
		m, err := Decode(b)
		if err != nil || !bytes.Equal(m.(*Publish).Data, p.Data) {
			t.Errorf("%d-octet payload does not decode back: %v", c.data, err)
		}
	}
}

func TestUnmarshalBinary(t *testing.T) {
	var p Publish
	if err := p.UnmarshalBinary([]byte{0x0b, 0x0c, 0x20, 0, 1, 0, 9, 'h', 'e', 'l', 'o'}); err != nil {
		t.Fatal(err)
	}
	storage := &p.Data[0]
	if err := p.UnmarshalBinary([]byte{0x09, 0x0c, 0x00, 0, 2, 0, 0, 'h', 'i'}); err != nil {
		t.Fatal(err)
	}
	if string(p.Data) != "hi" || p.QoS != QoS0 || p.TopicID != 2 || p.MsgID != 0 {
		t.Errorf("second decode = %+v", p)
	}
	if &p.Data[0] != storage {
		t.Error("UnmarshalBinary did not reuse Data's storage")
	}

	err := p.UnmarshalBinary([]byte{0x04, 0x0f, 0x00, 0x07})
	if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "expected PUBLISH") {
		t.Errorf("PUBREC into a Publish: %v", err)
	}
	var e Encapsulated
	if err := e.UnmarshalBinary([]byte{0x02, 0x16}); !errors.Is(err, ErrMalformed) {
		t.Errorf("plain PINGREQ into an Encapsulated: %v", err)
	}
}

func TestDecodeCopies(t *testing.T) {
	for _, payload := range []int{0, 3, 64, 65, 128, 129, inlineData, inlineData + 1} {
		b, _ := (&Publish{TopicID: 1, Data: bytes.Repeat([]byte{'a'}, payload)}).AppendBinary(nil)
		m, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		for i := range b {
			b[i] = 0
		}
		p := m.(*Publish)
		if p.TopicID != 1 || !bytes.Equal(p.Data, bytes.Repeat([]byte{'a'}, payload)) {
			t.Errorf("%d-octet payload changed with the datagram: %+v", payload, p)
		}
		if cap(p.Data) != len(p.Data) {
			t.Errorf("%d-octet payload: capacity %d, so an append would write into the box", payload, cap(p.Data))
		}
		want := 1.0 // the payload in the Publish's own allocation
		if payload > inlineData {
			want = 2
		}
		b, _ = (&Publish{TopicID: 1, Data: p.Data}).AppendBinary(nil)
		if n := testing.AllocsPerRun(20, func() { _, _ = Decode(b) }); n != want {
			t.Errorf("decoding a %d-octet payload: %.0f allocations, want %.0f", payload, n, want)
		}
	}
	b := []byte{0x05, 0xfe, 0x00, 0xaa, 0xbb, 0x02, 0x16}
	m, err := Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	b[3] = 0
	if e := m.(*Encapsulated); !bytes.Equal(e.NodeID, []byte{0xaa, 0xbb}) {
		t.Errorf("node id changed with the datagram: %x", e.NodeID)
	}
}

func TestEncapsulationRejectsLongForm(t *testing.T) {
	// A 3-octet Length in front of MsgType 0xFE: encapsulation has no long form.
	_, err := Decode([]byte{0x01, 0x00, 0x07, 0xfe, 0x00, 0x02, 0x16})
	if err == nil || !strings.Contains(err.Error(), "3-octet Length form") {
		t.Errorf("long-form encapsulation: %v", err)
	}
	// A nested frame is refused.
	_, err = Decode([]byte{0x04, 0xfe, 0x00, 0x01, 0x05, 0xfe, 0x00, 0x01, 0x02, 0x16})
	if err == nil || !strings.Contains(err.Error(), "nested") {
		t.Errorf("nested encapsulation: %v", err)
	}
}
