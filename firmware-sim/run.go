package main

import (
	"context"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/mqttsn"
)

// Options are the knobs of one run besides the scenario.
type Options struct {
	// Log receives warnings (DTLS handshake failures, the observer's
	// connection); zerolog.Nop() for none.
	Log zerolog.Logger
	// Progress receives the live progress display; nil for none.
	Progress io.Writer
	// ProgressTTY rewrites one line with \r every ProgressEvery; otherwise
	// a plain line is written every ProgressEvery.
	ProgressTTY   bool
	ProgressEvery time.Duration
	// ObserverID is the observer's MQTT ClientId; default
	// "firmware-sim-observer-<pid>".
	ObserverID string
	// Direct sends the uplink load straight to the broker over MQTT,
	// without the gateway: the baseline (see runDirect).
	Direct bool
}

// Stream is what happened to the messages of one direction and QoS.
type Stream struct {
	// Sent counts what the sender finished: QoS 0 and -1 written; QoS 1/2
	// acknowledged (PUBACK, PUBCOMP; for commands, the broker's) or given up
	// after the retries (those count as lost unless delivered anyway).
	Sent uint64 `json:"sent"`
	// Delivered counts distinct sent messages that arrived.
	Delivered uint64 `json:"delivered"`
	// Lost is Sent - Delivered.
	Lost uint64 `json:"lost"`
	// Duplicated counts arrivals of a message that had arrived before.
	Duplicated uint64 `json:"duplicated"`
	// OutOfOrder counts first arrivals after a later message of the same sender.
	OutOfOrder uint64 `json:"out_of_order"`
	// Failed counts QoS 1/2 publications given up (retries exhausted,
	// rejected), or commands the broker did not accept; included in Sent
	// for uplink.
	Failed uint64 `json:"failed"`
	// Unfinished counts QoS 1/2 publications still in flight when the run
	// ended: excluded from Sent.
	Unfinished uint64 `json:"unfinished"`
	// Latency from first transmission to arrival, in µs.
	LatencyP50 uint64 `json:"latency_p50_us"`
	LatencyP99 uint64 `json:"latency_p99_us"`
	LatencyMax uint64 `json:"latency_max_us"`
}

// Report is the outcome of a run, printed as text or (-json) as JSON.
type Report struct {
	Scenario string `json:"scenario"`
	// Verified is true when an observer checked delivery (-verify).
	Verified bool `json:"verified"`
	// Passed is false when a verified run lost QoS 1/2 messages or
	// duplicated QoS 2 ones; Failures says which.
	Passed   bool     `json:"passed"`
	Failures []string `json:"failures,omitempty"`
	Sensors  int      `json:"sensors"`
	// DurationS is the publishing phase; DrainS the wait after it.
	DurationS float64 `json:"duration_s"`
	DrainS    float64 `json:"drain_s"`
	// OfferedRate is the configured uplink rate (msg/s; back-to-back
	// groups not included); AchievedRate the uplink publications finished
	// per second of DurationS; DeliveredRate those the observer got.
	OfferedRate   float64 `json:"offered_rate"`
	AchievedRate  float64 `json:"achieved_rate"`
	DeliveredRate float64 `json:"delivered_rate"`
	// Uplink and Downlink by QoS: "qos-1", "qos0", "qos1", "qos2".
	Uplink   map[string]*Stream `json:"uplink"`
	Downlink map[string]*Stream `json:"downlink"`

	Connects        uint64 `json:"connects"`
	ConnectFailures uint64 `json:"connect_failures"`
	Reconnects      uint64 `json:"reconnects"`
	Sleeps          uint64 `json:"sleeps"`
	WakeUps         uint64 `json:"wake_ups"`
	Retransmissions uint64 `json:"retransmissions"`
	Rejected        uint64 `json:"rejected"`
	Malformed       uint64 `json:"malformed"`
	Unexpected      uint64 `json:"unexpected"`
	SendErrors      uint64 `json:"send_errors"`
	Foreign         uint64 `json:"foreign_messages"`
	CommandsSkipped uint64 `json:"commands_skipped"`
}

func qosKey(q mqttsn.QoS) string {
	if q == mqttsn.QoSMinus1 {
		return "qos-1"
	}
	return "qos" + strconv.Itoa(int(q))
}

