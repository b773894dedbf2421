package broker_test

import (
	"bufio"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"

	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
)

// TestQoS2ReceiptSurvivesReconnect: a client's QoS 2 PUBLISH that the
// broker has answered with PUBREC stays on record, under the client's packet
// identifier, across a lost connection: on resuming the session the broker
// sends the PUBREC again, the client's PUBREL completes it (PUBCOMP 0x00,
// not 0x92, identifier not found), and subscribers get the message once.
// This covers the patched broker's map of the client's identifiers
// (third_party/mochi-mqtt-server, ClientState.Received): carried to the new
// connection and resent there.
func TestQoS2ReceiptSurvivesReconnect(t *testing.T) {
	b := startBroker(t)
	obs := testbroker.NewObserver(t, "tcp://"+b.Addr().String(), "observer")
	obs.Subscribe("q2/#", 2)

	expiry := uint32(60)
	dial := func(clean bool) (net.Conn, *bufio.Reader, *packets.Connack) {
		t.Helper()
		return dialRaw(t, b, &packets.Connect{ProtocolName: "MQTT", ProtocolVersion: 5, ClientID: "q2", CleanStart: clean, KeepAlive: 60,
			Properties: &packets.Properties{SessionExpiryInterval: &expiry}})
	}

	c, r, _ := dial(true)
	const id = 7
	writePacket(t, c, &packets.Publish{PacketID: id, QoS: 2, Topic: "q2/t", Payload: []byte("once"), Properties: &packets.Properties{}})
	if cp := readPacket(t, c, r); cp.Type != packets.PUBREC || cp.PacketID() != id {
		t.Fatalf("got %v, want PUBREC %d", cp, id)
	}
	_ = c.Close() // lost before the PUBREL

	c, r, ca := dial(false)
	if !ca.SessionPresent {
		t.Fatal("CONNACK without session present")
	}
	if cp := readPacket(t, c, r); cp.Type != packets.PUBREC || cp.PacketID() != id {
		t.Fatalf("got %v, want PUBREC %d sent again", cp, id)
	}
	writePacket(t, c, &packets.Pubrel{PacketID: id, Properties: &packets.Properties{}})
	cp := readPacket(t, c, r)
	if pc, ok := cp.Content.(*packets.Pubcomp); !ok || pc.PacketID != id || pc.ReasonCode != 0 {
		t.Fatalf("got %v, want PUBCOMP %d 0x00", cp, id)
	}
	if m := obs.Expect(5 * time.Second); m.Topic != "q2/t" || string(m.Payload) != "once" {
		t.Fatalf("observer got %v", m)
	}
	obs.ExpectNone(200 * time.Millisecond)
}
