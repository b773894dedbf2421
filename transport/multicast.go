package transport

import (
	"fmt"
	"net"
	"net/netip"

	"golang.org/x/net/ipv4"
	"golang.org/x/net/ipv6"
)

// Multicast sends datagrams to one multicast group, out of one interface,
// with a bounded TTL (hop limit): how a gateway announces itself on its
// network without reaching any other.
type Multicast struct {
	conn  *net.UDPConn
	group *net.UDPAddr
}

// DialMulticast opens a socket on local (port 0) that sends to group with
// the given TTL out of the interface that has local's address; an
// unspecified local leaves the interface to the routing table. Datagrams
// are looped back to listeners on this host too.
func DialMulticast(group netip.AddrPort, local netip.Addr, ttl int) (*Multicast, error) {
	fail := func(err error) (*Multicast, error) {
		return nil, fmt.Errorf("transport: multicast to %s from %s: %w", group, local, err)
	}
	if !group.Addr().IsMulticast() {
		return fail(fmt.Errorf("%s is not a multicast address", group.Addr()))
	}
	if group.Addr().Is4() != local.Unmap().Is4() {
		return fail(fmt.Errorf("the group and the local address are not of one IP version"))
	}
	ifi, err := interfaceOf(local)
	if err != nil {
		return fail(err)
	}
	network := "udp4"
	if group.Addr().Is6() {
		network = "udp6"
	}
	conn, err := net.ListenUDP(network, net.UDPAddrFromAddrPort(netip.AddrPortFrom(local.Unmap(), 0)))
	if err != nil {
		return fail(err)
	}
	if group.Addr().Is4() {
		pc := ipv4.NewPacketConn(conn)
		if ifi != nil {
			err = pc.SetMulticastInterface(ifi)
		}
		if err == nil {
			err = pc.SetMulticastTTL(ttl)
		}
		if err == nil {
			err = pc.SetMulticastLoopback(true)
		}
	} else {
		pc := ipv6.NewPacketConn(conn)
		if ifi != nil {
			err = pc.SetMulticastInterface(ifi)
		}
		if err == nil {
			err = pc.SetMulticastHopLimit(ttl)
		}
		if err == nil {
			err = pc.SetMulticastLoopback(true)
		}
	}
	if err != nil {
		_ = conn.Close()
		return fail(err)
	}
	return &Multicast{conn: conn, group: net.UDPAddrFromAddrPort(group)}, nil
}

// interfaceOf returns the interface that has the address a, or nil for an
// unspecified address.
func interfaceOf(a netip.Addr) (*net.Interface, error) {
	a = a.Unmap()
	if a.IsUnspecified() {
		return nil, nil
	}
	ifis, err := net.Interfaces()
	if err != nil {
		return nil, err
	}
	for i := range ifis {
		addrs, err := ifis[i].Addrs()
		if err != nil {
			continue
		}
		for _, ad := range addrs {
			if ipn, ok := ad.(*net.IPNet); ok {
				if ip, ok := netip.AddrFromSlice(ipn.IP); ok && ip.Unmap() == a {
					return &ifis[i], nil
				}
			}
		}
	}
	return nil, fmt.Errorf("no interface has the address %s", a)
}

// Send sends b to the group as one datagram.
func (m *Multicast) Send(b []byte) error {
	if _, err := m.conn.WriteToUDP(b, m.group); err != nil {
		return fmt.Errorf("transport: multicast to %s: %w", m.group, err)
	}
	return nil
}

// Group returns the group the datagrams go to.
func (m *Multicast) Group() netip.AddrPort { return m.group.AddrPort() }

// Close closes the socket.
func (m *Multicast) Close() error { return m.conn.Close() }
