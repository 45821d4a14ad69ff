// Package testserver starts real homeservers on loopback for tests and the load tool: a
// whole eggs server (database, room server, client API) on a random port, with a fresh
// database on the chosen engine, and real Matrix clients (mautrix-go) to talk to it.
//
// Start runs a clients-only server (federation listener off). StartFederated runs one with
// the federation listener too, on its own port, with a certificate issued by a test CA that
// every server of the test trusts, so that servers federate over real, verified TLS.
package testserver

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/server"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/tlsutil"
)

// Server is a homeserver running in this process.
type Server struct {
	// URL is the base URL of the client API (http://127.0.0.1:PORT).
	URL        string
	ServerName string
	Config     *config.Config
	// FederationURL is the base URL of the federation API (https://localhost:PORT, the
	// server name), empty when the federation listener is off.
	FederationURL string
	// CA issued the federation certificate; nil when the federation listener is off.
	CA *tlsutil.TestCA

	tb     testing.TB
	srv    *server.Server
	cancel context.CancelFunc
	done   chan error
}

// Option changes the configuration of a test server before it starts.
type Option func(*config.Config)

// WithSetting sets one configuration field.
func WithSetting(set func(*config.Config)) Option { return Option(set) }

// Start runs a clients-only server (federation off) on engine with a fresh database and data
// directory, stopped when tb ends. Registration is open and rate limits are off unless an
// option says otherwise.
func Start(tb testing.TB, engine storage.Engine, opts ...Option) *Server {
	tb.Helper()
	client := listen(tb, "127.0.0.1:0")
	cfg := baseConfig(tb, engine, fmt.Sprintf("localhost:%d", port(client)), client)
	cfg.FederationAddr = config.FederationOff
	for _, opt := range opts {
		opt(cfg)
	}
	s := &Server{URL: "http://" + client.Addr().String(), ServerName: cfg.ServerName, Config: cfg, tb: tb}
	s.serve(client, nil)
	tb.Cleanup(s.Stop)
	return s
}

// StartFederated runs a server with both listeners on loopback: the client API on one random
// port and the federation API on another. Its server name is localhost:<federation port>, so
// that server discovery (a name with an explicit port: connect to that host and port, no
// .well-known) reaches the federation listener. Its certificate is issued at start-up from
// ca, and ca is its trusted CA for outbound federation: servers started with the same ca
// trust each other. Registration is open and rate limits are off unless an option says
// otherwise.
func StartFederated(tb testing.TB, engine storage.Engine, ca *tlsutil.TestCA, opts ...Option) *Server {
	tb.Helper()
	caDir := tb.TempDir()
	caCert, caKey, err := ca.WriteFiles(caDir)
	if err != nil {
		tb.Fatalf("write test CA: %v", err)
	}
	client := listen(tb, "127.0.0.1:0")
	federation := listen(tb, "127.0.0.1:0")
	cfg := baseConfig(tb, engine, fmt.Sprintf("localhost:%d", port(federation)), client)
	cfg.FederationAddr = federation.Addr().String()
	cfg.TLSCACert, cfg.TLSCAKey, cfg.TrustedCA = caCert, caKey, caCert
	for _, opt := range opts {
		opt(cfg)
	}
	s := &Server{
		URL: "http://" + client.Addr().String(), ServerName: cfg.ServerName, Config: cfg,
		FederationURL: "https://" + cfg.ServerName, CA: ca, tb: tb,
	}
	s.serve(client, federation)
	tb.Cleanup(s.Stop)
	return s
}

// NewCA makes a test CA for StartFederated, failing tb if it cannot.
func NewCA(tb testing.TB) *tlsutil.TestCA {
	tb.Helper()
	ca, err := tlsutil.NewTestCA()
	if err != nil {
		tb.Fatalf("test CA: %v", err)
	}
	return ca
}

// baseConfig is the configuration every test server starts from.
func baseConfig(tb testing.TB, engine storage.Engine, serverName string, client net.Listener) *config.Config {
	cfg := &config.Config{
		ServerName:   serverName,
		ClientAddr:   client.Addr().String(),
		DataDir:      tb.TempDir(),
		Registration: config.RegistrationOpen,
		RateLimit:    "off",
		LogLevel:     "warn",
		// The push gateways of tests listen on loopback.
		PushPrivateGateways: "allow",
	}
	if engine == storage.Postgres {
		cfg.DatabaseURL = storagetest.PostgresURL(tb)
	}
	return cfg
}

func listen(tb testing.TB, addr string) net.Listener {
	tb.Helper()
	listener, err := net.Listen("tcp", addr)
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	return listener
}

func port(listener net.Listener) int { return listener.Addr().(*net.TCPAddr).Port }

