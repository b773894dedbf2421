package mqttsn

import (
	"bytes"
	"errors"
	"reflect"
	"testing"
)

// FuzzDecode checks that Decode never panics, that every error wraps
// ErrMalformed, and that whatever decodes re-encodes, no longer than the
// input, to bytes that decode to the same value.
func FuzzDecode(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(mustHex(f, v.Hex))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Decode(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Decode(%x): error %v does not wrap ErrMalformed", b, err)
			}
			return
		}
		enc := roundTrip(t, m)
		if len(enc) > len(b) {
			t.Fatalf("Decode(%x) re-encoded longer: %x", b, enc)
		}
	})
}

// FuzzEncapsulated wraps arbitrary inner bytes in an Encapsulated frame for
// an arbitrary node: Unwrap and Decode never panic, agree with each other,
// and a frame that decodes hands back the radius, node id and inner message
// it was built from.
func FuzzEncapsulated(f *testing.F) {
	for _, v := range loadVectors(f) {
		f.Add(uint8(1), []byte{0x1a, 0x2b}, mustHex(f, v.Hex))
	}
	f.Add(uint8(0), []byte{}, []byte{0x02, 0x16})
	f.Fuzz(func(t *testing.T, radius uint8, node, inner []byte) {
		frame, err := AppendEncapsulation(nil, radius, node)
		if err != nil {
			if radius <= 3 && len(node) <= MaxNodeIDLen {
				t.Fatalf("AppendEncapsulation(%d, %x): %v", radius, node, err)
			}
			return
		}
		frame = append(frame, inner...)
		gotRadius, gotNode, gotInner, uerr := Unwrap(frame)
		m, derr := Decode(frame)
		if derr != nil {
			if !errors.Is(derr, ErrMalformed) {
				t.Fatalf("Decode(%x): error %v does not wrap ErrMalformed", frame, derr)
			}
			return
		}
		if uerr != nil {
			t.Fatalf("Decode(%x) succeeded but Unwrap failed: %v", frame, uerr)
		}
		e, ok := m.(*Encapsulated)
		if !ok {
			t.Fatalf("Decode(%x) = %T, want *Encapsulated", frame, m)
		}
		if gotRadius != radius || !bytes.Equal(gotNode, node) || !bytes.Equal(gotInner, inner) {
			t.Fatalf("Unwrap(%x) = %d, %x, %x", frame, gotRadius, gotNode, gotInner)
		}
		if e.Radius != radius || !bytes.Equal(e.NodeID, node) || e.Message.Type() == TypeEncapsulated {
			t.Fatalf("Decode(%x) = %+v", frame, e)
		}
		roundTrip(t, e)
	})
}

// roundTrip encodes m, decodes the result and checks it equals m.
func roundTrip(t *testing.T, m Message) []byte {
	t.Helper()
	enc, err := m.AppendBinary(nil)
	if err != nil {
		t.Fatalf("%v decoded but does not encode: %v (%+v)", m.Type(), err, m)
	}
	m2, err := Decode(enc)
	if err != nil {
		t.Fatalf("re-encoded %x does not decode: %v", enc, err)
	}
	if !reflect.DeepEqual(deepNormalize(m), deepNormalize(m2)) {
		t.Fatalf("round trip changed the message:\n %+v\n %+v", m, m2)
	}
	return enc
}

func deepNormalize(m Message) any {
	if e, ok := m.(*Encapsulated); ok {
		return []any{e.Radius, e.NodeID, normalize(e.Message)}
	}
	return normalize(m)
}
