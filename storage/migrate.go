package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"time"
)

// migrationFiles holds the schema, one file per change; see the package
// comment for how to add one.
//
//go:embed migrations/*.sql
var migrationFiles embed.FS

// dialectTokens maps each token usable in migration files to its spelling on
// SQLite and on PostgreSQL.
var dialectTokens = map[string][2]string{
	"BIGSERIAL": {"INTEGER PRIMARY KEY AUTOINCREMENT", "BIGSERIAL PRIMARY KEY"},
	"BIGINT":    {"INTEGER", "BIGINT"},
	"BYTES":     {"BLOB", "BYTEA"},
	"BOOL":      {"INTEGER", "BOOLEAN"},
}

var tokenPattern = regexp.MustCompile(`\{\{([A-Za-z_]*)\}\}`)

// expandTokens replaces the dialect tokens in a migration for engine. An
// unknown token is an error, so a typo fails every test instead of reaching
// the database as odd SQL.
func expandTokens(engine Engine, migration string) (string, error) {
	var unknown []string
	out := tokenPattern.ReplaceAllStringFunc(migration, func(token string) string {
		name := token[2 : len(token)-2]
		spellings, ok := dialectTokens[name]
		if !ok {
			unknown = append(unknown, token)
			return token
		}
		if engine == SQLite {
			return spellings[0]
		}
		return spellings[1]
	})
	if len(unknown) > 0 {
		return "", fmt.Errorf("unknown dialect tokens %v", unknown)
	}
	return out, nil
}

const createMigrationsTable = `CREATE TABLE IF NOT EXISTS schema_migrations (
	version TEXT PRIMARY KEY,
	applied_at BIGINT NOT NULL
)`

// Migrate applies the migrations that db has not seen yet, each in its own
// transaction, in lexical order of file name, and returns the names of those
// it applied. Open calls it; calling it again is harmless.
func (db *DB) Migrate(ctx context.Context) ([]string, error) {
	sub, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return nil, err
	}
	return db.migrateFS(ctx, sub)
}

// migrateFS applies the *.sql files at the top of fsys.
//
// Several processes may migrate one database at the same time. On PostgreSQL
// each transaction first takes an advisory lock, so they queue; on SQLite the
// writer's BEGIN IMMEDIATE does the same. Inside the lock, each transaction
// checks again whether its migration is still pending, so the loser of a race
// skips it rather than applying it twice.
func (db *DB) migrateFS(ctx context.Context, fsys fs.FS) ([]string, error) {
	names, err := fs.Glob(fsys, "*.sql")
	if err != nil {
		return nil, fmt.Errorf("storage: list migrations: %w", err)
	}
	slices.Sort(names)

	if err := db.WithTx(ctx, func(tx *Tx) error {
		if err := lockMigrations(ctx, tx); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, createMigrationsTable)
		return err
	}); err != nil {
		return nil, fmt.Errorf("storage: create schema_migrations: %w", err)
	}
	done, err := appliedMigrations(ctx, db)
	if err != nil {
		return nil, err
	}

	var applied []string
	for _, name := range names {
		if done[name] {
			continue
		}
		body, err := fs.ReadFile(fsys, name)
		if err != nil {
			return applied, fmt.Errorf("storage: read migration %s: %w", name, err)
		}
		script, err := expandTokens(db.engine, string(body))
		if err != nil {
			return applied, fmt.Errorf("storage: migration %s: %w", name, err)
		}
		ran := false
		err = db.WithTx(ctx, func(tx *Tx) error {
			ran = false
			if err := lockMigrations(ctx, tx); err != nil {
				return err
			}
			var already int
			if err := tx.QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations WHERE version = $1`, name).Scan(&already); err != nil {
				return err
			}
			if already > 0 {
				return nil
			}
			// No arguments: both drivers then accept several statements.
			if _, err := tx.Exec(ctx, script); err != nil {
				return err
			}
			ran = true
			_, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, applied_at) VALUES ($1, $2)`,
				name, time.Now().UnixMilli())
			return err
		})
		if err != nil {
			return applied, fmt.Errorf("storage: migration %s: %w", name, err)
		}
		if ran {
			applied = append(applied, name)
		}
	}
	return applied, nil
}

// lockMigrations serialises migrating transactions across processes on
// PostgreSQL; the lock is released when the transaction ends.
func lockMigrations(ctx context.Context, tx *Tx) error {
	if tx.Engine() != Postgres {
		return nil
	}
	_, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock($1)`, int64(migrationLockID))
	return err
}

// appliedMigrations returns the versions recorded in schema_migrations.
func appliedMigrations(ctx context.Context, q Querier) (map[string]bool, error) {
	rows, err := q.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("storage: read schema_migrations: %w", err)
	}
	defer rows.Close()
	done := make(map[string]bool)
	for rows.Next() {
		var version string
		if err := rows.Scan(&version); err != nil {
			return nil, err
		}
		done[version] = true
	}
	return done, rows.Err()
}