// autoDrain returns a drain long enough for every sleeping sensor to wake
// once more, and for QoS 1/2 exchanges to finish.
func autoDrain(sc *Scenario) time.Duration {
	d := 3 * time.Second
	for _, g := range sc.Groups {
		if g.Count == 0 {
			continue
		}
		if g.Sleep > 0 {
			d = max(d, g.Sleep+g.Jitter+g.Awake+g.RetryInterval+2*time.Second)
		}
		if g.QoS == mqttsn.QoS1 || g.QoS == mqttsn.QoS2 {
			d = max(d, g.RetryInterval+time.Second)
		}
	}
	return d
}

// Run runs the scenario sc until its duration ends or ctx is cancelled,
// drains, and reports. The error is for a run that could not start or whose
// observer lost its connection; a verification failure is in the Report.
func Run(ctx context.Context, sc *Scenario, opt Options) (*Report, error) {
	if opt.Direct {
		return runDirect(ctx, sc, opt)
	}
	gw, err := net.ResolveUDPAddr("udp", sc.Gateway)
	if err != nil {
		return nil, fmt.Errorf("gateway address %q: %w", sc.Gateway, err)
	}
	var dtlsGW *net.UDPAddr
	var dset *dtlsSetup
	for _, g := range sc.Groups {
		if g.Transport != "dtls" || g.Count == 0 || dset != nil {
			continue
		}
		addr := sc.DTLS.Gateway
		if addr == "" {
			addr = sc.Gateway
		}
		if dtlsGW, err = net.ResolveUDPAddr("udp", addr); err != nil {
			return nil, fmt.Errorf("DTLS gateway address %q: %w", addr, err)
		}
		if dset, err = newDTLSSetup(sc.DTLS, dtlsGW.IP.String()); err != nil {
			return nil, err
		}
	}
	seed := sc.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}

	clk := newClock()
	fleet := new(fleetCounters)
	e := &env{clk: clk, fleet: fleet}
	var upLat [4]*Histogram
	for i := range e.downLat {
		e.downLat[i] = new(Histogram)
	}
	for i := range upLat {
		upLat[i] = new(Histogram)
	}

	hardStop := make(chan struct{})
	var drivers []*driver
	var groups [][]*sensor
	byID := map[string]*sensor{}
	total, connectable := 0, 0
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		var ss []*sensor
		for i := range g.Count {
			d := &driver{inbox: make(chan mqttsn.Message, 32), quit: make(chan struct{})}
			var l link
			id := expand(g.ClientID, g.First+i, g.IDWidth, "")
			if g.Transport == "dtls" {
				opts, err := dset.options(id)
				if err != nil {
					return nil, err
				}
				l = &dtlsLink{gw: dtlsGW, opts: opts, timeout: max(g.RetryInterval*time.Duration(g.MaxRetries+1), 5*time.Second),
					inbox: d.inbox, quit: d.quit, fc: fleet,
					onError: func(err error) { opt.Log.Debug().Str("client", id).Err(err).Msg("DTLS handshake failed") }}
			} else {
				l = &udpLink{gw: gw, inbox: d.inbox, quit: d.quit, fc: fleet}
			}
			s := newSensor(g, e, g.First+i, l, seed+uint64(gi)<<32)
			if _, dup := byID[s.clientID]; dup {
				return nil, fmt.Errorf("group %s: ClientId %q is used by two sensors", g.Name, s.clientID)
			}
			byID[s.clientID] = s
			d.s = s
			drivers = append(drivers, d)
			ss = append(ss, s)
		}
		groups = append(groups, ss)
		total += g.Count
		if g.QoS != mqttsn.QoSMinus1 {
			connectable += g.Count
		}
	}

	var obs *observer
	if sc.Verify {
		var filters []string
		for _, g := range sc.Groups {
			if g.Count == 0 || !g.Publishes || g.Topic == "" {
				continue
			}
			if f := filterOf(g.Topic); !slices.Contains(filters, f) {
				filters = append(filters, f)
			}
		}
		id := opt.ObserverID
		if id == "" {
			id = "firmware-sim-observer-" + strconv.Itoa(os.Getpid())
		}
		if obs, err = newObserver(ctx, sc.Broker, id, sc.ObserverQoS, clk, byID, &upLat, filters); err != nil {
			return nil, err
		}
		defer obs.close()
	}

	stopUplink, shutdown := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	t0 := time.Now()
	k := 0
	for gi, ss := range groups {
		g := &sc.Groups[gi]
		for i, s := range ss {
			d := drivers[k]
			k++
			at := t0
			if g.Ramp > 0 && len(ss) > 1 {
				at = t0.Add(g.Ramp * time.Duration(i) / time.Duration(len(ss)))
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				d.run(at, stopUplink, shutdown, hardStop)
				switch l := s.link.(type) {
				case *udpLink:
					l.close()
				case *dtlsLink:
					l.close()
				}
			}()
		}
	}
	cmdStop := make(chan struct{})
	var cmd *commander
	if obs != nil {
		cmd = startCommander(obs, clk, groups, cmdStop)
	}
	prog := &progress{opt: opt, drivers: drivers, upLat: &upLat, fleet: fleet, total: connectable, start: t0}
	progDone := make(chan struct{})
	progStopped := make(chan struct{})
	if opt.Progress != nil {
		go func() {
			defer close(progStopped)
			prog.loop(progDone)
		}()
	} else {
		close(progStopped)
	}

	// The publishing phase.
	timer := time.NewTimer(sc.Duration)
	select {
	case <-timer.C:
	case <-ctx.Done():
		timer.Stop()
	}
	runTime := time.Since(t0)
	close(stopUplink)
	close(cmdStop)
	if cmd != nil {
		cmd.wg.Wait()
	}

	// Drain: until everything sent has arrived, or the drain time is up.
	drain := sc.Drain
	if drain == 0 {
		drain = autoDrain(sc)
	}
	drainStart := time.Now()
	for time.Since(drainStart) < drain && !settled(drivers, obs != nil) {
		time.Sleep(50 * time.Millisecond)
	}
	drainTime := time.Since(drainStart)

	// Shut down: every connected sensor says DISCONNECT.
	close(shutdown)
	maxRetry := time.Second
	for _, g := range sc.Groups {
		maxRetry = max(maxRetry, g.RetryInterval)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	select {
	case <-finished:
	case <-time.After(min(2*maxRetry, 5*time.Second)):
		close(hardStop)
		<-finished
	}
	close(progDone)
	<-progStopped

	rep := report(sc, groups, obs, cmd, &upLat, e, runTime, drainTime)
	rep.Sensors = total
	if obs != nil {
		if err := obs.err(); err != nil {
			return rep, fmt.Errorf("observer lost its broker connection: %w", err)
		}
	}
	return rep, nil
}

