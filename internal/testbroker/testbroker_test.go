package testbroker

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

const wait = 5 * time.Second

// TestObserverRoundTrip publishes at QoS 0, 1 and 2 from one Observer and
// receives all three, in order and at their QoS, on another.
func TestObserverRoundTrip(t *testing.T) {
	ForEach(t, func(t *testing.T, url string) {
		sub := NewObserver(t, url, "sub")
		sub.Subscribe("t/#", 2)
		pub := NewObserver(t, url, "pub")
		for q := range byte(3) {
			pub.Publish("t/"+string('0'+q), []byte{'p', '0' + q}, q, false)
		}
		for q := range byte(3) {
			m := sub.Expect(wait)
			want := "t/" + string('0'+q)
			if m.Topic != want || string(m.Payload) != "p"+string('0'+q) || m.QoS != q || m.Retain || m.Dup {
				t.Errorf("message %d: got %v, want %s q%d %q", q, m, want, q, "p"+string('0'+q))
			}
		}
		sub.ExpectNone(100 * time.Millisecond)
	})
}

// TestObserverRetain checks that Msg.Retain shows the publisher's flag both
// live (Retain As Published) and for a retained message sent on subscribe.
func TestObserverRetain(t *testing.T) {
	ForEach(t, func(t *testing.T, url string) {
		pub := NewObserver(t, url, "pub")
		pub.Publish("r/old", []byte("kept"), 1, true)

		sub := NewObserver(t, url, "sub")
		sub.Subscribe("r/#", 1)
		if m := sub.Expect(wait); m.Topic != "r/old" || !m.Retain || string(m.Payload) != "kept" {
			t.Errorf("on subscribe: got %v, want r/old retain \"kept\"", m)
		}
		pub.Publish("r/live", []byte("live"), 1, true)
		if m := sub.Expect(wait); m.Topic != "r/live" || !m.Retain {
			t.Errorf("live: got %v, want r/live retain", m)
		}
		pub.Publish("r/plain", []byte("plain"), 0, false)
		if m := sub.Expect(wait); m.Topic != "r/plain" || m.Retain {
			t.Errorf("live: got %v, want r/plain without retain", m)
		}
	})
}

// TestMosquittoStops checks that the cleanup of Mosquitto leaves no process
// behind.
func TestMosquittoStops(t *testing.T) {
	var pid int
	t.Run("run", func(t *testing.T) {
		m := startMosquitto(t)
		pid = m.cmd.Process.Pid
		NewObserver(t, m.url, "o").Publish("x", nil, 1, false)
	})
	if pid == 0 {
		return // skipped: mosquitto is not installed
	}
	// The cleanup reaped the process, so signal 0 finds nothing.
	p, err := os.FindProcess(pid)
	if err != nil {
		return // not found: gone
	}
	if err := p.Signal(syscall.Signal(0)); !errors.Is(err, os.ErrProcessDone) {
		t.Errorf("signal 0 to pid %d after cleanup: %v, want os.ErrProcessDone: mosquitto is still running", pid, err)
	}
}

// TestMosquittoRetriesTakenPort starts mosquitto on a port that is in use and
// checks that it is reported as an early exit, the case Mosquitto retries.
func TestMosquittoRetriesTakenPort(t *testing.T) {
	first := startMosquitto(t)
	bin, err := findMosquitto()
	if err != nil {
		t.Fatal(err)
	}
	m := &mosquitto{port: first.port, out: &tailBuffer{max: maxOutput}, exited: make(chan struct{})}
	conf := t.TempDir() + "/taken.conf"
	if err := os.WriteFile(conf, []byte(mosquittoConfig(first.port)), 0o600); err != nil {
		t.Fatal(err)
	}
	m.cmd = newCmd(bin, conf, m.out)
	if err := m.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { m.err = m.cmd.Wait(); close(m.exited) }()
	t.Cleanup(func() { m.cleanup(t) })
	err = m.waitReady(wait)
	m.stop()
	if !errors.Is(err, errExitedEarly) {
		t.Fatalf("waitReady: %v, want errExitedEarly", err)
	}
	if !strings.Contains(err.Error(), "in use") {
		t.Errorf("waitReady: %v; want mosquitto's output, which says the address is in use", err)
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 4}
	b.Write([]byte("ab"))
	b.Write([]byte("cdef"))
	if got, want := b.String(), "[2 earlier bytes dropped]\ncdef"; got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
}

func TestBrokerAddr(t *testing.T) {
	for _, tc := range []struct {
		url, want string
	}{
		{"tcp://127.0.0.1:1883", "127.0.0.1:1883"},
		{"mqtt://[::1]:1883", "[::1]:1883"},
		{"tcp://localhost:1", "localhost:1"},
		{"tcp://192.0.2.1:1883", ""},
		{"tcp://127.0.0.1", ""},
		{"ssl://127.0.0.1:8883", ""},
	} {
		got, err := brokerAddr(tc.url)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("brokerAddr(%q) = %q, %v; want %q", tc.url, got, err, tc.want)
		}
	}
}

// recordingTB records Fatal and Skip instead of ending the test.
type recordingTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordingTB) Helper()             {}
func (r *recordingTB) Fatal(args ...any)   { r.fatal = fmt.Sprint(args...); runtime.Goexit() }
func (r *recordingTB) Skip(args ...any)    { r.skip = fmt.Sprint(args...); runtime.Goexit() }
func (r *recordingTB) Logf(string, ...any) {}

// TestUnavailable checks that a missing mosquitto fails the test in CI and
// skips it elsewhere.
func TestUnavailable(t *testing.T) {
	for _, ci := range []string{"true", ""} {
		t.Setenv("CI", ci)
		r := &recordingTB{TB: t}
		done := make(chan struct{})
		go func() {
			defer close(done)
			unavailable(r, "ci message", "skip message")
		}()
		<-done
		if ci == "true" && (r.fatal != "ci message" || r.skip != "") || ci == "" && (r.skip != "skip message" || r.fatal != "") {
			t.Errorf("CI=%q: Fatal(%q), Skip(%q)", ci, r.fatal, r.skip)
		}
	}
}
