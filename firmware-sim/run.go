package main

import (
	"context"
	"fmt"
	"io"
	"math"
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
	ProgressTTY bool
	// ProgressEvery is the progress display's period; 0: 1 s on a
	// terminal (ProgressTTY), 5 s otherwise.
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
	// Delivered counts the sent messages that arrived: the intersection of
	// the sequence numbers sent and those seen, so that an extra arrival
	// cannot hide a loss.
	Delivered uint64 `json:"delivered"`
	// Lost is Sent - Delivered.
	Lost uint64 `json:"lost"`
	// Duplicated counts arrivals of a message that had arrived before.
	Duplicated uint64 `json:"duplicated"`
	// OutOfOrder counts first arrivals after a later message of the same sender.
	OutOfOrder uint64 `json:"out_of_order"`
	// Failed counts QoS 1/2 publications given up (retries exhausted,
	// rejected), or commands the broker did not accept; included in Sent
	// for uplink, not for commands.
	Failed uint64 `json:"failed"`
	// Unfinished counts QoS 1/2 publications still in flight when the run
	// ended: excluded from Sent.
	Unfinished uint64 `json:"unfinished"`
	// Skipped counts uplink readings that fell due while their sensor
	// could not publish (not connected, or too far behind its schedule):
	// never sent, so neither in Sent nor lost.
	Skipped uint64 `json:"skipped"`
	// LatencyP50 is the median latency from first transmission to
	// arrival, in µs.
	LatencyP50 uint64 `json:"latency_p50_us"`
	// LatencyP99 is the 99th percentile of the latency, in µs.
	LatencyP99 uint64 `json:"latency_p99_us"`
	// LatencyMax is the largest latency, in µs.
	LatencyMax uint64 `json:"latency_max_us"`
}

// TimelinePoint is one sample of a run's progress.
type TimelinePoint struct {
	// T is the time of the sample in seconds since the sensors started.
	T float64 `json:"t"`
	// Up is the uplink publications finished so far over all sensors:
	// written (QoS 0/-1), acknowledged or given up (QoS 1/2).
	Up uint64 `json:"up"`
	// Down is the commands the sensors received so far (each counted once).
	Down uint64 `json:"down"`
}

