package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"time"
)

// Engine names the database engine behind a DB.
type Engine int

// The supported engines.
const (
	SQLite Engine = iota + 1
	Postgres
)

// String returns "sqlite" or "postgres".
func (e Engine) String() string {
	switch e {
	case SQLite:
		return "sqlite"
	case Postgres:
		return "postgres"
	default:
		return fmt.Sprintf("Engine(%d)", int(e))
	}
}

// Config says which database to open. Exactly one of URL and SQLitePath must
// be set.
type Config struct {
	// URL is a PostgreSQL connection URL (postgres://user:pass@host/db?…).
	URL string
	// SQLitePath is the file of an SQLite database; it is created if missing.
	SQLitePath string
	// MaxConns bounds the PostgreSQL pool, or the SQLite read-only pool (the
	// SQLite writer is always a single connection). Zero picks a default.
	MaxConns int
	// BusyTimeout is how long an SQLite statement waits for a lock held by
	// another process before failing with SQLITE_BUSY (after which WithTx
	// retries). Zero means 5 seconds. Ignored for PostgreSQL.
	BusyTimeout time.Duration
}

// Querier is what the query functions of this package take, so that the same
// function runs on its own (a *DB) or inside a transaction (a *Tx).
type Querier interface {
	Engine() Engine
	Exec(ctx context.Context, query string, args ...any) (sql.Result, error)
	Query(ctx context.Context, query string, args ...any) (*sql.Rows, error)
	QueryRow(ctx context.Context, query string, args ...any) *sql.Row
}

// DB is a handle on one database, safe for concurrent use. Queries are written
// once in PostgreSQL syntax with $1, $2, … placeholders and rewritten for
// SQLite on first use.
type DB struct {
	engine Engine
	// writer runs transactions and writes. For SQLite it holds exactly one
	// connection; for PostgreSQL it is the whole pool.
	writer *sql.DB
	// reader runs read-only statements. For SQLite it is a pool of
	// query_only connections; for PostgreSQL it is the same pool as writer.
	reader  *sql.DB
	queries queryCache
	// relationRooms remembers which rooms have relations (relations.go).
	relationRooms relationRooms
}

var (
	_ Querier = (*DB)(nil)
	_ Querier = (*Tx)(nil)
)

// Open connects to the database named by cfg and brings its schema up to date
// by applying any pending migrations.
func Open(ctx context.Context, cfg Config) (*DB, error) {
	var (
		db  *DB
		err error
	)
	switch {
	case cfg.URL != "" && cfg.SQLitePath != "":
		return nil, errors.New("storage: set either URL or SQLitePath, not both")
	case cfg.URL != "":
		if !strings.HasPrefix(cfg.URL, "postgres://") && !strings.HasPrefix(cfg.URL, "postgresql://") {
			return nil, errors.New("storage: URL must start with postgres:// or postgresql://")
		}
		db, err = openPostgres(ctx, cfg)
	case cfg.SQLitePath != "":
		db, err = openSQLite(ctx, cfg)
	default:
		return nil, errors.New("storage: no database configured: set URL or SQLitePath")
	}
	if err != nil {
		return nil, err
	}
	if _, err := db.Migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// defaultMaxConns is the pool size used when Config.MaxConns is zero.
func defaultMaxConns() int {
	return max(4, 2*runtime.GOMAXPROCS(0))
}

// Engine reports which engine db talks to.
func (db *DB) Engine() Engine { return db.engine }

// Exec runs a statement that returns no rows, outside any transaction.
func (db *DB) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	q := db.queries.get(db.engine, query)
	return db.writer.ExecContext(ctx, q.text, args...)
}

// Query runs a statement that returns rows. Statements that only read (those
// starting with SELECT or WITH) go to the read pool and see everything
// committed before the call; anything else, such as INSERT … RETURNING, goes
// to the writer.
//
// On SQLite the writer is a single connection, so calling db.Exec, db.Query or
// db.WithTx for a write inside a WithTx callback waits for itself forever: use
// the *Tx inside a transaction.
func (db *DB) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	q := db.queries.get(db.engine, query)
	return db.pool(q).QueryContext(ctx, q.text, args...)
}

// QueryRow runs a statement expected to return at most one row; it routes the
// statement like Query does.
func (db *DB) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	q := db.queries.get(db.engine, query)
	return db.pool(q).QueryRowContext(ctx, q.text, args...)
}

// pool picks the connection pool for q.
func (db *DB) pool(q *boundQuery) *sql.DB {
	if q.readOnly {
		return db.reader
	}
	return db.writer
}

// Close closes every connection. Statements in flight fail.
func (db *DB) Close() error {
	err := db.writer.Close()
	if db.reader != db.writer {
		err = errors.Join(err, db.reader.Close())
	}
	return err
}
