// Package server assembles one homeserver from its parts — database, room server, client
// API — and runs it until it is told to stop. cmd/eggs and the integration tests both start
// servers through it.
package server

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/clientapi"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Server is one running homeserver.
type Server struct {
	cfg     *config.Config
	log     *slog.Logger
	db      *storage.DB
	rooms   *rooms.Server
	handler http.Handler
}

// ShutdownGrace is how long a stopping server lets requests in flight finish.
const ShutdownGrace = 8 * time.Second

// New opens the database (migrating it), loads or creates the signing key and builds the APIs.
func New(ctx context.Context, cfg *config.Config, log *slog.Logger) (*Server, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data directory %s: %w", cfg.DataDir, err)
	}
	db, err := OpenDatabase(ctx, cfg)
	if err != nil {
		return nil, err
	}
	identity, err := loadSigningKey(cfg)
	if err != nil {
		db.Close()
		return nil, err
	}
	maxPos, err := storage.MaxStreamPos(ctx, db)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("read stream position: %w", err)
	}
	now := func() int64 { return time.Now().UnixMilli() }
	roomServer := rooms.New(db, identity, streams.NewTracker(maxPos), now, log)
	api, err := clientapi.New(cfg, db, roomServer, log, time.Now)
	if err != nil {
		db.Close()
		return nil, err
	}
	router := chi.NewRouter()
	router.Use(httpapi.Recover, httpapi.CORS)
	router.NotFound(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, httpapi.Unrecognized("Unrecognized request"))
	})
	router.MethodNotAllowed(func(w http.ResponseWriter, r *http.Request) {
		httpapi.WriteError(w, r, httpapi.NewError(http.StatusMethodNotAllowed, "M_UNRECOGNIZED", "Unrecognized request method"))
	})
	api.Routes(router)
	return &Server{cfg: cfg, log: log, db: db, rooms: roomServer, handler: router}, nil
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
func (s *Server) Handler() http.Handler { return s.handler }

// Serve answers requests on listener until ctx ends, then shuts down gracefully: no new
// connections, requests in flight get ShutdownGrace to finish, then the database closes.
func (s *Server) Serve(ctx context.Context, listener net.Listener) error {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    64 << 10,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(listener) }()
	s.log.Info("serving the client API", "addr", listener.Addr().String(), "server_name", s.cfg.ServerName)
	select {
	case err := <-errc:
		s.db.Close()
		return err
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(shutdownCtx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if closeErr := s.db.Close(); err == nil {
		err = closeErr
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
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
