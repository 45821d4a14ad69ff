package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"
)

// maxTxAttempts bounds how often WithTx runs a transaction that keeps failing
// with a retryable error.
const maxTxAttempts = 8

// firstRetryDelay is the pause before the second attempt; it doubles after
// each further failure, with jitter so that colliding writers drift apart.
const firstRetryDelay = 5 * time.Millisecond

// Tx is a transaction started by DB.WithTx. Every statement sent through it
// runs on the transaction's connection, including reads.
type Tx struct {
	engine        Engine
	tx            *sql.Tx
	queries       *queryCache
	relationRooms *relationRooms
}

// Engine reports which engine the transaction runs on.
func (tx *Tx) Engine() Engine { return tx.engine }

// Exec runs a statement that returns no rows.
func (tx *Tx) Exec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	return tx.tx.ExecContext(ctx, tx.queries.get(tx.engine, query).text, args...)
}

// Query runs a statement that returns rows.
func (tx *Tx) Query(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return tx.tx.QueryContext(ctx, tx.queries.get(tx.engine, query).text, args...)
}

// QueryRow runs a statement expected to return at most one row.
func (tx *Tx) QueryRow(ctx context.Context, query string, args ...any) *sql.Row {
	return tx.tx.QueryRowContext(ctx, tx.queries.get(tx.engine, query).text, args...)
}

// WithTx runs fn in a transaction and commits it if fn returns nil; otherwise,
// or if fn panics, it rolls back, so no half-written rows remain.
//
// When the transaction fails because of contention — SQLITE_BUSY/SQLITE_LOCKED
// from another process holding the SQLite file, or a PostgreSQL serialization
// failure (40001) or deadlock (40P01) — WithTx rolls back and runs fn again,
// up to a bounded number of attempts, so fn must not have effects outside the
// transaction that would be wrong to repeat.
//
// On SQLite, transactions take the write lock when they begin (BEGIN
// IMMEDIATE) and run one at a time on the single writer connection.
func (db *DB) WithTx(ctx context.Context, fn func(tx *Tx) error) error {
	delay := firstRetryDelay
	for attempt := 1; ; attempt++ {
		err := db.runTx(ctx, fn)
		if err == nil || !isRetryable(err) {
			return err
		}
		if attempt == maxTxAttempts {
			return fmt.Errorf("storage: transaction still failing after %d attempts: %w", attempt, err)
		}
		pause := delay/2 + rand.N(delay)
		delay *= 2
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(pause):
		}
	}
}

// runTx makes one attempt at the transaction.
func (db *DB) runTx(ctx context.Context, fn func(tx *Tx) error) (err error) {
	sqlTx, err := db.writer.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("storage: begin transaction: %w", err)
	}
	committed := false
	defer func() {
		if !committed {
			// Rollback's own error adds nothing: the connection is either
			// healthy and rolled back, or discarded by database/sql.
			_ = sqlTx.Rollback()
		}
	}()
	if err := fn(&Tx{engine: db.engine, tx: sqlTx, queries: &db.queries, relationRooms: &db.relationRooms}); err != nil {
		return err
	}
	committed = true
	if err := sqlTx.Commit(); err != nil {
		return fmt.Errorf("storage: commit: %w", err)
	}
	return nil
}

// isRetryable reports whether err means the transaction lost a race and would
// probably succeed if run again.
func isRetryable(err error) bool {
	return isSQLiteBusy(err) || isPostgresRetryable(err)
}
