package transport

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// BenchmarkDTLSHandshake measures complete PSK handshakes (AES-128-CCM-8,
// with the HelloVerifyRequest round trip) against one listener on loopback.
// Client and server run in this process, so the rate counts both sides' CPU.
// "serial" is one client after another (latency bound); "parallel" runs
// GOMAXPROCS×4 clients at a time (CPU bound).
func BenchmarkDTLSHandshake(b *testing.B) {
	run := func(b *testing.B, handshake func(*testing.B, netip.AddrPort)) {
		l := listenDTLS(b, "127.0.0.1:0", DTLSOptions{PSK: pskFor, MaxHandshakes: 1024, ReadBuffer: 1 << 20})
		serveDTLS(b, l, func(Sender, netip.AddrPort, []byte) {})
		b.ReportAllocs()
		b.ResetTimer()
		handshake(b, l.LocalAddr())
		b.StopTimer()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "handshakes/s")
		// A client that closes the moment its handshake completes can make
		// pion's server side report its close_notify as the handshake's
		// error (a race inside pion between "Finished sent" and the read
		// loop); a handful of such "failures" per thousand are expected here.
		if s := l.Stats(); s.HandshakesDropped != 0 || s.HandshakesFailed > uint64(b.N)/100 {
			b.Errorf("Stats() = %+v, want no dropped and hardly any failed handshakes", s)
		}
	}
	b.Run("serial", func(b *testing.B) {
		run(b, func(b *testing.B, server netip.AddrPort) {
			for range b.N {
				benchHandshake(b, server)
			}
		})
	})
	b.Run("parallel", func(b *testing.B) {
		run(b, func(b *testing.B, server netip.AddrPort) {
			b.SetParallelism(4)
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					benchHandshake(b, server)
				}
			})
		})
	})
}

// benchHandshake runs one PSK client handshake and closes the client
// (which sends a close_notify, so the server's association ends too).
func benchHandshake(b *testing.B, server netip.AddrPort) {
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	c, err := dtls.ClientWithOptions(pc, net.UDPAddrFromAddrPort(server), pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)...)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.HandshakeContext(ctx); err != nil {
		b.Fatalf("handshake: %v", err)
	}
	_ = c.Close()
}

// BenchmarkDTLSIdleSessionHeap establishes b.N associations, then silences
// and drops every client (as sensors that go quiet), and reports what the
// idle associations cost the server: live heap, goroutine stacks and
// goroutines per association. Run it with a fixed count, for example
// -benchtime=1000x.
func BenchmarkDTLSIdleSessionHeap(b *testing.B) {
	l := listenDTLS(b, "127.0.0.1:0", DTLSOptions{PSK: pskFor, ReadBuffer: 1 << 20})
	serveDTLS(b, l, func(Sender, netip.AddrPort, []byte) {})
	server := net.UDPAddrFromAddrPort(l.LocalAddr())
	opts := pskClient("sensor-1", testPSK, dtls.TLS_PSK_WITH_AES_128_CCM_8)

	// Every client gets its own socket, opened up front and kept open: a
	// closed socket's port could be handed to a later client, whose
	// handshake would then (correctly) replace the idle association.
	socks := make([]*muteConn, b.N+1)
	for i := range socks {
		udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		socks[i] = &muteConn{UDPConn: udp}
	}
	b.Cleanup(func() {
		for _, pc := range socks {
			_ = pc.UDPConn.Close()
		}
	})
	connect := func(pc *muteConn) {
		c, err := dtls.ClientWithOptions(&noCloseConn{pc}, server, opts...)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := c.HandshakeContext(ctx); err != nil {
			b.Fatalf("handshake: %v", err)
		}
		pc.mute.Store(true) // the server hears nothing: its association stays
		_ = c.Close()       // frees the client's DTLS state; the socket stays open
	}
	// settle waits until the clients' goroutines are gone and returns the
	// live heap after a full collection.
	settle := func(wantAssocs int) (runtime.MemStats, int) {
		waitDTLS(b, l, "every association established", func(s DTLSStats) bool { return s.Associations == wantAssocs })
		prev := -1
		for n := runtime.NumGoroutine(); n != prev; n = runtime.NumGoroutine() {
			prev = n
			time.Sleep(100 * time.Millisecond)
		}
		runtime.GC()
		runtime.GC()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		return m, runtime.NumGoroutine()
	}

	connect(socks[0]) // warm pools and lazily built state
	before, g0 := settle(1)
	b.ResetTimer()
	for _, pc := range socks[1:] {
		connect(pc)
	}
	b.StopTimer()
	after, g1 := settle(1 + b.N)
	n := float64(b.N)
	b.ReportMetric((float64(after.HeapAlloc)-float64(before.HeapAlloc))/n, "heap-B/assoc")
	b.ReportMetric((float64(after.StackInuse)-float64(before.StackInuse))/n, "stack-B/assoc")
	b.ReportMetric(float64(g1-g0)/n, "goroutines/assoc")
	b.ReportMetric(0, "ns/op") // the time is the handshakes', not a per-session cost
}

// noCloseConn keeps pion from closing the socket with its client.
type noCloseConn struct{ net.PacketConn }

func (noCloseConn) Close() error { return nil }