// settled reports whether nothing is in flight and, when verifying,
// everything sent has arrived.
func settled(drivers []*driver, verify bool) bool {
	for _, d := range drivers {
		s := d.s
		if s.up.inFlight.Load() != 0 {
			return false
		}
		if !verify {
			continue
		}
		if s.g.Publishes {
			want := s.up.sent.Load() + s.up.acked.Load() + s.up.failed.Load()
			s.seen.mu.Lock()
			got := s.seen.set.unique
			s.seen.mu.Unlock()
			if got < want {
				return false
			}
		}
		if s.down.received.Load() < s.down.sent.Load() {
			return false
		}
	}
	return true
}

// report adds up the sensors' counts. It runs after every driver returned.
func report(sc *Scenario, groups [][]*sensor, obs *observer, cmd *commander, upLat *[4]*Histogram, e *env, runTime, drainTime time.Duration) *Report {
	r := &Report{
		Scenario:  sc.Name,
		Verified:  obs != nil,
		Passed:    true,
		DurationS: runTime.Seconds(),
		DrainS:    drainTime.Seconds(),
		Uplink:    map[string]*Stream{},
		Downlink:  map[string]*Stream{},
	}
	var achieved, delivered uint64
	for gi, ss := range groups {
		g := &sc.Groups[gi]
		r.OfferedRate += g.OfferedRate()
		for _, s := range ss {
			r.Retransmissions += s.up.retrans.Load()
			r.Rejected += s.up.rejected.Load()
			if g.Publishes {
				st := stream(r.Uplink, g.QoS)
				var sent, got uint64
				s.seen.mu.Lock()
				set := &s.seen.set
				got = set.unique
				if g.QoS == mqttsn.QoS0 || g.QoS == mqttsn.QoSMinus1 {
					sent = s.up.sent.Load()
				} else {
					sent = s.up.acked.Load() + s.up.failed.Load()
					st.Failed += s.up.failed.Load()
					st.Unfinished += uint64(len(s.unfinished))
					for _, seq := range s.unfinished {
						if set.has(seq) {
							got--
						}
					}
				}
				st.Duplicated += set.duplicated
				st.OutOfOrder += set.outOfOrder
				s.seen.mu.Unlock()
				achieved += sent
				st.Sent += sent
				if obs != nil {
					got = min(got, sent)
					delivered += got
					st.Delivered += got
					st.Lost += sent - got
				}
			}
			if s.cmdTopic != "" && g.CommandInterval > 0 && obs != nil {
				st := stream(r.Downlink, g.CommandQoS)
				sent, got := s.down.sent.Load(), s.down.received.Load()
				got = min(got, sent)
				st.Sent += sent
				st.Delivered += got
				st.Lost += sent - got
				st.Failed += s.down.sendFail.Load()
				st.Duplicated += s.down.set.duplicated
				st.OutOfOrder += s.down.set.outOfOrder
			}
		}
	}
	for k, st := range r.Uplink {
		h := upLat[qosFromKey(k)&3]
		st.LatencyP50, st.LatencyP99, st.LatencyMax = h.Percentile(50), h.Percentile(99), h.Max()
	}
	for k, st := range r.Downlink {
		h := e.downLat[qosFromKey(k)&3]
		st.LatencyP50, st.LatencyP99, st.LatencyMax = h.Percentile(50), h.Percentile(99), h.Max()
	}
	if runTime > 0 {
		r.AchievedRate = float64(achieved) / runTime.Seconds()
		r.DeliveredRate = float64(delivered) / runTime.Seconds()
	}
	f := e.fleet
	r.Connects, r.ConnectFailures, r.Reconnects = f.connects.Load(), f.connectFailures.Load(), f.reconnects.Load()
	r.Sleeps, r.WakeUps = f.sleeps.Load(), f.wakeUps.Load()
	r.Malformed, r.Unexpected, r.SendErrors = f.malformed.Load(), f.unexpected.Load(), f.sendErrors.Load()
	if obs != nil {
		r.Foreign = obs.foreign.Load()
	}
	if cmd != nil {
		r.CommandsSkipped = cmd.skip.Load()
	}
	if r.Verified {
		for _, dir := range []struct {
			name string
			m    map[string]*Stream
		}{{"uplink", r.Uplink}, {"downlink", r.Downlink}} {
			for _, k := range sortedKeys(dir.m) {
				st := dir.m[k]
				if (k == "qos1" || k == "qos2") && st.Lost > 0 {
					r.Failures = append(r.Failures, fmt.Sprintf("%s %s: %d of %d lost", dir.name, k, st.Lost, st.Sent))
				}
				if k == "qos2" && st.Duplicated > 0 {
					r.Failures = append(r.Failures, fmt.Sprintf("%s %s: %d duplicated", dir.name, k, st.Duplicated))
				}
			}
		}
		r.Passed = len(r.Failures) == 0
	}
	return r
}

