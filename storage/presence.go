package storage

import "context"

// Queries of presence (client-server API "Presence"). Package presence decides what is
// stored; these only read and write rows.

// PresenceRow is one user's last known presence.
type PresenceRow struct {
	UserID          string
	Presence        string // online, unavailable or offline
	StatusMsg       string // "" when none
	LastActiveTS    int64  // ms since the epoch; 0 when unknown
	CurrentlyActive bool
	UpdatedTS       int64 // when the row was written
	StreamPos       int64
}

const presenceColumns = `user_id, presence, status_msg, last_active_ts, currently_active, updated_ts, stream_pos`

// PutPresence stores a user's presence, replacing what was there.
func PutPresence(ctx context.Context, q Querier, p PresenceRow) error {
	_, err := q.Exec(ctx, `INSERT INTO presence (`+presenceColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7)
		ON CONFLICT (user_id) DO UPDATE SET presence = excluded.presence, status_msg = excluded.status_msg,
		last_active_ts = excluded.last_active_ts, currently_active = excluded.currently_active,
		updated_ts = excluded.updated_ts, stream_pos = excluded.stream_pos`,
		p.UserID, p.Presence, p.StatusMsg, p.LastActiveTS, p.CurrentlyActive, p.UpdatedTS, p.StreamPos)
	return err
}

// TouchPresence moves the updated_ts of a user's row (another server repeated what it had
// told us, which keeps the row from going stale) without making it a change.
func TouchPresence(ctx context.Context, q Querier, userID string, updatedTS int64) error {
	_, err := q.Exec(ctx, `UPDATE presence SET updated_ts = $2 WHERE user_id = $1`, userID, updatedTS)
	return err
}

// LoadPresence reads one user's presence; ErrNotFound when none was ever stored.
func LoadPresence(ctx context.Context, q Querier, userID string) (PresenceRow, error) {
	rows, err := queryPresence(ctx, q, `SELECT `+presenceColumns+` FROM presence WHERE user_id = $1`, userID)
	if err != nil {
		return PresenceRow{}, err
	}
	if len(rows) == 0 {
		return PresenceRow{}, ErrNotFound
	}
	return rows[0], nil
}

// PresenceChanged lists the presence of viewer and of the users sharing a joined room with
// viewer whose presence last changed at a position in (from, to], by user ID. A user whose
// presence changed again after to is left for the next window, which reports the later
// change.
func PresenceChanged(ctx context.Context, q Querier, viewer string, from, to int64) ([]PresenceRow, error) {
	return queryPresence(ctx, q, `SELECT `+presenceColumns+` FROM presence
		WHERE stream_pos > $2 AND stream_pos <= $3 AND (user_id = $1 OR user_id IN (`+sharedJoinedUsers+`)) ORDER BY user_id`,
		viewer, from, to)
}

// PresenceSharing lists the presence of viewer and of the users sharing a joined room with
// viewer who are not offline, as of position to, by user ID.
func PresenceSharing(ctx context.Context, q Querier, viewer string, to int64) ([]PresenceRow, error) {
	return queryPresence(ctx, q, `SELECT `+presenceColumns+` FROM presence
		WHERE presence <> 'offline' AND stream_pos <= $2 AND (user_id = $1 OR user_id IN (`+sharedJoinedUsers+`)) ORDER BY user_id`,
		viewer, to)
}

// PresenceOfUsers reads the presence of users who are not offline, as of position to.
func PresenceOfUsers(ctx context.Context, q Querier, users []string, to int64) ([]PresenceRow, error) {
	var out []PresenceRow
	for _, chunk := range chunks(users, 500) {
		args := append([]any{to}, textArgs(chunk)...)
		rows, err := queryPresence(ctx, q, `SELECT `+presenceColumns+` FROM presence
			WHERE presence <> 'offline' AND stream_pos <= $1 AND user_id IN (`+placeholders(len(chunk), 2)+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	return out, nil
}

// PresenceNotOffline lists the users who are not offline and whose row was last written
// before updatedBefore, by user ID, at most limit of them.
func PresenceNotOffline(ctx context.Context, q Querier, updatedBefore int64, limit int) ([]PresenceRow, error) {
	return queryPresence(ctx, q, `SELECT `+presenceColumns+` FROM presence
		WHERE presence <> 'offline' AND updated_ts < $1 ORDER BY user_id LIMIT $2`, updatedBefore, limit)
}

func queryPresence(ctx context.Context, q Querier, query string, args ...any) ([]PresenceRow, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []PresenceRow
	for rows.Next() {
		var p PresenceRow
		if err := rows.Scan(&p.UserID, &p.Presence, &p.StatusMsg, &p.LastActiveTS, &p.CurrentlyActive, &p.UpdatedTS, &p.StreamPos); err != nil {
			return nil, err
		}
		out = append(out, p)
	}
	return out, rows.Err()
}
