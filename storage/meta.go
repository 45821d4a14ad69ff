package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// GetMeta returns the server_meta value stored under key, and whether there
// was one.
func GetMeta(ctx context.Context, q Querier, key string) (value []byte, found bool, err error) {
	err = q.QueryRow(ctx, `SELECT meta_value FROM server_meta WHERE meta_key = $1`, key).Scan(&value)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("storage: get meta %q: %w", key, err)
	}
	return value, true, nil
}

// SetMeta stores value under key in server_meta, replacing any earlier value.
func SetMeta(ctx context.Context, q Querier, key string, value []byte) error {
	if value == nil {
		// NULL is not allowed; an empty value is.
		value = []byte{}
	}
	_, err := q.Exec(ctx, `INSERT INTO server_meta (meta_key, meta_value) VALUES ($1, $2)
		ON CONFLICT (meta_key) DO UPDATE SET meta_value = excluded.meta_value`, key, value)
	if err != nil {
		return fmt.Errorf("storage: set meta %q: %w", key, err)
	}
	return nil
}
