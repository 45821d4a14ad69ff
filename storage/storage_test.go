package storage_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mattn/go-sqlite3"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// testTables is a migration used only by these tests; it exercises every
// dialect token.
var testTables = fstest.MapFS{
	"9001_test_tables.sql": {Data: []byte(`
CREATE TABLE test_counters (
	counter_id {{BIGSERIAL}},
	name TEXT NOT NULL UNIQUE,
	hits {{BIGINT}} NOT NULL DEFAULT 0,
	enabled {{BOOL}} NOT NULL DEFAULT TRUE,
	payload {{BYTES}}
);
CREATE TABLE test_writes (
	writer {{BIGINT}} NOT NULL,
	seq {{BIGINT}} NOT NULL,
	PRIMARY KEY (writer, seq)
);
INSERT INTO test_counters (name) VALUES ('total');
`)},
}

// addTestTables applies testTables to db.
func addTestTables(t testing.TB, db *storage.DB) {
	t.Helper()
	if _, err := db.MigrateFS(context.Background(), testTables); err != nil {
		t.Fatalf("apply test tables: %v", err)
	}
}

// count returns the number of rows in table.
func count(t testing.TB, q storage.Querier, table string) int {
	t.Helper()
	var n int
	if err := q.QueryRow(context.Background(), "SELECT COUNT(*) FROM "+table).Scan(&n); err != nil {
		t.Fatalf("count %s: %v", table, err)
	}
	return n
}

// retryableError returns an error that WithTx must retry on db's engine.
func retryableError(engine storage.Engine) error {
	if engine == storage.SQLite {
		return sqlite3.Error{Code: sqlite3.ErrBusy}
	}
	return &pgconn.PgError{Code: "40001", Message: "could not serialize access"}
}

func TestOpenRejectsBadConfig(t *testing.T) {
	ctx := context.Background()
	for name, cfg := range map[string]storage.Config{
		"nothing":    {},
		"both":       {URL: "postgres://localhost/x", SQLitePath: "x.db"},
		"not pg url": {URL: "mysql://localhost/x"},
	} {
		if db, err := storage.Open(ctx, cfg); err == nil {
			db.Close()
			t.Errorf("%s: Open(%+v) succeeded", name, cfg)
		}
	}
}

func TestEngine(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		if want := t.Name()[strings.LastIndex(t.Name(), "/")+1:]; db.Engine().String() != want {
			t.Errorf("Engine() = %v in subtest %q", db.Engine(), want)
		}
	})
}

func TestMigrateIsIdempotent(t *testing.T) {
	files, err := os.ReadDir("migrations")
	if err != nil {
		t.Fatal(err)
	}
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		applied, err := db.Migrate(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(applied) != 0 {
			t.Errorf("second Migrate applied %v", applied)
		}
		if got := count(t, db, "schema_migrations"); got != len(files) {
			t.Errorf("schema_migrations has %d rows, want %d", got, len(files))
		}
		addTestTables(t, db)
		again, err := db.MigrateFS(ctx, testTables)
		if err != nil || len(again) != 0 {
			t.Errorf("re-applying test tables: applied %v, err %v", again, err)
		}
	})
}

func TestMigrationFailureLeavesNothing(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		migrations := fstest.MapFS{
			"9101_good.sql": {Data: []byte("CREATE TABLE test_good (x {{BIGINT}});")},
			"9102_bad.sql": {Data: []byte(`CREATE TABLE test_half (x {{BIGINT}});
INSERT INTO test_no_such_table VALUES (1);`)},
			"9103_never.sql": {Data: []byte("CREATE TABLE test_never (x {{BIGINT}});")},
		}
		applied, err := db.MigrateFS(ctx, migrations)
		if err == nil || !strings.Contains(err.Error(), "9102_bad.sql") {
			t.Fatalf("err = %v, want failure of 9102_bad.sql", err)
		}
		if len(applied) != 1 || applied[0] != "9101_good.sql" {
			t.Errorf("applied = %v, want [9101_good.sql]", applied)
		}
		count(t, db, "test_good")
		for _, table := range []string{"test_half", "test_never"} {
			if _, err := db.Exec(ctx, "SELECT 1 FROM "+table); err == nil {
				t.Errorf("table %s exists after failed migration", table)
			}
		}
		var recorded int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, "9102_bad.sql").Scan(&recorded); err != nil {
			t.Fatal(err)
		}
		if recorded != 0 {
			t.Error("failed migration recorded as applied")
		}

		_, err = db.MigrateFS(ctx, fstest.MapFS{"9104_typo.sql": {Data: []byte("CREATE TABLE t (x {{BIGNIT}});")}})
		if err == nil || !strings.Contains(err.Error(), "{{BIGNIT}}") {
			t.Errorf("unknown token: err = %v", err)
		}
	})
}

