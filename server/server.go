// Package server assembles one homeserver from its parts — database, room server, client
// API, federation listener — and runs it until it is told to stop. cmd/eggs and the
// integration tests both start servers through it.
//
// A server has two listeners: the client API over plain HTTP (TLS is left to a reverse
// proxy, as for every homeserver) and, unless EGGS_FEDERATION_ADDR is off, the federation API
// over HTTPS (server-server API "Server discovery": 8448 by default). Parts built on top of
// the kernel plug in as Components: they mount routes on FederationRouter or ClientRouter
// and run their workers through Background. The federation API is one (mountFederation).
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/clientapi"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
	"github.com/scrambledeggs/eggs/tlsutil"
)

// Server is one running homeserver.
type Server struct {
	cfg      *config.Config
	log      *slog.Logger
	version  string
	db       *storage.DB
	identity rooms.Identity
	rooms    *rooms.Server

	clientRouter     chi.Router
	federationRouter chi.Router
	clientAPI        *clientapi.API
	// federationTLS is nil when the federation listener is off.
	federationTLS *tls.Config
	trustPool     *x509.CertPool
	// federationClient signs requests to other servers and keyRing checks theirs; both are
	// set by mountFederation for the components after it (media).
	federationClient *federation.Client
	keyRing          *federation.KeyRing

	workers []func(ctx context.Context)
}

// ShutdownGrace is how long a stopping server lets requests in flight finish.
const ShutdownGrace = 8 * time.Second

// ProductName is the server's name in GET /_matrix/federation/v1/version.
const ProductName = federation.ServerSoftware

// Component is a part of the server built on top of the kernel, such as the federation API.
// It is called once by New, after the database, room server, routers and TLS are ready, and
// mounts its routes (FederationRouter, ClientRouter) and registers its workers (Background).
// ctx is New's: for start-up work, not to be kept.
type Component func(ctx context.Context, s *Server) error

// Option changes how New builds a server.
type Option func(*options)

type options struct {
	version    string
	components []Component
}

// WithVersion sets the build version that the server reports (default "dev").
func WithVersion(version string) Option {
	return func(o *options) { o.version = version }
}

// WithComponent adds a component, mounted after those New always mounts (the federation
// API, housekeeping, the media repository).
func WithComponent(c Component) Option {
	return func(o *options) { o.components = append(o.components, c) }
}

// New opens the database (migrating it), loads or creates the signing key, prepares the
// federation TLS certificate and the outbound trust pool, and builds the APIs.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger, opts ...Option) (*Server, error) {
	o := options{version: "dev"}
	for _, opt := range opts {
		opt(&o)
	}
	if err := cfg.CheckFederationTLS(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, version: o.version}
	var err error
	if s.trustPool, err = tlsutil.TrustPool(cfg.TrustedCA); err != nil {
		return nil, fmt.Errorf("EGGS_TRUSTED_CA: %w", err)
	}
	if cfg.FederationEnabled() {
		if s.federationTLS, err = federationTLS(cfg, log); err != nil {
			return nil, err
		}
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
	}
	if s.db, err = OpenDatabase(ctx, cfg); err != nil {
		return nil, err
	}
	components := append([]Component{mountFederation, maintain, mountMedia}, o.components...)
	if err := s.build(ctx, components); err != nil {
		s.db.Close()
		return nil, err
	}
	return s, nil
}

// build makes everything that needs the open database.
func (s *Server) build(ctx context.Context, components []Component) error {
	var err error
	if s.identity, err = loadSigningKey(s.cfg); err != nil {
		return err
	}
	maxPos, err := storage.MaxStreamPos(ctx, s.db)
	if err != nil {
		return fmt.Errorf("read stream position: %w", err)
	}
	now := func() int64 { return time.Now().UnixMilli() }
	s.rooms = rooms.New(s.db, s.identity, streams.NewTracker(maxPos), now, s.log)
	api, err := clientapi.New(s.cfg, s.db, s.rooms, s.log, time.Now)
	if err != nil {
		return err
	}
	s.clientAPI = api
	s.clientRouter = newRouter()
	s.clientRouter.Use(httpapi.CORS)
	api.Routes(s.clientRouter)
	s.Background(api.Presence().Run)
	s.Background(api.SendPushes)
	s.Background(api.IndexSearch)
	s.federationRouter = newRouter()
	for _, mount := range components {
		if err := mount(ctx, s); err != nil {
			return err
		}
	}
	// Registered last so that it wins over a component's: only the server knows the build
	// version given to the binary (WithVersion).
	s.federationRouter.Get("/_matrix/federation/v1/version", s.federationVersion)
	return nil
}

