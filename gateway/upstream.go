package gateway

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Upstream opens connections to the MQTT broker. In transparent mode (the
// only one so far) every MQTT-SN client gets its own connection with its own
// ClientID and Will.
//
// Implementations live outside this package (gateway/upstream wraps
// paho.golang); the session state machine knows only this interface, so an
// aggregating implementation can be added beside it.
type Upstream interface {
	// Connect opens a connection for one client and returns once the broker
	// accepted it. It blocks; the gateway calls it off the session's loop.
	// h receives the connection's messages and its loss; messages may come
	// before Connect returns, a loss is reported only after.
	Connect(ctx context.Context, p ConnectParams, h ConnHandler) (Conn, error)
}

// ConnectParams is what the gateway asks of a new upstream connection.
type ConnectParams struct {
	ClientID   string
	CleanStart bool // start a new broker session
	// SessionExpiry is how long the broker keeps the session after the
	// connection ends. A CleanSession=1 client gets a short one too, so
	// that a Will update can reconnect without losing its subscriptions;
	// its clean Disconnect ends the session at once.
	SessionExpiry time.Duration
	Will          *Will // nil for none
}

// Will is a client's Will (last-will) message.
type Will struct {
	Topic   string
	Message []byte
	QoS     byte // 0..2
	Retain  bool
}

// Conn is one client's upstream connection. Its blocking methods are called
// from one goroutine at a time, in the order the client's messages arrived.
type Conn interface {
	// Publish forwards a message. A QoS 0 message is done once written. A
	// QoS 1 or 2 message is on its way when Publish returns nil, and done
	// is then called exactly once, from another goroutine, with the
	// outcome: nil once the broker acknowledged it, a *RefusedError when
	// the broker refused it, another error when the connection ended or the
	// broker did not answer in time. An error returned means nothing was
	// sent (a *RefusedError for a message the broker's limits refuse) and
	// done is not called. Publish waits, until ctx ends, while the broker's
	// Receive Maximum of QoS 1/2 messages are unacknowledged. done(nil)
	// runs on the goroutine that reads the connection, within its read:
	// it may call TryPublish and Delivery.Ack, never wait, and never end
	// the connection itself (Drop, Disconnect), whose close would wait
	// for that read.
	Publish(ctx context.Context, m Message, done func(error)) error
	// TryPublish is Publish without waiting: it sends m only if that needs
	// no wait (for room under the broker's Receive Maximum or in the
	// connection's send buffer) and reports whether it did; done is then
	// called as for Publish. When it reports false nothing was sent, and
	// Publish will tell why or wait. It may be called from another
	// goroutine than Publish, but never at the same time.
	TryPublish(m Message, done func(error)) bool
	// Subscribe subscribes to filter and returns the QoS the broker granted.
	Subscribe(ctx context.Context, filter string, qos byte) (granted byte, err error)
	// Unsubscribe removes the subscription to filter.
	Unsubscribe(ctx context.Context, filter string) error
	// Disconnect ends the connection with an MQTT DISCONNECT: the broker
	// discards the Will; with endSession it discards the session as well.
	// It first waits, for a bounded time, for the outcomes of the QoS 1/2
	// messages in flight.
	Disconnect(endSession bool)
	// Drop closes the network connection without DISCONNECT, so the broker
	// publishes the Will (the client was lost, A8).
	Drop()
}

// ConnHandler receives what an upstream connection delivers. Its methods are
// called from the connection's own goroutines; Deliver's holds none of the
// connection's locks, so that it may do the session's work there (answer
// with Delivery.Ack, TryPublish), as long as it never waits for the
// connection.
type ConnHandler interface {
	// Deliver hands over a message from the broker, in the broker's order.
	// For QoS 1 and 2 it may block until the session takes the message
	// (the broker's Receive Maximum bounds how many there are); QoS 0
	// messages are dropped and counted when the session is not keeping up.
	Deliver(m *Delivery)
	// Lost reports that the connection ended without the gateway asking.
	Lost(err error)
}

// Message is an application message travelling upstream.
type Message struct {
	Topic   string
	Payload []byte
	QoS     byte
	Retain  bool
}

// Delivery is an application message from the broker to one client.
type Delivery struct {
	Message
	// Ack acknowledges the message to the broker (QoS 1 and 2; nil for QoS
	// 0). The gateway calls it once the client acknowledged the message or
	// the gateway gave up on it, in delivery order; it does not block.
	Ack func()
}

// RefusedError is a broker's refusal of a request, mapped to the MQTT-SN
// return code the client gets (decision A20).
type RefusedError struct {
	Code   mqttsn.ReturnCode
	Reason string // what the broker said
}

// Error returns e.g. "upstream refused: rejected: congestion (server busy)".
func (e *RefusedError) Error() string {
	return fmt.Sprintf("upstream refused: %v (%s)", e.Code, e.Reason)
}

// Unwrap returns the return code, so errors.Is(err, mqttsn.RejectedCongestion) works.
func (e *RefusedError) Unwrap() error { return e.Code }

// errNotConnected answers requests queued while the upstream connection was down.
var errNotConnected = errors.New("upstream not connected")

// returnCodeOf maps an upstream error to the return code a client gets:
// the broker's own refusal as mapped by the implementation, or congestion for
// anything else (an unreachable or overloaded broker; A20).
func returnCodeOf(err error) mqttsn.ReturnCode {
	var r *RefusedError
	if errors.As(err, &r) {
		return r.Code
	}
	return mqttsn.RejectedCongestion
}
