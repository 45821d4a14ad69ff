package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Queries behind the federation's information endpoints: OpenID tokens
// (/openid/userinfo) and the event of a room nearest to a timestamp
// (/timestamp_to_event).

// InsertOpenIDToken stores an OpenID token by its hash for userID until expiresTS, and
// drops the tokens that expired before nowMS.
func InsertOpenIDToken(ctx context.Context, q Querier, hash []byte, userID string, expiresTS, nowMS int64) error {
	if _, err := q.Exec(ctx, `DELETE FROM openid_tokens WHERE expires_ts <= $1`, nowMS); err != nil {
		return err
	}
	_, err := q.Exec(ctx, `INSERT INTO openid_tokens (token_hash, user_id, expires_ts) VALUES ($1, $2, $3)`,
		hash, userID, expiresTS)
	return err
}

// OpenIDTokenUser is the user of an OpenID token that is still valid at nowMS; ErrNotFound
// when there is none.
func OpenIDTokenUser(ctx context.Context, q Querier, hash []byte, nowMS int64) (string, error) {
	var userID string
	err := q.QueryRow(ctx, `SELECT user_id FROM openid_tokens WHERE token_hash = $1 AND expires_ts > $2`,
		hash, nowMS).Scan(&userID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", ErrNotFound
	}
	return userID, err
}

// EventNearTimestamp finds the timeline event of a room closest to ts in one direction:
// the earliest at or after ts when forward, else the latest at or before it. Events with
// equal timestamps are ordered by stream position. ErrNotFound when there is none.
func EventNearTimestamp(ctx context.Context, q Querier, roomNID, ts int64, forward bool) (eventID string, originTS int64, err error) {
	query := `SELECT event_id, origin_ts FROM events
		WHERE room_nid = $1 AND stream_pos > 0 AND origin_ts >= $2
		ORDER BY origin_ts ASC, stream_pos ASC LIMIT 1`
	if !forward {
		query = `SELECT event_id, origin_ts FROM events
		WHERE room_nid = $1 AND stream_pos > 0 AND origin_ts <= $2
		ORDER BY origin_ts DESC, stream_pos DESC LIMIT 1`
	}
	err = q.QueryRow(ctx, query, roomNID, ts).Scan(&eventID, &originTS)
	if errors.Is(err, sql.ErrNoRows) {
		return "", 0, ErrNotFound
	}
	return eventID, originTS, err
}
