package testbroker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// mosquittoPath is where Debian's mosquitto package installs the broker,
	// outside an ordinary user's PATH.
	mosquittoPath = "/usr/sbin/mosquitto"
	// startAttempts is how often Mosquitto tries a new port when mosquitto
	// exits before it listens (another process took the port meanwhile).
	startAttempts = 5
	// readyTimeout bounds the wait for mosquitto to accept a TCP connection.
	readyTimeout = 5 * time.Second
	// stopTimeout is how long mosquitto has to exit after SIGTERM before it
	// is killed.
	stopTimeout = 2 * time.Second
	// maxOutput is how much of mosquitto's log (its tail) is kept for a
	// failed test.
	maxOutput = 1 << 20
)

// errExitedEarly reports that mosquitto exited before it accepted a
// connection, most likely because its port was taken.
var errExitedEarly = errors.New("mosquitto exited before it accepted a connection")

// Mosquitto starts Debian's mosquitto on 127.0.0.1 with a free port, anonymous
// access and no persistence, stops it in tb's cleanup and returns its URL,
// e.g. "tcp://127.0.0.1:41234".
//
// When mosquitto is not installed, or is too old to speak MQTT 5, Mosquitto
// skips the test, or fails it when the environment has CI=true. Mosquitto's
// log is printed with tb.Log only when the test failed; set TESTBROKER_LOG=1
// to make it log every packet.
func Mosquitto(tb testing.TB) string {
	tb.Helper()
	return startMosquitto(tb).url
}

// mosquitto is a running mosquitto process.
type mosquitto struct {
	url    string
	port   int
	cmd    *exec.Cmd
	out    *tailBuffer
	exited chan struct{} // closed when cmd.Wait has returned
	err    error         // cmd.Wait's result, once exited is closed

	stopOnce sync.Once
	stopped  bool // stop was called: an exit is expected
}

// startMosquitto finds mosquitto, starts it and waits until it accepts TCP
// connections, trying a new port when it exits early.
func startMosquitto(tb testing.TB) *mosquitto {
	tb.Helper()
	bin, err := findMosquitto()
	if err != nil {
		unavailable(tb, "testbroker: mosquitto not installed; .ci/run installs it",
			"mosquitto not installed (apt-get install mosquitto): skipping the mosquitto half")
	}
	if err := checkMosquittoVersion(bin); err != nil {
		unavailable(tb, fmt.Sprintf("testbroker: %v", err),
			fmt.Sprintf("%v: skipping the mosquitto half", err))
	}
	dir := tb.TempDir()
	for attempt := 1; ; attempt++ {
		m, err := launchMosquitto(tb, bin, dir)
		if err == nil {
			return m
		}
		if !errors.Is(err, errExitedEarly) || attempt == startAttempts {
			tb.Fatalf("testbroker: start mosquitto (attempt %d of %d): %v", attempt, startAttempts, err)
		}
		tb.Logf("testbroker: %v; retrying with another port", err)
	}
}

// unavailable fails the test with ciMsg in CI and skips it with skipMsg
// elsewhere.
func unavailable(tb testing.TB, ciMsg, skipMsg string) {
	tb.Helper()
	if inCI() {
		tb.Fatal(ciMsg)
	}
	tb.Skip(skipMsg)
}

// findMosquitto returns the path of the mosquitto binary: on PATH, or else
// where Debian installs it.
func findMosquitto() (string, error) {
	if p, err := exec.LookPath("mosquitto"); err == nil {
		return p, nil
	}
	p, err := exec.LookPath(mosquittoPath)
	if err != nil {
		return "", fmt.Errorf("mosquitto is neither on PATH nor at %s: %w", mosquittoPath, err)
	}
	return p, nil
}

// versionRE finds the version in the first line of "mosquitto -h".
var versionRE = regexp.MustCompile(`mosquitto version (\d+)\.(\d+)`)

// checkMosquittoVersion checks that bin is mosquitto 1.6 or later, the first
// release to speak MQTT 5.
func checkMosquittoVersion(bin string) error {
	ctx, cancel := context.WithTimeout(context.Background(), readyTimeout)
	defer cancel()
	// "mosquitto -h" prints its usage and exits with status 3.
	out, _ := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	v := versionRE.FindSubmatch(out)
	if v == nil {
		return fmt.Errorf("%s -h printed no version: %q", bin, firstLine(out))
	}
	major, _ := strconv.Atoi(string(v[1]))
	minor, _ := strconv.Atoi(string(v[2]))
	if major < 1 || major == 1 && minor < 6 {
		return fmt.Errorf("%s is mosquitto %d.%d, which does not speak MQTT 5 (1.6 or later does)", bin, major, minor)
	}
	return nil
}

