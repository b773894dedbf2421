package gateway

import "sync/atomic"

// Stats is a snapshot of the gateway's counters: every drop and every
// session state change is counted here, so metrics and status pages are thin
// views of it.
type Stats struct {
	Datagrams        uint64 // datagrams handed to the gateway
	Malformed        uint64 // datagrams that did not decode, and wrapped frames when forwarders are off
	Encapsulated     uint64 // frames relayed by a forwarder and accepted
	Searches         uint64 // SEARCHGW received
	Advertisements   uint64 // ADVERTISE sent
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
	Queued           int64  // broker messages queued in sessions now (mostly sleep buffers)
	PublishUp        uint64 // PUBLISH forwarded to the broker
	PublishDown      uint64 // PUBLISH sent to clients
	Retransmissions  uint64 // gateway-initiated requests sent again
	UnknownTopicID   uint64 // PUBLISH with an unknown topic id (A4)
	DownlinkDropped  uint64 // broker messages dropped: QoS 0 overflow, rejected topics, exhausted ids
	UplinkDropped    uint64 // client QoS 0 PUBLISH dropped because the upstream queue was full
	Sleeps           uint64 // sleep DISCONNECTs accepted
	WakeUps          uint64 // wake-ups by PINGREQ
	Resumes          uint64 // sleeping clients resumed by CONNECT (A1)
	Moves            uint64 // sleeping clients moved to a new address (A9)
	MovesRefused     uint64 // wake-ups and CONNECTs from a new address refused (A9)
	IdentityRefused  uint64 // CONNECTs and wake-ups refused for the peer's authenticated identity
	QoSMinus1        uint64 // QoS −1 PUBLISH forwarded
	QoSMinus1Dropped uint64 // QoS −1 PUBLISH dropped (unknown topic, queue full, disabled)
}

// counters are the live, atomic form of Stats.
type counters struct {
	datagrams, malformed, noSession, inboxFull, unexpected  atomic.Uint64
	connects, connectsRefused, takeovers, disconnects, lost atomic.Uint64
	upstreamLost, expired                                   atomic.Uint64
	sessions, queued                                        atomic.Int64
	publishUp, publishDown, retransmissions, unknownTopicID atomic.Uint64
	downlinkDropped, qosMinus1, qosMinus1Dropped            atomic.Uint64
	uplinkDropped, sleeps, wakeUps, resumes, moves          atomic.Uint64
	movesRefused, identityRefused, encapsulated             atomic.Uint64
	searches, advertisements                                atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Datagrams:        c.datagrams.Load(),
		Malformed:        c.malformed.Load(),
		Encapsulated:     c.encapsulated.Load(),
		Searches:         c.searches.Load(),
		Advertisements:   c.advertisements.Load(),
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
		Queued:           c.queued.Load(),
		PublishUp:        c.publishUp.Load(),
		PublishDown:      c.publishDown.Load(),
		Retransmissions:  c.retransmissions.Load(),
		UnknownTopicID:   c.unknownTopicID.Load(),
		DownlinkDropped:  c.downlinkDropped.Load(),
		UplinkDropped:    c.uplinkDropped.Load(),
		Sleeps:           c.sleeps.Load(),
		WakeUps:          c.wakeUps.Load(),
		Resumes:          c.resumes.Load(),
		Moves:            c.moves.Load(),
		MovesRefused:     c.movesRefused.Load(),
		IdentityRefused:  c.identityRefused.Load(),
		QoSMinus1:        c.qosMinus1.Load(),
		QoSMinus1Dropped: c.qosMinus1Dropped.Load(),
	}
}
