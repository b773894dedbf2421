// Package transport moves datagrams between sensors and the gateway.
//
// It knows nothing of MQTT-SN: a listener owns one socket, runs one read loop
// on it, and hands every datagram to a [Handler] together with the peer's
// address and a [Sender] to answer through. [ListenUDP] opens the plain UDP
// listener; a DTLS listener will sit beside it and call the same Handler type,
// so the gateway does not need to know which one a datagram came from.
//
// # Rules for handlers
//
// A Handler runs on the listener's read goroutine, one datagram at a time:
//
//   - It must not block. While it runs nothing else is read from the socket,
//     and the kernel drops what no longer fits in the socket's receive buffer.
//     Hand work off to a bounded queue and drop (and count) when it is full.
//   - The datagram slice is only valid until the handler returns: the listener
//     reuses one buffer for every read, so the handler copies what it keeps.
//   - A panic in the handler is not recovered here. It unwinds through Serve
//     like any other panic; the caller recovers at its own event boundary.
//
// # Allocation and concurrency
//
// The receive path (read, size check, count, handler call) and
// [UDPListener.WriteTo] do not allocate. WriteTo, Stats, LocalAddr and Close
// are safe for concurrent use, also from inside a handler. All counters are
// atomics; [UDPListener.Stats] returns a snapshot.
//
// # Addresses
//
// Peer addresses are [netip.AddrPort] values. A listener on a dual-stack
// socket (for example ":1883" or "[::]:1883") sees IPv4 peers as IPv4-mapped
// IPv6 addresses; the listener unmaps them, so an IPv4 peer is always reported
// as 1.2.3.4:p and the same peer has the same key whichever socket it used.
// WriteTo accepts both forms.
package transport
