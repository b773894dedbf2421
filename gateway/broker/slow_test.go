package broker_test

import (
	"bytes"
	"fmt"
	"testing"

	"github.com/eclipse/paho.golang/packets"

	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
)

// TestSlowSubscriberKeepsQoS1: a subscriber stops reading while QoS 0
// messages pile up for it beyond the broker's queue of pending writes, and
// then QoS 1 messages come. The QoS 0 excess may be dropped; the QoS 1
// messages must all arrive once it reads again. (mochi v2.7.9 as released
// dropped them too, rolling them out of flight, when its per-client
// channel of pending writes was full.)
func TestSlowSubscriberKeepsQoS1(t *testing.T) {
	b := startBroker(t)
	recvMax := uint16(20)
	sub, r, _ := dialRaw(t, b, &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: "slow", CleanStart: true, KeepAlive: 60,
		Properties: &packets.Properties{ReceiveMaximum: &recvMax}})
	writePacket(t, sub, &packets.Subscribe{PacketID: 1, Subscriptions: []packets.SubOptions{{Topic: "slow/#", QoS: 1}}, Properties: &packets.Properties{}})
	if cp := readPacket(t, sub, r); cp.Type != packets.SUBACK {
		t.Fatalf("got packet type %d, want SUBACK", cp.Type)
	}

	// The subscriber reads nothing now. Large QoS 0 messages fill the
	// socket buffers, small ones the broker's queue, then QoS 1 follow.
	pub := testbroker.NewObserver(t, "tcp://"+b.Addr().String(), "slow-pub")
	large := bytes.Repeat([]byte("x"), 64<<10)
	for range 300 { // 19 MiB: more than the kernel buffers on both ends hold
		pub.Publish("slow/bulk", large, 0, false)
	}
	for range 1500 {
		pub.Publish("slow/bulk", []byte("small"), 0, false)
	}
	const qos1 = 10
	for i := range qos1 {
		pub.Publish("slow/q1", []byte(fmt.Sprint(i)), 1, false) // returns at the broker's PUBACK
	}

	var got []string
	qos0 := 0
	for len(got) < qos1 {
		cp := readPacket(t, sub, r)
		p, ok := cp.Content.(*packets.Publish)
		if !ok {
			continue
		}
		if p.QoS == 0 {
			qos0++
			continue
		}
		got = append(got, string(p.Payload))
		writePacket(t, sub, &packets.Puback{PacketID: p.PacketID, Properties: &packets.Properties{}})
	}
	want := []string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("QoS 1 messages received %v, want %v", got, want)
	}
	t.Logf("%d of 1800 QoS 0 messages arrived before the last QoS 1", qos0)
}
