package upstream

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

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
	nc, peer := tcpPair(t)

	const n = 300
	counted := &countingConn{Conn: nc}
	pc := newPacketConn(counted, nil)
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

// TestPacketConnTakesAcks: acknowledgements are taken out of the stream
// and handed over with their identifier and reason code, however the
// octets arrive; paho reads every other packet whole and in order,
// including ones larger than the read buffer.
func TestPacketConnTakesAcks(t *testing.T) {
	for _, mode := range readModes {
		t.Run(mode.String(), func(t *testing.T) { testPacketConnTakesAcks(t, mode) })
	}
}

// readMode is how packetConn reads its connection.
type readMode int

const (
	modePlain   readMode = iota // a bare TCP connection
	modeRaw                     // a connWriter: acknowledgements are handled within the raw read
	modeWatched                 // a connWriter in a hangupWatch: it also waits after a short read
)

var readModes = []readMode{modePlain, modeRaw, modeWatched}

func (m readMode) String() string { return [...]string{"plain", "raw", "watched"}[m] }

// readerConn returns nc as mode reads it; a watched connection is in a
// hangupWatch of its own.
func readerConn(t *testing.T, nc net.Conn, mode readMode) net.Conn {
	t.Helper()
	if mode == modePlain {
		return nc
	}
	w := newConnWriter(nc)
	if runtime.GOOS != "linux" {
		t.Skipf("no raw reads on %s", runtime.GOOS)
	}
	if !w.rd.usable() {
		t.Fatal("no raw reads on a TCP connection")
	}
	if mode == modeWatched {
		h := new(hangupWatch)
		h.add(w)
		if !w.mayWait() {
			t.Fatal("the connection is not watched")
		}
		t.Cleanup(func() { _ = w.Close() })
	}
	return w
}

// testPacketConnTakesAcks runs TestPacketConnTakesAcks: on a connWriter,
// the acknowledgements are handled within the read, and the reader waits
// for the next octets without reading again (after a read that found the
// socket empty, or that took less than it could if watched): a wake-up
// lost there stalls the reader, which the read deadline turns into a
// failure.
func testPacketConnTakesAcks(t *testing.T, mode readMode) {
	nc, peer := tcpPair(t)
	_ = nc.SetReadDeadline(time.Now().Add(20 * time.Second))
	nc = readerConn(t, nc, mode)
	longReason := strings.Repeat("r", 300) // an acknowledgement larger than the read buffer
	big := bytes.Repeat([]byte("p"), 1000)
	var stream bytes.Buffer
	write := func(p io.WriterTo) {
		if _, err := p.WriteTo(&stream); err != nil {
			t.Fatal(err)
		}
	}
	stream.Write(ackPacket(packets.PUBACK, 1))
	write(&packets.Suback{PacketID: 2, Reasons: []byte{1}, Properties: &packets.Properties{}})
	write(&packets.Pubrec{PacketID: 3, ReasonCode: 0x10, Properties: &packets.Properties{}})
	write(&packets.Publish{Topic: "cmd/big", QoS: 1, PacketID: 4, Payload: big, Properties: &packets.Properties{}})
	write(&packets.Pubcomp{PacketID: 5, ReasonCode: 0x92, Properties: &packets.Properties{ReasonString: longReason}})
	stream.Write(ackPacket(packets.PUBREL, 6))
	write(&packets.Unsuback{PacketID: 7, Reasons: []byte{0}, Properties: &packets.Properties{}})
	stream.Write([]byte{packets.PUBACK << 4, 3, 0, 8, 0x97}) // reason code, no properties

	type ack struct {
		kind byte
		id   uint16
		rc   byte
	}
	var got []ack
	pc := newPacketConn(nc, func(kind byte, id uint16, rc byte) { got = append(got, ack{kind, id, rc}) })
	go func() {
		// In pieces, so that headers and bodies are split: octet by octet
		// at first, then 37 at a time.
		for b := stream.Bytes(); len(b) > 0; {
			n := min(len(b), 37)
			if len(b) > stream.Len()-64 {
				n = 1
			}
			if _, err := peer.Write(b[:n]); err != nil {
				return
			}
			b = b[n:]
			time.Sleep(100 * time.Microsecond)
		}
		_ = peer.Close()
	}()

	var types []byte
	for {
		cp, err := packets.ReadPacket(pc)
		if err != nil {
			if !errors.Is(err, io.EOF) {
				t.Fatalf("after packets %v: %v", types, err)
			}
			break
		}
		types = append(types, cp.Type)
		if p, ok := cp.Content.(*packets.Publish); ok && (p.PacketID != 4 || !bytes.Equal(p.Payload, big)) {
			t.Errorf("PUBLISH read as id %d with %d octets of payload", p.PacketID, len(p.Payload))
		}
	}
	if want := []byte{packets.SUBACK, packets.PUBLISH, packets.UNSUBACK}; !bytes.Equal(types, want) {
		t.Errorf("paho read packet types %v, want %v", types, want)
	}
	want := []ack{{packets.PUBACK, 1, 0}, {packets.PUBREC, 3, 0x10}, {packets.PUBCOMP, 5, 0x92}, {packets.PUBREL, 6, 0}, {packets.PUBACK, 8, 0x97}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("acknowledgements taken: %v, want %v", got, want)
	}
}

