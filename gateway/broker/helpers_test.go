package broker_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway/broker"
)

// startBroker starts an embedded broker on a free loopback port and closes
// it in t's cleanup.
func startBroker(t *testing.T) *broker.Broker {
	t.Helper()
	b, err := broker.Start("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// dialRaw connects to b over TCP, sends connect and fails the test unless
// the answer is a CONNACK with reason code 0x00. The connection is closed in
// t's cleanup.
func dialRaw(t *testing.T, b *broker.Broker, connect *packets.Connect) (net.Conn, *bufio.Reader, *packets.Connack) {
	t.Helper()
	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	r := bufio.NewReader(c)
	writePacket(t, c, connect)
	cp := readPacket(t, c, r)
	ca, ok := cp.Content.(*packets.Connack)
	if !ok || ca.ReasonCode != 0 {
		t.Fatalf("got %v, want CONNACK 0x00", cp)
	}
	return c, r, ca
}

func writePacket(t *testing.T, c net.Conn, p io.WriterTo) {
	t.Helper()
	if _, err := p.WriteTo(c); err != nil {
		t.Fatal(err)
	}
}

// readPacket reads the next packet; after 20 s without one the test fails.
func readPacket(t *testing.T, c net.Conn, r *bufio.Reader) *packets.ControlPacket {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	cp, err := packets.ReadPacket(r)
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	return cp
}