// Report is the outcome of a run, printed as text or (-json) as JSON.
type Report struct {
	// Scenario is the scenario's name.
	Scenario string `json:"scenario"`
	// Seed is the seed the sensors' randomness came from (the scenario's,
	// or the random one picked when it was 0): -seed reproduces the run's
	// schedule.
	Seed uint64 `json:"seed"`
	// Verified is true when an observer checked delivery (-verify).
	Verified bool `json:"verified"`
	// Passed is false when a verified run lost QoS 1/2 messages,
	// duplicated QoS 2 ones, or could not test what it was to test (a
	// group that published nothing or sent no command, sensors that never
	// connected, commands the broker refused); Failures says which.
	Passed bool `json:"passed"`
	// Failures lists why a verified run did not pass, one line each.
	Failures []string `json:"failures,omitempty"`
	// Sensors is the number of simulated sensors.
	Sensors int `json:"sensors"`
	// DurationS is the publishing phase in seconds.
	DurationS float64 `json:"duration_s"`
	// DrainS is the wait after it, in seconds.
	DrainS float64 `json:"drain_s"`
	// OfferedRate is the configured uplink rate (msg/s; back-to-back
	// groups not included).
	OfferedRate float64 `json:"offered_rate"`
	// AchievedRate is the uplink publications finished per second of
	// DurationS.
	AchievedRate float64 `json:"achieved_rate"`
	// DeliveredRate is the uplink publications the observer got per second
	// of DurationS.
	DeliveredRate float64 `json:"delivered_rate"`
	// Uplink is the sensors' publications by QoS: "qos-1", "qos0", "qos1",
	// "qos2".
	Uplink map[string]*Stream `json:"uplink"`
	// Downlink is the commands by QoS, as Uplink.
	Downlink map[string]*Stream `json:"downlink"`
	// Timeline has one point per second from the sensors' start until the
	// run ends, drain and shutdown included (not in the text report).
	Timeline []TimelinePoint `json:"timeline"`

	// Connects counts accepted CONNECTs (full connects and resumes).
	Connects uint64 `json:"connects"`
	// ConnectFailures counts CONNECTs refused or unanswered, and DTLS
	// handshakes that failed.
	ConnectFailures uint64 `json:"connect_failures"`
	// Reconnects counts connections the sensors considered lost and tried
	// again.
	Reconnects uint64 `json:"reconnects"`
	// Sleeps counts DISCONNECT(Duration) the gateway accepted.
	Sleeps uint64 `json:"sleeps"`
	// WakeUps counts PINGREQ(ClientId) wake-ups.
	WakeUps uint64 `json:"wake_ups"`
	// Retransmissions counts PUBLISHes sent again (DUP).
	Retransmissions uint64 `json:"retransmissions"`
	// Rejected counts PUBACK, REGACK and SUBACK with a return code other
	// than accepted.
	Rejected uint64 `json:"rejected"`
	// Malformed counts datagrams from the gateway that did not decode.
	Malformed uint64 `json:"malformed"`
	// Unexpected counts valid messages from the gateway that had no use in
	// the sensor's state.
	Unexpected uint64 `json:"unexpected"`
	// SendErrors counts datagrams (or, with -direct, MQTT publishes) that
	// could not be written.
	SendErrors uint64 `json:"send_errors"`
	// EncodeErrors counts messages a sensor could not encode; a sensor
	// whose request does not encode gives up.
	EncodeErrors uint64 `json:"encode_errors"`
	// Foreign counts messages the observer got that are no sensor's: not
	// a payload of this simulator, or an unknown ClientId.
	Foreign uint64 `json:"foreign_messages"`
	// Stale counts messages with a sensor's ClientId that are not this
	// run's (retained, another run's nonce, a seq never assigned), at the
	// observer and at the sensors; they are not counted as delivered.
	Stale uint64 `json:"stale_messages"`
	// CommandsSkipped counts commands not sent because every commander
	// worker was busy.
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

// timelineEvery is the period of the report's timeline.
const timelineEvery = time.Second

// runState is what Run and runDirect share: the sensors, the observer,
// the progress display and the timeline.
type runState struct {
	sc     *Scenario
	opt    Options
	seed   uint64
	env    *env
	groups [][]*sensor // by group
	all    []*sensor
	byID   map[string]*sensor
	obs    *observer
	t0     time.Time

	progDone, progStopped chan struct{}
	tl                    *timeline
}

// newRunState prepares a run of sc: its seed (sc.Seed, or a random one)
// and its environment with a fresh nonce.
func newRunState(sc *Scenario, opt Options) *runState {
	seed := sc.Seed
	if seed == 0 {
		seed = rand.Uint64()
	}
	return &runState{sc: sc, opt: opt, seed: seed, env: newEnv(newRunNonce()),
		groups: make([][]*sensor, len(sc.Groups)), byID: map[string]*sensor{}}
}

// add adds s to group gi. Two sensors with one ClientId are an error (the
// parser rejects such scenarios; this catches scenarios built in code).
func (r *runState) add(gi int, s *sensor) error {
	if _, dup := r.byID[s.clientID]; dup {
		return fmt.Errorf("group %s: ClientId %q is used by two sensors", s.g.Name, s.clientID)
	}
	r.byID[s.clientID] = s
	r.groups[gi] = append(r.groups[gi], s)
	r.all = append(r.all, s)
	return nil
}

// observe connects the observer, subscribed to the topics of the groups
// that publish. The caller closes it.
func (r *runState) observe(ctx context.Context) error {
	var filters []string
	for _, g := range r.sc.Groups {
		if g.Count == 0 || !g.Publishes || g.Topic == "" {
			continue
		}
		if f := filterOf(g.Topic); !slices.Contains(filters, f) {
			filters = append(filters, f)
		}
	}
	id := r.opt.ObserverID
	if id == "" {
		id = "firmware-sim-observer-" + strconv.Itoa(os.Getpid())
	}
	commands := false
	for _, g := range r.sc.Groups {
		commands = commands || g.Count > 0 && g.CommandInterval > 0 && g.CommandTopic != ""
	}
	obs, err := newObserver(ctx, r.sc.Broker, id, r.sc.ObserverQoS, r.env, r.byID, filters, commands && !r.opt.Direct)
	if err != nil {
		return err
	}
	r.obs = obs
	return nil
}

// startClock sets the run's start, t0, and starts the progress display
// (for total sensors) and the timeline.
func (r *runState) startClock(total int) time.Time {
	r.t0 = time.Now()
	r.tl = startTimeline(r.all, r.t0, timelineEvery)
	r.progDone, r.progStopped = make(chan struct{}), make(chan struct{})
	if r.opt.Progress == nil {
		close(r.progStopped)
		return r.t0
	}
	prog := &progress{opt: r.opt, sensors: r.all, env: r.env, total: total, start: r.t0}
	go func() {
		defer close(r.progStopped)
		prog.loop(r.progDone)
	}()
	return r.t0
}

// publishing waits for the end of the publishing phase (sc.Duration, or
// ctx cancelled) and returns its length.
func (r *runState) publishing(ctx context.Context) time.Duration {
	timer := time.NewTimer(r.sc.Duration)
	defer timer.Stop()
	select {
	case <-timer.C:
	case <-ctx.Done():
	}
	return time.Since(r.t0)
}

// drain waits until everything sent has arrived (settled), or for d, and
// returns how long it waited.
func (r *runState) drain(d time.Duration) time.Duration {
	start := time.Now()
	for time.Since(start) < d && !settled(r.all, r.obs != nil) {
		time.Sleep(50 * time.Millisecond)
	}
	return time.Since(start)
}

// finish stops the displays and the timeline and reports on sensors
// sensors. The error is the observer's lost connection, if any.
func (r *runState) finish(cmd *commander, runTime, drainTime time.Duration, sensors int) (*Report, error) {
	close(r.progDone)
	<-r.progStopped
	timeline := r.tl.stop()
	rep := report(r.sc, r.groups, r.obs, cmd, r.env, runTime, drainTime)
	rep.Sensors = sensors
	rep.Seed = r.seed
	rep.Timeline = timeline
	if r.obs != nil {
		if err := r.obs.err(); err != nil {
			return rep, fmt.Errorf("observer lost its broker connection: %w", err)
		}
	}
	return rep, nil
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

	r := newRunState(sc, opt)
	// linkCtx bounds the DTLS handshakes: cancelled at shutdown.
	linkCtx, cancelLinks := context.WithCancel(context.Background())
	defer cancelLinks()
	var drivers []*driver
	total, connectable := 0, 0
	for gi := range sc.Groups {
		g := &sc.Groups[gi]
		for i := range g.Count {
			d := &driver{inbox: make(chan mqttsn.Message, 32), quit: make(chan struct{})}
			var l link
			id := expand(g.ClientID, g.First+i, g.IDWidth, "")
			if g.Transport == "dtls" {
				opts, err := dset.options(id)
				if err != nil {
					return nil, err
				}
				l = &dtlsLink{gw: dtlsGW, opts: opts, ctx: linkCtx, timeout: max(g.RetryInterval*time.Duration(g.MaxRetries+1), 5*time.Second),
					inbox: d.inbox, quit: d.quit, fc: r.env.fleet,
					onError: func(err error) { opt.Log.Debug().Str("client", id).Err(err).Msg("DTLS handshake failed") }}
			} else {
				l = &udpLink{gw: gw, inbox: d.inbox, quit: d.quit, fc: r.env.fleet}
			}
			s := newSensor(g, r.env, g.First+i, l, r.seed+uint64(gi)<<32)
			if err := r.add(gi, s); err != nil {
				return nil, err
			}
			d.s = s
			drivers = append(drivers, d)
		}
		total += g.Count
		if g.QoS != mqttsn.QoSMinus1 {
			connectable += g.Count
		}
	}

	if sc.Verify {
		if err := r.observe(ctx); err != nil {
			return nil, err
		}
		defer r.obs.close()
	}

	stopUplink, shutdown, hardStop := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	t0 := r.startClock(connectable)
	k := 0
	for gi, ss := range r.groups {
		g := &sc.Groups[gi]
		for i := range ss {
			d := drivers[k]
			k++
			at := t0
			if g.Ramp > 0 && len(ss) > 1 {
				at = t0.Add(g.Ramp * time.Duration(i) / time.Duration(len(ss)))
			}
			wg.Go(func() {
				d.run(at, stopUplink, shutdown, hardStop)
				d.s.link.close()
			})
		}
	}
	cmdStop := make(chan struct{})
	var cmd *commander
	if r.obs != nil {
		cmd = startCommander(r.obs, r.groups, cmdStop)
	}

	runTime := r.publishing(ctx)
	close(stopUplink)
	close(cmdStop)
	if cmd != nil {
		cmd.wg.Wait()
	}

	drain := sc.Drain
	if drain == 0 {
		drain = autoDrain(sc)
	}
	drainTime := r.drain(drain)

	// Shut down: every connected sensor says DISCONNECT; handshakes in
	// progress end; whoever is not done in time is abandoned.
	close(shutdown)
	cancelLinks()
	maxRetry := time.Second
	for _, g := range sc.Groups {
		maxRetry = max(maxRetry, g.RetryInterval)
	}
	finished := make(chan struct{})
	go func() { wg.Wait(); close(finished) }()
	grace := time.NewTimer(min(2*maxRetry, 5*time.Second))
	defer grace.Stop()
	select {
	case <-finished:
	case <-grace.C:
		close(hardStop)
		<-finished
	}
	return r.finish(cmd, runTime, drainTime, total)
}

// settled reports whether nothing is in flight and, when verifying,
// everything sent has arrived.
func settled(sensors []*sensor, verify bool) bool {
	for _, s := range sensors {
		if s.up.inFlight.Load() != 0 {
			return false
		}
		if !verify {
			continue
		}
		if s.g.Publishes {
			want := s.up.finished()
			s.seen.mu.Lock()
			got := s.seen.set.unique // only seqs the sensor assigned (observer.count)
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

// timeline samples the run's progress every period, in its own goroutine,
// until stop.
type timeline struct {
	sensors []*sensor
	t0      time.Time
	quit    chan struct{}
	done    chan struct{}
	points  []TimelinePoint // the sampler's until done closes
}

// startTimeline starts sampling sensors every period from t0.
func startTimeline(sensors []*sensor, t0 time.Time, every time.Duration) *timeline {
	t := &timeline{sensors: sensors, t0: t0, quit: make(chan struct{}), done: make(chan struct{}), points: []TimelinePoint{}}
	go func() {
		defer close(t.done)
		tick := time.NewTicker(every)
		defer tick.Stop()
		for {
			select {
			case <-t.quit:
				return
			case now := <-tick.C:
				t.points = append(t.points, t.sample(now))
			}
		}
	}()
	return t
}

// sample reads the sensors' counters at now.
func (t *timeline) sample(now time.Time) TimelinePoint {
	p := TimelinePoint{T: math.Round(now.Sub(t.t0).Seconds()*1000) / 1000}
	for _, s := range t.sensors {
		p.Up += s.up.finished()
		p.Down += s.down.received.Load()
	}
	return p
}

// stop ends the sampling and returns the points.
func (t *timeline) stop() []TimelinePoint {
	close(t.quit)
	<-t.done
	return t.points
}

// report adds up the sensors' counts. It runs after every sensor stopped.
func report(sc *Scenario, groups [][]*sensor, obs *observer, cmd *commander, e *env, runTime, drainTime time.Duration) *Report {
	r := &Report{
		Scenario:  sc.Name,
		Verified:  obs != nil,
		Passed:    true,
		DurationS: runTime.Seconds(),
		DrainS:    drainTime.Seconds(),
		Uplink:    map[string]*Stream{},
		Downlink:  map[string]*Stream{},
		Timeline:  []TimelinePoint{},
	}
	var groupFailures []string
	var achieved, delivered uint64
	for gi, ss := range groups {
		g := &sc.Groups[gi]
		r.OfferedRate += g.OfferedRate()
		var finished, cmdSent, cmdFailed, connFailures uint64
		neverConnected := 0
		for _, s := range ss {
			r.Retransmissions += s.up.retrans.Load()
			r.Rejected += s.up.rejected.Load()
			r.Stale += s.down.stale.Load()
			connFailures += s.connectFailures
			if s.connects == 0 && s.connectFailures > 0 {
				neverConnected++
			}
			if g.Publishes {
				st := stream(r.Uplink, g.QoS)
				st.Skipped += s.up.skipped.Load()
				var sent uint64
				if g.QoS == mqttsn.QoS0 || g.QoS == mqttsn.QoSMinus1 {
					sent = s.up.sent.Load()
				} else {
					sent = s.up.acked.Load() + s.up.failed.Load()
					st.Failed += s.up.failed.Load()
					st.Unfinished += uint64(len(s.unfinished))
				}
				// Seqs 1..s.seq were sent, but for the unfinished ones.
				s.seen.mu.Lock()
				got := s.seen.set.delivered(s.seq, s.unfinished)
				st.Duplicated += s.seen.set.duplicated
				st.OutOfOrder += s.seen.set.outOfOrder
				s.seen.mu.Unlock()
				finished += s.up.finished()
				achieved += sent
				st.Sent += sent
				if obs != nil {
					delivered += got
					st.Delivered += got
					st.Lost += sub0(sent, got)
				}
			}
			if s.cmdTopic != "" && g.CommandInterval > 0 && obs != nil {
				st := stream(r.Downlink, g.CommandQoS)
				s.down.mu.Lock()
				unsent := s.down.unsent
				s.down.mu.Unlock()
				// Seqs 1..next were handed out, but for those not sent.
				sent, got := s.down.sent.Load(), s.down.set.delivered(s.down.next.Load(), unsent)
				st.Sent += sent
				st.Delivered += got
				st.Lost += sub0(sent, got)
				st.Failed += s.down.sendFail.Load()
				st.Duplicated += s.down.set.duplicated
				st.OutOfOrder += s.down.set.outOfOrder
				cmdSent += sent
				cmdFailed += s.down.sendFail.Load()
			}
		}
		if len(ss) == 0 {
			continue
		}
		if g.Publishes && finished == 0 {
			groupFailures = append(groupFailures, fmt.Sprintf("group %s: no publication finished by its %d sensors", g.Name, len(ss)))
		}
		if neverConnected > 0 && g.QoS != mqttsn.QoSMinus1 {
			groupFailures = append(groupFailures, fmt.Sprintf("group %s: %d of %d sensors never connected (%d connect failures)", g.Name, neverConnected, len(ss), connFailures))
		}
		if cmd != nil && g.CommandInterval > 0 && ss[0].cmdTopic != "" && cmdSent == 0 && cmdFailed == 0 {
			groupFailures = append(groupFailures, fmt.Sprintf("group %s: no command sent (no sensor was subscribed)", g.Name))
		}
	}
	for k, st := range r.Uplink {
		h := e.upLat.of(qosFromKey(k))
		st.LatencyP50, st.LatencyP99, st.LatencyMax = h.Percentile(50), h.Percentile(99), h.Max()
	}
	for k, st := range r.Downlink {
		h := e.downLat.of(qosFromKey(k))
		st.LatencyP50, st.LatencyP99, st.LatencyMax = h.Percentile(50), h.Percentile(99), h.Max()
	}
	if runTime > 0 {
		r.AchievedRate = float64(achieved) / runTime.Seconds()
		r.DeliveredRate = float64(delivered) / runTime.Seconds()
	}
	f := e.fleet
	r.Connects, r.ConnectFailures, r.Reconnects = f.connects.Load(), f.connectFailures.Load(), f.reconnects.Load()
	r.Sleeps, r.WakeUps = f.sleeps.Load(), f.wakeUps.Load()
	r.Malformed, r.Unexpected, r.SendErrors, r.EncodeErrors = f.malformed.Load(), f.unexpected.Load(), f.sendErrors.Load(), f.encodeErrors.Load()
	if obs != nil {
		r.Foreign = obs.foreign.Load()
		r.Stale += obs.stale.Load()
	}
	if cmd != nil {
		r.CommandsSkipped = cmd.skip.Load()
	}
	if r.Verified {
		for _, dir := range r.directions() {
			for _, k := range sortedKeys(dir.m) {
				st := dir.m[k]
				if (k == "qos1" || k == "qos2") && st.Lost > 0 {
					r.Failures = append(r.Failures, fmt.Sprintf("%s %s: %d of %d lost", dir.name, k, st.Lost, st.Sent))
				}
				if k == "qos2" && st.Duplicated > 0 {
					r.Failures = append(r.Failures, fmt.Sprintf("%s %s: %d duplicated", dir.name, k, st.Duplicated))
				}
				if dir.name == "downlink" && st.Failed > 0 {
					why := ""
					if cmd != nil {
						if p := cmd.firstErr.Load(); p != nil {
							why = " (first: " + *p + ")"
						}
					}
					r.Failures = append(r.Failures, fmt.Sprintf("%s %s: %d commands not accepted by the broker%s", dir.name, k, st.Failed, why))
				}
			}
		}
		r.Failures = append(r.Failures, groupFailures...)
		r.Passed = len(r.Failures) == 0
	}
	return r
}

// sub0 returns a - b, or 0 when b is larger.
func sub0(a, b uint64) uint64 {
	if b > a {
		return 0
	}
	return a - b
}

// direction is one direction's streams of a Report, by QoS key.
type direction struct {
	name string // "uplink" or "downlink"
	m    map[string]*Stream
}

// directions returns the report's uplink and downlink streams, in that order.
func (r *Report) directions() []direction {
	return []direction{{"uplink", r.Uplink}, {"downlink", r.Downlink}}
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

// WriteText prints the report as a table (the timeline is left out).
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "scenario %s: %d sensors, %.1fs publishing + %.1fs drain, seed %d\n", r.Scenario, r.Sensors, r.DurationS, r.DrainS, r.Seed)
	fmt.Fprintf(w, "uplink rate: offered %.0f msg/s, achieved %.0f msg/s", r.OfferedRate, r.AchievedRate)
	if r.Verified {
		fmt.Fprintf(w, ", delivered %.0f msg/s", r.DeliveredRate)
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "%-9s %-5s %9s %9s %7s %6s %6s %6s %6s %10s %10s %10s\n",
		"direction", "qos", "sent", "delivered", "lost", "dup", "ooo", "failed", "unfin", "p50", "p99", "max")
	for _, dir := range r.directions() {
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
	var skipped uint64
	for _, st := range r.Uplink {
		skipped += st.Skipped
	}
	if r.Malformed+r.Unexpected+r.SendErrors+r.EncodeErrors+r.Foreign+r.Stale+r.CommandsSkipped+skipped > 0 {
		fmt.Fprintf(w, "malformed %d, unexpected %d, send errors %d, encode errors %d, foreign messages %d, stale messages %d, commands skipped %d, readings skipped %d\n",
			r.Malformed, r.Unexpected, r.SendErrors, r.EncodeErrors, r.Foreign, r.Stale, r.CommandsSkipped, skipped)
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
	sensors []*sensor
	env     *env
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
			for _, s := range p.sensors {
				sent += s.up.finished()
				failed += s.up.failed.Load()
				inFlight += s.up.inFlight.Load()
			}
			var merged Histogram
			for _, h := range p.env.upLat {
				merged.Merge(h)
			}
			got = merged.Count()
			dt := now.Sub(last).Seconds()
			line := fmt.Sprintf("%6.1fs  connected %d/%d  up %.0f msg/s  delivered %.0f msg/s  in flight %d  failed %d  p99 %s  reconnects %d",
				now.Sub(p.start).Seconds(), p.env.fleet.connected.Load(), p.total,
				float64(sent-lastSent)/dt, float64(got-lastGot)/dt, inFlight, failed,
				fmtMicros(merged.Percentile(99)), p.env.fleet.reconnects.Load())
			lastSent, lastGot, last = sent, got, now
			if p.opt.ProgressTTY {
				fmt.Fprintf(p.opt.Progress, "\r%-130s", line)
			} else {
				fmt.Fprintln(p.opt.Progress, line)
			}
		}
	}
}
