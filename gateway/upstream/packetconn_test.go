package upstream

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

func TestPacketLength(t *testing.T) {
	for _, tt := range []struct {
		b    []byte
		want int
	}{
		{nil, 0},
		{[]byte{0x30}, 0},
		{[]byte{0x40, 0x02}, 4},
		{[]byte{0xc0, 0x00}, 2},
		{[]byte{0x30, 0x80}, 0},               // length continues
		{[]byte{0x30, 0x80, 0x01}, 3 + 128},   // 128
		{[]byte{0x30, 0xff, 0x7f}, 3 + 16383}, // 16383
		{[]byte{0x30, 0x80, 0x80, 0x80, 0x01}, 5 + 1<<21},
	} {
		if got := packetLength(tt.b); got != tt.want {
			t.Errorf("packetLength(% x) = %d, want %d", tt.b, got, tt.want)
		}
	}
}

// TestPacketConnWholePackets: paho writes a PUBLISH through packetConn in
// pieces while another goroutine writes acknowledgements straight to the
// connection; each PUBLISH reaches the connection in one write, so that
// nothing can come between its pieces, and the peer reads every packet
// whole.
func TestPacketConnWholePackets(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	defer peer.Close()

	const n = 300
	counted := &countingConn{Conn: nc}
	pc := newPacketConn(counted)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for i := range n {
			p := &packets.Publish{Topic: "sensors/t1", QoS: 1, PacketID: uint16(i + 1), Payload: []byte("21.5"), Properties: &packets.Properties{}}
			if _, err := p.WriteTo(pc); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		for i := range n {
			if _, err := nc.Write(ackPacket(packets.PUBACK, uint16(i+1))); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	publishes, acks := 0, 0
	for publishes+acks < 2*n {
		cp, err := packets.ReadPacket(peer)
		if err != nil {
			t.Fatalf("after %d PUBLISH and %d PUBACK: %v", publishes, acks, err)
		}
		switch p := cp.Content.(type) {
		case *packets.Publish:
			publishes++
			if p.Topic != "sensors/t1" || string(p.Payload) != "21.5" || p.PacketID != uint16(publishes) {
				t.Fatalf("PUBLISH %d: topic %q payload %q id %d", publishes, p.Topic, p.Payload, p.PacketID)
			}
		case *packets.Puback:
			acks++
			if p.PacketID != uint16(acks) {
				t.Fatalf("PUBACK %d has id %d", acks, p.PacketID)
			}
		default:
			t.Fatalf("unexpected packet type %d", cp.Type)
		}
	}
	wg.Wait()
	if w := counted.writes.Load(); w != n {
		t.Errorf("%d PUBLISHes took %d writes on the connection, want one each", n, w)
	}
}

// countingConn counts the writes made on a connection.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}
