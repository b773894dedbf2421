package mqttsn

// Advertise is the ADVERTISE message a gateway broadcasts periodically (§5.4.1).
type Advertise struct {
	GwID     uint8
	Duration uint16 // seconds until the gateway's next ADVERTISE
}

// SearchGW is the SEARCHGW message a client broadcasts to find a gateway (§5.4.2).
type SearchGW struct {
	Radius uint8 // broadcast radius in hops; 0 means the whole network
}

// GwInfo is the GWINFO message answering a SEARCHGW (§5.4.3). A gateway sends
// it without GwAdd; a client answering on a gateway's behalf adds the
// gateway's address (A18: raw bytes to the end, in the network's format).
type GwInfo struct {
	GwID  uint8
	GwAdd []byte
}

// Type returns TypeAdvertise.
func (*Advertise) Type() Type { return TypeAdvertise }

// AppendBinary appends the wire form of m to dst.
func (m *Advertise) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeAdvertise, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *Advertise) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Advertise) bodyLen() int { return 3 }

func (m *Advertise) appendBody(dst []byte) []byte {
	return appendU16(append(dst, m.GwID), m.Duration)
}

func (m *Advertise) decodeBody(b []byte) error {
	if err := wantBody(TypeAdvertise, b, 3); err != nil {
		return err
	}
	*m = Advertise{GwID: b[0], Duration: u16(b[1:])}
	return nil
}

// Type returns TypeSearchGW.
func (*SearchGW) Type() Type { return TypeSearchGW }

// AppendBinary appends the wire form of m to dst.
func (m *SearchGW) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeSearchGW, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *SearchGW) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *SearchGW) bodyLen() int { return 1 }

func (m *SearchGW) appendBody(dst []byte) []byte { return append(dst, m.Radius) }

func (m *SearchGW) decodeBody(b []byte) error {
	if err := wantBody(TypeSearchGW, b, 1); err != nil {
		return err
	}
	m.Radius = b[0]
	return nil
}

// Type returns TypeGwInfo.
func (*GwInfo) Type() Type { return TypeGwInfo }

// AppendBinary appends the wire form of m to dst.
func (m *GwInfo) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkLen(TypeGwInfo, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypeGwInfo, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *GwInfo) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *GwInfo) bodyLen() int { return 1 + len(m.GwAdd) }

func (m *GwInfo) appendBody(dst []byte) []byte { return append(append(dst, m.GwID), m.GwAdd...) }

func (m *GwInfo) decodeBody(b []byte) error {
	if err := wantBodyAtLeast(TypeGwInfo, b, 1); err != nil {
		return err
	}
	m.GwID = b[0]
	m.GwAdd = copyBytes(m.GwAdd, b[1:])
	return nil
}

// copyBytes copies src into dst's storage when it fits, else into a new
// slice; an empty src gives nil so that decoded values compare equal.
func copyBytes(dst, src []byte) []byte {
	if len(src) == 0 {
		return nil
	}
	return append(dst[:0], src...)
}
