package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/rs/zerolog"

	"github.com/sensorgate/mqttsn-gateway/gateway/config"
)

// TestBinary builds the command and runs it as a user would.
func TestBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mqttsn-gateway")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}

	t.Run("version", func(t *testing.T) {
		stdout, stderr, code := runBinary(t, bin, "-version")
		if code != 0 || !strings.HasPrefix(stdout, "mqttsn-gateway ") || strings.Count(stdout, "\n") != 1 || stderr != "" {
			t.Errorf("exit %d, stdout %q, stderr %q; want 0 and one line \"mqttsn-gateway <version>\"", code, stdout, stderr)
		}
	})

	t.Run("config errors", func(t *testing.T) {
		tests := []struct {
			name string
			toml string
			want string // the one line on stderr, after "<path>: "
		}{
			{"unknown key", "[gateway]\nid = 1\nfoo = 2\n", "gateway.foo: unknown key"},
			{"bad duration", "[session]\nretry_interval = \"ten\"\n", `session.retry_interval: "ten" is not a duration (use e.g. "10s")`},
			{"id out of range", "[gateway]\nid = 300\n", "gateway.id: 300 is out of range 0..255"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				path := writeConfig(t, tt.toml)
				_, stderr, code := runBinary(t, bin, "-config", path)
				if want := path + ": " + tt.want + "\n"; code != 2 || stderr != want {
					t.Errorf("exit %d, stderr %q; want 2 and %q", code, stderr, want)
				}
			})
		}
	})

	t.Run("explicit config missing", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "nowhere.toml")
		_, stderr, code := runBinary(t, bin, "-config", path)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, path) {
			t.Errorf("exit %d, stderr %q; want 2 and one line naming %s", code, stderr, path)
		}
	})

	t.Run("unexpected argument", func(t *testing.T) {
		if _, _, code := runBinary(t, bin, "extra"); code != 2 {
			t.Errorf("exit %d, want 2", code)
		}
	})

	t.Run("embedded broker and SIGINT", func(t *testing.T) {
		path := writeConfig(t, `[udp]
listen = ["127.0.0.1:0"]
[embedded_broker]
listen = "127.0.0.1:0"
[log]
format = "json"
`)
		profile := filepath.Join(t.TempDir(), "cpu.pprof")
		testSIGINT(t, bin, path, "-cpuprofile", profile)
		// -cpuprofile: the profile is complete once the gateway stopped.
		raw, err := os.ReadFile(profile)
		if err != nil {
			t.Fatalf("-cpuprofile: %v", err)
		}
		if len(raw) < 2 || raw[0] != 0x1f || raw[1] != 0x8b {
			t.Errorf("-cpuprofile wrote %d octets, not a gzipped pprof profile", len(raw))
		}
	})

	t.Run("PSK file reloaded on SIGHUP", func(t *testing.T) {
		testSIGHUP(t, bin)
	})
}

// testSIGHUP runs the gateway with a DTLS listener and a PSK file, rewrites
// the file and sends SIGHUP: the new table is logged as reloaded; a broken
// file is logged as not reloaded and the gateway goes on.
func testSIGHUP(t *testing.T, bin string) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "sensors.psk.toml")
	writePSK := func(text string) {
		if err := os.WriteFile(psk, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	writePSK("[[psk]]\nidentity = \"a\"\nkey = \"00112233445566778899aabbccddeeff\"\n")
	path := writeConfig(t, `[udp]
listen = ["127.0.0.1:0"]
[dtls]
listen = ["127.0.0.1:0"]
psk_file = "`+psk+`"
[embedded_broker]
listen = "127.0.0.1:0"
[discovery]
advertise_interval = "0s"
[log]
format = "json"
`)
	cmd := exec.Command(bin, "-config", path)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	lines := make(chan map[string]any, 100)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if json.Unmarshal(sc.Bytes(), &rec) == nil {
				lines <- rec
			}
		}
	}()
	waitFor := func(msg string) map[string]any {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case rec, ok := <-lines:
				if !ok {
					t.Fatalf("the gateway exited before logging %q", msg)
				}
				if rec["message"] == msg {
					return rec
				}
			case <-deadline:
				t.Fatalf("no %q in the log", msg)
			}
		}
	}
	waitFor("MQTT-SN listening on DTLS")

	writePSK("[[psk]]\nidentity = \"a\"\nkey = \"00112233445566778899aabbccddeeff\"\n[[psk]]\nidentity = \"b\"\nkey = \"ffeeddccbbaa99887766554433221100\"\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if rec := waitFor("PSK file reloaded"); rec["identities"] != float64(2) {
		t.Errorf("reloaded %v identities, want 2", rec["identities"])
	}
	writePSK("[[psk]]\nidentity = \"c\"\nkey = \"zz\"\n")
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if rec := waitFor("PSK file not reloaded; keeping the previous keys"); rec["level"] != "error" {
		t.Errorf("a broken PSK file was logged at %v, want error", rec["level"])
	}
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	waitFor("stopped")
}

