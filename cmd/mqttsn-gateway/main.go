// Command mqttsn-gateway is an MQTT-SN 1.2 gateway: it serves MQTT-SN sensors
// over UDP and forwards their messages to an MQTT broker, by default one
// embedded in the gateway.
//
// Usage:
//
//	mqttsn-gateway [-config gateway.toml]
//	mqttsn-gateway -version
//
// Without -config, ./gateway.toml is read if it exists; otherwise the gateway
// runs with the built-in defaults (those the shipped gateway.toml documents).
// Logs go to stderr.
//
// SIGINT or SIGTERM shuts the gateway down; a second signal, or a shutdown
// that takes longer than 5 s, ends it at once.
//
// Exit status: 0 after a clean shutdown, 1 when the gateway fails or cannot
// shut down cleanly, 2 for a usage or configuration error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net/netip"
	"os"
	"os/signal"
	"runtime/debug"
	"runtime/pprof"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway"
	"github.com/sensorgate/mqttsn-gateway/gateway/broker"
	"github.com/sensorgate/mqttsn-gateway/gateway/config"
	"github.com/sensorgate/mqttsn-gateway/gateway/upstream"
	"github.com/sensorgate/mqttsn-gateway/topicmap"
	"github.com/sensorgate/mqttsn-gateway/transport"
)

// version is the gateway's version, set at build time with
// -ldflags "-X main.version=v1.2.3".
var version = "dev"

const (
	defaultConfigPath = "gateway.toml"
	shutdownTimeout   = 5 * time.Second
)

func main() {
	os.Exit(cli(os.Args[1:], os.Stdout, os.Stderr))
}

// cli runs the command with args and returns its exit status.
func cli(args []string, stdout, stderr io.Writer) int {
	flags := flag.NewFlagSet("mqttsn-gateway", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", defaultConfigPath, "read the configuration from `file`")
	showVersion := flags.Bool("version", false, "print the version and exit")
	cpuProfile := flags.String("cpuprofile", "", "write a CPU profile (`file`, for go tool pprof) from start to shutdown")
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "mqttsn-gateway: unexpected argument %q\n", flags.Arg(0))
		flags.Usage()
		return 2
	}
	if *showVersion {
		fmt.Fprintf(stdout, "mqttsn-gateway %s\n", buildVersion())
		return 0
	}
	explicit := false
	flags.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "config" })

	cfg, defaulted, err := loadConfig(*configPath, explicit)
	if err != nil {
		// One problem per line: "<file>: <key>: <reason>".
		fmt.Fprintln(stderr, err)
		return 2
	}

	log := newLogger(cfg.Log, stderr)
	if defaulted {
		log.Warn().Str("config", *configPath).Msg("config file not found; running with the built-in defaults")
	}
	log.Info().
		Str("version", buildVersion()).
		Uint8("gateway_id", cfg.Gateway.ID).
		Strs("udp", cfg.UDP.Listen).
		Msg("starting")

	if *cpuProfile != "" {
		stop, err := startCPUProfile(*cpuProfile)
		if err != nil {
			fmt.Fprintf(stderr, "mqttsn-gateway: -cpuprofile: %v\n", err)
			return 2
		}
		defer stop()
	}

	signals := make(chan os.Signal, 2)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(signals)
	return serve(cfg, log, signals, run)
}

// startCPUProfile starts writing a CPU profile to path and returns the
// function that finishes it.
func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		_ = f.Close()
	}, nil
}

// loadConfig loads the file at path. When the file does not exist and the
// path was not given explicitly, it returns the defaults and defaulted = true.
func loadConfig(path string, explicit bool) (cfg config.Config, defaulted bool, err error) {
	cfg, err = config.Load(path)
	if err != nil && !explicit && errors.Is(err, fs.ErrNotExist) {
		return config.Default(), true, nil
	}
	return cfg, false, err
}

// newLogger returns the logger the [log] table asks for, writing to w.
func newLogger(c config.LogConfig, w io.Writer) zerolog.Logger {
	out := w
	if c.Format == config.FormatConsole {
		out = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339, NoColor: !isTerminal(w)}
	}
	return zerolog.New(out).Level(c.Level).With().Timestamp().Logger()
}

// isTerminal reports whether w is a terminal, where colours are welcome.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// buildVersion returns version, or the module version recorded by the go
// command when version was not set at build time.
func buildVersion() string {
	if version != "dev" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return version
}

