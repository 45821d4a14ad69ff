package server_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/server"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// getJSON does GET url with client and decodes the JSON body.
func getJSON(t *testing.T, client *http.Client, method, url string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer resp.Body.Close()
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s %s: decode body: %v", method, url, err)
	}
	return resp.StatusCode, body
}

// TestFederationListener starts a federating server and talks to its federation API over
// TLS verified against the test CA, as a peer would.
func TestFederationListener(t *testing.T) {
	ca := testserver.NewCA(t)
	srv := testserver.StartFederated(t, storage.SQLite, ca)
	client := srv.FederationClient()

	resp, err := client.Get(srv.FederationURL + "/_matrix/federation/v1/version")
	if err != nil {
		t.Fatalf("verified TLS request: %v", err)
	}
	var version struct {
		Server struct{ Name, Version string } `json:"server"`
	}
	err = json.NewDecoder(resp.Body).Decode(&version)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK || version.Server.Name != "Scrambled Eggs" || version.Server.Version != "dev" {
		t.Fatalf("version: %d %+v %v", resp.StatusCode, version, err)
	}
	if resp.TLS == nil || resp.TLS.Version < tls.VersionTLS12 || resp.TLS.PeerCertificates[0].VerifyHostname("localhost") != nil {
		t.Fatalf("TLS state %+v", resp.TLS)
	}

	// The federation package's routes are mounted: the server's own keys.
	status, keys := getJSON(t, client, "GET", srv.FederationURL+"/_matrix/key/v2/server")
	if status != http.StatusOK || keys["server_name"] != srv.ServerName || keys["verify_keys"] == nil {
		t.Fatalf("key/v2/server: %d %v", status, keys)
	}

	for _, tc := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/_matrix/federation/v1/unknown", http.StatusNotFound},
		{"GET", "/_matrix/client/versions", http.StatusNotFound}, // the client API is not on this listener
		{"POST", "/_matrix/federation/v1/version", http.StatusMethodNotAllowed},
	} {
		status, body := getJSON(t, client, tc.method, srv.FederationURL+tc.path)
		if status != tc.status || body["errcode"] != "M_UNRECOGNIZED" {
			t.Errorf("%s %s: %d %v, want %d M_UNRECOGNIZED", tc.method, tc.path, status, body, tc.status)
		}
	}

	// The client API stays on its own plain-HTTP listener, and serves no server delegation
	// unless EGGS_WELL_KNOWN_SERVER is set.
	status, body := getJSON(t, http.DefaultClient, "GET", srv.URL+"/_matrix/client/versions")
	if status != http.StatusOK || body["versions"] == nil {
		t.Fatalf("client API: %d %v", status, body)
	}
	status, body = getJSON(t, http.DefaultClient, "GET", srv.URL+"/.well-known/matrix/server")
	if status != http.StatusNotFound || body["errcode"] != "M_UNRECOGNIZED" {
		t.Fatalf("well-known without delegation: %d %v", status, body)
	}
}

// TestFederationTLSIsVerified: a peer that does not trust the CA, or speaks TLS older than
// 1.2, gets no connection.
func TestFederationTLSIsVerified(t *testing.T) {
	srv := testserver.StartFederated(t, storage.SQLite, testserver.NewCA(t))
	_, err := http.Get(srv.FederationURL + "/_matrix/federation/v1/version")
	var unknownAuthority x509.UnknownAuthorityError
	if !errors.As(err, &unknownAuthority) {
		t.Fatalf("request without the test CA: %v, want an unknown-authority error", err)
	}
	conn, err := tls.Dial("tcp", srv.Config.FederationAddr, &tls.Config{
		RootCAs: srv.CA.Pool(), ServerName: "localhost", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11,
	})
	if err == nil {
		conn.Close()
		t.Fatal("TLS 1.1 handshake accepted")
	}
	if !strings.Contains(err.Error(), "protocol version") {
		t.Fatalf("TLS 1.1 handshake: %v, want the server's protocol version alert", err)
	}
}

