// Package broker runs the embedded MQTT broker (mochi-mqtt v2) that the
// gateway forwards to when upstream.broker = "embedded".
package broker

import (
	"cmp"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"time"

	mqtt "github.com/mochi-mqtt/server/v2"
	"github.com/mochi-mqtt/server/v2/listeners"
	"github.com/mochi-mqtt/server/v2/packets"
	"github.com/rs/zerolog"
)

// pendingWrites bounds the QoS 0 messages mochi queues for one client's
// socket; beyond it, QoS 0 messages to that client are dropped and
// counted. (QoS 1/2 are always queued, bounded by the client's Receive
// Maximum, which the gateway's connections send: see
// third_party/mochi-mqtt-server/README.md.) An empty queue costs nothing.
const pendingWrites = 1024

// readBuffer is the size of mochi's buffered reader on each client socket
// (its default is 2 KiB): sensors' messages are small, and a larger packet
// is read past the buffer.
const readBuffer = 1024

// connectTimeout is how long a new TCP connection may take to send CONNECT.
// mochi sets no deadline before CONNECT; after it, mochi's keepalive deadline
// replaces this one.
const connectTimeout = 10 * time.Second

// Broker is a running embedded MQTT broker.
type Broker struct {
	srv       *mqtt.Server
	conns     *trackingListener
	served    sync.WaitGroup // the accept loop
	closeOnce sync.Once
	closeErr  error
}

// Start starts an MQTT broker (MQTT 3.1.1 and 5) on the TCP address addr and
// returns once it is listening. With port 0 the system picks a free port;
// Addr reports it.
//
// The broker lets every client connect and use every topic: there is no
// authentication and no ACL. It is meant for loopback or a trusted edge
// network. It logs to log with component=broker; mochi's routine messages are
// logged at debug level.
func Start(addr string, log zerolog.Logger) (*Broker, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("embedded broker: %w", err)
	}
	b := &Broker{conns: newTrackingListener(ln)}
	caps := mqtt.NewDefaultServerCapabilities()
	caps.MaximumClientWritesPending = pendingWrites
	b.srv = mqtt.New(&mqtt.Options{
		Capabilities:            caps,
		ClientNetReadBufferSize: readBuffer,
		Logger:                  slog.New(quietHandler{zerolog.NewSlogHandler(log.With().Str("component", "broker").Logger())}),
	})
	if err := b.srv.AddHook(new(gatewayHook), nil); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded broker: add the gateway hook: %w", err)
	}
	if err := b.srv.AddListener(&listener{Net: listeners.NewNet("tcp", b.conns), b: b}); err != nil {
		_ = ln.Close()
		return nil, fmt.Errorf("embedded broker: add listener: %w", err)
	}
	b.served.Add(1) // done by listener.Serve, which mochi's Serve starts
	if err := b.srv.Serve(); err != nil {
		// mochi's Serve fails only before it starts the listener.
		b.served.Done()
		_ = b.srv.Close()
		return nil, fmt.Errorf("embedded broker: serve: %w", err)
	}
	return b, nil
}

// Addr returns the TCP address the broker listens on.
func (b *Broker) Addr() net.Addr {
	return b.conns.Addr()
}

// Close disconnects every client, stops the broker and waits for its accept
// loop and client connections to end. Calls after the first return the
// first one's result.
func (b *Broker) Close() error {
	b.closeOnce.Do(func() {
		if err := b.srv.Close(); err != nil {
			b.closeErr = fmt.Errorf("embedded broker: close: %w", err)
		}
		b.served.Wait()
	})
	return b.closeErr
}

// gatewayHook is the gateway's mochi hook: it lets every client connect and
// use every topic, and it repairs mochi's flow control (OnQosComplete).
// (mochi's own auth.AllowHook would pull in a YAML library for its ledger.)
type gatewayHook struct {
	mqtt.HookBase
}

// ID names the hook in mochi's logs.
func (*gatewayHook) ID() string { return "gateway" }

