package transport

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"
)

// testPKI is a throwaway certificate authority with a server certificate for
// the loopback addresses and client certificates, all ECDSA P-256.
type testPKI struct {
	roots  *x509.CertPool  // trusts ca only
	server tls.Certificate // IP SANs 127.0.0.1 and ::1
	client tls.Certificate // CN "sensor-1", DNS SAN "sensor-1.example"
	// stranger is a client certificate with a valid form from another CA.
	stranger tls.Certificate
}

// newTestPKI generates the CA and its certificates.
func newTestPKI(tb testing.TB) *testPKI {
	tb.Helper()
	ca, caKey := newTestCA(tb, "test CA")
	other, otherKey := newTestCA(tb, "stranger CA")
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	return &testPKI{
		roots: roots,
		server: issueTestCert(tb, ca, caKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: "gateway"},
			IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		}),
		client: issueTestCert(tb, ca, caKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: "sensor-1"},
			DNSNames:    []string{"sensor-1.example"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}),
		stranger: issueTestCert(tb, other, otherKey, &x509.Certificate{
			Subject:     pkix.Name{CommonName: "sensor-1"},
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
		}),
	}
}

// newTestCA returns a self-signed CA certificate and its key.
func newTestCA(tb testing.TB, cn string) (*x509.Certificate, *ecdsa.PrivateKey) {
	tb.Helper()
	key := newTestKey(tb)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		tb.Fatalf("create CA certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("parse CA certificate: %v", err)
	}
	return cert, key
}

// issueTestCert signs a leaf certificate from tmpl (subject, SANs, usages)
// with the CA and returns it with its new key.
func issueTestCert(tb testing.TB, ca *x509.Certificate, caKey *ecdsa.PrivateKey, tmpl *x509.Certificate) tls.Certificate {
	tb.Helper()
	key := newTestKey(tb)
	tmpl.SerialNumber = newSerial(tb)
	tmpl.NotBefore = time.Now().Add(-time.Hour)
	tmpl.NotAfter = time.Now().Add(24 * time.Hour)
	tmpl.KeyUsage = x509.KeyUsageDigitalSignature
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		tb.Fatalf("create certificate %q: %v", tmpl.Subject.CommonName, err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func newTestKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("generate key: %v", err)
	}
	return key
}

func newSerial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 62))
	if err != nil {
		tb.Fatalf("serial number: %v", err)
	}
	return n
}
