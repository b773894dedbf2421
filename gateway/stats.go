package gateway

import "sync/atomic"

// Stats is a snapshot of the gateway's counters: every drop and every
// session state change is counted here, so metrics and status pages are thin
// views of it.
type Stats struct {
	Datagrams        uint64 // datagrams handed to the gateway
	Malformed        uint64 // datagrams that did not decode
	NoSession        uint64 // valid messages from an address with no session, answered or dropped
	InboxFull        uint64 // messages dropped because the session's inbox was full
	Unexpected       uint64 // valid messages the session's state had no use for
	Connects         uint64 // CONNECTs accepted
	ConnectsRefused  uint64 // CONNECTs answered with a refusal
	Takeovers        uint64 // sessions moved to a new address by a CONNECT
	Disconnects      uint64 // sessions ended by the client's DISCONNECT
	Lost             uint64 // sessions lost: keep-alive expired or retries exhausted
	UpstreamLost     uint64 // sessions ended because the broker connection dropped
	Expired          uint64 // persisted sessions discarded after SessionExpiry
	Sessions         int64  // sessions in memory now
	PublishUp        uint64 // PUBLISH forwarded to the broker
	PublishDown      uint64 // PUBLISH sent to clients
	Retransmissions  uint64 // gateway-initiated requests sent again
	UnknownTopicID   uint64 // PUBLISH with an unknown topic id (A4)
	DownlinkDropped  uint64 // broker messages dropped: QoS 0 overflow, rejected topics, exhausted ids
	QoSMinus1        uint64 // QoS −1 PUBLISH forwarded
	QoSMinus1Dropped uint64 // QoS −1 PUBLISH dropped (unknown topic, queue full, disabled)
}

// counters are the live, atomic form of Stats.
type counters struct {
	datagrams, malformed, noSession, inboxFull, unexpected  atomic.Uint64
	connects, connectsRefused, takeovers, disconnects, lost atomic.Uint64
	upstreamLost, expired                                   atomic.Uint64
	sessions                                                atomic.Int64
	publishUp, publishDown, retransmissions, unknownTopicID atomic.Uint64
	downlinkDropped, qosMinus1, qosMinus1Dropped            atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Datagrams:        c.datagrams.Load(),
		Malformed:        c.malformed.Load(),
		NoSession:        c.noSession.Load(),
		InboxFull:        c.inboxFull.Load(),
		Unexpected:       c.unexpected.Load(),
		Connects:         c.connects.Load(),
		ConnectsRefused:  c.connectsRefused.Load(),
		Takeovers:        c.takeovers.Load(),
		Disconnects:      c.disconnects.Load(),
		Lost:             c.lost.Load(),
		UpstreamLost:     c.upstreamLost.Load(),
		Expired:          c.expired.Load(),
		Sessions:         c.sessions.Load(),
		PublishUp:        c.publishUp.Load(),
		PublishDown:      c.publishDown.Load(),
		Retransmissions:  c.retransmissions.Load(),
		UnknownTopicID:   c.unknownTopicID.Load(),
		DownlinkDropped:  c.downlinkDropped.Load(),
		QoSMinus1:        c.qosMinus1.Load(),
		QoSMinus1Dropped: c.qosMinus1Dropped.Load(),
	}
}