// Provides reports which hook methods gatewayHook implements.
func (*gatewayHook) Provides(b byte) bool {
	switch b {
	case mqtt.OnConnectAuthenticate, mqtt.OnACLCheck, mqtt.OnQosComplete:
		return true
	}
	return false
}

// OnQosComplete sends the oldest QoS 1/2 message that mochi parked for the
// client, now that the client acknowledged one.
//
// mochi v2.7.9 honours a client's Receive Maximum by parking the messages
// beyond it, but sends a parked one only when some other packet arrives, in
// an order that is random within a second, and then forgets it, so its
// acknowledgement never returns the quota: messages are reordered and, once
// the quota has leaked away, held until the client reconnects. The gateway
// relies on Receive Maximum (the broker holds what a sensor has not taken),
// so this hook sends one parked message per completed one, oldest first,
// keeps it in flight so that its acknowledgement returns the quota, and
// takes the quota back so that mochi's own resend path stays idle.
func (*gatewayHook) OnQosComplete(cl *mqtt.Client, _ packets.Packet) {
	parked := cl.State.Inflight.GetAll(true)
	if len(parked) == 0 {
		return
	}
	oldest := slices.MinFunc(parked, func(a, b packets.Packet) int {
		if c := cmp.Compare(a.Created, b.Created); c != 0 {
			return c
		}
		return cmp.Compare(int16(a.PacketID-b.PacketID), 0) // packet ids wrap
	})
	oldest.Expiry = 0
	cl.State.Inflight.Set(oldest)
	cl.State.Inflight.DecreaseSendQuota()
	_ = cl.WritePacket(oldest)
}

// OnConnectAuthenticate accepts every client.
func (*gatewayHook) OnConnectAuthenticate(*mqtt.Client, packets.Packet) bool { return true }

// OnACLCheck allows every topic, for reading and writing.
func (*gatewayHook) OnACLCheck(*mqtt.Client, string, bool) bool { return true }

// listener is mochi's listener for a net.Listener, extended to report the end
// of its accept loop and to close connections that mochi does not know yet.
type listener struct {
	*listeners.Net
	b *Broker
}

// Serve runs the accept loop until the listener is closed.
func (l *listener) Serve(establish listeners.EstablishFn) {
	defer l.b.served.Done()
	l.Net.Serve(establish)
}

// Close closes the listener and every connection, established or not, and
// then lets mochi mark the listener closed.
//
// mochi's own way to disconnect a listener's clients (closeClients) is not
// used: in v2.7.9 it read-locks the client map twice in a row, which
// deadlocks when a client disconnecting at that moment waits to write-lock
// it (Go's RWMutex blocks new readers behind a waiting writer). Closing the
// sockets ends every client's read loop instead; clients see the end of the
// connection rather than a DISCONNECT 0x8B.
func (l *listener) Close(listeners.CloseFn) {
	l.b.conns.closeAll()
	l.Net.Close(func(string) {})
}

// trackingListener is a net.Listener that gives each connection
// connectTimeout to send CONNECT and remembers the open ones.
type trackingListener struct {
	net.Listener
	mu     sync.Mutex
	open   map[*trackedConn]struct{}
	closed bool
}

func newTrackingListener(ln net.Listener) *trackingListener {
	return &trackingListener{Listener: ln, open: make(map[*trackedConn]struct{})}
}

// Accept waits for the next connection.
func (l *trackingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	_ = c.SetDeadline(time.Now().Add(connectTimeout))
	tc := &trackedConn{Conn: c, l: l}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		_ = c.Close()
		return nil, net.ErrClosed
	}
	l.open[tc] = struct{}{}
	return tc, nil
}

// closeAll closes the listener and every open connection.
func (l *trackingListener) closeAll() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.closed = true
	_ = l.Listener.Close()
	for c := range l.open {
		_ = c.Conn.Close()
	}
	clear(l.open)
}

// trackedConn is a connection that leaves its listener's set when closed.
type trackedConn struct {
	net.Conn
	l *trackingListener
}

// Close closes the connection.
func (c *trackedConn) Close() error {
	c.l.mu.Lock()
	delete(c.l.open, c)
	c.l.mu.Unlock()
	return c.Conn.Close()
}
