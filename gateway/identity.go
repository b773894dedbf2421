package gateway

import (
	"slices"

	"github.com/sensorgate/mqttsn-gateway/transport"
)

// Authenticated transports (DTLS) tell the gateway who a peer proved to be.
// With BindClientID a peer may only CONNECT with a ClientId its identity
// allows (the PSK entry's client_id, the certificate's CN or a DNS SAN), and
// a session created by an authenticated peer is owned by that identity: no
// other identity, and no unauthenticated peer, can take it over or wake it.
// A sleeping session may move to a new address (a new handshake) when the
// new peer has the owner's identity, whatever AllowAddressChange says (A9).

// identityOf returns the authenticated identity behind p, if its transport
// has one.
func identityOf(p peer) (transport.Identity, bool) {
	if id, ok := p.via.(transport.Identified); ok {
		if ident := id.Identity(); !ident.Empty() {
			return ident, true
		}
	}
	return transport.Identity{}, false
}

// ownerKey names the identity behind p for session ownership: "" for an
// unauthenticated peer.
func ownerKey(p peer) string {
	id, ok := identityOf(p)
	switch {
	case !ok:
		return ""
	case id.PSKIdentity != "":
		return "psk:" + id.PSKIdentity
	case id.CertCommonName != "":
		return "cert:" + id.CertCommonName
	default:
		return "cert-san:" + id.CertDNSNames[0]
	}
}

// clientIDAllowed reports whether the peer p may use clientID: always for
// an unauthenticated peer or without BindClientID, otherwise when its
// identity allows it.
func (g *Gateway) clientIDAllowed(p peer, clientID string) bool {
	id, ok := identityOf(p)
	if !ok || !g.cfg.BindClientID {
		return true
	}
	if g.cfg.ClientIDsOf != nil {
		return slices.Contains(g.cfg.ClientIDsOf(id), clientID)
	}
	return defaultClientIDs(id, clientID)
}

// defaultClientIDs is the binding without a PSK table: the PSK identity, the
// certificate's CN or one of its DNS names.
func defaultClientIDs(id transport.Identity, clientID string) bool {
	return clientID == id.PSKIdentity || clientID == id.CertCommonName || slices.Contains(id.CertDNSNames, clientID)
}