// runFunc is the signature of run.
type runFunc func(ctx context.Context, cfg config.Config, log zerolog.Logger) error

// serve calls run until the first signal, then cancels run's context and
// waits up to shutdownTimeout, or until a second signal, for run to return.
// It returns the exit status.
func serve(cfg config.Config, log zerolog.Logger, signals <-chan os.Signal, run runFunc) int {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- run(ctx, cfg, log) }()

	select {
	case err := <-done:
		if err != nil {
			log.Error().Err(err).Msg("gateway failed")
			return 1
		}
		log.Info().Msg("stopped")
		return 0
	case sig := <-signals:
		log.Info().Str("signal", sig.String()).Msg("shutting down")
	}

	cancel()
	timeout := time.NewTimer(shutdownTimeout)
	defer timeout.Stop()
	select {
	case err := <-done:
		if err != nil {
			log.Error().Err(err).Msg("shutdown failed")
			return 1
		}
		log.Info().Msg("stopped")
		return 0
	case <-timeout.C:
		log.Error().Dur("timeout", shutdownTimeout).Msg("shutdown took too long; exiting")
		return 1
	case sig := <-signals:
		log.Error().Str("signal", sig.String()).Msg("second signal; exiting before shutdown finished")
		return 1
	}
}

// run starts everything cfg describes, waits until ctx is cancelled, then
// stops what it started, in reverse order, before returning. It returns an
// error, after stopping what had started, when something cannot start or
// fails.
func run(ctx context.Context, cfg config.Config, log zerolog.Logger) error {
	upstreamURL := cfg.Upstream.Broker
	if cfg.Upstream.Embedded() {
		b, err := broker.Start(cfg.EmbeddedBroker.Listen, log)
		if err != nil {
			return err
		}
		defer func() {
			if err := b.Close(); err != nil {
				log.Error().Err(err).Msg("stopping the embedded broker")
			}
		}()
		log.Info().Stringer("addr", b.Addr()).Msg("embedded MQTT broker listening")
		upstreamURL = "tcp://" + b.Addr().String()
	}
	log.Info().Str("broker", upstreamURL).Msg("upstream MQTT broker")

	up, err := upstream.New(upstream.Options{
		URL:            upstreamURL,
		Username:       cfg.Upstream.Username,
		Password:       cfg.Upstream.Password,
		ClientIDPrefix: cfg.Upstream.ClientIDPrefix,
		CAFile:         cfg.Upstream.CAFile,
		KeepAlive:      cfg.Upstream.KeepAlive,
		ReceiveMaximum: uint16(cfg.Upstream.ReceiveMaximum),
		AckTimeout:     cfg.Upstream.Timeout,
		Log:            log.With().Str("component", "upstream").Logger(),
	})
	if err != nil {
		return err
	}
	gcfg, err := gatewayConfig(cfg)
	if err != nil {
		return err
	}
	psks := new(pskStore)
	gcfg.ClientIDsOf = psks.clientIDs
	gw, err := gateway.New(gcfg, up, log)
	if err != nil {
		return err
	}
	// Stop in this order: the gateway first, while the listeners can still
	// carry its DISCONNECTs to the sensors, then the listeners.
	var listeners []interface{ Close() error }
	defer func() {
		ctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout-time.Second)
		defer cancel()
		if err := gw.Close(ctx); err != nil {
			log.Error().Err(err).Msg("stopping the gateway")
		}
		for _, l := range listeners {
			_ = l.Close()
		}
	}()

	failed := make(chan error, len(cfg.UDP.Listen)+len(cfg.DTLS.Listen))
	for _, addr := range cfg.UDP.Listen {
		l, err := transport.ListenUDP(addr, transport.UDPOptions{MaxDatagram: cfg.UDP.MaxDatagram, ReadBuffer: cfg.UDP.ReadBuffer})
		if err != nil {
			return err
		}
		listeners = append(listeners, l)
		log.Info().Stringer("addr", l.LocalAddr()).Msg("MQTT-SN listening on UDP")
		go func() {
			if err := l.Serve(gw.HandleDatagram); err != nil {
				failed <- err
			}
		}()
	}

	if d := cfg.Discovery; d.AdvertiseInterval > 0 || d.ReplyMulticast {
		startDiscovery(ctx, cfg, gw, listeners[0].(*transport.UDPListener).LocalAddr().Addr(), log)
	}

	if cfg.DTLS.Enabled() {
		opts, err := dtlsOptions(cfg, psks, log.With().Str("component", "dtls").Logger())
		if err != nil {
			return err
		}
		if cfg.DTLS.PSKFile != "" {
			psks.reloadOnHUP(cfg.DTLS.PSKFile, log, ctx.Done())
		}
		for _, addr := range cfg.DTLS.Listen {
			l, err := transport.ListenDTLS(addr, opts)
			if err != nil {
				return err
			}
			listeners = append(listeners, l)
			log.Info().Stringer("addr", l.LocalAddr()).Bool("psk", opts.PSK != nil).
				Bool("certificate", len(opts.Certificates) > 0).Bool("connection_id", opts.ConnectionID).
				Msg("MQTT-SN listening on DTLS")
			go func() {
				if err := l.Serve(gw.HandleDatagram); err != nil {
					failed <- err
				}
			}()
		}
	}

	select {
	case <-ctx.Done():
		return nil
	case err := <-failed:
		return err
	}
}

