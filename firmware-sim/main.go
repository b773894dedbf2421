// Command firmware-sim simulates a fleet of MQTT-SN 1.2 sensors in front of
// the gateway: the project's demo, end-to-end test driver and load
// generator.
//
//	go run ./firmware-sim -scenario testdata/scenarios/demo.toml -verify
//
// A scenario file (TOML) describes groups of sensors; flags override its
// top-level keys. With -verify an MQTT observer on the broker checks that
// every message arrived, once and in order, and the exit status is 1 when
// a QoS 1/2 message was lost or a QoS 2 message duplicated, or when the run
// could not test what it was to (a group published nothing or got no
// command, sensors never connected, the broker refused commands). -json
// prints the report as JSON on stdout. -direct sends the same uplink load
// straight to the broker over MQTT, without the gateway, as a baseline. The
// README's section "Simulate a fleet: firmware-sim" lists the flags and the
// scenario keys.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rs/zerolog"
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run is main with its arguments and outputs, returning the exit status:
// 0 success, 1 verification failed, 2 bad usage or scenario (-sensors
// included), 3 run error.
func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("firmware-sim", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var (
		scenario  = fs.String("scenario", "", "scenario file (TOML); without it: one group of 10 sensors publishing at QoS 0 every second")
		gateway   = fs.String("gateway", DefaultGateway, "gateway UDP address host:port")
		broker    = fs.String("broker", DefaultBroker, "broker URL of the observer (-verify)")
		sensors   = fs.Int("sensors", -1, "number of sensors: the only group's count, or all groups scaled in proportion")
		duration  = fs.Duration("duration", DefaultDuration, "how long sensors publish (and commands are sent)")
		drain     = fs.Duration("drain", 0, "wait after -duration for messages on their way (0: long enough for sleeping sensors to wake once more)")
		verify    = fs.Bool("verify", false, "observe the broker, send commands, report loss, duplicates, order and latency")
		jsonOut   = fs.Bool("json", false, "print the report as JSON on stdout")
		pskFile   = fs.String("dtls-psk-file", "", "PSK file (the gateway's format) for DTLS groups")
		caFile    = fs.String("dtls-ca-file", "", "PEM CAs that verify the gateway's DTLS certificate")
		dtlsGW    = fs.String("dtls-gateway", "", "gateway DTLS address host:port (default: -gateway)")
		obsQoS    = fs.Int("observer-qos", 2, "QoS of the observer's subscriptions (0..2)")
		seed      = fs.Uint64("seed", 0, "seed of the jitter (0: random)")
		noProg    = fs.Bool("quiet", false, "no progress display on stderr")
		logLevel  = fs.String("log-level", "warn", "log level on stderr: debug, info, warn, error")
		progEvery = fs.Duration("progress", 0, "progress display period (default 1s on a terminal, 5s otherwise)")
		direct    = fs.Bool("direct", false, "baseline: publish the same load straight to -broker over MQTT 5, without the gateway")
	)
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "firmware-sim: unexpected argument %q\n", fs.Arg(0))
		return 2
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })

	var sc *Scenario
	if *scenario != "" {
		var err error
		if sc, err = LoadScenario(*scenario); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
	} else {
		sc = DefaultScenario()
		sc.Duration = *duration
	}
	if set["gateway"] {
		sc.Gateway = *gateway
	}
	if set["broker"] {
		sc.Broker = *broker
	}
	if set["duration"] {
		sc.Duration = *duration
	}
	if set["drain"] {
		sc.Drain = *drain
	}
	if set["verify"] {
		sc.Verify = *verify
	}
	if set["observer-qos"] {
		if *obsQoS < 0 || *obsQoS > 2 {
			fmt.Fprintln(stderr, "firmware-sim: -observer-qos: want 0, 1 or 2")
			return 2
		}
		sc.ObserverQoS = byte(*obsQoS)
	}
	if set["seed"] {
		sc.Seed = *seed
	}
	if set["dtls-psk-file"] {
		sc.DTLS.PSKFile = *pskFile
	}
	if set["dtls-ca-file"] {
		sc.DTLS.CAFile = *caFile
	}
	if set["dtls-gateway"] {
		sc.DTLS.Gateway = *dtlsGW
	}
	if *sensors >= 0 {
		if err := sc.ScaleSensors(*sensors); err != nil {
			fmt.Fprintln(stderr, err)
			return 2
		}
	}
	lvl, err := zerolog.ParseLevel(*logLevel)
	if err != nil {
		fmt.Fprintf(stderr, "firmware-sim: -log-level: %v\n", err)
		return 2
	}
	log := zerolog.New(zerolog.ConsoleWriter{Out: stderr, TimeFormat: time.TimeOnly}).Level(lvl).With().Timestamp().Logger()

	opt := Options{Log: log, ProgressEvery: *progEvery, Direct: *direct}
	if !*noProg {
		opt.Progress = stderr
		if f, ok := stderr.(*os.File); ok {
			if fi, err := f.Stat(); err == nil && fi.Mode()&os.ModeCharDevice != 0 {
				opt.ProgressTTY = true
			}
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	sig := make(chan os.Signal, 2)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		<-sig
		fmt.Fprintln(stderr, "\nfirmware-sim: stopping: draining (interrupt again to quit at once)")
		cancel()
		<-sig
		os.Exit(130)
	}()

	start := time.Now()
	log.Info().Str("scenario", filepath.Base(*scenario)).Str("gateway", sc.Gateway).Bool("verify", sc.Verify).Msg("starting")
	rep, err := Run(ctx, sc, opt)
	if rep != nil {
		if *jsonOut {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			_ = enc.Encode(rep)
		} else {
			rep.WriteText(stdout)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "firmware-sim: %v\n", err)
		return 3
	}
	log.Info().Dur("took", time.Since(start)).Msg("done")
	if !rep.Passed {
		return 1
	}
	return 0
}