// runBinary runs bin with args to completion, within 10 s.
func runBinary(t *testing.T, bin string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	var out, errOut bytes.Buffer
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.WaitDelay = time.Second
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(10*time.Second, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatalf("running %s: %v", bin, err)
	}
	return out.String(), errOut.String(), cmd.ProcessState.ExitCode()
}

func writeConfig(t *testing.T, text string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "gw.toml")
	if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// testSIGINT starts the gateway with the config at path, waits for the
// embedded broker, interrupts the gateway and checks that it stops cleanly.
func testSIGINT(t *testing.T, bin, path string, args ...string) {
	cmd := exec.Command(bin, append([]string{"-config", path}, args...)...)
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill() }() // in case the test fails early

	// Every stderr line must be a JSON log record.
	records := make(chan map[string]any, 100)
	go func() {
		defer close(records)
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			var rec map[string]any
			if err := json.Unmarshal(sc.Bytes(), &rec); err != nil {
				rec = map[string]any{"unparsed": sc.Text()}
			}
			records <- rec
		}
	}()
	next := func(deadline <-chan time.Time) (map[string]any, bool) {
		select {
		case rec, ok := <-records:
			if ok && rec["unparsed"] != nil {
				t.Errorf("stderr line is not JSON: %q", rec["unparsed"])
			}
			return rec, ok
		case <-deadline:
			t.Fatal("timed out waiting for the gateway's log")
			return nil, false
		}
	}

	// Wait for the embedded broker and the UDP listener; check that the
	// broker accepts connections.
	startDeadline := time.After(10 * time.Second)
	var addr, udpAddr string
	for addr == "" || udpAddr == "" {
		rec, ok := next(startDeadline)
		if !ok {
			t.Fatal("the gateway exited before its embedded broker and UDP listener were up")
		}
		switch rec["message"] {
		case "embedded MQTT broker listening":
			addr, _ = rec["addr"].(string)
			if rec["level"] != "info" || addr == "" {
				t.Fatalf("broker record %v, want level info and an addr", rec)
			}
		case "MQTT-SN listening on UDP":
			udpAddr, _ = rec["addr"].(string)
		}
	}
	if host, port, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" || port == "0" {
		t.Fatalf("broker addr %q, want 127.0.0.1 and the bound port", addr)
	}
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		t.Fatalf("dialling the embedded broker: %v", err)
	}
	c.Close()

	// A sensor connects over UDP: CONNECT "c1", keep-alive 60 s.
	sensor, err := net.Dial("udp", udpAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer sensor.Close()
	reply := make([]byte, 16)
	if _, err := sensor.Write([]byte{0x08, 0x04, 0x04, 0x01, 0x00, 0x3c, 'c', '1'}); err != nil {
		t.Fatal(err)
	}
	_ = sensor.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := sensor.Read(reply); err != nil || !bytes.Equal(reply[:n], []byte{0x03, 0x05, 0x00}) {
		t.Fatalf("CONNACK: % x, %v", reply[:n], err)
	}

	// Interrupt, and expect "stopped" and exit status 0 within 5 s; the
	// sensor is told with DISCONNECT before the listener closes.
	start := time.Now()
	if err := cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	stopDeadline := time.After(5 * time.Second)
	stopped := false
	for {
		rec, ok := next(stopDeadline)
		if !ok {
			break
		}
		if rec["message"] == "stopped" {
			stopped = true
		}
		if rec["level"] == "warn" || rec["level"] == "error" {
			t.Errorf("unexpected %s record: %v", rec["level"], rec)
		}
	}
	err = cmd.Wait()
	if elapsed := time.Since(start); elapsed > 5*time.Second {
		t.Errorf("the gateway took %v to stop, want at most 5 s", elapsed)
	}
	if err != nil {
		t.Errorf("exit: %v, want status 0", err)
	}
	if !stopped {
		t.Error("the gateway did not log \"stopped\"")
	}
	if n, err := sensor.Read(reply); err != nil || !bytes.Equal(reply[:n], []byte{0x02, 0x18}) {
		t.Errorf("on shutdown the sensor got % x, %v; want DISCONNECT", reply[:n], err)
	}
	if stdout.Len() > 0 {
		t.Errorf("the gateway wrote to stdout: %q", stdout.String())
	}
}

