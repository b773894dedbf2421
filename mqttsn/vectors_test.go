package mqttsn

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"
)

// vector is one entry of testdata/vectors.json (see the spec digest §9).
type vector struct {
	Name   string         `json:"name"`
	Hex    string         `json:"hex"`
	Type   *string        `json:"type"`
	Fields map[string]any `json:"fields"`
	Valid  bool           `json:"valid"`
	Why    string         `json:"why"`
}

func loadVectors(tb testing.TB) []vector {
	tb.Helper()
	data, err := os.ReadFile("../testdata/vectors.json")
	if err != nil {
		tb.Fatalf("read vectors: %v", err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		tb.Fatalf("parse vectors: %v", err)
	}
	return vs
}

func mustHex(tb testing.TB, s string) []byte {
	tb.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		tb.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// TestVectors runs every byte vector: valid ones decode to exactly the
// listed fields and re-encode byte for byte (a long-form encoding of a short
// message re-encodes in the short form); malformed ones are rejected with an
// error that wraps ErrMalformed and names the message type when it is known.
func TestVectors(t *testing.T) {
	vs := loadVectors(t)
	if len(vs) != 96 {
		t.Fatalf("got %d vectors, want 96", len(vs))
	}
	var valid, malformedCount int
	for _, v := range vs {
		t.Run(v.Name, func(t *testing.T) {
			b := mustHex(t, v.Hex)
			if v.Valid {
				valid++
				checkValidVector(t, v, b)
			} else {
				malformedCount++
				checkMalformedVector(t, v, b)
			}
		})
	}
	if valid != 64 || malformedCount != 32 {
		t.Errorf("ran %d valid and %d malformed vectors, want 64 and 32", valid, malformedCount)
	}
}

func checkValidVector(t *testing.T, v vector, b []byte) {
	m, err := Decode(b)
	if err != nil {
		t.Fatalf("Decode(%s): %v", v.Hex, err)
	}
	if v.Type == nil || m.Type().String() != *v.Type {
		t.Fatalf("Decode(%s) type = %v, want %v", v.Hex, m.Type(), v.Type)
	}
	got := fieldsOf(m)
	if m.Type() != TypeEncapsulated {
		h, err := ParseHeader(b)
		if err != nil {
			t.Fatalf("ParseHeader: %v", err)
		}
		addHeaderFields(got, h)
	}
	if g, w := canonicalJSON(t, got), canonicalJSON(t, v.Fields); g != w {
		t.Errorf("fields\n got %s\nwant %s", g, w)
	}

	want := shortest(t, b)
	enc, err := m.AppendBinary(nil)
	if err != nil {
		t.Fatalf("AppendBinary: %v", err)
	}
	if !bytes.Equal(enc, want) {
		t.Errorf("re-encoded\n got %x\nwant %x", enc, want)
	}
	if v.Fields["length_form"] == "long" && len(want) <= 0xFF {
		if enc[0] == 0x01 || int(enc[0]) != len(enc) {
			t.Errorf("long-form %x re-encoded as %x, not in the 1-octet form", b, enc)
		}
	}

	// AppendBinary appends: what dst held stays.
	prefixed, err := m.AppendBinary([]byte("ab"))
	if err != nil || string(prefixed[:2]) != "ab" || !bytes.Equal(prefixed[2:], want) {
		t.Errorf("AppendBinary(prefix) = %x, %v", prefixed, err)
	}

	// UnmarshalBinary into a fresh value of the same type agrees with Decode.
	fresh := reflect.New(reflect.TypeOf(m).Elem()).Interface().(Message)
	if err := fresh.UnmarshalBinary(b); err != nil {
		t.Fatalf("UnmarshalBinary: %v", err)
	}
	if !reflect.DeepEqual(normalize(fresh), normalize(m)) {
		t.Errorf("UnmarshalBinary = %+v, Decode = %+v", fresh, m)
	}
}

func checkMalformedVector(t *testing.T, v vector, b []byte) {
	var m Message
	var err error
	func() {
		defer func() {
			if r := recover(); r != nil {
				t.Fatalf("Decode(%s) panicked: %v", v.Hex, r)
			}
		}()
		m, err = Decode(b)
	}()
	if err == nil {
		t.Fatalf("Decode(%s) = %+v, want an error (%s)", v.Hex, m, v.Why)
	}
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("error %v does not wrap ErrMalformed", err)
	}
	var me *MalformedError
	if !errors.As(err, &me) {
		t.Errorf("error %v is not a *MalformedError", err)
	}
	if !strings.HasPrefix(err.Error(), "mqttsn: ") {
		t.Errorf("error %q does not start with \"mqttsn: \"", err)
	}
	if v.Type != nil && !strings.Contains(err.Error(), *v.Type) {
		t.Errorf("error %q does not name %s", err, *v.Type)
	}
	t.Logf("%s: %v", v.Hex, err)
}

// shortest returns b re-written with the 1-octet Length form when b uses
// the 3-octet form for a message of at most 255 octets.
func shortest(t *testing.T, b []byte) []byte {
	if len(b) < 4 || b[0] != 0x01 || len(b)-2 > 0xFF {
		return b
	}
	return append([]byte{byte(len(b) - 2)}, b[3:]...)
}

func addHeaderFields(f map[string]any, h Header) {
	f["length"] = h.Length
	f["length_form"] = "short"
	if h.Long {
		f["length_form"] = "long"
	}
}

func canonicalJSON(t *testing.T, v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	var x any
	if err := json.Unmarshal(b, &x); err != nil {
		t.Fatalf("unmarshal: %v", err)
	}
	b, _ = json.Marshal(x)
	return string(b)
}

// normalize returns the value behind a message pointer, so that a Publish
// decoded with inline storage compares equal to one decoded elsewhere.
func normalize(m Message) any { return reflect.ValueOf(m).Elem().Interface() }

func qosField(q QoS) int {
	if q == QoSMinus1 {
		return -1
	}
	return int(q)
}

// putData sets the *_hex field and, for printable UTF-8, its text twin.
func putData(f map[string]any, key string, textKey string, b []byte) {
	f[key+"_hex"] = hex.EncodeToString(b)
	if len(b) > 0 && utf8.Valid(b) && strings.IndexFunc(string(b), func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		f[textKey] = string(b)
	}
}

func putTopicRef(f map[string]any, typ TopicIDType, name string, id uint16) {
	switch typ {
	case TopicIDNormal:
		f["topic_name"] = name
	case TopicIDShort:
		f["short_topic"] = ShortTopic(id)
	default:
		f["topic_id"] = id
	}
}

// fieldsOf maps a message to the vectors' field names (digest §9).
func fieldsOf(m Message) map[string]any {
	f := map[string]any{}
	switch m := m.(type) {
	case *Advertise:
		f["gw_id"], f["duration"] = m.GwID, m.Duration
	case *SearchGW:
		f["radius"] = m.Radius
	case *GwInfo:
		f["gw_id"] = m.GwID
		if len(m.GwAdd) > 0 {
			f["gw_add_hex"] = hex.EncodeToString(m.GwAdd)
		}
	case *Connect:
		f["flags"] = map[string]any{"will": m.Will, "clean_session": m.CleanSession}
		f["protocol_id"] = ProtocolID
		f["duration"], f["client_id"] = m.Duration, m.ClientID
	case *ConnAck:
		f["return_code"] = m.ReturnCode
	case *WillTopicReq, *WillMsgReq, *PingResp:
	case *WillTopic:
		putWillTopic(f, m.QoS, m.Retain, m.Topic)
	case *WillTopicUpd:
		putWillTopic(f, m.QoS, m.Retain, m.Topic)
	case *WillMsg:
		putData(f, "will_msg", "will_msg", m.Message)
	case *WillMsgUpd:
		putData(f, "will_msg", "will_msg", m.Message)
	case *WillTopicResp:
		f["return_code"] = m.ReturnCode
	case *WillMsgResp:
		f["return_code"] = m.ReturnCode
	case *Register:
		f["topic_id"], f["msg_id"], f["topic_name"] = m.TopicID, m.MsgID, m.TopicName
	case *RegAck:
		f["topic_id"], f["msg_id"], f["return_code"] = m.TopicID, m.MsgID, m.ReturnCode
	case *Publish:
		f["flags"] = map[string]any{"dup": m.DUP, "qos": qosField(m.QoS), "retain": m.Retain, "topic_id_type": m.TopicIDType.String()}
		if m.TopicIDType == TopicIDShort {
			f["short_topic"] = m.ShortTopic()
		} else {
			f["topic_id"] = m.TopicID
		}
		f["msg_id"] = m.MsgID
		putData(f, "data", "data_utf8", m.Data)
	case *PubAck:
		f["topic_id"], f["msg_id"], f["return_code"] = m.TopicID, m.MsgID, m.ReturnCode
	case *PubRec:
		f["msg_id"] = m.MsgID
	case *PubRel:
		f["msg_id"] = m.MsgID
	case *PubComp:
		f["msg_id"] = m.MsgID
	case *Subscribe:
		f["flags"] = map[string]any{"dup": m.DUP, "qos": qosField(m.QoS), "topic_id_type": m.TopicIDType.String()}
		f["msg_id"] = m.MsgID
		putTopicRef(f, m.TopicIDType, m.TopicName, m.TopicID)
	case *SubAck:
		f["flags"] = map[string]any{"qos": qosField(m.QoS)}
		f["topic_id"], f["msg_id"], f["return_code"] = m.TopicID, m.MsgID, m.ReturnCode
	case *Unsubscribe:
		f["flags"] = map[string]any{"topic_id_type": m.TopicIDType.String()}
		f["msg_id"] = m.MsgID
		putTopicRef(f, m.TopicIDType, m.TopicName, m.TopicID)
	case *UnsubAck:
		f["msg_id"] = m.MsgID
	case *PingReq:
		if m.ClientID != "" {
			f["client_id"] = m.ClientID
		}
	case *Disconnect:
		if m.HasDuration {
			f["duration"] = m.Duration
		}
	case *Encapsulated:
		f["ctrl"] = map[string]any{"radius": m.Radius}
		f["wireless_node_id_hex"] = hex.EncodeToString(m.NodeID)
		inner, _ := m.Message.AppendBinary(nil)
		innerFields := fieldsOf(m.Message)
		h, _ := ParseHeader(inner)
		addHeaderFields(innerFields, h)
		f["inner"] = map[string]any{"type": m.Message.Type().String(), "hex": hex.EncodeToString(inner), "fields": innerFields}
	default:
		panic("fieldsOf: no case for " + m.Type().String())
	}
	return f
}

func putWillTopic(f map[string]any, q QoS, retain bool, topic string) {
	if topic == "" {
		f["empty"] = true
		return
	}
	f["flags"] = map[string]any{"qos": qosField(q), "retain": retain}
	f["will_topic"] = topic
}
