// Package config loads the server's settings from an optional YAML file and the environment.
//
// Every setting has an environment variable (EGGS_*) whose name other tools depend on; the
// environment wins over the file. A bad value stops start-up with an error naming the setting.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/scrambledeggs/eggs/spec"
)

// Registration modes.
const (
	RegistrationOpen   = "open"
	RegistrationToken  = "token"
	RegistrationClosed = "closed"
)

// Config is the whole server configuration.
type Config struct {
	ServerName               string `yaml:"server_name"`
	ClientAddr               string `yaml:"client_addr"`
	DataDir                  string `yaml:"data_dir"`
	DatabaseURL              string `yaml:"database_url"`
	Registration             string `yaml:"registration"`
	RegistrationSharedSecret string `yaml:"registration_shared_secret"`
	RateLimit                string `yaml:"rate_limit"`
	LogLevel                 string `yaml:"log_level"`
	// Presence is "on" (the default) or "off": off, nobody's presence is tracked, shown or
	// exchanged with other servers, which large servers sometimes prefer for its cost.
	Presence string `yaml:"presence"`
	// PushPrivateGateways is "allow" to let pushers name push gateways on loopback or private
	// addresses (a gateway on the same network, tests); "deny", the default, refuses them.
	PushPrivateGateways string `yaml:"push_private_gateways"`

	// FederationAddr is the listen address of the federation API (HTTPS), or FederationOff.
	// Empty, as in a Config built in code rather than loaded, also means off.
	FederationAddr string `yaml:"federation_addr"`
	// TLSCert and TLSKey are PEM files with the federation listener's certificate chain and
	// its key.
	TLSCert string `yaml:"tls_cert"`
	TLSKey  string `yaml:"tls_key"`
	// TLSCACert and TLSCAKey are the PEM certificate and key of a CA from which a certificate
	// for the server name's host is issued at every start, instead of TLSCert/TLSKey.
	TLSCACert string `yaml:"tls_ca_cert"`
	TLSCAKey  string `yaml:"tls_ca_key"`
	// TrustedCA is a PEM file of CAs trusted for outbound federation TLS besides the system
	// roots.
	TrustedCA string `yaml:"trusted_ca"`
	// WellKnownServer is the delegated server name served at /.well-known/matrix/server;
	// empty serves nothing there.
	WellKnownServer string `yaml:"well_known_server"`
	// ComplementCADir is where the conformance suite (Complement) mounts its CA; see
	// applyComplementCA.
	ComplementCADir string `yaml:"complement_ca_dir"`
	// MaxUploadSize bounds each piece of media, uploaded or fetched from another server: a
	// number of bytes with an optional K, M or G suffix (powers of 1024). See MaxUploadBytes.
	MaxUploadSize string `yaml:"max_upload_size"`
}

// FederationOff as EGGS_FEDERATION_ADDR runs no federation listener.
// NOTSPEC: a convenience for clients-only set-ups (make run, client tests); a server that
// federates must serve the federation API.
const FederationOff = "off"

// setting ties one field to its environment variable and default. When neither the
// environment nor the file sets it, the variable alias (if any) is read before the default.
type setting struct {
	env      string
	field    func(*Config) *string
	fallback string
	alias    string
}

var settings = []setting{
	// NOTSPEC (Complement): the conformance suite passes the server name as SERVER_NAME. It
	// is only a fallback, so that a stray SERVER_NAME (CGI sets one) never overrides a file.
	{"EGGS_SERVER_NAME", func(c *Config) *string { return &c.ServerName }, "localhost:8008", "SERVER_NAME"},
	{"EGGS_CLIENT_ADDR", func(c *Config) *string { return &c.ClientAddr }, ":8008", ""},
	{"EGGS_DATA_DIR", func(c *Config) *string { return &c.DataDir }, "./eggs-data", ""},
	{"EGGS_DATABASE_URL", func(c *Config) *string { return &c.DatabaseURL }, "", ""},
	{"EGGS_REGISTRATION", func(c *Config) *string { return &c.Registration }, RegistrationClosed, ""},
	{"EGGS_REGISTRATION_SHARED_SECRET", func(c *Config) *string { return &c.RegistrationSharedSecret }, "", ""},
	{"EGGS_RATE_LIMIT", func(c *Config) *string { return &c.RateLimit }, "on", ""},
	{"EGGS_LOG_LEVEL", func(c *Config) *string { return &c.LogLevel }, "info", ""},
	{"EGGS_FEDERATION_ADDR", func(c *Config) *string { return &c.FederationAddr }, ":8448", ""},
	{"EGGS_TLS_CERT", func(c *Config) *string { return &c.TLSCert }, "", ""},
	{"EGGS_TLS_KEY", func(c *Config) *string { return &c.TLSKey }, "", ""},
	{"EGGS_TLS_CA_CERT", func(c *Config) *string { return &c.TLSCACert }, "", ""},
	{"EGGS_TLS_CA_KEY", func(c *Config) *string { return &c.TLSCAKey }, "", ""},
	{"EGGS_TRUSTED_CA", func(c *Config) *string { return &c.TrustedCA }, "", ""},
	{"EGGS_WELL_KNOWN_SERVER", func(c *Config) *string { return &c.WellKnownServer }, "", ""},
	{"EGGS_COMPLEMENT_CA_DIR", func(c *Config) *string { return &c.ComplementCADir }, "/complement/ca", ""},
	{"EGGS_MAX_UPLOAD_SIZE", func(c *Config) *string { return &c.MaxUploadSize }, DefaultMaxUploadSize, ""},
	{"EGGS_PUSH_PRIVATE_GATEWAYS", func(c *Config) *string { return &c.PushPrivateGateways }, "deny", ""},
	{"EGGS_PRESENCE", func(c *Config) *string { return &c.Presence }, "on", ""},
}