// TestServersTrustEachOther: two servers started from one CA verify each other through the
// trust pool the federation client will use.
func TestServersTrustEachOther(t *testing.T) {
	ca := testserver.NewCA(t)
	hs1 := testserver.StartFederated(t, storage.SQLite, ca)
	hs2 := testserver.StartFederated(t, storage.SQLite, ca)
	if hs1.ServerName == hs2.ServerName {
		t.Fatalf("both servers are %s", hs1.ServerName)
	}
	pool := hs1.Homeserver().TrustPool()
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
	defer client.CloseIdleConnections()
	status, body := getJSON(t, client, "GET", "https://"+hs2.ServerName+"/_matrix/federation/v1/version")
	if status != http.StatusOK || body["server"] == nil {
		t.Fatalf("hs1 → hs2: %d %v", status, body)
	}
	if hs1.Homeserver().Identity().ServerName != hs1.ServerName || hs1.Homeserver().Identity().Key == nil {
		t.Fatalf("identity %+v", hs1.Homeserver().Identity())
	}
}

// TestCertificateFromFiles uses EGGS_TLS_CERT/EGGS_TLS_KEY instead of a CA to issue from.
func TestCertificateFromFiles(t *testing.T) {
	ca := testserver.NewCA(t)
	cert, err := ca.Issue("localhost")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	var chain []byte
	for _, der := range cert.Certificate {
		chain = append(chain, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})...)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, certFile, chain)
	writeFile(t, keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}))

	srv := testserver.StartFederated(t, storage.SQLite, ca, testserver.WithSetting(func(c *config.Config) {
		c.TLSCACert, c.TLSCAKey = "", ""
		c.TLSCert, c.TLSKey = certFile, keyFile
	}))
	resp, err := srv.FederationClient().Get(srv.FederationURL + "/_matrix/federation/v1/version")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if !resp.TLS.PeerCertificates[0].Equal(cert.Leaf) {
		t.Fatal("the server did not present the certificate from EGGS_TLS_CERT")
	}
}

func TestWellKnownServer(t *testing.T) {
	srv := testserver.Start(t, storage.SQLite, testserver.WithSetting(func(c *config.Config) {
		c.WellKnownServer = "matrix.example.org:443"
	}))
	status, body := getJSON(t, http.DefaultClient, "GET", srv.URL+"/.well-known/matrix/server")
	if status != http.StatusOK || body["m.server"] != "matrix.example.org:443" || len(body) != 1 {
		t.Fatalf("well-known: %d %v", status, body)
	}
}

// baseConfig is a clients-only configuration in a fresh data directory.
func baseConfig(t *testing.T) *config.Config {
	return &config.Config{
		ServerName: "localhost:8448", ClientAddr: "127.0.0.1:0", DataDir: t.TempDir(),
		Registration: config.RegistrationClosed, RateLimit: "off", LogLevel: "warn",
		FederationAddr: config.FederationOff,
	}
}