func TestConcurrentOpenMigratesOnce(t *testing.T) {
	for _, engine := range []storage.Engine{storage.SQLite, storage.Postgres} {
		t.Run(engine.String(), func(t *testing.T) {
			cfg := storagetest.NewConfig(t, engine)
			const processes = 4
			dbs := make([]*storage.DB, processes)
			errs := make([]error, processes)
			var wg sync.WaitGroup
			for i := range processes {
				wg.Go(func() {
					dbs[i], errs[i] = storage.Open(context.Background(), cfg)
				})
			}
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Fatalf("Open %d: %v", i, err)
				}
				defer dbs[i].Close()
			}
			files, err := os.ReadDir("migrations")
			if err != nil {
				t.Fatal(err)
			}
			if got := count(t, dbs[0], "schema_migrations"); got != len(files) {
				t.Errorf("schema_migrations has %d rows, want %d", got, len(files))
			}
		})
	}
}

func TestPlaceholders(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		// Parameters out of order: SQLite must bind by number, not position.
		if _, err := db.Exec(ctx, `INSERT INTO server_meta (meta_value, meta_key) VALUES ($2, $1)`, "k", []byte("v")); err != nil {
			t.Fatal(err)
		}
		var key, literal string
		var value []byte
		err := db.QueryRow(ctx, `SELECT meta_key, '$1', meta_value FROM server_meta
			WHERE meta_key = $1 OR meta_key = $1 || 'x' -- a $2 here is not a parameter
			`, "k").Scan(&key, &literal, &value)
		if err != nil {
			t.Fatal(err)
		}
		if key != "k" || literal != "$1" || string(value) != "v" {
			t.Errorf("got (%q, %q, %q), want (k, $1, v)", key, literal, value)
		}
	})
}

func TestQueryRoutesWritesToWriter(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addTestTables(t, db)
		var id int64
		err := db.QueryRow(ctx, `INSERT INTO test_counters (name, enabled) VALUES ($1, $2) RETURNING counter_id`, "returning", false).Scan(&id)
		if err != nil {
			t.Fatalf("INSERT … RETURNING through QueryRow: %v", err)
		}
		var enabled bool
		if err := db.QueryRow(ctx, `SELECT enabled FROM test_counters WHERE counter_id = $1`, id).Scan(&enabled); err != nil {
			t.Fatalf("read after write: %v", err)
		}
		if enabled {
			t.Error("enabled = true, want false")
		}
	})
}

func TestMeta(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, found, err := storage.GetMeta(ctx, db, "signing_key"); err != nil || found {
			t.Fatalf("GetMeta on empty table: found %v, err %v", found, err)
		}
		for _, value := range [][]byte{[]byte("ed25519 a_bcd"), {0, 1, 2, 0, 255}, {}} {
			if err := storage.SetMeta(ctx, db, "signing_key", value); err != nil {
				t.Fatal(err)
			}
			got, found, err := storage.GetMeta(ctx, db, "signing_key")
			if err != nil || !found || string(got) != string(value) {
				t.Errorf("GetMeta = %q, %v, %v; want %q", got, found, err, value)
			}
		}
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.SetMeta(ctx, tx, "in_tx", []byte("1")); err != nil {
				return err
			}
			got, found, err := storage.GetMeta(ctx, tx, "in_tx")
			if err == nil && (!found || string(got) != "1") {
				err = fmt.Errorf("own write not visible in transaction: %q, %v", got, found)
			}
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if count(t, db, "server_meta") != 2 {
			t.Errorf("server_meta has %d rows, want 2", count(t, db, "server_meta"))
		}
	})
}