// newRouter is a router that answers panics with 500 M_UNKNOWN and unknown paths and methods
// with M_UNRECOGNIZED (client-server API "Unrecognised request"; the federation API follows
// the same convention).
func newRouter() chi.Router {
	router := chi.NewRouter()
	router.Use(httpapi.Recover, httpapi.CleanText)
	router.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, httpapi.Unrecognized("Unrecognized request"))
	})
	router.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, httpapi.NewError(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request method"))
	})
	return router
}

// GET /_matrix/federation/v1/version (server-server API "Server implementation"). It needs
// no authentication.
func (s *Server) federationVersion(w http.ResponseWriter, r *http.Request) {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"server": map[string]string{"name": ProductName, "version": s.version},
	})
}

// OpenDatabase opens the configured database: PostgreSQL when a URL is set, else the SQLite
// file in the data directory.
func OpenDatabase(ctx context.Context, cfg *config.Config) (*storage.DB, error) {
	dbCfg := storage.Config{URL: cfg.DatabaseURL}
	if cfg.DatabaseURL == "" {
		dbCfg.SQLitePath = cfg.SQLitePath()
	}
	db, err := storage.Open(ctx, dbCfg)
	if err != nil {
		return nil, fmt.Errorf("open database: %w", err)
	}
	return db, nil
}

// Handler is the HTTP handler of the client API.
func (s *Server) Handler() http.Handler { return s.clientRouter }

// FederationHandler is the HTTP handler of the federation API.
func (s *Server) FederationHandler() http.Handler { return s.federationRouter }

// ClientRouter is the router of the client listener, for components that add client-API or
// .well-known routes.
func (s *Server) ClientRouter() chi.Router { return s.clientRouter }

// FederationRouter is the router of the federation listener, on which the federation API
// mounts its routes. It exists even when the listener is off, so components need no special
// case; nothing is served from it then.
func (s *Server) FederationRouter() chi.Router { return s.federationRouter }

// Config is the server's configuration.
func (s *Server) Config() *config.Config { return s.cfg }

// Logger is the server's logger.
func (s *Server) Logger() *slog.Logger { return s.log }

// Version is the build version the server reports.
func (s *Server) Version() string { return s.version }

// DB is the server's database.
func (s *Server) DB() *storage.DB { return s.db }

// Identity is the server name and the ed25519 key the server signs events and requests with.
func (s *Server) Identity() rooms.Identity { return s.identity }

// Rooms is the room server, the one path of every event.
func (s *Server) Rooms() *rooms.Server { return s.rooms }

// TrustPool is the set of CAs that outbound federation TLS verifies peers against: the
// system roots plus EGGS_TRUSTED_CA.
func (s *Server) TrustPool() *x509.CertPool { return s.trustPool }

// Background registers work that runs while the server serves: Serve starts run in its own
// goroutine and cancels its context once the listeners have stopped, then waits (up to
// ShutdownGrace) for it to return before closing the database. Call it from a Component.
func (s *Server) Background(run func(ctx context.Context)) {
	s.workers = append(s.workers, run)
}

// Listen opens the listeners cfg asks for: the client API's, and the federation API's unless
// it is off (then federation is nil). Errors name the setting.
func Listen(cfg *config.Config) (client, federation net.Listener, err error) {
	client, err = net.Listen("tcp", cfg.ClientAddr)
	if err != nil {
		return nil, nil, fmt.Errorf("EGGS_CLIENT_ADDR %s: %w", cfg.ClientAddr, err)
	}
	if !cfg.FederationEnabled() {
		return client, nil, nil
	}
	federation, err = net.Listen("tcp", cfg.FederationAddr)
	if err != nil {
		client.Close()
		return nil, nil, fmt.Errorf("EGGS_FEDERATION_ADDR %s: %w", cfg.FederationAddr, err)
	}
	return client, federation, nil
}

