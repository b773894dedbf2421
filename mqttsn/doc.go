// Package mqttsn is the MQTT-SN 1.2 packet codec: one Go type per message,
// a strict decoder from one datagram to a message, and an append-style
// encoder that writes into a caller's buffer without allocating.
//
// The package is pure: no I/O, no goroutines, no logging. Section numbers in
// comments (§) refer to the MQTT-SN Protocol Specification Version 1.2; the
// decisions named A1..A22 are those of the project's spec digest
// (shared/spec/mqtt-sn-1.2.md §10).
//
// Decoding checks, in this order, that the datagram carries a complete header,
// that the Length field equals the datagram size (A14: both the 1-octet and
// the 3-octet form are accepted), that the message type is not reserved, and
// that the variable part has the size and the flag values the message type
// allows (A21: unused flag bits are ignored, QoS 0b11 is rejected outside a
// PUBLISH). Every decoding error wraps ErrMalformed.
//
// Encoding always emits the shortest Length form: the 1-octet form up to a
// total of 255 octets, the 3-octet form above.
package mqttsn
