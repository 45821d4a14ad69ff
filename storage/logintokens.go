package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Login tokens (m.login.token): issued by POST /login/get_token, spent by one POST /login.

// PutLoginToken stores a login token (its hash) for userID until expiresTS, and removes
// expired ones.
func PutLoginToken(ctx context.Context, db *DB, hash []byte, userID string, expiresTS, nowMS int64) error {
	return db.WithTx(ctx, func(tx *Tx) error {
		if _, err := tx.Exec(ctx, `DELETE FROM login_tokens WHERE expires_ts <= $1`, nowMS); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, `INSERT INTO login_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
			hash, userID, expiresTS)
		return err
	})
}

// SpendLoginToken removes a login token and returns its user if it had not expired at
// nowMS; ErrNotFound otherwise. A token is spent once, whatever the outcome.
func SpendLoginToken(ctx context.Context, db *DB, hash []byte, nowMS int64) (string, error) {
	var userID string
	var expires int64
	err := db.WithTx(ctx, func(tx *Tx) error {
		return tx.QueryRow(ctx, `DELETE FROM login_tokens WHERE token_hash = $1 RETURNING user_id, expires_ts`, hash).
			Scan(&userID, &expires)
	})
	if errors.Is(err, sql.ErrNoRows) || (err == nil && expires <= nowMS) {
		return "", ErrNotFound
	}
	return userID, err
}
