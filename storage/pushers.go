package storage

import (
	"context"
	"database/sql"
	"errors"
	"slices"
)

// Queries of push notifications (client-server API "Push Notifications"): the pushers, the
// push sender's position in the stream, the queue of notifications for the push gateways,
// and the reads of events that notifications are computed from.

// Pusher is one stored pusher (pusher.yaml).
type Pusher struct {
	ID                int64
	UserID            string
	DeviceID          string
	Kind              string
	AppID             string
	PushKey           string
	AppDisplayName    string
	DeviceDisplayName string
	ProfileTag        string
	Lang              string
	// Data is the pusher's data object (JSON), url included.
	Data []byte
	// PushKeyTS is when the pushkey was last set, in milliseconds, and FromPos the stream
	// position then: the pusher is sent notifications of the events after it.
	PushKeyTS int64
	FromPos   int64
	// FailingSince (0 when deliveries do not fail), FailedAttempts and RetryAt are the
	// state of delivery to the pusher's gateway.
	FailingSince   int64
	FailedAttempts int64
	RetryAt        int64
}

const pusherColumns = `pusher_id, user_id, device_id, kind, app_id, pushkey, app_display_name, device_display_name,
	profile_tag, lang, data, pushkey_ts, from_pos, failing_since_ts, failed_attempts, retry_at_ts`

func scanPusher(scan func(...any) error) (*Pusher, error) {
	p := &Pusher{}
	var data string
	if err := scan(&p.ID, &p.UserID, &p.DeviceID, &p.Kind, &p.AppID, &p.PushKey, &p.AppDisplayName, &p.DeviceDisplayName,
		&p.ProfileTag, &p.Lang, &data, &p.PushKeyTS, &p.FromPos, &p.FailingSince, &p.FailedAttempts, &p.RetryAt); err != nil {
		return nil, err
	}
	p.Data = []byte(data)
	return p, nil
}

func queryPushers(ctx context.Context, q Querier, query string, args ...any) ([]*Pusher, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []*Pusher
	for rows.Next() {
		p, err := scanPusher(rows.Scan)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, closeRows(rows)
}

// PutPusher stores p as the user's pusher for its app ID and pushkey, replacing the one
// there (whose delivery starts afresh: a client setting its pusher again may have fixed
// it), and reports whether it is new. Either way the pusher gets the events after p.FromPos,
// as in Synapse.
func PutPusher(ctx context.Context, q Querier, p *Pusher) (created bool, err error) {
	var existing int64
	err = q.QueryRow(ctx, `SELECT pusher_id FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id = $3`,
		p.AppID, p.PushKey, p.UserID).Scan(&existing)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return false, err
	}
	err = q.QueryRow(ctx, `INSERT INTO pushers (user_id, device_id, kind, app_id, pushkey, app_display_name,
			device_display_name, profile_tag, lang, data, pushkey_ts, from_pos)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
		ON CONFLICT (app_id, pushkey, user_id) DO UPDATE SET device_id = excluded.device_id, kind = excluded.kind,
			app_display_name = excluded.app_display_name, device_display_name = excluded.device_display_name,
			profile_tag = excluded.profile_tag, lang = excluded.lang, data = excluded.data, pushkey_ts = excluded.pushkey_ts,
			from_pos = excluded.from_pos,
			failing_since_ts = 0, failed_attempts = 0, retry_at_ts = 0
		RETURNING pusher_id`,
		p.UserID, p.DeviceID, p.Kind, p.AppID, p.PushKey, p.AppDisplayName, p.DeviceDisplayName, p.ProfileTag, p.Lang,
		string(p.Data), p.PushKeyTS, p.FromPos).Scan(&p.ID)
	return existing == 0, err
}

// DeletePusher removes the user's pusher for an app ID and pushkey, with its queued
// notifications, and reports whether there was one.
func DeletePusher(ctx context.Context, q Querier, userID, appID, pushKey string) (bool, error) {
	var id int64
	err := q.QueryRow(ctx, `DELETE FROM pushers WHERE user_id = $1 AND app_id = $2 AND pushkey = $3 RETURNING pusher_id`,
		userID, appID, pushKey).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	_, err = q.Exec(ctx, `DELETE FROM push_queue WHERE pusher_id = $1`, id)
	return true, err
}

