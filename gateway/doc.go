// Package gateway is the MQTT-SN gateway core: it owns the sessions of the
// sensors that talk to it and bridges each of them to an MQTT broker.
//
// # Data flow
//
// A transport listener calls HandleDatagram for every datagram. The
// dispatcher decodes it (garbage is counted and dropped), finds the session
// by the sender's address (a CONNECT by its ClientId) and posts the message
// to the session's bounded inbox; a full inbox drops it, the client
// retransmits. Nothing before a valid CONNECT creates state.
//
// # Ownership
//
// Exactly one goroutine at a time, the session's owner, reads or writes a
// session's state. No goroutine stays with a session while nothing
// happens: the owner handles what waits and then lets go (parks); a mutex
// orders a park against the next claim, so two owners never run at once.
// A datagram from the client, and the broker's acknowledgement of its
// QoS 1/2 PUBLISH, are handled on the goroutine that read them when the
// session is free (no hand-off per message: the transport's reader writes
// the PUBLISH upstream, the connection's reader sends the PUBACK); such a
// borrowed goroutine handles a few events at most and never ends the
// session, it hands both to a goroutine of the session's own. Any other
// event starts one (kick) for as long as it takes. Everything else talks
// to the session through channels:
//
//   - the dispatcher posts client messages (inbox, when the session is
//     busy) and CONNECT routing events (control), never blocking;
//   - the session's upstream worker runs the broker requests the session
//     queued (connect, publish, subscribe, ...), one after another in the
//     order the client's messages arrived, and reports each result on the
//     control channel (a successful QoS 0 PUBLISH, which has no answer,
//     only decrements the session's atomic count of outstanding requests);
//     it owns the upstream connection. When the worker waits with nothing
//     queued, the session writes a PUBLISH itself if the connection takes
//     it without waiting (Conn.TryPublish), which keeps the order and
//     saves a hand-off per message;
//   - a QoS 1/2 PUBLISH's outcome comes from the connection's reader when
//     the broker acknowledges it (handled there, or on the control channel
//     when the session is busy): neither the worker nor the session waits
//     for it;
//   - the upstream connection's handler delivers broker messages on the
//     deliveries channel, which the session reads only while it can send
//     them, one gateway-initiated exchange at a time;
//   - the session's timer is a time.AfterFunc that posts a tick.
//
// A session's owner never blocks on the network: UDP writes do not wait,
// broker requests run on the worker, and the PUBLISHes the session writes
// itself are written only if the socket takes them at once (the rest of a
// packet it took in part is finished by a goroutine of the connection), as
// are the acknowledgements of broker messages (Delivery.Ack): those the
// socket does not take at once are written in order by a goroutine. The gateway's maps (by address, by
// ClientId) are guarded by one mutex held only for lookups and updates.
//
// # End-to-end acknowledgement
//
// A client's QoS 1/2 PUBLISH is acknowledged to the client only after the
// broker acknowledged it; a broker's QoS 1/2 message is acknowledged to the
// broker only after the client acknowledged it (or the gateway gave up on
// it), so the broker's session holds whatever the gateway has not delivered.
package gateway
