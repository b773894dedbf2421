package upstream_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha512"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// This file starts mosquitto with a config of the test's own (TLS,
// passwords, ACLs), which internal/testbroker does not offer.

// mosquitto is a running mosquitto with its listeners on 127.0.0.1.
type mosquitto struct {
	ports  []int
	cmd    *exec.Cmd
	out    *syncBuffer
	exited chan struct{} // closed once cmd.Wait returned
	err    error         // cmd.Wait's result, once exited is closed

	stopOnce sync.Once
	stopped  bool
}

// url returns e.g. "tls://127.0.0.1:PORT" for the i-th listener.
func (m *mosquitto) url(scheme string, i int) string {
	return fmt.Sprintf("%s://127.0.0.1:%d", scheme, m.ports[i])
}

// listenerConf opens a listener section for port on loopback.
func listenerConf(port int) string {
	return fmt.Sprintf("listener %d 127.0.0.1\n", port)
}

// startMosquitto runs mosquitto with the config conf returns for n free
// ports (conf must open a listener on each, with listenerConf), waits
// until every port accepts connections and stops it in t's cleanup.
// Without mosquitto the test is skipped, or fails when CI=true.
func startMosquitto(t *testing.T, conf func(ports []int) string, n int) *mosquitto {
	t.Helper()
	bin := findTool(t, "mosquitto", "/usr/sbin/mosquitto")
	dir := t.TempDir()
	const attempts = 5
	for attempt := 1; ; attempt++ {
		m, err := launchMosquitto(t, bin, dir, conf, n)
		if err == nil {
			return m
		}
		if attempt == attempts {
			t.Fatalf("start mosquitto (attempt %d of %d): %v", attempt, attempts, err)
		}
		t.Logf("start mosquitto: %v; retrying with other ports", err)
	}
}

func launchMosquitto(t *testing.T, bin, dir string, conf func([]int) string, n int) (*mosquitto, error) {
	m := &mosquitto{out: new(syncBuffer), exited: make(chan struct{})}
	for range n {
		m.ports = append(m.ports, freePort(t))
	}
	common := "persistence false\nlog_dest stderr\nlog_type all\nconnection_messages true\n"
	if os.Geteuid() == 0 {
		// As root mosquitto would switch to the user mosquitto, which
		// cannot read the test's files.
		common += "user root\n"
	}
	file := filepath.Join(dir, fmt.Sprintf("mosquitto-%d.conf", m.ports[0]))
	if err := os.WriteFile(file, []byte(common+conf(m.ports)), 0o600); err != nil {
		t.Fatal(err)
	}
	m.cmd = exec.Command(bin, "-c", file)
	m.cmd.Stdout, m.cmd.Stderr = m.out, m.out
	m.cmd.SysProcAttr = sysProcAttr()
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("run %s: %v", bin, err)
	}
	go func() {
		m.err = m.cmd.Wait()
		close(m.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-m.exited:
			if !m.stopped {
				t.Errorf("mosquitto exited during the test: %v", m.err)
			}
		default:
		}
		m.stop()
		if t.Failed() {
			t.Logf("mosquitto logged:\n%s", m.out)
		}
	})
	if err := m.waitReady(5 * time.Second); err != nil {
		m.stop()
		return nil, err
	}
	return m, nil
}

// waitReady waits until mosquitto logged that it runs and every port
// accepts a TCP connection.
func (m *mosquitto) waitReady(d time.Duration) error {
	deadline := time.Now().Add(d)
	for _, port := range m.ports {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		for {
			select {
			case <-m.exited:
				return fmt.Errorf("mosquitto exited early (%v):\n%s", m.err, m.out)
			default:
			}
			if strings.Contains(m.out.String(), " running\n") {
				if c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond); err == nil {
					_ = c.Close()
					break
				}
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("mosquitto not accepting on %s within %v:\n%s", addr, d, m.out)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	return nil
}

// stop sends SIGTERM, then SIGKILL after two seconds, and reaps mosquitto.
func (m *mosquitto) stop() {
	m.stopOnce.Do(func() {
		m.stopped = true
		_ = m.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-m.exited:
		case <-time.After(2 * time.Second):
			_ = m.cmd.Process.Kill()
			<-m.exited
		}
	})
}

// findTool returns the path of a mosquitto tool, on PATH or at debianPath.
// Without it the test is skipped, or fails when CI=true.
func findTool(t *testing.T, name, debianPath string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if _, err := os.Stat(debianPath); err == nil {
		return debianPath
	}
	msg := fmt.Sprintf("%s is neither on PATH nor at %s (apt-get install mosquitto)", name, debianPath)
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg + ": skipping")
	return ""
}