func TestWithTxRollsBack(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		errBoom := errors.New("boom")
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.SetMeta(ctx, tx, "a", []byte("1")); err != nil {
				return err
			}
			if err := storage.SetMeta(ctx, tx, "b", []byte("2")); err != nil {
				return err
			}
			return errBoom
		})
		if !errors.Is(err, errBoom) {
			t.Fatalf("WithTx = %v, want boom", err)
		}
		if n := count(t, db, "server_meta"); n != 0 {
			t.Errorf("%d rows left after failed transaction", n)
		}

		func() {
			defer func() {
				if recover() == nil {
					t.Error("panic in fn was swallowed")
				}
			}()
			_ = db.WithTx(ctx, func(tx *storage.Tx) error {
				if err := storage.SetMeta(ctx, tx, "c", []byte("3")); err != nil {
					return err
				}
				panic("half way")
			})
		}()
		if n := count(t, db, "server_meta"); n != 0 {
			t.Errorf("%d rows left after panicking transaction", n)
		}
		// The writer connection must be usable again after the panic.
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.SetMeta(ctx, tx, "d", []byte("4"))
		}); err != nil {
			t.Fatalf("WithTx after panic: %v", err)
		}
	})
}

func TestWithTxRetries(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addTestTables(t, db)
		insert := func(tx *storage.Tx, attempt int) error {
			_, err := tx.Exec(ctx, `INSERT INTO test_writes (writer, seq) VALUES ($1, $2)`, 1, attempt)
			return err
		}

		attempts := 0
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			attempts++
			if err := insert(tx, attempts); err != nil {
				return err
			}
			if attempts < 3 {
				return fmt.Errorf("write: %w", retryableError(db.Engine()))
			}
			return nil
		})
		if err != nil || attempts != 3 {
			t.Fatalf("WithTx = %v after %d attempts, want success after 3", err, attempts)
		}
		var seq int
		if err := db.QueryRow(ctx, `SELECT seq FROM test_writes`).Scan(&seq); err != nil || seq != 3 {
			t.Errorf("rows of failed attempts were kept: seq %d, err %v", seq, err)
		}

		attempts = 0
		errPlain := errors.New("not a conflict")
		if err := db.WithTx(ctx, func(*storage.Tx) error { attempts++; return errPlain }); !errors.Is(err, errPlain) || attempts != 1 {
			t.Errorf("plain error: %v after %d attempts, want 1 attempt", err, attempts)
		}

		attempts = 0
		conflict := retryableError(db.Engine())
		err = db.WithTx(ctx, func(*storage.Tx) error { attempts++; return conflict })
		if !errors.Is(err, conflict) || attempts != storage.MaxTxAttempts {
			t.Errorf("endless conflict: %v after %d attempts, want %d", err, attempts, storage.MaxTxAttempts)
		}
	})
}

func TestWithTxRetriesWhenSQLiteFileIsLocked(t *testing.T) {
	ctx := context.Background()
	cfg := storagetest.NewConfig(t, storage.SQLite)
	holder, err := storage.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	// A second handle on the file stands in for another process, with a busy
	// timeout far shorter than the time the holder keeps the lock.
	cfg.BusyTimeout = time.Millisecond
	contender, err := storage.Open(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer contender.Close()

	locked, release := make(chan struct{}), make(chan struct{})
	holderDone := make(chan error, 1)
	go func() {
		holderDone <- holder.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.SetMeta(ctx, tx, "holder", []byte("1")); err != nil {
				return err
			}
			close(locked)
			<-release
			return nil
		})
	}()
	<-locked

	var sqliteErr sqlite3.Error
	if err := storage.SetMeta(ctx, contender, "plain", []byte("1")); !errors.As(err, &sqliteErr) || sqliteErr.Code != sqlite3.ErrBusy {
		t.Fatalf("write outside WithTx while locked: %v, want SQLITE_BUSY", err)
	}
	go func() {
		time.Sleep(50 * time.Millisecond)
		close(release)
	}()
	if err := contender.WithTx(ctx, func(tx *storage.Tx) error {
		return storage.SetMeta(ctx, tx, "contender", []byte("1"))
	}); err != nil {
		t.Fatalf("WithTx did not outlast the lock: %v", err)
	}
	if err := <-holderDone; err != nil {
		t.Fatal(err)
	}
	if n := count(t, contender, "server_meta"); n != 2 {
		t.Errorf("server_meta has %d rows, want 2", n)
	}
}

