package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/mattn/go-sqlite3"
)

// defaultBusyTimeout is how long SQLite waits for another process's lock.
const defaultBusyTimeout = 5 * time.Second

// openSQLite opens the writer connection and the read-only pool on
// cfg.SQLitePath.
//
// Settings, and why:
//   - journal_mode=WAL: readers never block the writer nor the writer readers.
//   - synchronous=NORMAL: in WAL mode a commit appends to the WAL without
//     fsync; the WAL is fsynced at checkpoints. A committed transaction
//     therefore survives the process crashing or being killed (SIGKILL), since
//     the data is in the operating system's page cache, which is what we
//     promise. Only a power loss or kernel crash can lose the last few
//     commits, and never corrupts the database. synchronous=FULL would fsync
//     every commit for protection against that too, at several times the cost
//     per write.
//   - busy_timeout: wait for a lock held by another process (an admin
//     command, say) instead of failing at once.
//   - foreign_keys=ON: SQLite ignores REFERENCES clauses unless asked.
//   - _txlock=immediate on the writer: a transaction takes the write lock at
//     BEGIN, so it can never fail halfway when upgrading from a read lock.
//   - query_only on readers: a write sent to the read pool fails loudly.
func openSQLite(ctx context.Context, cfg Config) (*DB, error) {
	path, err := filepath.Abs(cfg.SQLitePath)
	if err != nil {
		return nil, fmt.Errorf("storage: sqlite path %q: %w", cfg.SQLitePath, err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("storage: create directory for %s: %w", path, err)
	}
	busy := cfg.BusyTimeout
	if busy <= 0 {
		busy = defaultBusyTimeout
	}
	common := url.Values{
		"_synchronous":  {"NORMAL"},
		"_busy_timeout": {strconv.FormatInt(busy.Milliseconds(), 10)},
		"_foreign_keys": {"1"},
		// Keep prepared statements per connection: preparing costs about as much as
		// running a small query, and a homeserver runs a few hundred distinct ones.
		"_stmt_cache_size": {"256"},
	}
	fileURI := "file:" + (&url.URL{Path: path}).EscapedPath() + "?"

	writerParams := cloneValues(common)
	writerParams.Set("_journal_mode", "WAL")
	writerParams.Set("_txlock", "immediate")
	writer, err := sql.Open("sqlite3", fileURI+writerParams.Encode())
	if err != nil {
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	// One writer connection: SQLite allows one writer at a time anyway, and
	// queueing in database/sql is cheaper than spinning on SQLITE_BUSY.
	writer.SetMaxOpenConns(1)
	writer.SetMaxIdleConns(1)
	writer.SetConnMaxIdleTime(0)
	writer.SetConnMaxLifetime(0)
	// Connecting the writer first switches the file to WAL before any reader
	// opens it.
	//
	// Switching the journal mode needs the file to itself, and SQLite answers SQLITE_BUSY
	// at once (without its busy handler) while another process is opening the file too:
	// retry for as long as the busy timeout.
	deadline := time.Now().Add(busy)
	for {
		err := writer.PingContext(ctx)
		if err == nil {
			break
		}
		if !isSQLiteBusy(err) || time.Now().After(deadline) {
			writer.Close()
			return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
		}
		select {
		case <-ctx.Done():
			writer.Close()
			return nil, ctx.Err()
		case <-time.After(10 * time.Millisecond):
		}
	}

	readerParams := cloneValues(common)
	readerParams.Set("_query_only", "1")
	reader, err := sql.Open("sqlite3", fileURI+readerParams.Encode())
	if err != nil {
		writer.Close()
		return nil, fmt.Errorf("storage: open sqlite %s: %w", path, err)
	}
	readers := cfg.MaxConns
	if readers <= 0 {
		readers = defaultMaxConns()
	}
	reader.SetMaxOpenConns(readers)
	reader.SetMaxIdleConns(readers)
	reader.SetConnMaxIdleTime(5 * time.Minute)
	return &DB{engine: SQLite, writer: writer, reader: reader}, nil
}

// cloneValues copies v so the writer and reader settings can differ.
func cloneValues(v url.Values) url.Values {
	out := make(url.Values, len(v))
	for k, vals := range v {
		out[k] = append([]string(nil), vals...)
	}
	return out
}

// isSQLiteBusy reports whether err is SQLITE_BUSY or SQLITE_LOCKED: another
// connection held a lock for longer than the busy timeout.
func isSQLiteBusy(err error) bool {
	var sqliteErr sqlite3.Error
	if !errors.As(err, &sqliteErr) {
		return false
	}
	return sqliteErr.Code == sqlite3.ErrBusy || sqliteErr.Code == sqlite3.ErrLocked
}
