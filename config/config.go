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
	"os"
	"path/filepath"
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
}

// setting ties one field to its environment variable and default.
type setting struct {
	env      string
	field    func(*Config) *string
	fallback string
}

var settings = []setting{
	{"EGGS_SERVER_NAME", func(c *Config) *string { return &c.ServerName }, "localhost:8008"},
	{"EGGS_CLIENT_ADDR", func(c *Config) *string { return &c.ClientAddr }, ":8008"},
	{"EGGS_DATA_DIR", func(c *Config) *string { return &c.DataDir }, "./eggs-data"},
	{"EGGS_DATABASE_URL", func(c *Config) *string { return &c.DatabaseURL }, ""},
	{"EGGS_REGISTRATION", func(c *Config) *string { return &c.Registration }, RegistrationClosed},
	{"EGGS_REGISTRATION_SHARED_SECRET", func(c *Config) *string { return &c.RegistrationSharedSecret }, ""},
	{"EGGS_RATE_LIMIT", func(c *Config) *string { return &c.RateLimit }, "on"},
	{"EGGS_LOG_LEVEL", func(c *Config) *string { return &c.LogLevel }, "info"},
}

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
		if *s.field(cfg) == "" {
			*s.field(cfg) = s.fallback
		}
	}
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
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return fmt.Errorf("EGGS_LOG_LEVEL %q: want debug, info, warn or error", c.LogLevel)
	}
	return nil
}

// RateLimited reports whether rate limits are on.
func (c *Config) RateLimited() bool { return c.RateLimit == "on" }

// SQLitePath is the database file used when no PostgreSQL URL is set.
func (c *Config) SQLitePath() string { return filepath.Join(c.DataDir, "eggs.db") }