// DeleteOtherUsersPushers removes the pushers of users other than userID for an app ID and
// pushkey (pusher.yaml, append false), with their queued notifications.
func DeleteOtherUsersPushers(ctx context.Context, q Querier, appID, pushKey, userID string) error {
	if _, err := q.Exec(ctx, `DELETE FROM push_queue WHERE pusher_id IN
		(SELECT pusher_id FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3)`, appID, pushKey, userID); err != nil {
		return err
	}
	_, err := q.Exec(ctx, `DELETE FROM pushers WHERE app_id = $1 AND pushkey = $2 AND user_id <> $3`, appID, pushKey, userID)
	return err
}

// UserPushers lists a user's pushers, oldest first.
func UserPushers(ctx context.Context, q Querier, userID string) ([]*Pusher, error) {
	return queryPushers(ctx, q, `SELECT `+pusherColumns+` FROM pushers WHERE user_id = $1 ORDER BY pusher_id`, userID)
}

// CountUserPushers counts a user's pushers.
func CountUserPushers(ctx context.Context, q Querier, userID string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM pushers WHERE user_id = $1`, userID).Scan(&n)
	return n, err
}

// PushersOfUsers lists the pushers of the given users by user, each user's oldest first.
func PushersOfUsers(ctx context.Context, q Querier, userIDs []string) (map[string][]*Pusher, error) {
	out := map[string][]*Pusher{}
	for _, chunk := range chunks(userIDs, 500) {
		args := make([]any, len(chunk))
		for i, u := range chunk {
			args[i] = u
		}
		pushers, err := queryPushers(ctx, q, `SELECT `+pusherColumns+` FROM pushers WHERE user_id IN (`+
			placeholders(len(chunk), 1)+`) ORDER BY pusher_id`, args...)
		if err != nil {
			return nil, err
		}
		for _, p := range pushers {
			out[p.UserID] = append(out[p.UserID], p)
		}
	}
	return out, nil
}

// PushPosition reads the stream position up to which the push sender has queued
// notifications; found is false before its first start.
func PushPosition(ctx context.Context, q Querier) (pos int64, found bool, err error) {
	err = q.QueryRow(ctx, `SELECT pos FROM push_position WHERE singleton = 1`).Scan(&pos)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return pos, err == nil, err
}

// InitPushPosition stores pos as the push sender's position unless one is stored, and
// returns the stored one.
func InitPushPosition(ctx context.Context, q Querier, pos int64) (int64, error) {
	if _, err := q.Exec(ctx, `INSERT INTO push_position (singleton, pos) VALUES (1, $1) ON CONFLICT (singleton) DO NOTHING`, pos); err != nil {
		return 0, err
	}
	stored, _, err := PushPosition(ctx, q)
	return stored, err
}

// AdvancePushPosition moves the push sender's position from from to to, and reports false
// when the stored position was not from (another process moved it): the caller's work on
// the range is then not to be committed.
func AdvancePushPosition(ctx context.Context, q Querier, from, to int64) (bool, error) {
	res, err := q.Exec(ctx, `UPDATE push_position SET pos = $2 WHERE singleton = 1 AND pos = $1`, from, to)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n == 1, err
}

// PushCandidateEvents reads up to limit events with from < stream_pos <= to, oldest first,
// that may notify someone with a pusher: the events of rooms a pusher's owner is joined to,
// and member events about a pusher's owner (invites reach users outside the room).
func PushCandidateEvents(ctx context.Context, q Querier, from, to int64, limit int) ([]*EventRow, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE stream_pos > $1 AND stream_pos <= $2 AND (
			room_nid IN (SELECT c.room_nid FROM current_state c
				WHERE c.type = 'm.room.member' AND c.membership = 'join' AND c.state_key IN (SELECT p.user_id FROM pushers p))
			OR (type = 'm.room.member' AND state_key IN (SELECT p.user_id FROM pushers p)))
		ORDER BY stream_pos LIMIT $3`, from, to, limit)
}