// serve starts the server on its listeners; federation is nil for a clients-only server.
func (s *Server) serve(client, federation net.Listener) {
	s.tb.Helper()
	logOut := io.Writer(io.Discard)
	if os.Getenv("EGGS_TEST_LOG") != "" {
		logOut = os.Stderr
	}
	log := slog.New(slog.NewTextHandler(logOut, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, s.Config, log)
	if err != nil {
		cancel()
		client.Close()
		if federation != nil {
			federation.Close()
		}
		s.tb.Fatalf("start server: %v", err)
	}
	s.srv = srv
	s.cancel = cancel
	s.done = make(chan error, 1)
	go func() { s.done <- srv.Serve(ctx, client, federation) }()
}

// Homeserver is the running server, for what tests need from inside it (its identity, trust
// pool, database). After Restart it is the new one.
func (s *Server) Homeserver() *server.Server { return s.srv }

// FederationClient is an HTTPS client that trusts the test CA, for requests to the
// federation API (FederationURL). It is nil when the federation listener is off.
func (s *Server) FederationClient() *http.Client {
	if s.CA == nil {
		return nil
	}
	transport := http.DefaultTransport.(*http.Transport).Clone()
	transport.TLSClientConfig = &tls.Config{RootCAs: s.CA.Pool(), MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: transport, Timeout: 30 * time.Second}
}

// Stop shuts the server down gracefully and waits for it.
func (s *Server) Stop() {
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			s.tb.Errorf("server %s stopped with: %v", s.ServerName, err)
		}
	case <-time.After(30 * time.Second):
		s.tb.Errorf("server %s did not stop within 30 s", s.ServerName)
	}
}

// Restart stops the server and starts it again on the same ports, data and database.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	client := s.listenAgain(s.Config.ClientAddr)
	var federation net.Listener
	if s.Config.FederationEnabled() {
		federation = s.listenAgain(s.Config.FederationAddr)
	}
	s.serve(client, federation)
}

// listenAgain listens on addr, which the stopped server may still hold for a moment.
func (s *Server) listenAgain(addr string) net.Listener {
	s.tb.Helper()
	var listener net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if listener, err = net.Listen("tcp", addr); err == nil {
			return listener
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.tb.Fatalf("listen again on %s: %v", addr, err)
	return nil
}

// Register creates an account through the client API (m.login.dummy) and returns a logged-in
// mautrix client for it.
func (s *Server) Register(tb testing.TB, localpart string) *mautrix.Client {
	tb.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		tb.Fatalf("new client: %v", err)
	}
	resp, err := cli.RegisterDummy(context.Background(), &mautrix.ReqRegister[any]{
		Username: localpart, Password: "correct horse " + localpart, InitialDeviceDisplayName: localpart + "'s test device",
	})
	if err != nil {
		tb.Fatalf("register %s: %v", localpart, err)
	}
	cli.SetCredentials(resp.UserID, resp.AccessToken)
	cli.DeviceID = resp.DeviceID
	return cli
}

// Login logs an existing user in with the password Register gave them, as a new device.
func (s *Server) Login(tb testing.TB, localpart string) *mautrix.Client {
	tb.Helper()
	cli, err := mautrix.NewClient(s.URL, "", "")
	if err != nil {
		tb.Fatalf("new client: %v", err)
	}
	_, err = cli.Login(context.Background(), &mautrix.ReqLogin{
		Type:             mautrix.AuthTypePassword,
		Identifier:       mautrix.UserIdentifier{Type: mautrix.IdentifierTypeUser, User: localpart},
		Password:         "correct horse " + localpart,
		StoreCredentials: true,
	})
	if err != nil {
		tb.Fatalf("login %s: %v", localpart, err)
	}
	return cli
}

// UserID is the full user ID of a localpart on this server.
func (s *Server) UserID(localpart string) id.UserID {
	return id.NewUserID(localpart, s.ServerName)
}

// IsMatrixError reports whether err is an HTTP error from the server with this errcode.
func IsMatrixError(err error, errcode string) bool {
	var httpErr mautrix.HTTPError
	if errors.As(err, &httpErr) && httpErr.RespError != nil {
		return httpErr.RespError.ErrCode == errcode
	}
	return false
}

// EachEngine runs fn as two subtests, "sqlite" and "postgres", for tests that start their
// own servers (the PostgreSQL half is skipped, saying so, when no PostgreSQL is reachable
// outside CI: Start and StartFederated skip it).
func EachEngine(t *testing.T, fn func(t *testing.T, engine storage.Engine)) {
	t.Helper()
	for _, engine := range []struct {
		name   string
		engine storage.Engine
	}{{"sqlite", storage.SQLite}, {"postgres", storage.Postgres}} {
		t.Run(engine.name, func(t *testing.T) { fn(t, engine.engine) })
	}
}

// Each runs fn as two subtests, "sqlite" and "postgres", each with a fresh server of its
// own on that engine.
func Each(t *testing.T, fn func(t *testing.T, srv *Server), opts ...Option) {
	t.Helper()
	EachEngine(t, func(t *testing.T, engine storage.Engine) { fn(t, Start(t, engine, opts...)) })
}
