// Package testserver starts real homeservers on loopback for tests and the load tool: a
// whole eggs server (database, room server, client API) on a random port, with a fresh
// database on the chosen engine, and real Matrix clients (mautrix-go) to talk to it.
package testserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/server"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// Server is a homeserver running in this process.
type Server struct {
	URL        string
	ServerName string
	Config     *config.Config

	tb     testing.TB
	cancel context.CancelFunc
	done   chan error
}

// Option changes the configuration of a test server before it starts.
type Option func(*config.Config)

// WithSetting sets one configuration field.
func WithSetting(set func(*config.Config)) Option { return Option(set) }

// Start runs a server on engine with a fresh database and data directory, stopped when tb
// ends. Registration is open and rate limits are off unless an option says otherwise.
func Start(tb testing.TB, engine storage.Engine, opts ...Option) *Server {
	tb.Helper()
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatalf("listen: %v", err)
	}
	port := listener.Addr().(*net.TCPAddr).Port
	cfg := &config.Config{
		ServerName:   fmt.Sprintf("localhost:%d", port),
		ClientAddr:   listener.Addr().String(),
		DataDir:      tb.TempDir(),
		Registration: config.RegistrationOpen,
		RateLimit:    "off",
		LogLevel:     "warn",
	}
	if engine == storage.Postgres {
		cfg.DatabaseURL = storagetest.PostgresURL(tb)
	}
	for _, opt := range opts {
		opt(cfg)
	}
	s := &Server{URL: "http://" + listener.Addr().String(), ServerName: cfg.ServerName, Config: cfg, tb: tb}
	s.serve(listener)
	tb.Cleanup(s.Stop)
	return s
}

func (s *Server) serve(listener net.Listener) {
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
		listener.Close()
		s.tb.Fatalf("start server: %v", err)
	}
	s.cancel = cancel
	s.done = make(chan error, 1)
	go func() { s.done <- srv.Serve(ctx, listener) }()
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

// Restart stops the server and starts it again on the same port, data and database.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Stop()
	var listener net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if listener, err = net.Listen("tcp", s.Config.ClientAddr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		s.tb.Fatalf("listen again on %s: %v", s.Config.ClientAddr, err)
	}
	s.serve(listener)
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

// Each runs fn as two subtests, "sqlite" and "postgres", each with a fresh server of its
// own on that engine (the PostgreSQL half is skipped, saying so, when no PostgreSQL is
// reachable outside CI).
func Each(t *testing.T, fn func(t *testing.T, srv *Server), opts ...Option) {
	t.Helper()
	for _, engine := range []struct {
		name   string
		engine storage.Engine
	}{{"sqlite", storage.SQLite}, {"postgres", storage.Postgres}} {
		t.Run(engine.name, func(t *testing.T) { fn(t, Start(t, engine.engine, opts...)) })
	}
}
