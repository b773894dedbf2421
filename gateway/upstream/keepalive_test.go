package upstream_test

import (
	"bytes"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/upstream"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
)

// TestKeepAlive: an idle connection is kept open with PINGREQs, and one
// whose broker stops answering (a frozen path: no FIN, no RST) is reported
// lost within two keep-alive periods.
func TestKeepAlive(t *testing.T) {
	const keepAlive = 2 * time.Second
	testbroker.ForEach(t, func(t *testing.T, url string) {
		p := startFreezer(t, url[len("tcp://"):])
		up := newUpstream(t, upstream.Options{URL: "tcp://" + p.addr(), KeepAlive: keepAlive})
		h := newRecorder(t)
		connect(t, up, gateway.ConnectParams{ClientID: "idle", CleanStart: true}, h)

		h.expectNoLoss(2*keepAlive + keepAlive/4)
		if n := p.pings(); n < 2 {
			t.Errorf("%d PINGREQs in %v of idleness with keep-alive %v; want at least 2", n, 2*keepAlive+keepAlive/4, keepAlive)
		}

		p.freeze()
		frozen := time.Now()
		err := h.expectLoss(2*keepAlive + time.Second)
		t.Logf("lost %v after the freeze: %v", time.Since(frozen).Round(time.Millisecond), err)
	})
}

// freezer is a TCP proxy to a broker that counts the client's PINGREQs
// and can stop forwarding in both directions while keeping the sockets
// open, as a dead network path would.
type freezer struct {
	ln     net.Listener
	frozen atomic.Bool
	mu     sync.Mutex
	toPeer bytes.Buffer // what the client sent
}

func startFreezer(t *testing.T, broker string) *freezer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &freezer{ln: ln}
	var conns []net.Conn
	var mu sync.Mutex
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			client, err := ln.Accept()
			if err != nil {
				return
			}
			server, err := net.Dial("tcp", broker)
			if err != nil {
				_ = client.Close()
				continue
			}
			mu.Lock()
			conns = append(conns, client, server)
			mu.Unlock()
			go f.pipe(server, client, true)
			go f.pipe(client, server, false)
		}
	}()
	return f
}

func (f *freezer) addr() string { return f.ln.Addr().String() }

// pipe copies from src to dst until an error, or until frozen, after which
// it reads nothing more.
func (f *freezer) pipe(dst io.Writer, src io.Reader, fromClient bool) {
	buf := make([]byte, 4096)
	for {
		n, err := src.Read(buf)
		if f.frozen.Load() {
			return
		}
		if fromClient {
			f.mu.Lock()
			f.toPeer.Write(buf[:n])
			f.mu.Unlock()
		}
		if _, werr := dst.Write(buf[:n]); werr != nil || err != nil {
			return
		}
	}
}

func (f *freezer) freeze() { f.frozen.Store(true) }

// pings counts the PINGREQs (0xC0 0x00) the client sent; nothing else it
// sends in this test holds those octets after the CONNECT.
func (f *freezer) pings() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return bytes.Count(f.toPeer.Bytes(), []byte{0xC0, 0x00})
}