func stream(m map[string]*Stream, q mqttsn.QoS) *Stream {
	k := qosKey(q)
	if m[k] == nil {
		m[k] = new(Stream)
	}
	return m[k]
}

func qosFromKey(k string) mqttsn.QoS {
	switch k {
	case "qos-1":
		return mqttsn.QoSMinus1
	case "qos1":
		return mqttsn.QoS1
	case "qos2":
		return mqttsn.QoS2
	}
	return mqttsn.QoS0
}

func sortedKeys(m map[string]*Stream) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// WriteText prints the report as a table.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "scenario %s: %d sensors, %.1fs publishing + %.1fs drain\n", r.Scenario, r.Sensors, r.DurationS, r.DrainS)
	fmt.Fprintf(w, "uplink rate: offered %.0f msg/s, achieved %.0f msg/s", r.OfferedRate, r.AchievedRate)
	if r.Verified {
		fmt.Fprintf(w, ", delivered %.0f msg/s", r.DeliveredRate)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-9s %-5s %9s %9s %7s %6s %6s %6s %6s %10s %10s %10s\n",
		"direction", "qos", "sent", "delivered", "lost", "dup", "ooo", "failed", "unfin", "p50", "p99", "max")
	for _, dir := range []struct {
		name string
		m    map[string]*Stream
	}{{"uplink", r.Uplink}, {"downlink", r.Downlink}} {
		for _, k := range sortedKeys(dir.m) {
			st := dir.m[k]
			if !r.Verified {
				fmt.Fprintf(w, "%-9s %-5s %9d %9s %7s %6s %6s %6d %6d %10s %10s %10s\n", dir.name, strings.TrimPrefix(k, "qos"),
					st.Sent, "-", "-", "-", "-", st.Failed, st.Unfinished, "-", "-", "-")
				continue
			}
			fmt.Fprintf(w, "%-9s %-5s %9d %9d %7d %6d %6d %6d %6d %10s %10s %10s\n", dir.name, strings.TrimPrefix(k, "qos"),
				st.Sent, st.Delivered, st.Lost, st.Duplicated, st.OutOfOrder, st.Failed, st.Unfinished,
				fmtMicros(st.LatencyP50), fmtMicros(st.LatencyP99), fmtMicros(st.LatencyMax))
		}
	}
	fmt.Fprintf(w, "connects %d, connect failures %d, reconnects %d, sleeps %d, wake-ups %d, retransmissions %d, rejected %d\n",
		r.Connects, r.ConnectFailures, r.Reconnects, r.Sleeps, r.WakeUps, r.Retransmissions, r.Rejected)
	if r.Malformed+r.Unexpected+r.SendErrors+r.Foreign+r.CommandsSkipped > 0 {
		fmt.Fprintf(w, "malformed %d, unexpected %d, send errors %d, foreign messages %d, commands skipped %d\n",
			r.Malformed, r.Unexpected, r.SendErrors, r.Foreign, r.CommandsSkipped)
	}
	switch {
	case !r.Verified:
		fmt.Fprintln(w, "not verified (run with -verify to check delivery)")
	case r.Passed:
		fmt.Fprintln(w, "PASS: no QoS 1/2 message lost, no QoS 2 message duplicated")
	default:
		fmt.Fprintln(w, "FAIL: "+strings.Join(r.Failures, "; "))
	}
}

