package broker

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

// MQTT 3.1.1 CONNECT: protocol "MQTT" level 4, clean session, keepalive 60 s,
// empty ClientID; and the CONNACK accepting it.
var (
	connect = []byte{0x10, 0x0c, 0x00, 0x04, 'M', 'Q', 'T', 'T', 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00}
	connack = []byte{0x20, 0x02, 0x00, 0x00}
)

// syncBuffer is a bytes.Buffer safe for concurrent writers.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func start(t *testing.T) *Broker {
	t.Helper()
	b, err := Start("127.0.0.1:0", zerolog.New(&syncBuffer{}))
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// closeWithin calls b.Close and fails the test if it takes longer than d.
func closeWithin(t *testing.T, b *Broker, d time.Duration) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- b.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Close: %v", err)
		}
	case <-time.After(d):
		t.Fatalf("Close did not return within %v", d)
	}
}

func TestConnectAndClose(t *testing.T) {
	b := start(t)
	addr := b.Addr().(*net.TCPAddr)
	if !addr.IP.IsLoopback() || addr.Port == 0 {
		t.Fatalf("Addr() = %v, want 127.0.0.1 and the bound port", addr)
	}

	c, err := net.DialTimeout("tcp", addr.String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(connack))
	if _, err := io.ReadFull(c, got); err != nil {
		t.Fatalf("reading CONNACK: %v", err)
	}
	if !bytes.Equal(got, connack) {
		t.Fatalf("CONNACK = % x, want % x", got, connack)
	}

	// Close with the client still connected.
	closeWithin(t, b, 5*time.Second)
	if _, err := io.ReadAll(c); err != nil && !errors.Is(err, net.ErrClosed) && !isReset(err) {
		t.Errorf("client read after Close: %v, want EOF", err)
	}
	if c2, err := net.DialTimeout("tcp", addr.String(), time.Second); err == nil {
		c2.Close()
		t.Errorf("dial after Close succeeded, want connection refused")
	}
	if err := b.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}

func isReset(err error) bool {
	return strings.Contains(err.Error(), "connection reset")
}

// TestCloseWithSilentClient checks that a connection that never sends
// CONNECT does not hold up Close (mochi waits for it but cannot end it).
func TestCloseWithSilentClient(t *testing.T) {
	b := start(t)
	c, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(50 * time.Millisecond) // let the broker accept it
	closeWithin(t, b, 2*time.Second)
}

func TestStartAddressInUse(t *testing.T) {
	b := start(t)
	b2, err := Start(b.Addr().String(), zerolog.Nop())
	if err == nil {
		b2.Close()
		t.Fatal("second Start on the same address succeeded")
	}
	if !strings.Contains(err.Error(), "embedded broker") {
		t.Errorf("error %q lacks context", err)
	}
}

func TestStartBadAddress(t *testing.T) {
	if _, err := Start("127.0.0.1:notaport", zerolog.Nop()); err == nil {
		t.Fatal("Start succeeded")
	}
}

func TestQuietHandler(t *testing.T) {
	tests := []struct {
		name      string
		level     zerolog.Level // of the gateway's logger
		log       func(*slog.Logger)
		wantLevel string // "" when nothing must be logged
		wantMsg   string
	}{
		{"info hidden at info", zerolog.InfoLevel, func(l *slog.Logger) { l.Info("mochi mqtt starting") }, "", ""},
		{"info is debug", zerolog.DebugLevel, func(l *slog.Logger) { l.Info("mochi mqtt starting") }, "debug", "mochi mqtt starting"},
		{"empty warning hidden at info", zerolog.InfoLevel, func(l *slog.Logger) { l.Warn("", "error", io.EOF) }, "", ""},
		{"empty warning is debug", zerolog.DebugLevel, func(l *slog.Logger) { l.Warn("", "error", io.EOF) }, "debug", "client connection ended"},
		{"warning kept", zerolog.InfoLevel, func(l *slog.Logger) { l.Warn("packet ids exhausted", "client", "c1") }, "warn", "packet ids exhausted"},
		{"error kept", zerolog.ErrorLevel, func(l *slog.Logger) { l.Error("failed to load clients") }, "error", "failed to load clients"},
		{"debug hidden at info", zerolog.InfoLevel, func(l *slog.Logger) { l.Debug("client disconnected") }, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf syncBuffer
			zl := zerolog.New(&buf).Level(tt.level).With().Str("component", "broker").Logger()
			tt.log(slog.New(quietHandler{zerolog.NewSlogHandler(zl)}).With("listener", "tcp"))
			out := buf.String()
			if tt.wantLevel == "" {
				if out != "" {
					t.Fatalf("logged %q, want nothing", out)
				}
				return
			}
			var rec map[string]any
			if err := json.Unmarshal([]byte(out), &rec); err != nil {
				t.Fatalf("not one JSON line: %q", out)
			}
			if rec["level"] != tt.wantLevel || rec["message"] != tt.wantMsg || rec["component"] != "broker" || rec["listener"] != "tcp" {
				t.Errorf("logged %v, want level %q message %q component broker listener tcp", rec, tt.wantLevel, tt.wantMsg)
			}
		})
	}
}

// TestLogsQuietAtInfo checks that a broker's whole life, with a client, logs
// nothing at info level.
func TestLogsQuietAtInfo(t *testing.T) {
	var buf syncBuffer
	b, err := Start("127.0.0.1:0", zerolog.New(&buf).Level(zerolog.InfoLevel))
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(connack))); err != nil {
		t.Fatal(err)
	}
	c.Close() // without DISCONNECT
	time.Sleep(50 * time.Millisecond)
	closeWithin(t, b, 5*time.Second)
	if out := buf.String(); out != "" {
		t.Errorf("logged at info level:\n%s", out)
	}
}

// TestCloseLeavesNoGoroutines checks that the broker's goroutines end soon
// after Close (mochi does not wait for its housekeeping loop, so poll).
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	b, err := Start("127.0.0.1:0", zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	silent, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	c, err := net.DialTimeout("tcp", b.Addr().String(), time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write(connect); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(c, make([]byte, len(connack))); err != nil {
		t.Fatal(err)
	}
	closeWithin(t, b, 5*time.Second)

	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines after Close, %d before:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}
