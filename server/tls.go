package server

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/tlsutil"
)

// Certificates issued from EGGS_TLS_CA_CERT live issuedValidity and are replaced by a fresh
// one once renewAfter has passed, so that a server that runs for months never presents an
// expired certificate.
const (
	issuedValidity = 30 * 24 * time.Hour
	renewAfter     = 20 * 24 * time.Hour
)

// federationTLS is the TLS configuration of the federation listener: the certificate from
// EGGS_TLS_CERT/EGGS_TLS_KEY, or one issued for the server's hostnames from
// EGGS_TLS_CA_CERT/EGGS_TLS_CA_KEY. Peers verify it (server-server API "TLS"), so TLS 1.2 is
// the minimum.
func federationTLS(cfg *config.Config, log *slog.Logger) (*tls.Config, error) {
	hostnames, err := certificateHostnames(cfg)
	if err != nil {
		return nil, err
	}
	tlsConfig := &tls.Config{MinVersion: tls.VersionTLS12}
	if cfg.TLSCert != "" {
		cert, err := tlsutil.LoadCertificate(cfg.TLSCert, cfg.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("EGGS_TLS_CERT/EGGS_TLS_KEY: %w", err)
		}
		for _, host := range hostnames {
			if err := cert.Leaf.VerifyHostname(strings.Trim(host, "[]")); err != nil {
				// A warning, not an error: behind a reverse proxy or with delegation the
				// certificate may rightly carry another name.
				log.Warn("the federation certificate does not name this host; peers connecting to it will reject it",
					"setting", "EGGS_TLS_CERT", "host", host, "err", err)
			}
		}
		if time.Now().After(cert.Leaf.NotAfter) {
			log.Warn("the federation certificate has expired", "setting", "EGGS_TLS_CERT", "not_after", cert.Leaf.NotAfter)
		}
		tlsConfig.Certificates = []tls.Certificate{cert}
		return tlsConfig, nil
	}
	caCert, err := os.ReadFile(cfg.TLSCACert)
	if err != nil {
		return nil, fmt.Errorf("EGGS_TLS_CA_CERT: %w", err)
	}
	caKey, err := os.ReadFile(cfg.TLSCAKey)
	if err != nil {
		return nil, fmt.Errorf("EGGS_TLS_CA_KEY: %w", err)
	}
	issuer := &certificateIssuer{caCert: caCert, caKey: caKey, hostnames: hostnames, log: log}
	if err := issuer.renew(time.Now()); err != nil {
		return nil, fmt.Errorf("EGGS_TLS_CA_CERT/EGGS_TLS_CA_KEY: %w", err)
	}
	tlsConfig.GetCertificate = issuer.certificate
	return tlsConfig, nil
}

// certificateHostnames are the names the federation certificate must carry: the host of the
// server name (discovery connects to it when the name has a port or no delegation) and the
// host of EGGS_WELL_KNOWN_SERVER (when peers are delegated here).
func certificateHostnames(cfg *config.Config) ([]string, error) {
	name, err := spec.ParseServerName(cfg.ServerName)
	if err != nil {
		return nil, fmt.Errorf("EGGS_SERVER_NAME %q: %w", cfg.ServerName, err)
	}
	hostnames := []string{name.Host}
	if cfg.WellKnownServer != "" {
		delegated, err := spec.ParseServerName(cfg.WellKnownServer)
		if err != nil {
			return nil, fmt.Errorf("EGGS_WELL_KNOWN_SERVER %q: %w", cfg.WellKnownServer, err)
		}
		if delegated.Host != name.Host {
			hostnames = append(hostnames, delegated.Host)
		}
	}
	return hostnames, nil
}

// certificateIssuer holds the certificate issued from the configured CA and replaces it when
// it gets old.
type certificateIssuer struct {
	caCert, caKey []byte
	hostnames     []string
	log           *slog.Logger

	mu      sync.Mutex
	current *tls.Certificate
	renewAt time.Time
}

func (i *certificateIssuer) renew(now time.Time) error {
	cert, err := tlsutil.IssueServerCertificate(i.caCert, i.caKey, i.hostnames, issuedValidity)
	if err != nil {
		return err
	}
	i.current = &cert
	i.renewAt = now.Add(renewAfter)
	i.log.Info("issued the federation certificate", "hostnames", i.hostnames, "not_after", cert.Leaf.NotAfter)
	return nil
}

// certificate is tls.Config.GetCertificate. When renewing fails (the CA expired, say), it
// keeps serving the current certificate until that one expires, and logs why.
func (i *certificateIssuer) certificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	i.mu.Lock()
	defer i.mu.Unlock()
	now := time.Now()
	if now.After(i.renewAt) {
		if err := i.renew(now); err != nil {
			i.log.Error("renew the federation certificate", "setting", "EGGS_TLS_CA_CERT", "err", err)
			i.renewAt = now.Add(time.Hour)
		}
	}
	return i.current, nil
}
