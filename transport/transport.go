package transport

import "net/netip"

// Sender sends datagrams to peers through one listener.
//
// [UDPListener] implements it; the DTLS listener will too, so a handler and the
// sessions it feeds can answer a peer without knowing how the peer is connected.
type Sender interface {
	// WriteTo sends b as one datagram to the peer at addr. It is safe for
	// concurrent use and does not retain b.
	WriteTo(b []byte, addr netip.AddrPort) error

	// LocalAddr returns the address the listener is bound to.
	LocalAddr() netip.AddrPort
}

// Handler is called by a listener's read loop for every datagram it accepts.
//
// s is the listener that read the datagram, from the peer's address (never an
// IPv4-mapped IPv6 address) and b the datagram. b aliases the listener's read
// buffer and is overwritten by the next read: copy what you keep. The handler
// runs on the read goroutine and must not block; a panic in it is not
// recovered by the listener.
type Handler func(s Sender, from netip.AddrPort, b []byte)
