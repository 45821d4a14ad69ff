package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func newTestCA(t *testing.T) *TestCA {
	t.Helper()
	ca, err := NewTestCA()
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// selfSigned makes a self-signed certificate for key in PEM, a CA or not.
func selfSigned(t *testing.T, key crypto.Signer, isCA bool, notAfter time.Time) []byte {
	t.Helper()
	template := &x509.Certificate{
		SerialNumber: mustSerial(t), Subject: pkix.Name{CommonName: "other CA"},
		NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: isCA,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func mustSerial(t *testing.T) *big.Int {
	t.Helper()
	serial, err := serialNumber()
	if err != nil {
		t.Fatal(err)
	}
	return serial
}

// verify checks cert's chain against pool for hostname, as a TLS client would.
func verify(cert tls.Certificate, pool *x509.CertPool, hostname string) error {
	intermediates := x509.NewCertPool()
	for _, der := range cert.Certificate[1:] {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return err
		}
		intermediates.AddCert(c)
	}
	_, err := cert.Leaf.Verify(x509.VerifyOptions{
		DNSName: hostname, Roots: pool, Intermediates: intermediates,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

func TestIssueServerCertificate(t *testing.T) {
	ca := newTestCA(t)
	cert, err := IssueServerCertificate(ca.CertPEM(), ca.KeyPEM(), []string{"hs1.example", "127.0.0.1", "[::1]", "localhost"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf := cert.Leaf
	if !slices.Equal(leaf.DNSNames, []string{"hs1.example", "localhost"}) {
		t.Errorf("DNS names %v", leaf.DNSNames)
	}
	if len(leaf.IPAddresses) != 2 || !leaf.IPAddresses[0].Equal(net.ParseIP("127.0.0.1")) || !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("IP addresses %v", leaf.IPAddresses)
	}
	if !slices.Equal(leaf.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}) || leaf.IsCA {
		t.Errorf("ext key usage %v, IsCA %v", leaf.ExtKeyUsage, leaf.IsCA)
	}
	if _, ok := cert.PrivateKey.(*ecdsa.PrivateKey); !ok {
		t.Errorf("key type %T, want ECDSA", cert.PrivateKey)
	}
	if leaf.Subject.CommonName != "hs1.example" {
		t.Errorf("common name %q", leaf.Subject.CommonName)
	}
	if time.Until(leaf.NotAfter) > time.Hour || time.Until(leaf.NotBefore) > 0 {
		t.Errorf("validity %s – %s", leaf.NotBefore, leaf.NotAfter)
	}
	if len(cert.Certificate) != 2 || !ca.Cert.Equal(mustParse(t, cert.Certificate[1])) {
		t.Error("chain does not end with the CA certificate")
	}
	for _, host := range []string{"hs1.example", "localhost", "127.0.0.1", "::1"} {
		if err := verify(cert, ca.Pool(), host); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if err := verify(cert, ca.Pool(), "hs2.example"); err == nil {
		t.Error("certificate verified for a name it does not carry")
	}
	if err := verify(cert, newTestCA(t).Pool(), "hs1.example"); err == nil {
		t.Error("certificate verified against another CA")
	}
}

// TestIssueFromOtherKeyEncodings uses CA keys as openssl and the conformance suite write them:
// PKCS #1 RSA and SEC 1 EC.
func TestIssueFromOtherKeyEncodings(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecDER, err := x509.MarshalECPrivateKey(ecKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		key    crypto.Signer
		keyPEM []byte
	}{
		{"pkcs1-rsa", rsaKey, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rsaKey)})},
		{"sec1-ec", ecKey, append([]byte("-----BEGIN EC PARAMETERS-----\nBggqhkjOPQMBBw==\n-----END EC PARAMETERS-----\n"),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: ecDER})...)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			caPEM := selfSigned(t, tc.key, true, time.Now().Add(time.Hour))
			cert, err := IssueServerCertificate(caPEM, tc.keyPEM, []string{"hs1"}, 24*time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			pool := x509.NewCertPool()
			pool.AppendCertsFromPEM(caPEM)
			if err := verify(cert, pool, "hs1"); err != nil {
				t.Fatal(err)
			}
			caCert, _ := parseCertificatePEM(caPEM)
			if !cert.Leaf.NotAfter.Equal(caCert.NotAfter) {
				t.Errorf("leaf expires %s, want the CA's expiry %s", cert.Leaf.NotAfter, caCert.NotAfter)
			}
		})
	}
}

func TestIssueRejects(t *testing.T) {
	ca := newTestCA(t)
	other := newTestCA(t)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	keyDER, _ := x509.MarshalPKCS8PrivateKey(key)
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	for _, tc := range []struct {
		name            string
		certPEM, keyPEM []byte
		hosts           []string
		validity        time.Duration
		want            string
	}{
		{"no certificate", []byte("nothing"), ca.KeyPEM(), []string{"a"}, time.Hour, "CA certificate"},
		{"no key", ca.CertPEM(), []byte("nothing"), []string{"a"}, time.Hour, "CA key"},
		{"key of another CA", ca.CertPEM(), other.KeyPEM(), []string{"a"}, time.Hour, "does not belong"},
		{"not a CA", selfSigned(t, key, false, time.Now().Add(time.Hour)), keyPEM, []string{"a"}, time.Hour, "not a CA"},
		{"expired CA", selfSigned(t, key, true, time.Now().Add(-time.Minute)), keyPEM, []string{"a"}, time.Hour, "expired"},
		{"no hostnames", ca.CertPEM(), ca.KeyPEM(), nil, time.Hour, "no hostnames"},
		{"empty hostname", ca.CertPEM(), ca.KeyPEM(), []string{"[]"}, time.Hour, "empty hostname"},
		{"no validity", ca.CertPEM(), ca.KeyPEM(), []string{"a"}, 0, "validity"},
	} {
		_, err := IssueServerCertificate(tc.certPEM, tc.keyPEM, tc.hosts, tc.validity)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestLoadCertificate(t *testing.T) {
	ca := newTestCA(t)
	cert, err := ca.Issue("hs1.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeFile(t, certFile, chain)
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))

	loaded, err := LoadCertificate(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.Leaf == nil || !loaded.Leaf.Equal(cert.Leaf) || len(loaded.Certificate) != 2 {
		t.Fatal("loaded certificate differs from the written one")
	}
	if err := verify(loaded, ca.Pool(), "hs1.example"); err != nil {
		t.Fatal(err)
	}

	_, err = LoadCertificate(certFile, filepath.Join(dir, "missing.key"))
	if err == nil || !strings.Contains(err.Error(), "missing.key") {
		t.Errorf("missing key: %v", err)
	}
	_, err = LoadCertificate(certFile, writeKeyOf(t, newTestCA(t), dir))
	if err == nil {
		t.Error("certificate loaded with a key that is not its own")
	}
}

// writeKeyOf writes ca's key into dir and returns its path.
func writeKeyOf(t *testing.T, ca *TestCA, dir string) string {
	t.Helper()
	path := filepath.Join(dir, "other.key")
	writeFile(t, path, ca.KeyPEM())
	return path
}

func TestTrustPool(t *testing.T) {
	ca := newTestCA(t)
	cert, err := ca.Issue("hs1.example")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile, _, err := ca.WriteFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	pool, err := TrustPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(cert, pool, "hs1.example"); err != nil {
		t.Fatalf("extra CA not trusted: %v", err)
	}
	system, err := TrustPool("")
	if err != nil {
		t.Fatal(err)
	}
	if err := verify(cert, system, "hs1.example"); err == nil {
		t.Fatal("test CA trusted without being added")
	}
	if _, err := TrustPool(filepath.Join(dir, "missing.crt")); err == nil {
		t.Error("missing CA file accepted")
	}
	notPEM := filepath.Join(dir, "junk.crt")
	writeFile(t, notPEM, []byte("junk"))
	if _, err := TrustPool(notPEM); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Errorf("junk CA file: %v", err)
	}
}

// TestHandshake runs a real TLS connection with an issued certificate, verified by a client
// that trusts the test CA.
func TestHandshake(t *testing.T) {
	ca := newTestCA(t)
	cert, err := ca.Issue("localhost", "127.0.0.1")
	if err != nil {
		t.Fatal(err)
	}
	listener, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}
	defer listener.Close()
	go func() {
		conn, err := listener.Accept()
		if err == nil {
			_ = conn.(*tls.Conn).Handshake()
			conn.Close()
		}
	}()
	conn, err := tls.Dial("tcp", listener.Addr().String(), &tls.Config{RootCAs: ca.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatalf("verified handshake: %v", err)
	}
	conn.Close()
}

func TestWriteFiles(t *testing.T) {
	ca := newTestCA(t)
	certFile, keyFile, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	certPEM, _ := os.ReadFile(certFile)
	keyPEM, _ := os.ReadFile(keyFile)
	if _, err := IssueServerCertificate(certPEM, keyPEM, []string{"hs1"}, time.Hour); err != nil {
		t.Fatalf("issue from written files: %v", err)
	}
	if filepath.Base(certFile) != "ca.crt" || filepath.Base(keyFile) != "ca.key" {
		t.Errorf("file names %s, %s", certFile, keyFile)
	}
}

func mustParse(t *testing.T, der []byte) *x509.Certificate {
	t.Helper()
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return cert
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
