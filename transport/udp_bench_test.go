package transport

import (
	"net/netip"
	"testing"
)

// BenchmarkUDPRoundTrip measures one echo over loopback: client write,
// listener read, handler, WriteTo, client read. allocs/op covers both sides.
func BenchmarkUDPRoundTrip(b *testing.B) {
	for _, lb := range loopbacks {
		b.Run(lb.name, func(b *testing.B) {
			skipWithoutLoopback(b, lb.addr)
			l := listen(b, lb.addr, UDPOptions{})
			startServe(b, l, func(s Sender, from netip.AddrPort, p []byte) {
				if err := s.WriteTo(p, from); err != nil {
					b.Errorf("WriteTo: %v", err)
				}
			})
			c := dial(b, l.LocalAddr())
			msg := make([]byte, 64)
			buf := make([]byte, 2048)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := c.Read(buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkServe measures the receive path alone: a client sends windows of
// datagrams and waits until the handler has seen each window, so the kernel
// buffer never overflows and nothing is lost.
func BenchmarkServe(b *testing.B) {
	const window = 32
	for _, lb := range loopbacks {
		b.Run(lb.name, func(b *testing.B) {
			skipWithoutLoopback(b, lb.addr)
			l := listen(b, lb.addr, UDPOptions{})
			seen := make(chan struct{}, window)
			startServe(b, l, func(Sender, netip.AddrPort, []byte) {
				seen <- struct{}{} // never blocks: at most one window is in flight
			})
			c := dial(b, l.LocalAddr())
			msg := make([]byte, 64)
			b.SetBytes(int64(len(msg)))
			b.ReportAllocs()
			b.ResetTimer()
			for sent := 0; sent < b.N; {
				n := min(window, b.N-sent)
				for range n {
					if _, err := c.Write(msg); err != nil {
						b.Fatal(err)
					}
				}
				for range n {
					<-seen
				}
				sent += n
			}
		})
	}
}
