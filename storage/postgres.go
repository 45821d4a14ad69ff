package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver
)

// openPostgres opens a pool on cfg.URL. pgx caches a prepared statement per
// connection for every query it sees, so repeated queries skip parsing.
func openPostgres(ctx context.Context, cfg Config) (*DB, error) {
	pool, err := sql.Open("pgx", cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("storage: open postgres: %w", err)
	}
	conns := cfg.MaxConns
	if conns <= 0 {
		conns = defaultMaxConns()
	}
	pool.SetMaxOpenConns(conns)
	pool.SetMaxIdleConns(conns)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	if err := pool.PingContext(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("storage: connect to postgres: %w", err)
	}
	return &DB{engine: Postgres, writer: pool, reader: pool}, nil
}

// PostgreSQL error codes that mean "run the transaction again"
// (https://www.postgresql.org/docs/current/errcodes-appendix.html).
const (
	pgSerializationFailure = "40001"
	pgDeadlockDetected     = "40P01"
)

// isPostgresRetryable reports whether err is a serialization failure or a
// detected deadlock.
func isPostgresRetryable(err error) bool {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return false
	}
	return pgErr.Code == pgSerializationFailure || pgErr.Code == pgDeadlockDetected
}

// migrationLockID is the PostgreSQL advisory lock key held while migrating
// ("eggs" in ASCII). Advisory locks are scoped to one database, so servers on
// different databases of one cluster do not wait for each other.
const migrationLockID = 0x65676773