// DefaultMaxUploadSize is EGGS_MAX_UPLOAD_SIZE when nothing sets it. NOTSPEC: Synapse's
// default max_upload_size is 50M too.
const DefaultMaxUploadSize = "50M"

// maxUploadSizeCeiling bounds EGGS_MAX_UPLOAD_SIZE, so that no arithmetic on sizes
// overflows.
const maxUploadSizeCeiling = 1 << 40

// Load reads the YAML file at path (if path is not empty), then the environment, then fills
// defaults and validates. lookupEnv is os.LookupEnv outside tests.
func Load(path string, lookupEnv func(string) (string, bool)) (*Config, error) {
	cfg := &Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("config file: %w", err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	}
	for _, s := range settings {
		if v, ok := lookupEnv(s.env); ok {
			*s.field(cfg) = v
		}
		if *s.field(cfg) == "" && s.alias != "" {
			*s.field(cfg), _ = lookupEnv(s.alias)
		}
		if *s.field(cfg) == "" {
			*s.field(cfg) = s.fallback
		}
	}
	cfg.applyComplementCA()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return cfg, nil
}

func (c *Config) validate() error {
	if _, err := spec.ParseServerName(c.ServerName); err != nil {
		return fmt.Errorf("EGGS_SERVER_NAME %q: %w", c.ServerName, err)
	}
	if !strings.Contains(c.ClientAddr, ":") {
		return fmt.Errorf("EGGS_CLIENT_ADDR %q: want host:port or :port", c.ClientAddr)
	}
	if c.DatabaseURL != "" && !strings.HasPrefix(c.DatabaseURL, "postgres://") && !strings.HasPrefix(c.DatabaseURL, "postgresql://") {
		return fmt.Errorf("EGGS_DATABASE_URL: only postgres:// URLs are supported (empty selects SQLite)")
	}
	switch c.Registration {
	case RegistrationOpen, RegistrationToken, RegistrationClosed:
	default:
		return fmt.Errorf("EGGS_REGISTRATION %q: want open, token or closed", c.Registration)
	}
	switch c.RateLimit {
	case "on", "off":
	default:
		return fmt.Errorf("EGGS_RATE_LIMIT %q: want on or off", c.RateLimit)
	}
	switch c.Presence {
	case "on", "off":
	default:
		return fmt.Errorf("EGGS_PRESENCE %q: want on or off", c.Presence)
	}
	switch c.PushPrivateGateways {
	case "allow", "deny":
	default:
		return fmt.Errorf("EGGS_PUSH_PRIVATE_GATEWAYS %q: want allow or deny", c.PushPrivateGateways)
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("EGGS_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
	if c.FederationAddr != FederationOff {
		if _, _, err := net.SplitHostPort(c.FederationAddr); err != nil {
			return fmt.Errorf("EGGS_FEDERATION_ADDR %q: want host:port, :port or %s", c.FederationAddr, FederationOff)
		}
	}
	if (c.TLSCert == "") != (c.TLSKey == "") {
		return errors.New("EGGS_TLS_CERT and EGGS_TLS_KEY: set both (certificate and key files) or neither")
	}
	if (c.TLSCACert == "") != (c.TLSCAKey == "") {
		return errors.New("EGGS_TLS_CA_CERT and EGGS_TLS_CA_KEY: set both (CA certificate and key files) or neither")
	}
	if c.TLSCert != "" && c.TLSCACert != "" {
		return errors.New("EGGS_TLS_CERT/EGGS_TLS_KEY and EGGS_TLS_CA_CERT/EGGS_TLS_CA_KEY: set one pair, not both")
	}
	if c.WellKnownServer != "" {
		if _, err := spec.ParseServerName(c.WellKnownServer); err != nil {
			return fmt.Errorf("EGGS_WELL_KNOWN_SERVER %q: want a server name (host or host:port): %w", c.WellKnownServer, err)
		}
	}
	if _, err := parseSize(c.MaxUploadSize); err != nil {
		return fmt.Errorf("EGGS_MAX_UPLOAD_SIZE %q: %w", c.MaxUploadSize, err)
	}
	return nil
}

// parseSize reads a size in bytes: digits with an optional K, M or G suffix (powers of
// 1024, case-insensitive, "KiB" and the like accepted too), from 1 byte to 1 TiB.
func parseSize(value string) (int64, error) {
	digits := strings.TrimRight(value, "KMGkmgiIbB")
	unit := strings.ToUpper(value[len(digits):])
	multiplier := map[string]int64{"": 1, "K": 1 << 10, "KIB": 1 << 10, "M": 1 << 20, "MIB": 1 << 20, "G": 1 << 30, "GIB": 1 << 30}[unit]
	n, err := strconv.ParseInt(digits, 10, 64)
	if err != nil || multiplier == 0 || n <= 0 || n > maxUploadSizeCeiling/multiplier {
		return 0, errors.New("want a size from 1 byte to 1 TiB: a number of bytes, optionally with a K, M or G suffix (powers of 1024)")
	}
	return n * multiplier, nil
}

// applyComplementCA follows the contract of the Matrix conformance suite (Complement): when
// no certificate is configured and ComplementCADir holds ca.crt and ca.key, the federation
// certificate is issued from that CA and the CA is trusted for outbound requests.
// NOTSPEC: Complement's convention, not the spec's.
func (c *Config) applyComplementCA() {
	if c.TLSCert != "" || c.TLSKey != "" || c.TLSCACert != "" || c.TLSCAKey != "" || c.ComplementCADir == "" {
		return
	}
	certFile := filepath.Join(c.ComplementCADir, "ca.crt")
	keyFile := filepath.Join(c.ComplementCADir, "ca.key")
	if !isFile(certFile) || !isFile(keyFile) {
		return
	}
	c.TLSCACert, c.TLSCAKey = certFile, keyFile
	if c.TrustedCA == "" {
		c.TrustedCA = certFile
	}
}

func isFile(path string) bool {
	info, err := os.Stat(path)
	return err == nil && info.Mode().IsRegular()
}

// FederationEnabled reports whether the federation listener runs.
func (c *Config) FederationEnabled() bool {
	return c.FederationAddr != "" && c.FederationAddr != FederationOff
}

// CheckFederationTLS is the start-up check of the federation listener: when it is on, a
// certificate must come from somewhere, and the error says which settings give one. (Load
// does not check this, so that admin commands work whatever the listener's settings.)
func (c *Config) CheckFederationTLS() error {
	if !c.FederationEnabled() || c.TLSCert != "" || c.TLSCACert != "" {
		return nil
	}
	return fmt.Errorf("EGGS_FEDERATION_ADDR %s: the federation listener needs a TLS certificate: "+
		"set EGGS_TLS_CERT and EGGS_TLS_KEY (PEM files), or EGGS_TLS_CA_CERT and EGGS_TLS_CA_KEY "+
		"to issue one for the server name %s at start-up, or set EGGS_FEDERATION_ADDR=%s for a server that does not federate",
		c.FederationAddr, c.ServerName, FederationOff)
}

// PresenceEnabled reports whether presence is tracked. An empty setting, as in a Config built
// in code rather than loaded, counts as on.
func (c *Config) PresenceEnabled() bool { return c.Presence != "off" }

// PrivatePushGatewaysAllowed reports whether push gateways may be on private addresses.
func (c *Config) PrivatePushGatewaysAllowed() bool { return c.PushPrivateGateways == "allow" }

// RateLimited reports whether rate limits are on.
func (c *Config) RateLimited() bool { return c.RateLimit == "on" }

// MaxUploadBytes is EGGS_MAX_UPLOAD_SIZE in bytes (its default when the Config was built in
// code and leaves it empty).
func (c *Config) MaxUploadBytes() int64 {
	size := c.MaxUploadSize
	if size == "" {
		size = DefaultMaxUploadSize
	}
	n, err := parseSize(size)
	if err != nil {
		// Load validated it; a Config built in code with a bad value gets the default.
		n, _ = parseSize(DefaultMaxUploadSize)
	}
	return n
}

// SQLitePath is the database file used when no PostgreSQL URL is set.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "eggs.db") }