// startDiscovery sends ADVERTISE on the interval and, with reply_multicast,
// GWINFO to the discovery group, out of the interface of local (the first UDP
// listener's address). A network without multicast is logged, not fatal:
// the gateway works without discovery.
func startDiscovery(ctx context.Context, cfg config.Config, gw *gateway.Gateway, local netip.Addr, log zerolog.Logger) {
	d := cfg.Discovery
	m, err := transport.DialMulticast(d.Address, local, d.TTL)
	if err != nil {
		log.Error().Err(err).Msg("gateway discovery is off: cannot send to the multicast group")
		return
	}
	context.AfterFunc(ctx, func() { _ = m.Close() })
	if d.ReplyMulticast {
		gw.SetGWInfoMulticast(m.Send)
	}
	if d.AdvertiseInterval > 0 {
		log.Info().Stringer("group", d.Address).Dur("interval", d.AdvertiseInterval).Int("ttl", d.TTL).Msg("advertising the gateway")
		go gw.Advertise(ctx, m.Send, d.AdvertiseInterval)
	}
}

// gatewayConfig is the gateway core's part of the configuration.
func gatewayConfig(cfg config.Config) (gateway.Config, error) {
	var pre []topicmap.PredefinedTopic
	for _, t := range cfg.PredefinedTopics {
		pre = append(pre, topicmap.PredefinedTopic{ID: t.ID, Topic: t.Topic})
	}
	predefined, err := topicmap.NewPredefined(pre)
	if err != nil {
		return gateway.Config{}, fmt.Errorf("predefined topics: %w", err)
	}
	return gateway.Config{
		GatewayID:          cfg.Gateway.ID,
		MaxClients:         cfg.Session.MaxClients,
		MaxClientIDLength:  cfg.Session.MaxClientIDLength,
		MaxTopics:          cfg.Session.MaxTopics,
		RetryInterval:      cfg.Session.RetryInterval,
		MaxRetries:         cfg.Session.MaxRetries,
		AllowZeroKeepAlive: cfg.Session.AllowZeroKeepAlive,
		SessionExpiry:      cfg.Upstream.SessionExpiry,
		UpstreamTimeout:    cfg.Upstream.Timeout,
		ReceiveMaximum:     cfg.Upstream.ReceiveMaximum,
		MaxDatagram:        cfg.UDP.MaxDatagram,
		Predefined:         predefined,
		SleepTolerance:     cfg.Sleep.Tolerance,
		SleepMaxMessages:   cfg.Sleep.MaxMessages,
		SleepMaxBytes:      cfg.Sleep.MaxBytes,
		SleepBufferQoS0:    cfg.Sleep.BufferQoS0,
		AllowAddressChange: cfg.Sleep.AllowAddressChange,
		AcceptForwarders:   cfg.Forwarder.Enabled,
		GWInfoDelayMax:     cfg.Discovery.GWInfoDelayMax,
		QoSMinus1:          cfg.QoSMinus1.Enabled,
		QoSMinus1Senders:   cfg.QoSMinus1.AllowedSenders,
		BindClientID:       cfg.DTLS.BindClientID,
	}, nil
}
