package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// Queries of smaller client-server API modules: read-modify-write of account data (room
// tags), mutual rooms, and content reports.

// errAccountDataRaced says that another transaction inserted the account data that
// UpdateAccountData found missing: it reads it again.
var errAccountDataRaced = errors.New("account data inserted concurrently")

// maxUpdateAttempts bounds how often UpdateAccountData starts again after losing a race.
const maxUpdateAttempts = 5

// UpdateAccountData rewrites one piece of a user's account data (roomID "" for global) at
// stream position pos, atomically: update gets the current content (nil when there is
// none) and returns the new content, or nil to leave it as it is. It reports whether it
// wrote. An error of update is returned as it is, and nothing is written.
//
// Concurrent updates of the same piece are serialised (on PostgreSQL by locking the row, or
// by the unique key when the row is new; on SQLite by the single writer), so none of them
// is lost.
func UpdateAccountData(ctx context.Context, db *DB, userID, roomID, dataType string, pos int64,
	update func(current []byte) ([]byte, error)) (bool, error) {
	lock := ""
	if db.Engine() == Postgres {
		lock = " FOR UPDATE"
	}
	for attempt := 1; ; attempt++ {
		var changed bool
		err := db.WithTx(ctx, func(tx *Tx) error {
			changed = false
			var content string
			err := tx.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`+lock,
				userID, roomID, dataType).Scan(&content)
			exists := err == nil
			if err != nil && !errors.Is(err, sql.ErrNoRows) {
				return err
			}
			var current []byte
			if exists {
				current = []byte(content)
			}
			next, err := update(current)
			if err != nil || next == nil {
				return err
			}
			if exists {
				_, err = tx.Exec(ctx, `UPDATE account_data SET content = $1, stream_pos = $2
					WHERE user_id = $3 AND room_id = $4 AND type = $5`, string(next), pos, userID, roomID, dataType)
			} else {
				var res sql.Result
				res, err = tx.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos)
					VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id, room_id, type) DO NOTHING`,
					userID, roomID, dataType, string(next), pos)
				if err == nil {
					if n, _ := res.RowsAffected(); n == 0 {
						return errAccountDataRaced
					}
				}
			}
			changed = err == nil
			return err
		})
		if errors.Is(err, errAccountDataRaced) && attempt < maxUpdateAttempts {
			continue
		}
		return changed, err
	}
}

// MutualJoinedRooms lists the rooms where both users are joined, in room ID order: at most
// limit of them, those after the room ID after ("" for the first page).
func MutualJoinedRooms(ctx context.Context, q Querier, userA, userB, after string, limit int) ([]string, error) {
	rows, err := q.Query(ctx, `SELECT r.room_id FROM current_state a
		JOIN current_state b ON b.room_nid = a.room_nid AND b.type = 'm.room.member' AND b.state_key = $2 AND b.membership = 'join'
		JOIN rooms r ON r.room_nid = a.room_nid
		WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join' AND r.room_id > $3
		ORDER BY r.room_id LIMIT $4`, userA, userB, after, limit)
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var roomID string
		if err := rows.Scan(&roomID); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, roomID)
	}
	return out, closeRows(rows)
}

// CountMutualJoinedRooms counts the rooms where both users are joined.
func CountMutualJoinedRooms(ctx context.Context, q Querier, userA, userB string) (int, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM current_state a
		JOIN current_state b ON b.room_nid = a.room_nid AND b.type = 'm.room.member' AND b.state_key = $2 AND b.membership = 'join'
		WHERE a.type = 'm.room.member' AND a.state_key = $1 AND a.membership = 'join'`, userA, userB).Scan(&n)
	return n, err
}

// Kinds of content report.
const (
	ReportEvent = "event"
	ReportRoom  = "room"
	ReportUser  = "user"
)

// ReportRow is one content report (client-server API "Reporting content"). RoomID and
// EventID are set for an event report, RoomID for a room report, UserID for a user report.
type ReportRow struct {
	ID       int64
	Kind     string
	Reporter string
	RoomID   string
	EventID  string
	UserID   string
	// Reason is nil when an event report gave none; Score is nil when none was given.
	Reason     *string
	Score      *int64
	ReceivedTS int64
}

// InsertReport stores a report and returns its ID.
func InsertReport(ctx context.Context, q Querier, r *ReportRow) (int64, error) {
	var id int64
	err := q.QueryRow(ctx, `INSERT INTO reports (kind, reporter, room_id, event_id, user_id, reason, score, received_ts)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING report_id`,
		r.Kind, r.Reporter, nullString(r.RoomID), nullString(r.EventID), nullString(r.UserID), r.Reason, r.Score, r.ReceivedTS).Scan(&id)
	return id, err
}

// ReportQuery selects reports for ListReports. The zero value lists the newest reports of
// every kind.
type ReportQuery struct {
	// RoomID and UserID, when set, keep the reports about that room (events in it
	// included) or that user.
	RoomID string
	UserID string
	// Before, when positive, keeps the reports older than that report ID: the ID of the
	// last report of the previous page.
	Before int64
	// Limit bounds the page; zero or less means 100.
	Limit int
}

// ListReports lists reports, newest first.
func ListReports(ctx context.Context, q Querier, query ReportQuery) ([]ReportRow, error) {
	var where []string
	var args []any
	arg := func(v any) string {
		args = append(args, v)
		return fmt.Sprintf("$%d", len(args))
	}
	if query.RoomID != "" {
		where = append(where, "room_id = "+arg(query.RoomID))
	}
	if query.UserID != "" {
		where = append(where, "user_id = "+arg(query.UserID))
	}
	if query.Before > 0 {
		where = append(where, "report_id < "+arg(query.Before))
	}
	limit := query.Limit
	if limit <= 0 {
		limit = 100
	}
	sqlText := `SELECT report_id, kind, reporter, room_id, event_id, user_id, reason, score, received_ts FROM reports`
	if len(where) > 0 {
		sqlText += " WHERE " + strings.Join(where, " AND ")
	}
	sqlText += " ORDER BY report_id DESC LIMIT " + arg(limit)
	rows, err := q.Query(ctx, sqlText, args...)
	if err != nil {
		return nil, err
	}
	var out []ReportRow
	for rows.Next() {
		var r ReportRow
		var roomID, eventID, userID, reason sql.NullString
		var score sql.NullInt64
		if err := rows.Scan(&r.ID, &r.Kind, &r.Reporter, &roomID, &eventID, &userID, &reason, &score, &r.ReceivedTS); err != nil {
			rows.Close()
			return nil, err
		}
		r.RoomID, r.EventID, r.UserID = roomID.String, eventID.String, userID.String
		if reason.Valid {
			r.Reason = &reason.String
		}
		if score.Valid {
			r.Score = &score.Int64
		}
		out = append(out, r)
	}
	return out, closeRows(rows)
}
