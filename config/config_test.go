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
		Registration: RegistrationClosed, RateLimit: "on", LogLevel: "info",
		FederationAddr: ":8448", ComplementCADir: "/complement/ca", MaxUploadSize: "50M", PushPrivateGateways: "deny", Presence: "on"}
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
		{"EGGS_FEDERATION_ADDR", "8448"},
		{"EGGS_WELL_KNOWN_SERVER", "https://matrix.example"},
		{"EGGS_TLS_CERT", "/etc/eggs/tls.crt"},
		{"EGGS_TLS_KEY", "/etc/eggs/tls.key"},
		{"EGGS_TLS_CA_CERT", "/etc/eggs/ca.crt"},
		{"EGGS_TLS_CA_KEY", "/etc/eggs/ca.key"},
		{"EGGS_MAX_UPLOAD_SIZE", "lots"},
		{"EGGS_PUSH_PRIVATE_GATEWAYS", "sure"},
		{"EGGS_PRESENCE", "sometimes"},
	} {
		_, err := Load("", env(map[string]string{tc.name: tc.value}))
		if err == nil || !strings.Contains(err.Error(), tc.name) {
			t.Errorf("%s=%q: error %v, want one naming %s", tc.name, tc.value, err, tc.name)
		}
	}
}

// TestMaxUploadSize: sizes in bytes or with a binary suffix; nonsense, zero and sizes over
// 1 TiB stop start-up naming the setting.
func TestMaxUploadSize(t *testing.T) {
	if got := (&Config{}).MaxUploadBytes(); got != 50<<20 {
		t.Fatalf("default = %d, want 50 MiB", got)
	}
	for value, want := range map[string]int64{
		"1": 1, "1048576": 1 << 20, "512K": 512 << 10, "50M": 50 << 20, "50m": 50 << 20, "2MiB": 2 << 20, "1G": 1 << 30, "1024G": 1 << 40,
	} {
		cfg, err := Load("", env(map[string]string{"EGGS_MAX_UPLOAD_SIZE": value}))
		if err != nil || cfg.MaxUploadBytes() != want {
			t.Errorf("EGGS_MAX_UPLOAD_SIZE=%q: %v, %v; want %d", value, cfg, err, want)
		}
	}
	for _, value := range []string{"0", "-5", "M", "5X", "5 M", "1025G", "99999999999999999999", "5MB5"} {
		if _, err := Load("", env(map[string]string{"EGGS_MAX_UPLOAD_SIZE": value})); err == nil || !strings.Contains(err.Error(), "EGGS_MAX_UPLOAD_SIZE") {
			t.Errorf("EGGS_MAX_UPLOAD_SIZE=%q: error %v, want one naming the setting", value, err)
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

func TestFederationSettings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "eggs.yaml")
	yaml := "federation_addr: 127.0.0.1:8448\ntls_cert: /f/tls.crt\ntls_key: /f/tls.key\n" +
		"trusted_ca: /f/extra.pem\nwell_known_server: file.example:443\ncomplement_ca_dir: /nowhere\n"
	if err := os.WriteFile(path, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := Load(path, env(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FederationAddr != "127.0.0.1:8448" || cfg.TLSCert != "/f/tls.crt" || cfg.TLSKey != "/f/tls.key" ||
		cfg.TrustedCA != "/f/extra.pem" || cfg.WellKnownServer != "file.example:443" || cfg.ComplementCADir != "/nowhere" {
		t.Fatalf("from the file: %+v", cfg)
	}
	if !cfg.FederationEnabled() || cfg.CheckFederationTLS() != nil {
		t.Fatalf("enabled %v, check %v", cfg.FederationEnabled(), cfg.CheckFederationTLS())
	}

	cfg, err = Load(path, env(map[string]string{
		"EGGS_FEDERATION_ADDR": ":9448", "EGGS_TLS_CERT": "", "EGGS_TLS_KEY": "",
		"EGGS_TLS_CA_CERT": "/e/ca.crt", "EGGS_TLS_CA_KEY": "/e/ca.key",
		"EGGS_TRUSTED_CA": "/e/trust.pem", "EGGS_WELL_KNOWN_SERVER": "env.example",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FederationAddr != ":9448" || cfg.TLSCert != "" || cfg.TLSCACert != "/e/ca.crt" || cfg.TLSCAKey != "/e/ca.key" ||
		cfg.TrustedCA != "/e/trust.pem" || cfg.WellKnownServer != "env.example" {
		t.Fatalf("from the environment: %+v", cfg)
	}
	if cfg.CheckFederationTLS() != nil {
		t.Fatalf("CA pair rejected: %v", cfg.CheckFederationTLS())
	}
}

func TestFederationOff(t *testing.T) {
	cfg, err := Load("", env(map[string]string{"EGGS_FEDERATION_ADDR": "off"}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.FederationEnabled() || cfg.CheckFederationTLS() != nil {
		t.Fatalf("off: enabled %v, check %v", cfg.FederationEnabled(), cfg.CheckFederationTLS())
	}
	if (&Config{}).FederationEnabled() {
		t.Fatal("a Config built in code without FederationAddr runs the listener")
	}
}

// TestFederationNeedsCertificate checks the start-up message of a federating server without
// a certificate: it names every way out.
func TestFederationNeedsCertificate(t *testing.T) {
	cfg, err := Load("", env(map[string]string{"EGGS_COMPLEMENT_CA_DIR": t.TempDir()}))
	if err != nil {
		t.Fatal("Load must not require a certificate (admin commands need no listener):", err)
	}
	err = cfg.CheckFederationTLS()
	if err == nil {
		t.Fatal("federation listener without a certificate accepted")
	}
	for _, name := range []string{"EGGS_FEDERATION_ADDR", "EGGS_TLS_CERT", "EGGS_TLS_KEY", "EGGS_TLS_CA_CERT", "EGGS_TLS_CA_KEY", "off"} {
		if !strings.Contains(err.Error(), name) {
			t.Errorf("message %q does not name %s", err, name)
		}
	}
}

func TestTLSPairs(t *testing.T) {
	for _, tc := range []struct {
		vars map[string]string
		want string
	}{
		{map[string]string{"EGGS_TLS_KEY": "k"}, "EGGS_TLS_CERT and EGGS_TLS_KEY"},
		{map[string]string{"EGGS_TLS_CA_CERT": "c"}, "EGGS_TLS_CA_CERT and EGGS_TLS_CA_KEY"},
		{map[string]string{"EGGS_TLS_CERT": "c", "EGGS_TLS_KEY": "k", "EGGS_TLS_CA_CERT": "c", "EGGS_TLS_CA_KEY": "k"}, "not both"},
	} {
		_, err := Load("", env(tc.vars))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: error %v, want one containing %q", tc.vars, err, tc.want)
		}
	}
}

// TestServerNameFromComplement: SERVER_NAME (the conformance suite's) is used only when
// neither EGGS_SERVER_NAME nor the file names the server.
func TestServerNameFromComplement(t *testing.T) {
	cfg, err := Load("", env(map[string]string{"SERVER_NAME": "hs1"}))
	if err != nil || cfg.ServerName != "hs1" {
		t.Fatalf("SERVER_NAME alone: %v, %+v", err, cfg)
	}
	cfg, err = Load("", env(map[string]string{"SERVER_NAME": "hs1", "EGGS_SERVER_NAME": "eggs.example"}))
	if err != nil || cfg.ServerName != "eggs.example" {
		t.Fatalf("EGGS_SERVER_NAME must win: %v, %+v", err, cfg)
	}
	path := filepath.Join(t.TempDir(), "eggs.yaml")
	if err := os.WriteFile(path, []byte("server_name: file.example\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load(path, env(map[string]string{"SERVER_NAME": "cgi.example"}))
	if err != nil || cfg.ServerName != "file.example" {
		t.Fatalf("the file must win over SERVER_NAME: %v, %+v", err, cfg)
	}
	if _, err := Load("", env(map[string]string{"SERVER_NAME": "bad name"})); err == nil || !strings.Contains(err.Error(), "EGGS_SERVER_NAME") {
		t.Fatalf("bad SERVER_NAME: %v", err)
	}
}

// TestComplementCA follows the conformance suite's contract: /complement/ca/ca.crt and ca.key
// (here a temporary directory) become the CA of the federation certificate and a trusted CA.
func TestComplementCA(t *testing.T) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "ca.crt"), filepath.Join(dir, "ca.key")
	if err := os.WriteFile(certFile, []byte("cert"), 0o644); err != nil {
		t.Fatal(err)
	}

	cfg, err := Load("", env(map[string]string{"EGGS_COMPLEMENT_CA_DIR": dir}))
	if err != nil || cfg.TLSCACert != "" || cfg.TrustedCA != "" {
		t.Fatalf("without ca.key: %v, %+v", err, cfg)
	}

	if err := os.WriteFile(keyFile, []byte("key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err = Load("", env(map[string]string{"EGGS_COMPLEMENT_CA_DIR": dir}))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.TLSCACert != certFile || cfg.TLSCAKey != keyFile || cfg.TrustedCA != certFile || cfg.CheckFederationTLS() != nil {
		t.Fatalf("with the CA: %+v", cfg)
	}

	cfg, err = Load("", env(map[string]string{"EGGS_COMPLEMENT_CA_DIR": dir, "EGGS_TRUSTED_CA": "/mine.pem"}))
	if err != nil || cfg.TrustedCA != "/mine.pem" || cfg.TLSCACert != certFile {
		t.Fatalf("an explicit EGGS_TRUSTED_CA must stay: %v, %+v", err, cfg)
	}

	cfg, err = Load("", env(map[string]string{"EGGS_COMPLEMENT_CA_DIR": dir, "EGGS_TLS_CERT": "/c", "EGGS_TLS_KEY": "/k"}))
	if err != nil || cfg.TLSCACert != "" || cfg.TrustedCA != "" {
		t.Fatalf("an explicit certificate must win over the suite's CA: %v, %+v", err, cfg)
	}
}
