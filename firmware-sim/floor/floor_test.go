//go:build linux && !386

package main

import (
	"net"
	"strings"
	"testing"
	"time"

	"github.com/sensorgate/mqttsn-gateway/internal/snclient"
	"github.com/sensorgate/mqttsn-gateway/internal/testbroker"
	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// The floor must really forward, or bench.sh's floor figures measure
// nothing: a QoS 0 and a QoS 1 PUBLISH from a raw MQTT-SN client reach a
// subscriber on the broker, in order, and the QoS 1 one is acknowledged.
func TestFloorForwards(t *testing.T) {
	testbroker.ForEach(t, func(t *testing.T, url string) {
		obs := testbroker.NewObserver(t, url, "observer-"+t.Name())
		obs.Subscribe("floor/#", 1)

		uc, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- serve(uc, strings.TrimPrefix(url, "tcp://")) }()
		t.Cleanup(func() {
			_ = uc.Close()
			if err := <-served; err != nil {
				t.Errorf("serve: %v", err)
			}
		})

		c := snclient.Dial(t, uc.LocalAddr().(*net.UDPAddr).AddrPort())
		c.Connect("floor-1", true, 60)
		id := c.Register("floor/a")
		c.PublishQoS0(id, mqttsn.TopicIDNormal, []byte("zero"))
		if rc := c.PublishQoS1(id, mqttsn.TopicIDNormal, []byte("one")); rc != mqttsn.Accepted {
			t.Fatalf("PUBACK return code %v", rc)
		}
		for _, want := range []string{"zero", "one"} {
			if m := obs.Expect(5 * time.Second); m.Topic != "floor/a" || string(m.Payload) != want {
				t.Errorf("broker delivered %v, want %q on floor/a", m, want)
			}
		}
		c.Disconnect()
	})
}
