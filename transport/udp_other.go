//go:build !linux || 386

package transport

import (
	"net"
	"net/netip"
)

// rawReader is for Linux (not 386, whose socket calls go through
// socketcall): elsewhere net's read is used.
func rawReader(*net.UDPConn) readFunc { return nil }

// rawSender likewise: elsewhere net's write is used.
type rawSender struct{}

func newRawSender(*net.UDPConn) *rawSender { return nil }

// send leaves every datagram to net.
func (*rawSender) send([]byte, netip.AddrPort) error { return errNotRaw }

// retire has nothing to stop.
func (*rawSender) retire() {}