// tcpPair returns the two ends of a loopback TCP connection.
func tcpPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return tcpPairOn(t, ln)
}

// tcpPairOn returns the two ends of a new connection to ln.
func tcpPairOn(t *testing.T, ln net.Listener) (net.Conn, net.Conn) {
	t.Helper()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	nc, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	peer := <-accepted
	if peer == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { _ = nc.Close(); _ = peer.Close() })
	return nc, peer
}

// TestPacketConnSeesEndAfterAck: the end of the stream (FIN) or a reset
// (RST) that comes right after an acknowledgement is reported to paho's
// reader at once, whether it arrives before the reader starts or while it
// waits. (A read that takes the last acknowledgement may take the FIN
// with it, and neither raises a new readiness: the raw reader reads again,
// or, watched, is woken by its hangupWatch.)
func TestPacketConnSeesEndAfterAck(t *testing.T) {
	for _, mode := range readModes {
		for _, reset := range []bool{false, true} {
			for _, waiting := range []bool{false, true} {
				name := fmt.Sprintf("%v/reset=%v/waiting=%v", mode, reset, waiting)
				t.Run(name, func(t *testing.T) {
					for range 10 {
						testPacketConnSeesEndAfterAck(t, mode, reset, waiting)
					}
				})
			}
		}
	}
}

func testPacketConnSeesEndAfterAck(t *testing.T, mode readMode, reset, waiting bool) {
	nc, peer := tcpPair(t)
	nc = readerConn(t, nc, mode)
	acked := make(chan uint16, 1)
	pc := newPacketConn(nc, func(_ byte, id uint16, _ byte) { acked <- id })
	end := func() {
		if _, err := peer.Write(ackPacket(packets.PUBACK, 1)); err != nil {
			t.Fatal(err)
		}
		if reset {
			_ = peer.(*net.TCPConn).SetLinger(0)
		}
		_ = peer.Close()
	}
	if !waiting {
		end()
		time.Sleep(5 * time.Millisecond) // both arrive before the reader reads
	}
	result := make(chan error, 1)
	go func() {
		_, err := packets.ReadPacket(pc)
		result <- err
	}()
	if waiting {
		time.Sleep(5 * time.Millisecond) // the reader waits in the poller
		end()
	}
	awaitEnd(t, result, "the connection's end after an acknowledgement not reported within 5 s")
	if id := <-acked; id != 1 {
		t.Errorf("acknowledgement %d handed over, want 1", id)
	}
}

// awaitEnd waits up to 5 s for what packets.ReadPacket returned, which
// must be the connection's end; stalled is the failure if it does not come.
func awaitEnd(t *testing.T, result <-chan error, stalled string) {
	t.Helper()
	select {
	case err := <-result:
		if err == nil {
			t.Fatal("ReadPacket returned a packet; want the connection's end")
		}
	case <-time.After(5 * time.Second):
		t.Fatal(stalled)
	}
}