// mosquittoPasswd adds a user to the password file file, creating it if
// need be.
func mosquittoPasswd(t *testing.T, file, user, password string) {
	t.Helper()
	bin := findTool(t, "mosquitto_passwd", "/usr/bin/mosquitto_passwd")
	args := []string{"-b", file, user, password}
	if _, err := os.Stat(file); errors.Is(err, os.ErrNotExist) {
		args = append([]string{"-c"}, args...)
	}
	if out, err := exec.Command(bin, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", bin, err, out)
	}
}

// findDynsecPlugin returns the path of mosquitto's dynamic security plugin.
// Without it the test is skipped, or fails when CI=true.
func findDynsecPlugin(t *testing.T) string {
	t.Helper()
	for _, pattern := range []string{"/usr/lib/*/mosquitto_dynamic_security.so", "/usr/lib/mosquitto_dynamic_security.so", "/usr/local/lib/mosquitto_dynamic_security.so"} {
		if m, _ := filepath.Glob(pattern); len(m) > 0 {
			return m[0]
		}
	}
	msg := "mosquitto_dynamic_security.so not found (it comes with Debian's mosquitto package)"
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg + ": skipping")
	return ""
}

// dynsecACL is one ACL of a dynamic security role.
type dynsecACL struct {
	Type  string `json:"acltype"`
	Topic string `json:"topic"`
	Allow bool   `json:"allow"`
}

// writeDynsecConfig writes a dynamic security plugin config into dir with
// one client that has one role with acls, and denies by default what acls
// do not allow. It returns the file's path.
func writeDynsecConfig(t *testing.T, dir, user, password string, acls []dynsecACL) string {
	t.Helper()
	// The plugin stores PBKDF2-HMAC-SHA512 over a 12-byte salt, as
	// "mosquitto_ctrl dynsec init" writes it.
	salt := make([]byte, 12)
	if _, err := rand.Read(salt); err != nil {
		t.Fatal(err)
	}
	const iterations = 101
	hash, err := pbkdf2.Key(sha512.New, password, salt, iterations, 64)
	if err != nil {
		t.Fatal(err)
	}
	type role struct {
		Name string `json:"rolename"`
	}
	conf := map[string]any{
		"clients": []map[string]any{{
			"username":   user,
			"password":   base64.StdEncoding.EncodeToString(hash),
			"salt":       base64.StdEncoding.EncodeToString(salt),
			"iterations": iterations,
			"roles":      []role{{Name: "r"}},
		}},
		"roles": []map[string]any{{"rolename": "r", "acls": acls}},
		"defaultACLAccess": map[string]bool{
			"publishClientSend": false, "publishClientReceive": false, "subscribe": false, "unsubscribe": true,
		},
	}
	b, err := json.MarshalIndent(conf, "", "\t")
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "dynamic-security.json")
	if err := os.WriteFile(file, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return file
}

// freePort returns a port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// closedPort returns "127.0.0.1:PORT" where nothing listened a moment ago.
func closedPort(t *testing.T) string {
	t.Helper()
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(freePort(t)))
}

// certFiles are PEM files for a TLS listener.
type certFiles struct{ ca, cert, key string }

// writeCerts writes a CA and a server certificate for IP 127.0.0.1 signed
// by it, with the server's key, into dir.
func writeCerts(t *testing.T, dir string) certFiles {
	t.Helper()
	newKey := func() *ecdsa.PrivateKey {
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	now := time.Now()
	caKey := newKey()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "upstream test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey := newKey()
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, ca, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	f := certFiles{ca: filepath.Join(dir, "ca.pem"), cert: filepath.Join(dir, "server.pem"), key: filepath.Join(dir, "server.key")}
	for _, w := range []struct {
		file, typ string
		der       []byte
	}{{f.ca, "CERTIFICATE", caDER}, {f.cert, "CERTIFICATE", srvDER}, {f.key, "EC PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(w.file, pem.EncodeToMemory(&pem.Block{Type: w.typ, Bytes: w.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}

// syncBuffer is an io.Writer, safe for concurrent use, for mosquitto's log.
type syncBuffer struct {
	mu  sync.Mutex
	buf []byte
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.buf = append(b.buf, p...)
	return len(p), nil
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.buf)
}
