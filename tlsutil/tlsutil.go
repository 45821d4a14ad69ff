// Package tlsutil is the TLS plumbing of the federation listener and of outbound federation
// requests: loading a certificate from PEM files, issuing a server certificate from a CA at
// start-up, building the pool of CAs trusted for outbound connections, and a throw-away CA
// for tests.
//
// Federation TLS is always verified (server-server API "TLS"): nothing here turns
// verification off.
package tlsutil

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"os"
	"strings"
	"time"
)

// clockSkew back-dates the certificates issued here, so that a peer whose clock runs a little
// behind ours still accepts them.
const clockSkew = time.Hour

// LoadCertificate reads a PEM certificate chain (leaf first) and its PEM private key.
func LoadCertificate(certFile, keyFile string) (tls.Certificate, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("load certificate %s with key %s: %w", certFile, keyFile, err)
	}
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse certificate %s: %w", certFile, err)
	}
	cert.Leaf = leaf
	return cert, nil
}

// IssueServerCertificate makes a fresh ECDSA P-256 key and a certificate for it, signed by
// the CA given as PEM (certificate and private key: PKCS #8, PKCS #1 RSA or SEC 1 EC). The
// certificate names every hostname as a subject alternative name — DNS names as DNS names, IP
// literals (IPv6 with or without brackets) as IP addresses — and is for server
// authentication. It is valid from a little before now for validity, but never past the
// CA's own expiry. The returned chain holds the new certificate and then the CA's.
func IssueServerCertificate(caCertPEM, caKeyPEM []byte, hostnames []string, validity time.Duration) (tls.Certificate, error) {
	caCert, err := parseCertificatePEM(caCertPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("CA certificate: %w", err)
	}
	caKey, err := parsePrivateKeyPEM(caKeyPEM)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("CA key: %w", err)
	}
	return issue(caCert, caKey, hostnames, validity)
}

func issue(caCert *x509.Certificate, caKey crypto.Signer, hostnames []string, validity time.Duration) (tls.Certificate, error) {
	if !caCert.IsCA {
		return tls.Certificate{}, errors.New("CA certificate: not a CA (its basic constraints do not allow signing certificates)")
	}
	if !samePublicKey(caKey.Public(), caCert.PublicKey) {
		return tls.Certificate{}, errors.New("CA key does not belong to the CA certificate")
	}
	now := time.Now()
	if now.After(caCert.NotAfter) {
		return tls.Certificate{}, fmt.Errorf("CA certificate expired at %s", caCert.NotAfter.UTC().Format(time.RFC3339))
	}
	if validity <= 0 {
		return tls.Certificate{}, fmt.Errorf("certificate validity %s: want a positive duration", validity)
	}
	if len(hostnames) == 0 {
		return tls.Certificate{}, errors.New("issue certificate: no hostnames")
	}
	template := &x509.Certificate{
		Subject:     pkix.Name{CommonName: strings.Trim(hostnames[0], "[]")},
		NotBefore:   now.Add(-clockSkew),
		NotAfter:    now.Add(validity),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	if template.NotAfter.After(caCert.NotAfter) {
		template.NotAfter = caCert.NotAfter
	}
	for _, host := range hostnames {
		bare := strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
		if bare == "" {
			return tls.Certificate{}, fmt.Errorf("issue certificate: empty hostname in %q", hostnames)
		}
		if ip := net.ParseIP(bare); ip != nil {
			template.IPAddresses = append(template.IPAddresses, ip)
		} else {
			template.DNSNames = append(template.DNSNames, bare)
		}
	}
	serial, err := serialNumber()
	if err != nil {
		return tls.Certificate{}, err
	}
	template.SerialNumber = serial
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("generate certificate key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, template, caCert, key.Public(), caKey)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("sign certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("parse issued certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, caCert.Raw}, PrivateKey: key, Leaf: leaf}, nil
}

// TrustPool is the set of CAs trusted for outbound federation TLS: the system roots (which
// honour SSL_CERT_FILE and SSL_CERT_DIR, as Go always does) plus every certificate in
// extraCAFile when it is not empty. On a system without any roots the pool holds only the
// extra CAs: connections to other servers then fail verification rather than go unverified.
func TrustPool(extraCAFile string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if extraCAFile == "" {
		return pool, nil
	}
	data, err := os.ReadFile(extraCAFile)
	if err != nil {
		return nil, fmt.Errorf("read CA file: %w", err)
	}
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("CA file %s: no PEM certificates in it", extraCAFile)
	}
	return pool, nil
}

// parseCertificatePEM returns the first certificate of a PEM bundle.
func parseCertificatePEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM CERTIFICATE block")
		}
		if block.Type == "CERTIFICATE" {
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("parse: %w", err)
			}
			return cert, nil
		}
	}
}

// parsePrivateKeyPEM returns the first private key of a PEM bundle, in any of the encodings
// that tools write (openssl, Go, Complement's CA): PKCS #8, PKCS #1 RSA or SEC 1 EC.
func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no PEM private key block (want PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY)")
		}
		var key any
		var err error
		switch block.Type {
		case "PRIVATE KEY":
			key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
		case "EC PRIVATE KEY":
			key, err = x509.ParseECPrivateKey(block.Bytes)
		default:
			continue // EC PARAMETERS and the like precede the key in some files
		}
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", block.Type, err)
		}
		signer, ok := key.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("%s: key type %T cannot sign", block.Type, key)
		}
		return signer, nil
	}
}

func samePublicKey(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// serialNumber is a random positive 128-bit certificate serial number (RFC 5280 §4.1.2.2
// allows up to 20 octets; randomness keeps serials unique across restarts).
func serialNumber() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("certificate serial number: %w", err)
	}
	return serial.Add(serial, big.NewInt(1)), nil
}