func TestWithTxRetriesPostgresDeadlock(t *testing.T) {
	db := storagetest.NewDB(t, storage.Postgres)
	ctx := context.Background()
	addTestTables(t, db)
	if _, err := db.Exec(ctx, `INSERT INTO test_counters (name) VALUES ('a'), ('b')`); err != nil {
		t.Fatal(err)
	}
	// Each transaction locks one row, waits until the other holds its row,
	// then asks for the other's: PostgreSQL aborts one with 40P01, and WithTx
	// must run it again.
	var holding sync.WaitGroup
	holding.Add(2)
	lockBoth := func(first, second string) error {
		attempt := 0
		return db.WithTx(ctx, func(tx *storage.Tx) error {
			attempt++
			bump := `UPDATE test_counters SET hits = hits + 1 WHERE name = $1`
			if _, err := tx.Exec(ctx, bump, first); err != nil {
				return err
			}
			if attempt == 1 {
				holding.Done()
				holding.Wait()
			}
			_, err := tx.Exec(ctx, bump, second)
			return err
		})
	}
	errs := make(chan error, 2)
	go func() { errs <- lockBoth("a", "b") }()
	go func() { errs <- lockBoth("b", "a") }()
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatalf("WithTx: %v", err)
		}
	}
	var hits int
	if err := db.QueryRow(ctx, `SELECT SUM(hits) FROM test_counters WHERE name IN ('a', 'b')`).Scan(&hits); err != nil {
		t.Fatal(err)
	}
	if hits != 4 {
		t.Errorf("hits = %d, want 4", hits)
	}
}

func TestConcurrentWriters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		addTestTables(t, db)
		const writers, writes = 8, 25
		var wg sync.WaitGroup
		errs := make(chan error, writers+1)
		for writer := range writers {
			wg.Go(func() {
				for seq := range writes {
					err := db.WithTx(ctx, func(tx *storage.Tx) error {
						if _, err := tx.Exec(ctx, `INSERT INTO test_writes (writer, seq) VALUES ($1, $2)`, writer, seq); err != nil {
							return err
						}
						_, err := tx.Exec(ctx, `UPDATE test_counters SET hits = hits + 1 WHERE name = $1`, "total")
						return err
					})
					if err != nil {
						errs <- err
						return
					}
				}
			})
		}
		wg.Go(func() {
			// Readers run alongside the writers and must never see a write
			// without its counter update.
			for range 50 {
				var rows, hits int
				err := db.QueryRow(ctx, `SELECT (SELECT COUNT(*) FROM test_writes), hits FROM test_counters WHERE name = $1`, "total").Scan(&rows, &hits)
				if err != nil {
					errs <- err
					return
				}
				if rows != hits {
					errs <- fmt.Errorf("reader saw %d rows but counter %d", rows, hits)
					return
				}
			}
		})
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		if n := count(t, db, "test_writes"); n != writers*writes {
			t.Errorf("test_writes has %d rows, want %d", n, writers*writes)
		}
		var hits int
		if err := db.QueryRow(ctx, `SELECT hits FROM test_counters WHERE name = 'total'`).Scan(&hits); err != nil || hits != writers*writes {
			t.Errorf("hits = %d (%v), want %d", hits, err, writers*writes)
		}
	})
}
