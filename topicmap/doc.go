// Package topicmap holds the topic ids of MQTT-SN 1.2 clients.
//
// It has three parts:
//
//   - [Predefined] is the gateway-wide set of predefined topic ids (MQTT-SN 1.2
//     §6.7), built once from configuration. It is immutable and safe for
//     concurrent reads, so every client shares one.
//   - [Registry] holds one client's normal topic ids (§6.5), the state of the
//     gateway's own REGISTERs to that client, and the wildcard-matched topics the
//     client has rejected (decision A13). A Registry is owned by one goroutine,
//     the session's owner, and has no locks.
//   - [ShortName] and [ShortID] convert between a 2-octet TopicId and a short
//     topic name (§6.7, decision A12).
//
// The package is pure: no I/O, no goroutines, no logging, no global state.
//
// # Rules of the id space (decision A3)
//
// Topic ids are per client. 0x0000 and 0xFFFF are never assigned. REGACK, PUBACK
// and SUBACK carry no TopicIdType, so a client cannot tell a normal id from a
// predefined one by the message alone: normal ids are therefore always disjoint
// from the predefined ids. New ids come from a rotating cursor, so the id of a
// removed topic is handed out again only after the cursor has wrapped around.
//
// # Interpretations of the specification
//
// Where MQTT-SN 1.2 leaves a point open, this package does the following:
//
//   - A client that REGISTERs (or subscribes by name to) a topic that is in the
//     predefined set gets the predefined id back. The client then holds an id
//     that works under both TopicIdTypes: [Registry.Lookup] resolves a predefined
//     id sent with TopicIdType normal, which is unambiguous because the two id
//     sets are disjoint.
//   - When the gateway publishes to a client, a predefined topic is sent as
//     predefined, a topic of exactly two octets as a short name, and everything
//     else under a normal id, registered first (see [Registry.Assign]).
package topicmap