// firstLine returns b up to its first newline.
func firstLine(b []byte) string {
	for i, c := range b {
		if c == '\n' {
			return string(b[:i])
		}
	}
	return string(b)
}

// launchMosquitto starts mosquitto on a free port with a config written to
// dir, registers its stop with tb.Cleanup and waits until it accepts TCP
// connections. The error wraps errExitedEarly when mosquitto exited first.
func launchMosquitto(tb testing.TB, bin, dir string) (*mosquitto, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, fmt.Sprintf("mosquitto-%d.conf", port))
	if err := os.WriteFile(conf, []byte(mosquittoConfig(port)), 0o600); err != nil {
		return nil, fmt.Errorf("write mosquitto config: %w", err)
	}

	m := &mosquitto{
		url:    fmt.Sprintf("tcp://127.0.0.1:%d", port),
		port:   port,
		out:    &tailBuffer{max: maxOutput},
		exited: make(chan struct{}),
	}
	m.cmd = newCmd(bin, conf, m.out)
	if err := m.cmd.Start(); err != nil {
		return nil, fmt.Errorf("run %s: %w", bin, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.exited)
	}()
	tb.Cleanup(func() { m.cleanup(tb) })

	if err := m.waitReady(readyTimeout); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// newCmd returns the command that runs mosquitto with the config file conf,
// its output going to out.
func newCmd(bin, conf string, out io.Writer) *exec.Cmd {
	cmd := exec.Command(bin, "-c", conf)
	cmd.Stdout = out
	cmd.Stderr = out
	cmd.SysProcAttr = sysProcAttr()
	return cmd
}

// mosquittoConfig returns a config for a loopback broker on port.
func mosquittoConfig(port int) string {
	logTypes := "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
	if os.Getenv(LogEnv) == "1" {
		logTypes = "log_type all\n"
	}
	return fmt.Sprintf("# written by internal/testbroker\n"+
		"listener %d 127.0.0.1\n"+
		"allow_anonymous true\n"+
		"persistence false\n"+
		"log_dest stderr\n"+
		"%s"+
		"connection_messages true\n"+
		"log_timestamp_format %%H:%%M:%%S\n", port, logTypes)
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := ln.Close(); err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	return port, nil
}

// waitReady waits until mosquitto has logged that it runs (it does so once
// its listener is open) and accepts a TCP connection, for at most d. The log
// line matters when another process took the port: the connection would
// succeed, to that process, while mosquitto fails to bind and exits.
func (m *mosquitto) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(m.port))
	for {
		select {
		case <-m.exited:
			return fmt.Errorf("port %d: %w (%v); its output:\n%s", m.port, errExitedEarly, m.err, m.out)
		default:
		}
		err := errors.New(`no "running" line in its log yet`)
		if runningRE.MatchString(m.out.String()) {
			var c net.Conn
			if c, err = net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
				_ = c.Close()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mosquitto did not accept a connection on %s within %v: %w; its output:\n%s", addr, d, err, m.out)
		}
		select {
		case <-m.exited:
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// runningRE matches the line mosquitto (1.6 and 2.x) logs once its listeners
// are open: "mosquitto version 2.0.11 running".
var runningRE = regexp.MustCompile(`(?m)mosquitto version \S+ running$`)

// stop ends mosquitto: SIGTERM, then SIGKILL after stopTimeout. It returns
// once the process has been reaped.
func (m *mosquitto) stop() {
	m.stopOnce.Do(func() {
		m.stopped = true
		select {
		case <-m.exited:
			return
		default:
		}
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(stopTimeout):
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
	})
}

// cleanup stops mosquitto at the end of the test, fails the test if
// mosquitto died during it, and prints its log if the test failed.
func (m *mosquitto) cleanup(tb testing.TB) {
	select {
	case <-m.exited:
		if !m.stopped {
			tb.Errorf("testbroker: mosquitto on port %d exited during the test: %v", m.port, m.err)
		}
	default:
	}
	m.stop()
	if tb.Failed() {
		tb.Logf("testbroker: mosquitto on port %d logged:\n%s", m.port, m.out)
	}
}

// tailBuffer is an io.Writer, safe for concurrent use, that keeps the last
// max bytes written to it.
type tailBuffer struct {
	mu      sync.Mutex
	buf     []byte
	max     int
	dropped int
}

// Write appends p, dropping the oldest bytes beyond max.
func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.dropped += over
	}
	return len(p), nil
}

// String returns what was kept, preceded by a note of what was dropped.
func (b *tailBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.dropped > 0 {
		return fmt.Sprintf("[%d earlier bytes dropped]\n%s", b.dropped, b.buf)
	}
	return string(b.buf)
}
