// Package testgateway runs a gateway in the test's process: UDP on
// 127.0.0.1 with a port the system picks, bridged to a broker through the
// real upstream adapter, and closed in the test's cleanup. The gateway's
// own tests, firmware-sim's end-to-end tests and the fleet benchmarks all
// start their gateway with it.
package testgateway

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/upstream"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// Options says how to run the gateway. Config and Upstream are passed to
// gateway.New and upstream.New as they are (Upstream.URL names the broker);
// Log is used for both.
type Options struct {
	Config   gateway.Config
	Upstream upstream.Options
	UDP      transport.UDPOptions
	Log      zerolog.Logger
	// CloseTimeout bounds the gateway's Close in the cleanup; default 5 s.
	CloseTimeout time.Duration
}

// Start runs a gateway with opts and returns it with its UDP address. It
// fails tb on any error; the cleanup stops the listener, closes the gateway
// and fails tb if that does not succeed within CloseTimeout.
func Start(tb testing.TB, opts Options) (*gateway.Gateway, netip.AddrPort) {
	tb.Helper()
	opts.Upstream.Log = opts.Log
	up, err := upstream.New(opts.Upstream)
	if err != nil {
		tb.Fatal(err)
	}
	g, err := gateway.New(opts.Config, up, opts.Log)
	if err != nil {
		tb.Fatal(err)
	}
	l, err := transport.ListenUDP("127.0.0.1:0", opts.UDP)
	if err != nil {
		tb.Fatal(err)
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = l.Serve(g.HandleDatagram)
	}()
	timeout := opts.CloseTimeout
	if timeout <= 0 {
		timeout = 5 * time.Second
	}
	tb.Cleanup(func() {
		_ = l.Close()
		<-served
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		if err := g.Close(ctx); err != nil {
			tb.Errorf("gateway close: %v", err)
		}
	})
	return g, l.LocalAddr()
}
