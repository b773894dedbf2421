package gateway

import (
	"fmt"
	"net/netip"
	"time"

	"github.com/sensorgate/mqttsn-gateway/topicmap"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// Config is the gateway core's configuration: plain values, already
// validated by the config loader (gateway/config); New fills in defaults
// for zero values.
type Config struct {
	GatewayID          uint8         // GwId
	MaxClients         int           // sessions at once, persisted ones included; CONNACK 0x01 beyond
	MaxClientIDLength  int           // longest ClientId accepted (A15)
	MaxTopics          int           // normal topic ids per client (A3)
	RetryInterval      time.Duration // Tretry for gateway-initiated requests
	MaxRetries         int           // Nretry; then the client is lost
	AllowZeroKeepAlive bool          // accept CONNECT with keep-alive 0 (A7); off by default
	SessionExpiry      time.Duration // how long a CleanSession=0 session outlives its connection; 0: not at all
	UpstreamTimeout    time.Duration // bound on one upstream request (connect, publish, subscribe)
	ReceiveMaximum     int           // downlink QoS 1/2 messages the broker may have in flight per client
	MaxDatagram        int           // largest datagram sent to a client; larger broker messages are dropped (§6.5)
	Predefined         *topicmap.Predefined

	// Sleeping clients (§6.14). The sleep timer is a DISCONNECT's Duration
	// × SleepTolerance; a sleeping client's queue holds at most
	// SleepMaxMessages messages and SleepMaxBytes octets of topic and
	// payload, QoS 0 included when SleepBufferQoS0. AllowAddressChange lets
	// a sleeping client wake up, or CONNECT, from a new address (A9).
	SleepTolerance     float64
	SleepMaxMessages   int
	SleepMaxBytes      int
	SleepBufferQoS0    bool
	AllowAddressChange bool

	// GWInfoDelayMax delays each GWINFO answer by a random time up to it
	// (§6.1); see also Gateway.SetGWInfoMulticast.
	GWInfoDelayMax time.Duration

	// AcceptForwarders accepts frames a forwarder wrapped (§5.5): each node
	// behind a forwarder is a client of its own, keyed by the forwarder's
	// address and the node id, and its replies are wrapped the same way.
	AcceptForwarders bool

	// BindClientID binds a ClientId to the identity a peer authenticated on
	// its transport (DTLS): a CONNECT whose ClientId the identity does not
	// allow gets CONNACK 0x03. ClientIDsOf returns the ClientIds an identity
	// allows; nil means the PSK identity itself, the certificate's CN or a
	// DNS SAN.
	BindClientID bool
	ClientIDsOf  func(transport.Identity) []string

	// QoSMinus1 enables PUBLISH with QoS −1 from unconnected senders (A16),
	// forwarded at QoS 0 over one shared upstream connection whose ClientID
	// is QoSMinus1ClientID.
	QoSMinus1         bool
	QoSMinus1ClientID string
	// QoSMinus1Senders limits QoS −1 to senders in these networks; empty
	// means any sender (A16).
	QoSMinus1Senders []netip.Prefix
}

// KeepAliveTolerance multiplies a client's keep-alive Duration to give
// the silence after which the gateway counts the client as lost (MQTT-SN
// 1.2 §6.17, as MQTT's one and a half times).
const KeepAliveTolerance = 1.5

// Defaults for zero Config fields.
const (
	DefaultMaxClients        = 10000
	DefaultMaxClientIDLength = 64
	DefaultRetryInterval     = 10 * time.Second
	DefaultUpstreamTimeout   = 10 * time.Second
	DefaultReceiveMaximum    = 16
	DefaultMaxDatagram       = 1500
	DefaultSleepTolerance    = 1.5
	DefaultSleepMaxMessages  = 100
	DefaultSleepMaxBytes     = 64 << 10
)

// withDefaults returns c with zero fields set to their defaults, or an
// error for a value no default can mend.
func (c Config) withDefaults() (Config, error) {
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.MaxClientIDLength == 0 {
		c.MaxClientIDLength = DefaultMaxClientIDLength
	}
	if c.MaxTopics == 0 {
		c.MaxTopics = topicmap.DefaultMaxTopics
	}
	if c.RetryInterval == 0 {
		c.RetryInterval = DefaultRetryInterval
	}
	if c.UpstreamTimeout == 0 {
		c.UpstreamTimeout = DefaultUpstreamTimeout
	}
	if c.ReceiveMaximum == 0 {
		c.ReceiveMaximum = DefaultReceiveMaximum
	}
	if c.MaxDatagram == 0 {
		c.MaxDatagram = DefaultMaxDatagram
	}
	if c.SleepTolerance == 0 {
		c.SleepTolerance = DefaultSleepTolerance
	}
	if c.SleepMaxMessages == 0 {
		c.SleepMaxMessages = DefaultSleepMaxMessages
	}
	if c.SleepMaxBytes == 0 {
		c.SleepMaxBytes = DefaultSleepMaxBytes
	}
	if c.QoSMinus1ClientID == "" {
		c.QoSMinus1ClientID = fmt.Sprintf("mqttsn-gateway-%d-qos-1", c.GatewayID)
	}
	switch {
	case c.MaxClients < 0, c.MaxClientIDLength < 0, c.MaxTopics < 0, c.MaxRetries < 0, c.SleepMaxMessages < 0, c.SleepMaxBytes < 0:
		return c, fmt.Errorf("gateway: negative limit in %+v", c)
	case c.RetryInterval < 0, c.SessionExpiry < 0, c.UpstreamTimeout < 0:
		return c, fmt.Errorf("gateway: negative duration in %+v", c)
	case c.SleepTolerance < 1:
		return c, fmt.Errorf("gateway: sleep tolerance %v is below 1", c.SleepTolerance)
	case c.ReceiveMaximum < 1 || c.ReceiveMaximum > 65535:
		return c, fmt.Errorf("gateway: receive maximum %d is out of range 1..65535", c.ReceiveMaximum)
	}
	return c, nil
}
