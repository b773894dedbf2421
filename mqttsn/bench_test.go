package mqttsn

import (
	"bytes"
	"testing"
)

func benchPublish() *Publish {
	return &Publish{QoS: QoS1, TopicIDType: TopicIDNormal, TopicID: 1, MsgID: 0x1234, Data: bytes.Repeat([]byte{'x'}, 32)}
}

func benchConnect() *Connect {
	return &Connect{CleanSession: true, Duration: 60, ClientID: "temp-sensor-0001"}
}

func benchRegister() *Register {
	return &Register{MsgID: 7, TopicName: "building/3/floor/2/temperature"}
}

func benchDecode(b *testing.B, m Message) {
	wire, err := m.AppendBinary(nil)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		if _, err := Decode(wire); err != nil {
			b.Fatal(err)
		}
	}
}

func benchEncode(b *testing.B, m Message) {
	buf := make([]byte, 0, 512)
	b.ReportAllocs()
	for b.Loop() {
		var err error
		if buf, err = m.AppendBinary(buf[:0]); err != nil {
			b.Fatal(err)
		}
	}
	b.SetBytes(int64(len(buf)))
}

func BenchmarkDecodePublish(b *testing.B)  { benchDecode(b, benchPublish()) }
func BenchmarkEncodePublish(b *testing.B)  { benchEncode(b, benchPublish()) }
func BenchmarkDecodeConnect(b *testing.B)  { benchDecode(b, benchConnect()) }
func BenchmarkEncodeConnect(b *testing.B)  { benchEncode(b, benchConnect()) }
func BenchmarkDecodeRegister(b *testing.B) { benchDecode(b, benchRegister()) }
func BenchmarkEncodeRegister(b *testing.B) { benchEncode(b, benchRegister()) }

// BenchmarkUnmarshalPublish decodes into one reused Publish, the
// allocation-free path.
func BenchmarkUnmarshalPublish(b *testing.B) {
	wire, _ := benchPublish().AppendBinary(nil)
	var p Publish
	b.ReportAllocs()
	b.SetBytes(int64(len(wire)))
	for b.Loop() {
		if err := p.UnmarshalBinary(wire); err != nil {
			b.Fatal(err)
		}
	}
}

// TestHotPathAllocations pins the allocation targets the benchmarks
// report: PUBLISH decodes with at most one allocation, decodes into a
// reused value and encodes into a reused buffer with none.
func TestHotPathAllocations(t *testing.T) {
	p := benchPublish()
	wire, _ := p.AppendBinary(nil)
	buf := make([]byte, 0, 128)
	var reused Publish
	cases := []struct {
		name string
		max  float64
		fn   func()
	}{
		{"Decode PUBLISH", 1, func() { _, _ = Decode(wire) }},
		{"Publish.UnmarshalBinary into a reused value", 0, func() { _ = reused.UnmarshalBinary(wire) }},
		{"Publish.AppendBinary into a reused buffer", 0, func() { buf, _ = p.AppendBinary(buf[:0]) }},
		{"Connect.AppendBinary into a reused buffer", 0, func() { buf, _ = benchConnect().AppendBinary(buf[:0]) }},
		{"Register.AppendBinary into a reused buffer", 0, func() { buf, _ = benchRegister().AppendBinary(buf[:0]) }},
	}
	for _, c := range cases {
		if got := testing.AllocsPerRun(100, c.fn); got > c.max {
			t.Errorf("%s: %.0f allocations, want at most %.0f", c.name, got, c.max)
		}
	}
}
