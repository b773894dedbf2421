package gateway

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"time"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Gateway discovery (MQTT-SN 1.2 §6.1): ADVERTISE on an interval, and
// GWINFO in answer to SEARCHGW.

// Advertise broadcasts ADVERTISE through send once at once and then every
// interval, until ctx ends. The Duration field tells sensors when the next
// one comes (whole seconds, at most 65535).
func (g *Gateway) Advertise(ctx context.Context, send func([]byte) error, interval time.Duration) {
	secs := min(interval/time.Second, 0xFFFF)
	b, err := (&mqttsn.Advertise{GwID: g.cfg.GatewayID, Duration: uint16(secs)}).AppendBinary(nil)
	if err != nil {
		return
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := send(b); err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return // shutting down: the listener closed under it
			}
			g.log.Warn().Err(err).Msg("ADVERTISE not sent")
		} else {
			g.stats.advertisements.Add(1)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// SetGWInfoMulticast makes GWINFO answers go to the discovery group through
// send, from now on. It may be called while the gateway runs.
func (g *Gateway) SetGWInfoMulticast(send func([]byte) error) {
	g.gwinfoMulticast.Store(&send)
}

// searchGW answers a SEARCHGW with GWINFO (GwId, no GwAdd): unicast to the
// sender, or to the discovery group when SetGWInfoMulticast was called, after a
// random delay up to GWInfoDelayMax so that several gateways do not all
// answer at once. One answer is pending at most: SEARCHGWs arriving while
// one waits share it, so a flood of them costs nothing. GWINFO is 3 octets,
// never larger than the SEARCHGW it answers (no amplification).
func (g *Gateway) searchGW(p peer) {
	g.stats.searches.Add(1)
	reply := func() {
		if mc := g.gwinfoMulticast.Load(); mc != nil {
			b, _ := (&mqttsn.GwInfo{GwID: g.cfg.GatewayID}).AppendBinary(nil)
			if err := (*mc)(b); err != nil {
				g.log.Debug().Err(err).Msg("GWINFO not sent")
			}
			return
		}
		send(p, &mqttsn.GwInfo{GwID: g.cfg.GatewayID})
	}
	if g.cfg.GWInfoDelayMax <= 0 {
		reply()
		return
	}
	if !g.gwinfoPending.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(rand.N(g.cfg.GWInfoDelayMax), func() {
		g.gwinfoPending.Store(false)
		reply()
	})
}