func TestLoadConfig(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "gateway.toml")

	cfg, defaulted, err := loadConfig(missing, false)
	if err != nil || !defaulted || !reflect.DeepEqual(cfg, config.Default()) {
		t.Errorf("implicit and missing: %+v, %v, %v; want the defaults", cfg, defaulted, err)
	}

	_, defaulted, err = loadConfig(missing, true)
	if !errors.Is(err, fs.ErrNotExist) || defaulted || !strings.Contains(err.Error(), missing) {
		t.Errorf("explicit and missing: %v, %v; want an error naming %s", defaulted, err, missing)
	}

	bad := writeConfig(t, "[gateway]\nid = 300\n")
	if _, _, err := loadConfig(bad, false); err == nil {
		t.Error("a bad implicit config was accepted")
	}
}

func TestServe(t *testing.T) {
	tests := []struct {
		name     string
		run      runFunc
		signals  int
		wantCode int
		wantLog  string
		wantTime time.Duration // from the first signal to serve's return
	}{
		{
			name:     "clean shutdown",
			run:      func(ctx context.Context, _ config.Config, _ zerolog.Logger) error { <-ctx.Done(); return nil },
			signals:  1,
			wantCode: 0,
			wantLog:  `"message":"stopped"`,
		},
		{
			name:     "fails to start",
			run:      func(context.Context, config.Config, zerolog.Logger) error { return errors.New("bind: address in use") },
			wantCode: 1,
			wantLog:  `"error":"bind: address in use","message":"gateway failed"`,
		},
		{
			name: "shutdown fails",
			run: func(ctx context.Context, _ config.Config, _ zerolog.Logger) error {
				<-ctx.Done()
				return errors.New("flush failed")
			},
			signals:  1,
			wantCode: 1,
			wantLog:  `"message":"shutdown failed"`,
		},
		{
			name:     "shutdown too slow",
			run:      func(context.Context, config.Config, zerolog.Logger) error { time.Sleep(time.Hour); return nil },
			signals:  1,
			wantCode: 1,
			wantLog:  `"level":"error","timeout":5000,"message":"shutdown took too long; exiting"`,
			wantTime: shutdownTimeout,
		},
		{
			name:     "second signal",
			run:      func(context.Context, config.Config, zerolog.Logger) error { time.Sleep(time.Hour); return nil },
			signals:  2,
			wantCode: 1,
			wantLog:  `"message":"second signal; exiting before shutdown finished"`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var logs bytes.Buffer
				log := zerolog.New(&logs)
				signals := make(chan os.Signal, 2)
				for range tt.signals {
					signals <- os.Interrupt
				}
				start := time.Now()
				code := serve(config.Default(), log, signals, tt.run)
				if code != tt.wantCode {
					t.Errorf("exit status %d, want %d", code, tt.wantCode)
				}
				if elapsed := time.Since(start); elapsed != tt.wantTime {
					t.Errorf("serve took %v, want %v", elapsed, tt.wantTime)
				}
				if !strings.Contains(logs.String(), tt.wantLog) {
					t.Errorf("log:\n%s\nwant it to contain %s", logs.String(), tt.wantLog)
				}
				time.Sleep(2 * time.Hour) // let the abandoned runs end
			})
		})
	}
}