func fmtMicros(us uint64) string {
	d := time.Duration(us) * time.Microsecond
	switch {
	case d < time.Millisecond:
		return strconv.FormatUint(us, 10) + "µs"
	case d < time.Second:
		return strconv.FormatFloat(float64(us)/1000, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(d.Seconds(), 'f', 2, 64) + "s"
}

// progress writes the live display.
type progress struct {
	opt     Options
	drivers []*driver
	upLat   *[4]*Histogram
	fleet   *fleetCounters
	total   int
	start   time.Time
}

func (p *progress) loop(done <-chan struct{}) {
	every := p.opt.ProgressEvery
	if every <= 0 {
		every = time.Second
		if !p.opt.ProgressTTY {
			every = 5 * time.Second
		}
	}
	t := time.NewTicker(every)
	defer t.Stop()
	var lastSent, lastGot uint64
	last := time.Now()
	for {
		select {
		case <-done:
			if p.opt.ProgressTTY {
				fmt.Fprintln(p.opt.Progress)
			}
			return
		case now := <-t.C:
			var sent, got, failed uint64
			var inFlight int64
			for _, d := range p.drivers {
				s := d.s
				sent += s.up.sent.Load() + s.up.acked.Load() + s.up.failed.Load()
				failed += s.up.failed.Load()
				inFlight += s.up.inFlight.Load()
			}
			var merged Histogram
			for _, h := range p.upLat {
				merged.Merge(h)
			}
			got = merged.Count()
			dt := now.Sub(last).Seconds()
			line := fmt.Sprintf("%6.1fs  connected %d/%d  up %.0f msg/s  delivered %.0f msg/s  in flight %d  failed %d  p99 %s  reconnects %d",
				now.Sub(p.start).Seconds(), p.fleet.connected.Load(), p.total,
				float64(sent-lastSent)/dt, float64(got-lastGot)/dt, inFlight, failed,
				fmtMicros(merged.Percentile(99)), p.fleet.reconnects.Load())
			lastSent, lastGot, last = sent, got, now
			if p.opt.ProgressTTY {
				fmt.Fprintf(p.opt.Progress, "\r%-130s", line)
			} else {
				fmt.Fprintln(p.opt.Progress, line)
			}
		}
	}
}