// Serve answers the client API on client and, when federation is not nil, the federation API
// over TLS on federation, and runs the background work, until ctx ends or a listener fails.
// Then it shuts down gracefully: no new connections on either listener, requests in flight
// get ShutdownGrace to finish, background work stops, and the database closes.
func (s *Server) Serve(ctx context.Context, client, federation net.Listener) error {
	if federation != nil && s.federationTLS == nil {
		client.Close()
		federation.Close()
		s.db.Close()
		return errors.New("a federation listener was given but EGGS_FEDERATION_ADDR is off")
	}
	clientServer := s.httpServer(ctx, s.clientRouter, nil)
	servers := []*http.Server{clientServer}
	errc := make(chan error, 2)
	go func() { errc <- clientServer.Serve(client) }()
	s.log.Info("serving the client API", "addr", client.Addr().String(), "server_name", s.cfg.ServerName)
	if federation != nil {
		fed := s.httpServer(ctx, s.federationRouter, s.federationTLS)
		servers = append(servers, fed)
		go func() { errc <- fed.ServeTLS(federation, "", "") }()
		s.log.Info("serving the federation API", "addr", federation.Addr().String(), "server_name", s.cfg.ServerName)
	}
	workCtx, stopWork := context.WithCancel(context.Background())
	var work sync.WaitGroup
	for _, run := range s.workers {
		work.Go(func() { run(workCtx) })
	}

	var err error
	select {
	case err = <-errc:
		s.log.Error("a listener failed; shutting down", "err", err)
	case <-ctx.Done():
		s.log.Info("shutting down")
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	var shutdown sync.WaitGroup
	shutdownErrs := make([]error, len(servers))
	for i, srv := range servers {
		shutdown.Go(func() {
			shutdownErrs[i] = srv.Shutdown(shutdownCtx)
			if errors.Is(shutdownErrs[i], context.DeadlineExceeded) {
				shutdownErrs[i] = srv.Close()
			}
		})
	}
	shutdown.Wait()
	for _, shutdownErr := range shutdownErrs {
		if err == nil {
			err = shutdownErr
		}
	}
	stopWork()
	if !waitUntil(&work, shutdownCtx) {
		s.log.Warn("background work did not stop within the shutdown grace; closing the database anyway")
	}
	if closeErr := s.db.Close(); err == nil {
		err = closeErr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// httpServer is an http.Server for one listener, with the limits every listener shares.
func (s *Server) httpServer(ctx context.Context, handler http.Handler, tlsConfig *tls.Config) *http.Server {
	return &http.Server{
		Handler:           handler,
		TLSConfig:         tlsConfig,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}

// waitUntil waits for wg until ctx ends and reports whether wg finished.
func waitUntil(wg *sync.WaitGroup, ctx context.Context) bool {
	done := make(chan struct{})
	go func() {
		wg.Wait()
		close(done)
	}()
	select {
	case <-done:
		return true
	case <-ctx.Done():
		return false
	}
}

// signingKeyFile holds the server's ed25519 key in Synapse's format:
// "ed25519 <key version> <unpadded base64 seed>".
const signingKeyFile = "signing.key"

// loadSigningKey reads the signing key from the data directory, creating it on first start.
func loadSigningKey(cfg *config.Config) (rooms.Identity, error) {
	path := filepath.Join(cfg.DataDir, signingKeyFile)
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		seed := make([]byte, ed25519.SeedSize)
		if _, err := rand.Read(seed); err != nil {
			return rooms.Identity{}, err
		}
		version := "a_" + base64.RawURLEncoding.EncodeToString(seed[:3])
		version = strings.NewReplacer("-", "_").Replace(version)
		data = []byte(fmt.Sprintf("ed25519 %s %s\n", version, base64.RawStdEncoding.EncodeToString(seed)))
		if err := os.WriteFile(path, data, 0o600); err != nil {
			return rooms.Identity{}, fmt.Errorf("write signing key: %w", err)
		}
	} else if err != nil {
		return rooms.Identity{}, fmt.Errorf("read signing key: %w", err)
	}
	fields := strings.Fields(string(data))
	if len(fields) != 3 || fields[0] != "ed25519" {
		return rooms.Identity{}, fmt.Errorf("signing key %s: want \"ed25519 <version> <base64 seed>\"", path)
	}
	seed, err := base64.RawStdEncoding.DecodeString(strings.TrimRight(fields[2], "="))
	if err != nil || len(seed) != ed25519.SeedSize {
		return rooms.Identity{}, fmt.Errorf("signing key %s: bad seed", path)
	}
	return rooms.Identity{
		ServerName: cfg.ServerName,
		KeyID:      "ed25519:" + fields[1],
		Key:        ed25519.NewKeyFromSeed(seed),
	}, nil
}
