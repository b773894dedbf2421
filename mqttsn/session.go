package mqttsn

// PingReq is the PINGREQ message (§5.4.19). A sleeping client that wakes up
// to collect its buffered messages puts its ClientID in it (§6.14); an
// active client leaves it empty.
type PingReq struct {
	ClientID string
}

// PingResp is the PINGRESP message answering a PINGREQ (§5.4.20).
type PingResp struct{}

// Disconnect is the DISCONNECT message (§5.4.21). A client going to sleep
// sends it with a Duration (HasDuration true); decision A10 treats a
// Duration of 0 as a plain DISCONNECT, but the codec keeps the difference so
// that what it decodes re-encodes byte for byte.
type Disconnect struct {
	HasDuration bool
	Duration    uint16 // sleep duration in seconds, when HasDuration
}

// SleepDuration returns the sleep duration in seconds and true when the
// message asks for sleep: a Duration is present and not 0 (A10).
func (m *Disconnect) SleepDuration() (uint16, bool) {
	return m.Duration, m.HasDuration && m.Duration > 0
}

// Type returns TypePingReq.
func (*PingReq) Type() Type { return TypePingReq }

// AppendBinary appends the wire form of m to dst.
func (m *PingReq) AppendBinary(dst []byte) ([]byte, error) {
	if err := checkLen(TypePingReq, m.bodyLen()); err != nil {
		return dst, err
	}
	return m.appendBody(appendHeader(dst, TypePingReq, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *PingReq) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *PingReq) bodyLen() int                 { return len(m.ClientID) }
func (m *PingReq) appendBody(dst []byte) []byte { return append(dst, m.ClientID...) }
func (m *PingReq) decodeBody(b []byte) error {
	m.ClientID = string(b)
	return nil
}

// Type returns TypePingResp.
func (*PingResp) Type() Type { return TypePingResp }

// AppendBinary appends the wire form of m to dst.
func (m *PingResp) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypePingResp, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *PingResp) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *PingResp) bodyLen() int                 { return 0 }
func (m *PingResp) appendBody(dst []byte) []byte { return dst }
func (m *PingResp) decodeBody(b []byte) error    { return wantBody(TypePingResp, b, 0) }

// Type returns TypeDisconnect.
func (*Disconnect) Type() Type { return TypeDisconnect }

// AppendBinary appends the wire form of m to dst.
func (m *Disconnect) AppendBinary(dst []byte) ([]byte, error) {
	return m.appendBody(appendHeader(dst, TypeDisconnect, m.bodyLen())), nil
}

// UnmarshalBinary decodes the datagram b into m.
func (m *Disconnect) UnmarshalBinary(b []byte) error { return unmarshal(m, b) }

func (m *Disconnect) bodyLen() int {
	if m.HasDuration {
		return 2
	}
	return 0
}

func (m *Disconnect) appendBody(dst []byte) []byte {
	if m.HasDuration {
		return appendU16(dst, m.Duration)
	}
	return dst
}

func (m *Disconnect) decodeBody(b []byte) error {
	switch len(b) {
	case 0:
		*m = Disconnect{}
	case 2:
		*m = Disconnect{HasDuration: true, Duration: u16(b)}
	default:
		return malformed(TypeDisconnect, itoa(len(b)+2)+" octets, expected 2 or 4")
	}
	return nil
}
