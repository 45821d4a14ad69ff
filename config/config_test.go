package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func env(vars map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := vars[k]
		return v, ok
	}
}

func TestDefaults(t *testing.T) {
	cfg, err := Load("", env(nil))
	if err != nil {
		t.Fatal(err)
	}
	want := Config{ServerName: "localhost:8008", ClientAddr: ":8008", DataDir: "./eggs-data",
		Registration: RegistrationClosed, RateLimit: "on", LogLevel: "info"}
	if *cfg != want {
		t.Fatalf("defaults = %+v, want %+v", *cfg, want)
	}
	if !cfg.RateLimited() || cfg.SQLitePath() != filepath.Join("eggs-data", "eggs.db") {
		t.Fatalf("RateLimited %v, SQLitePath %q", cfg.RateLimited(), cfg.SQLitePath())
	}
}

func TestEnvironmentOverridesFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eggs.yaml")
	yaml := "server_name: file.example\nregistration: token\nrate_limit: \"off\"\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, env(map[string]string{"EGGS_SERVER_NAME": "env.example:8448"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.ServerName != "env.example:8448" || cfg.Registration != RegistrationToken || cfg.RateLimited() {
		t.Fatalf("config = %+v", cfg)
	}
}

// TestBadValuesNameTheSetting checks that every bad value stops start-up with a message
// naming the setting, as operators read it.
func TestBadValuesNameTheSetting(t *testing.T) {
	for _, tc := range []struct{ name, value string }{
		{"EGGS_SERVER_NAME", "not a server name"},
		{"EGGS_CLIENT_ADDR", "8008"},
		{"EGGS_DATABASE_URL", "mysql://x"},
		{"EGGS_REGISTRATION", "sometimes"},
		{"EGGS_RATE_LIMIT", "maybe"},
		{"EGGS_LOG_LEVEL", "loud"},
	} {
		_, err := Load("", env(map[string]string{tc.name: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: error %v, want one naming %s", tc.name, tc.value, err, tc.name)
		}
	}
}

func TestBadFile(t *testing.T) {
	dir := t.TempDir()
	unknown := filepath.Join(dir, "unknown.yaml")
	if err := os.WriteFile(unknown, []byte("server_nmae: typo.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(unknown, env(nil)); err == nil || !strings.Contains(err.Error(), "server_nmae") {
		t.Fatalf("unknown key: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "missing.yaml"), env(nil)); err == nil {
		t.Fatal("missing file accepted")
	}
	empty := filepath.Join(dir, "empty.yaml")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(empty, env(nil)); err != nil {
		t.Fatalf("empty file: %v", err)
	}
}
