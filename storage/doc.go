// Package storage is the database layer of Scrambled Eggs: one set of SQL
// queries that runs on SQLite (the zero-setup default) and on PostgreSQL (for
// production and for several processes sharing one database).
//
// # Using it
//
//	db, err := storage.Open(ctx, storage.Config{SQLitePath: "eggs.db"})
//	// or storage.Config{URL: "postgres://user:pass@host/eggs"}
//	defer db.Close()
//
//	err = db.WithTx(ctx, func(tx *storage.Tx) error {
//		_, err := tx.Exec(ctx, `INSERT INTO t (a, b) VALUES ($1, $2)`, a, b)
//		return err
//	})
//	row := db.QueryRow(ctx, `SELECT b FROM t WHERE a = $1`, a)
//
// Queries are written once, in PostgreSQL syntax with $1, $2, … placeholders.
// For SQLite they are rewritten to ?1, ?2, … (bound by number, so a parameter
// may repeat or appear out of order) once per distinct query and cached.
// SQL that both engines accept covers nearly everything a homeserver needs,
// including INSERT … ON CONFLICT … DO UPDATE and RETURNING; where it does not,
// branch on Engine() in the one query function concerned.
//
// Open applies pending migrations before it returns, so a DB always has the
// current schema.
//
// # Connections
//
// On SQLite, a DB holds one writer connection, on which every WithTx and Exec
// runs, one at a time, and a pool of read-only connections for Query and
// QueryRow of SELECT/WITH statements. WAL mode lets the readers run while the
// writer writes. synchronous=NORMAL makes a commit survive the process
// crashing or being killed, which is the durability promised; see openSQLite
// for why that is enough. Because there is one writer connection, never call
// db.Exec, db.WithTx or a writing db.Query from inside a WithTx callback: use
// the *Tx, or the call waits for itself.
//
// On PostgreSQL, a DB is a pool from pgx through database/sql.
//
// WithTx rolls back when its function fails or panics, and runs it again (a
// bounded number of times, with backoff) when the transaction failed only
// because of contention: SQLITE_BUSY from another process holding the file,
// or a PostgreSQL serialization failure (40001) or deadlock (40P01).
//
// # Adding tables
//
// A new feature adds two kinds of file to this package:
//
//   - migrations/NNNN_name.sql: the schema change. Files run in lexical order,
//     each once and in its own transaction, and are recorded in
//     schema_migrations. Never edit a migration that has been committed; add
//     a new one. Several statements per file are fine. On PostgreSQL,
//     migrating processes queue on an advisory lock, so several servers may
//     start at once.
//   - name.go: the queries, as functions taking a Querier (either *DB or
//     *Tx) so that callers can compose them inside one transaction, as
//     GetMeta and SetMeta in meta.go do.
//
// Their tests use storagetest.Each, which runs them on both engines.
//
// A migration is written once for both engines. Where the engines spell a
// type differently, write a dialect token; an unknown token is an error:
//
//	{{BIGSERIAL}}  INTEGER PRIMARY KEY AUTOINCREMENT | BIGSERIAL PRIMARY KEY
//	{{BIGINT}}     INTEGER                           | BIGINT
//	{{BYTES}}      BLOB                              | BYTEA
//	{{BOOL}}       INTEGER                           | BOOLEAN
//
// (SQLite | PostgreSQL.) TEXT, INTEGER, DEFAULT, UNIQUE, REFERENCES, CHECK and
// CREATE INDEX need no token. Statements that cannot run in a transaction,
// such as CREATE INDEX CONCURRENTLY, cannot be used.
//
// # Choice of SQLite driver
//
// github.com/mattn/go-sqlite3 (cgo) was chosen over modernc.org/sqlite (pure
// Go) by measuring both on a homeserver's hot path, opened with the settings
// above: a transaction inserting a ~1 KB event plus its timeline row, a point
// SELECT by primary key, and a 50-row range scan joining timeline to events,
// on a table of 10,000 events. Median of three runs, ns/op, on the 2-core
// AMD EPYC development machine (shared, so only large gaps count):
//
//	                        mattn (cgo)   modernc (Go)
//	insert event + index       118,000        114,000   (same)
//	point select                 8,100          9,900   mattn 18% faster
//	point select, parallel       6,000          6,100   (same)
//	range scan, 50 rows        105,000        144,000   mattn 27% faster
//
// A second run, with the machine busier, agreed: point select 10,750 against
// 13,560, range scan 109,000 against 161,000.
//
// Reads dominate a homeserver (sync, state lookups, event fetches), so mattn
// wins. Its cost is cgo: building needs a C compiler (.ci/run installs gcc),
// the first build of the driver takes about a minute, and a fully static
// binary needs -ldflags '-extldflags -static'. The comparison lives in its
// own module so the losing driver stays out of go.mod; reproduce with
//
//	cd storage/driverbench && go test -run - -bench . -benchtime 1s -count 3
//
// The same hot path through this package, on both engines:
//
//	go test -run - -bench . ./storage/
package storage