func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// TestStartUpErrorsNameTheSetting: a federating server without a usable certificate does not
// start, and says which setting to fix.
func TestStartUpErrorsNameTheSetting(t *testing.T) {
	ca := testserver.NewCA(t)
	caCert, caKey, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	missing := filepath.Join(t.TempDir(), "missing.pem")
	for _, tc := range []struct {
		name string
		set  func(*config.Config)
		want string
	}{
		{"no certificate", func(c *config.Config) { c.FederationAddr = ":8448" }, "EGGS_TLS_CA_CERT and EGGS_TLS_CA_KEY"},
		{"missing CA certificate", func(c *config.Config) { c.FederationAddr, c.TLSCACert, c.TLSCAKey = ":8448", missing, caKey }, "EGGS_TLS_CA_CERT"},
		{"missing CA key", func(c *config.Config) { c.FederationAddr, c.TLSCACert, c.TLSCAKey = ":8448", caCert, missing }, "EGGS_TLS_CA_KEY"},
		{"swapped CA files", func(c *config.Config) { c.FederationAddr, c.TLSCACert, c.TLSCAKey = ":8448", caKey, caCert }, "EGGS_TLS_CA_CERT/EGGS_TLS_CA_KEY"},
		{"missing certificate", func(c *config.Config) { c.FederationAddr, c.TLSCert, c.TLSKey = ":8448", missing, caKey }, "EGGS_TLS_CERT/EGGS_TLS_KEY"},
		{"missing trusted CA", func(c *config.Config) { c.TrustedCA = missing }, "EGGS_TRUSTED_CA"},
	} {
		cfg := baseConfig(t)
		tc.set(cfg)
		srv, err := server.New(context.Background(), cfg, quietLog())
		if err == nil {
			srv.DB().Close()
			t.Errorf("%s: server started", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: error %q does not name %s", tc.name, err, tc.want)
		}
	}
}

// TestComponentsAndShutdown mounts a component (as the federation package will be), then
// checks that stopping the server stops both listeners and the background work.
func TestComponentsAndShutdown(t *testing.T) {
	ca := testserver.NewCA(t)
	caCert, caKey, err := ca.WriteFiles(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := baseConfig(t)
	cfg.FederationAddr = "127.0.0.1:0"
	cfg.TLSCACert, cfg.TLSCAKey = caCert, caKey
	workerStopped := make(chan struct{})
	component := func(_ context.Context, s *server.Server) error {
		if s.DB() == nil || s.Rooms() == nil || s.TrustPool() == nil || s.Config() != cfg || s.Version() != "1.2.3" {
			return errors.New("component sees an incomplete server")
		}
		s.FederationRouter().Get("/_matrix/federation/v1/hello", func(w http.ResponseWriter, r *http.Request) {
			_, _ = w.Write([]byte(`{"from":"component"}`))
		})
		s.FederationRouter().Route("/_matrix/key/v2", func(r chi.Router) {
			r.Get("/server", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(`{}`)) })
		})
		s.Background(func(ctx context.Context) {
			<-ctx.Done()
			close(workerStopped)
		})
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	srv, err := server.New(ctx, cfg, quietLog(), server.WithVersion("1.2.3"), server.WithComponent(component))
	if err != nil {
		t.Fatal(err)
	}
	clientListener, fedListener, err := server.Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, clientListener, fedListener) }()

	fedURL := "https://localhost:" + portOf(fedListener)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: ca.Pool(), MinVersion: tls.VersionTLS12}}}
	status, body := getJSON(t, client, "GET", fedURL+"/_matrix/federation/v1/hello")
	if status != http.StatusOK || body["from"] != "component" {
		t.Fatalf("component route: %d %v", status, body)
	}
	status, body = getJSON(t, client, "GET", fedURL+"/_matrix/federation/v1/version")
	if status != http.StatusOK || body["server"].(map[string]any)["version"] != "1.2.3" {
		t.Fatalf("version: %d %v", status, body)
	}
	client.CloseIdleConnections()

	select {
	case <-workerStopped:
		t.Fatal("background work stopped while serving")
	default:
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(2 * server.ShutdownGrace):
		t.Fatal("Serve did not return")
	}
	select {
	case <-workerStopped:
	default:
		t.Fatal("Serve returned before the background work stopped")
	}
	for _, addr := range []string{clientListener.Addr().String(), fedListener.Addr().String()} {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			t.Errorf("%s still accepts connections after shutdown", addr)
		}
	}
}

func TestListenNamesTheSetting(t *testing.T) {
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	cfg := baseConfig(t)
	cfg.ClientAddr = taken.Addr().String()
	if _, _, err := server.Listen(cfg); err == nil || !strings.Contains(err.Error(), "EGGS_CLIENT_ADDR") {
		t.Errorf("client address taken: %v", err)
	}
	cfg.ClientAddr = "127.0.0.1:0"
	cfg.FederationAddr = taken.Addr().String()
	if _, _, err := server.Listen(cfg); err == nil || !strings.Contains(err.Error(), "EGGS_FEDERATION_ADDR") {
		t.Errorf("federation address taken: %v", err)
	}
	cfg.FederationAddr = config.FederationOff
	client, federation, err := server.Listen(cfg)
	if err != nil || federation != nil {
		t.Fatalf("federation off: %v, %v", federation, err)
	}
	client.Close()
}

func portOf(listener net.Listener) string {
	_, port, _ := net.SplitHostPort(listener.Addr().String())
	return port
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
}
