package storage

import (
	"context"
	"io/fs"
)

// MigrateFS lets the external tests apply migrations of their own.
func (db *DB) MigrateFS(ctx context.Context, fsys fs.FS) ([]string, error) {
	return db.migrateFS(ctx, fsys)
}

// MaxTxAttempts is exported for the retry tests.
const MaxTxAttempts = maxTxAttempts
