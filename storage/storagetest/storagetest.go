// Package storagetest gives tests fresh databases on both engines.
//
// Every test that touches the database should run on SQLite and PostgreSQL:
//
//	func TestThing(t *testing.T) {
//		storagetest.Each(t, func(t *testing.T, db *storage.DB) {
//			// db is a fresh, migrated database of its own.
//		})
//	}
//
// PostgreSQL is found at $EGGS_TEST_DATABASE_URL (default
// postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable); each
// test gets a database created for it and dropped when it ends. If PostgreSQL
// cannot be reached, the PostgreSQL half is skipped, unless $CI is "true", in
// which case it fails.
package storagetest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // registers the "pgx" database/sql driver

	"github.com/scrambledeggs/eggs/storage"
)

// DefaultURL is the PostgreSQL server used when EGGS_TEST_DATABASE_URL is
// unset: the one .ci/run starts.
const DefaultURL = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"

// Each runs fn twice, as subtests "sqlite" and "postgres", each time on a
// fresh migrated database that is closed and removed when the subtest ends.
func Each(t *testing.T, fn func(t *testing.T, db *storage.DB)) {
	t.Helper()
	for _, engine := range []storage.Engine{storage.SQLite, storage.Postgres} {
		t.Run(engine.String(), func(t *testing.T) {
			fn(t, NewDB(t, engine))
		})
	}
}

// NewDB opens a fresh migrated database on engine and closes it when tb ends.
func NewDB(tb testing.TB, engine storage.Engine) *storage.DB {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := storage.Open(ctx, NewConfig(tb, engine))
	if err != nil {
		tb.Fatalf("open %s test database: %v", engine, err)
	}
	tb.Cleanup(func() {
		if err := db.Close(); err != nil {
			tb.Errorf("close %s test database: %v", engine, err)
		}
	})
	return db
}

// NewConfig returns the Config of a fresh, empty database on engine, removed
// when tb ends; storage.Open on it applies the migrations. Use it to start a
// whole server, or to test migrating itself.
func NewConfig(tb testing.TB, engine storage.Engine) storage.Config {
	tb.Helper()
	switch engine {
	case storage.SQLite:
		return storage.Config{SQLitePath: filepath.Join(tb.TempDir(), "eggs.db")}
	case storage.Postgres:
		return storage.Config{URL: newPostgresDatabase(tb)}
	default:
		tb.Fatalf("storagetest: unknown engine %v", engine)
		return storage.Config{}
	}
}

// PostgresURL returns the URL of a fresh migrated PostgreSQL database, dropped
// when tb ends, for tests that start whole servers.
func PostgresURL(tb testing.TB) string {
	tb.Helper()
	cfg := NewConfig(tb, storage.Postgres)
	migrate(tb, cfg)
	return cfg.URL
}

// SQLitePath returns the path of a fresh migrated SQLite database in a
// temporary directory removed when tb ends.
func SQLitePath(tb testing.TB) string {
	tb.Helper()
	cfg := NewConfig(tb, storage.SQLite)
	migrate(tb, cfg)
	return cfg.SQLitePath
}

// migrate opens cfg once, which applies the migrations, and closes it.
func migrate(tb testing.TB, cfg storage.Config) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	db, err := storage.Open(ctx, cfg)
	if err != nil {
		tb.Fatalf("migrate test database: %v", err)
	}
	if err := db.Close(); err != nil {
		tb.Fatalf("close test database: %v", err)
	}
}

// adminURL is the PostgreSQL server tests create their databases on.
func adminURL() string {
	if u := os.Getenv("EGGS_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return DefaultURL
}

// admin is the connection to adminURL shared by the tests of one process,
// opened on first use. It is never closed: it lives as long as the test
// binary.
var admin struct {
	once sync.Once
	db   *sql.DB
	err  error
}

// adminDB connects to the server once per process, so that an unreachable
// server costs one timeout, not one per test.
func adminDB() (*sql.DB, error) {
	admin.once.Do(func() {
		db, err := sql.Open("pgx", adminURL())
		if err != nil {
			admin.err = err
			return
		}
		db.SetMaxOpenConns(2)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := db.PingContext(ctx); err != nil {
			db.Close()
			admin.err = err
			return
		}
		admin.db = db
	})
	return admin.db, admin.err
}

// newPostgresDatabase creates a uniquely named database, dropped when tb
// ends, and returns its URL.
func newPostgresDatabase(tb testing.TB) string {
	tb.Helper()
	db, err := adminDB()
	if err != nil {
		where := redact(adminURL())
		if os.Getenv("CI") == "true" {
			tb.Fatalf("PostgreSQL not reachable at %s (CI=true, so this fails): %v", where, err)
		}
		tb.Skipf("PostgreSQL not reachable at %s: PostgreSQL half skipped", where)
	}
	suffix := make([]byte, 6)
	if _, err := rand.Read(suffix); err != nil {
		tb.Fatal(err)
	}
	// Unique across test processes running at once (go test runs packages in
	// parallel), and recognisable if a crashed run leaves one behind.
	name := fmt.Sprintf("eggs_test_%d_%s", os.Getpid(), hex.EncodeToString(suffix))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if _, err := db.ExecContext(ctx, `CREATE DATABASE `+name); err != nil {
		tb.Fatalf("create test database %s: %v", name, err)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if _, err := db.ExecContext(ctx, `DROP DATABASE IF EXISTS `+name+` WITH (FORCE)`); err != nil {
			tb.Errorf("drop test database %s: %v", name, err)
		}
	})
	u, err := url.Parse(adminURL())
	if err != nil {
		tb.Fatalf("EGGS_TEST_DATABASE_URL: %v", err)
	}
	u.Path = "/" + name
	return u.String()
}

// redact hides the password in a connection URL before it is printed.
func redact(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparseable URL)"
	}
	return u.Redacted()
}

// Reachable reports whether the PostgreSQL server the tests use answers, and its URL with
// the password hidden, for `make test` to say which engines its run covers.
func Reachable() (url string, err error) {
	_, err = adminDB()
	return redact(adminURL()), err
}
