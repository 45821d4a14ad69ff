package tlsutil

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"time"
)

// TestCA is a throw-away certificate authority for tests: several test servers get their
// certificates from one TestCA and trust it, so that they can verify each other over real TLS
// on loopback.
type TestCA struct {
	// Cert is the CA's self-signed certificate.
	Cert *x509.Certificate

	key     *ecdsa.PrivateKey
	certPEM []byte
	keyPEM  []byte
}

// testCAValidity is long enough for any test run and short enough not to matter if leaked.
const testCAValidity = 7 * 24 * time.Hour

// NewTestCA makes a CA with a fresh ECDSA P-256 key.
func NewTestCA() (*TestCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate CA key: %w", err)
	}
	serial, err := serialNumber()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	template := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "Scrambled Eggs test CA", Organization: []string{"Scrambled Eggs tests"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(testCAValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, template, template, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("self-sign CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("parse CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encode CA key: %w", err)
	}
	return &TestCA{
		Cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyPEM:  pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

// CertPEM is the CA certificate in PEM.
func (ca *TestCA) CertPEM() []byte { return ca.certPEM }

// KeyPEM is the CA's private key in PEM (PKCS #8).
func (ca *TestCA) KeyPEM() []byte { return ca.keyPEM }

// Pool is a certificate pool that trusts this CA only.
func (ca *TestCA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.Cert)
	return pool
}

// Issue makes a server certificate for hostnames (DNS names or IP literals), valid for a day.
func (ca *TestCA) Issue(hostnames ...string) (tls.Certificate, error) {
	return issue(ca.Cert, ca.key, hostnames, 24*time.Hour)
}

// WriteFiles writes the CA certificate and key as ca.crt and ca.key into dir — the layout of
// the conformance suite's /complement/ca — and returns their paths.
func (ca *TestCA) WriteFiles(dir string) (certFile, keyFile string, err error) {
	certFile = filepath.Join(dir, "ca.crt")
	keyFile = filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, ca.certPEM, 0o644); err != nil {
		return "", "", fmt.Errorf("write CA certificate: %w", err)
	}
	if err := os.WriteFile(keyFile, ca.keyPEM, 0o600); err != nil {
		return "", "", fmt.Errorf("write CA key: %w", err)
	}
	return certFile, keyFile, nil
}