// JoinedPusherOwners lists, by room, the users joined to each of the rooms now who have a
// pusher.
func JoinedPusherOwners(ctx context.Context, q Querier, roomNIDs []int64) (map[int64][]string, error) {
	out := map[int64][]string{}
	for _, chunk := range chunks(roomNIDs, 500) {
		rows, err := q.Query(ctx, `SELECT c.room_nid, c.state_key FROM current_state c
			WHERE c.type = 'm.room.member' AND c.membership = 'join' AND c.room_nid IN (`+placeholders(len(chunk), 1)+`)
				AND c.state_key IN (SELECT p.user_id FROM pushers p)`, int64Args(chunk)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var roomNID int64
			var userID string
			if err := rows.Scan(&roomNID, &userID); err != nil {
				rows.Close()
				return nil, err
			}
			out[roomNID] = append(out[roomNID], userID)
		}
		if err := closeRows(rows); err != nil {
			return nil, err
		}
	}
	for _, users := range out {
		slices.Sort(users)
	}
	return out, nil
}

// ReadersWithPushers lists up to limit users with a pusher whose read receipts (m.read,
// m.read.private) moved at a stream position in (from, to].
func ReadersWithPushers(ctx context.Context, q Querier, from, to int64, limit int) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT DISTINCT user_id FROM receipts
		WHERE stream_pos > $1 AND stream_pos <= $2 AND receipt_type IN ('m.read', 'm.read.private')
			AND user_id IN (SELECT p.user_id FROM pushers p)
		ORDER BY user_id LIMIT $3`, from, to, limit)
}

// QueuedPush is a notification to queue for a pusher, or one queued.
type QueuedPush struct {
	QueueID  int64
	PusherID int64
	// EventNID is the event notified about; 0 for a badge update.
	EventNID int64
	// Notification and Tweaks are JSON objects.
	Notification []byte
	Tweaks       []byte
	CreatedTS    int64
}

// EnqueuePushes queues notifications. A badge update replaces any badge update still
// queued for its pusher: only the latest count matters.
func EnqueuePushes(ctx context.Context, q Querier, pushes []QueuedPush) error {
	for _, p := range pushes {
		if p.EventNID == 0 {
			if _, err := q.Exec(ctx, `DELETE FROM push_queue WHERE pusher_id = $1 AND event_nid = 0`, p.PusherID); err != nil {
				return err
			}
		}
		if _, err := q.Exec(ctx, `INSERT INTO push_queue (pusher_id, event_nid, notification, tweaks, created_ts)
			VALUES ($1, $2, $3, $4, $5)`, p.PusherID, p.EventNID, string(p.Notification), string(p.Tweaks), p.CreatedTS); err != nil {
			return err
		}
	}
	return nil
}

// TrimPushQueue keeps the newest keep notifications queued for a pusher and drops the
// others.
func TrimPushQueue(ctx context.Context, q Querier, pusherID int64, keep int) error {
	_, err := q.Exec(ctx, `DELETE FROM push_queue WHERE pusher_id = $1 AND queue_id NOT IN
		(SELECT queue_id FROM push_queue WHERE pusher_id = $1 ORDER BY queue_id DESC LIMIT $2)`, pusherID, keep)
	return err
}

// PushHead is the oldest notification queued for a pusher, with the pusher.
type PushHead struct {
	QueuedPush
	Pusher *Pusher
}

// PushHeads reads the oldest queued notification of each pusher but those in exclude, the
// pushers that may be retried soonest first, at most limit of them. Notifications of
// pushers that are gone are not read (DeleteOrphanPushes removes them).
func PushHeads(ctx context.Context, q Querier, exclude []int64, limit int) ([]PushHead, error) {
	args := []any{limit}
	notIn := ""
	if len(exclude) > 0 {
		notIn = ` AND p.pusher_id NOT IN (` + placeholders(len(exclude), 2) + `)`
		args = append(args, int64Args(exclude)...)
	}
	rows, err := q.Query(ctx, `SELECT q.queue_id, q.event_nid, q.notification, q.tweaks, q.created_ts,
			p.pusher_id, p.user_id, p.device_id, p.kind, p.app_id, p.pushkey, p.app_display_name, p.device_display_name,
			p.profile_tag, p.lang, p.data, p.pushkey_ts, p.from_pos, p.failing_since_ts, p.failed_attempts, p.retry_at_ts
		FROM push_queue q JOIN pushers p ON p.pusher_id = q.pusher_id
		WHERE q.queue_id IN (SELECT MIN(queue_id) FROM push_queue GROUP BY pusher_id)`+notIn+`
		ORDER BY p.retry_at_ts, q.queue_id LIMIT $1`, args...)
	if err != nil {
		return nil, err
	}
	var out []PushHead
	for rows.Next() {
		var h PushHead
		var notification, tweaks string
		p, err := scanPusher(func(dest ...any) error {
			return rows.Scan(append([]any{&h.QueueID, &h.EventNID, &notification, &tweaks, &h.CreatedTS}, dest...)...)
		})
		if err != nil {
			rows.Close()
			return nil, err
		}
		h.PusherID, h.Pusher = p.ID, p
		h.Notification, h.Tweaks = []byte(notification), []byte(tweaks)
		out = append(out, h)
	}
	return out, closeRows(rows)
}

// DequeuePush removes a delivered (or given up) notification and, when resetFailures, clears
// its pusher's failures.
func DequeuePush(ctx context.Context, q Querier, queueID, pusherID int64, resetFailures bool) error {
	if _, err := q.Exec(ctx, `DELETE FROM push_queue WHERE queue_id = $1`, queueID); err != nil {
		return err
	}
	if !resetFailures {
		return nil
	}
	_, err := q.Exec(ctx, `UPDATE pushers SET failing_since_ts = 0, failed_attempts = 0, retry_at_ts = 0
		WHERE pusher_id = $1 AND failed_attempts <> 0`, pusherID)
	return err
}

// SetPusherFailures records the state of a pusher whose gateway failed: failing since
// failingSince, attempts failures in a row, next attempt at retryAt.
func SetPusherFailures(ctx context.Context, q Querier, pusherID, failingSince, attempts, retryAt int64) error {
	_, err := q.Exec(ctx, `UPDATE pushers SET failing_since_ts = $2, failed_attempts = $3, retry_at_ts = $4 WHERE pusher_id = $1`,
		pusherID, failingSince, attempts, retryAt)
	return err
}

// DeleteOrphanPushes removes queued notifications of pushers that are gone (deleted with
// their device).
func DeleteOrphanPushes(ctx context.Context, q Querier) error {
	_, err := q.Exec(ctx, `DELETE FROM push_queue WHERE pusher_id NOT IN (SELECT pusher_id FROM pushers)`)
	return err
}

// EventsInRoomsBefore reads up to limit timeline events of the given rooms with
// after < stream_pos < before that were not sent by notSender, newest first (for
// GET /notifications).
func EventsInRoomsBefore(ctx context.Context, q Querier, roomNIDs []int64, after, before int64, notSender string, limit int) ([]*EventRow, error) {
	var out []*EventRow
	for _, chunk := range chunks(roomNIDs, 500) {
		args := append([]any{after, before, notSender, limit}, int64Args(chunk)...)
		rows, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
			WHERE room_nid IN (`+placeholders(len(chunk), 5)+`) AND stream_pos > $1 AND stream_pos < $2
				AND status = 0 AND sender <> $3
			ORDER BY stream_pos DESC LIMIT $4`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, rows...)
	}
	if len(roomNIDs) > 500 {
		slices.SortFunc(out, func(a, b *EventRow) int {
			switch {
			case a.StreamPos > b.StreamPos:
				return -1
			case a.StreamPos < b.StreamPos:
				return 1
			}
			return 0
		})
	}
	if len(out) > limit {
		out = out[:limit]
	}
	return out, nil
}
