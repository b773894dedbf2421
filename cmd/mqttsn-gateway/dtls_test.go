package main

import (
	"bytes"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway/config"
)

// TestDTLSOptionsFromConfig: the scalar [dtls] settings that the listener
// takes reach its options, and the PSK callback answers from the table.
// (Certificates, and require_client_cert with them, need certificate files;
// this test leaves them at their defaults.)
func TestDTLSOptionsFromConfig(t *testing.T) {
	cfg := config.Default()
	cfg.UDP.MaxDatagram, cfg.UDP.ReadBuffer = 600, 1<<20
	cfg.DTLS.Listen = []string{"127.0.0.1:5684"}
	cfg.DTLS.PSKFile = "sensors.psk.toml" // not read: PSKs holds its content
	cfg.DTLS.PSKs = config.PSKTable{"sensor-1": {Key: []byte("0123456789abcdef")}}
	cfg.DTLS.ConnectionID = false
	cfg.DTLS.HandshakeTimeout = 3 * time.Second
	cfg.DTLS.IdleTimeout = 30 * time.Hour
	cfg.DTLS.MaxHandshakes = 7

	opts, err := dtlsOptions(cfg, &pskStore{}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	if opts.MaxDatagram != 600 || opts.ReadBuffer != 1<<20 || opts.ConnectionID || opts.RequireClientCert ||
		opts.HandshakeTimeout != 3*time.Second || opts.IdleTimeout != 30*time.Hour || opts.MaxHandshakes != 7 {
		t.Errorf("options %+v do not follow the configuration", opts)
	}
	if key, err := opts.PSK("sensor-1"); err != nil || !bytes.Equal(key, []byte("0123456789abcdef")) {
		t.Errorf("PSK(sensor-1) = %q, %v", key, err)
	}
	if _, err := opts.PSK("stranger"); err == nil {
		t.Error("PSK(stranger) gave a key")
	}
}
