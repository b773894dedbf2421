package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/netip"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway/config"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// pskStore holds the PSK table; SIGHUP swaps in a freshly loaded one without
// touching established associations.
type pskStore struct {
	table atomic.Pointer[config.PSKTable]
}

// key is the DTLS listener's PSK callback.
func (s *pskStore) key(identity string) ([]byte, error) {
	if t := s.table.Load(); t != nil {
		if e, ok := (*t)[identity]; ok {
			return e.Key, nil
		}
	}
	return nil, fmt.Errorf("unknown PSK identity %q", identity)
}

// clientIDs returns the ClientIds an authenticated identity may use: the PSK
// entry's client_id (the identity by default), or the certificate's CN and
// DNS names.
func (s *pskStore) clientIDs(id transport.Identity) []string {
	if id.PSKIdentity != "" {
		if t := s.table.Load(); t != nil {
			if e, ok := (*t)[id.PSKIdentity]; ok && e.ClientID != "" {
				return []string{e.ClientID}
			}
		}
		return []string{id.PSKIdentity}
	}
	ids := append([]string(nil), id.CertDNSNames...)
	if id.CertCommonName != "" {
		ids = append(ids, id.CertCommonName)
	}
	return ids
}

// reloadOnHUP re-reads the PSK file on every SIGHUP until stop is closed; a
// file with problems is logged and the previous table kept.
func (s *pskStore) reloadOnHUP(path string, log zerolog.Logger, stop <-chan struct{}) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		for {
			select {
			case <-stop:
				return
			case <-hup:
				t, err := config.LoadPSKFile(path)
				if err != nil {
					log.Error().Err(err).Str("psk_file", path).Msg("PSK file not reloaded; keeping the previous keys")
					continue
				}
				s.table.Store(&t)
				log.Info().Str("psk_file", path).Int("identities", len(t)).Msg("PSK file reloaded")
			}
		}
	}()
}

// dtlsOptions builds the listener options from the [dtls] table.
func dtlsOptions(cfg config.Config, psks *pskStore, log zerolog.Logger) (transport.DTLSOptions, error) {
	c := cfg.DTLS
	opts := transport.DTLSOptions{
		MaxDatagram:       min(cfg.UDP.MaxDatagram, transport.MaxDTLSDatagram),
		ReadBuffer:        cfg.UDP.ReadBuffer,
		RequireClientCert: c.RequireClientCert,
		ConnectionID:      c.ConnectionID,
		HandshakeTimeout:  c.HandshakeTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHandshakes:     c.MaxHandshakes,
		OnHandshakeError: func(p netip.AddrPort, err error) {
			log.Warn().Str("peer", p.String()).Err(err).Msg("DTLS handshake failed")
		},
	}
	if c.PSKFile != "" {
		t := c.PSKs
		psks.table.Store(&t)
		opts.PSK = psks.key
	}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return opts, fmt.Errorf("dtls.cert_file, dtls.key_file: %w", err)
		}
		opts.Certificates = []tls.Certificate{cert}
	}
	if c.ClientCAFile != "" {
		pem, err := os.ReadFile(c.ClientCAFile)
		if err != nil {
			return opts, fmt.Errorf("dtls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return opts, fmt.Errorf("dtls.client_ca_file: %s holds no PEM certificate", c.ClientCAFile)
		}
		opts.ClientCAs = pool
	}
	return opts, nil
}
