package storage

import (
	"context"
)

// Queries of receipts (client-server API "Receipts"), of the unread notification counts
// derived from them, and of stream positions reserved for in-memory streams.

// Receipt types stored here. m.fully_read is room account data, not a receipt.
const (
	ReceiptRead        = "m.read"
	ReceiptReadPrivate = "m.read.private"
)

// ReceiptRow is one user's receipt of one type and thread in a room.
type ReceiptRow struct {
	RoomNID int64
	UserID  string
	Type    string
	// ThreadID is "" for an unthreaded receipt, else "main" or a thread root's event ID.
	ThreadID string
	EventID  string
	// EventPos is the stream position of the receipted event.
	EventPos  int64
	TS        int64
	StreamPos int64
}

const receiptColumns = `room_nid, user_id, receipt_type, thread_id, event_id, event_pos, ts, stream_pos`

// PutReceipt stores r as the user's receipt of its type and thread in the room, unless the
// stored one already points at the same or a later event, and reports whether it stored it.
//
// NOTSPEC: receipts only move forward, as in Synapse: a receipt for an earlier event than the
// current one is accepted and ignored.
func PutReceipt(ctx context.Context, q Querier, r *ReceiptRow) (bool, error) {
	res, err := q.Exec(ctx, `INSERT INTO receipts (`+receiptColumns+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (room_nid, user_id, receipt_type, thread_id) DO UPDATE SET
			event_id = excluded.event_id, event_pos = excluded.event_pos, ts = excluded.ts, stream_pos = excluded.stream_pos
		WHERE receipts.event_pos < excluded.event_pos`,
		r.RoomNID, r.UserID, r.Type, r.ThreadID, r.EventID, r.EventPos, r.TS, r.StreamPos)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

func queryReceipts(ctx context.Context, q Querier, query string, args ...any) ([]ReceiptRow, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []ReceiptRow
	for rows.Next() {
		var r ReceiptRow
		if err := rows.Scan(&r.RoomNID, &r.UserID, &r.Type, &r.ThreadID, &r.EventID, &r.EventPos, &r.TS, &r.StreamPos); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	return out, closeRows(rows)
}

// ReceiptsBetween reads the receipts with from < stream_pos <= to in the rooms userID is
// joined to, newest first, at most limit of them. Private receipts are only the user's own.
func ReceiptsBetween(ctx context.Context, q Querier, userID string, from, to int64, limit int) ([]ReceiptRow, error) {
	return queryReceipts(ctx, q, `SELECT r.room_nid, r.user_id, r.receipt_type, r.thread_id, r.event_id, r.event_pos, r.ts, r.stream_pos
		FROM receipts r
		JOIN current_state c ON c.room_nid = r.room_nid AND c.type = 'm.room.member' AND c.state_key = $1 AND c.membership = 'join'
		WHERE r.stream_pos > $2 AND r.stream_pos <= $3 AND (r.receipt_type <> 'm.read.private' OR r.user_id = $1)
		ORDER BY r.stream_pos DESC LIMIT $4`, userID, from, to, limit)
}

// LatestReceipts reads a room's receipts with stream_pos <= to as userID may see them: the
// user's own first, then the newest of everyone else's, at most limit in all. Private
// receipts are only the user's own.
func LatestReceipts(ctx context.Context, q Querier, roomNID int64, userID string, to int64, limit int) ([]ReceiptRow, error) {
	return queryReceipts(ctx, q, `SELECT `+receiptColumns+` FROM receipts
		WHERE room_nid = $1 AND stream_pos <= $3 AND (receipt_type <> 'm.read.private' OR user_id = $2)
		ORDER BY CASE WHEN user_id = $2 THEN 0 ELSE 1 END, stream_pos DESC LIMIT $4`, roomNID, userID, to, limit)
}

// ReadPositions maps each room in which userID has a read receipt (m.read or m.read.private,
// unthreaded or for the main timeline) to the stream position of the latest event read.
func ReadPositions(ctx context.Context, q Querier, userID string) (map[int64]int64, error) {
	rows, err := q.Query(ctx, `SELECT room_nid, MAX(event_pos) FROM receipts
		WHERE user_id = $1 AND receipt_type IN ('m.read', 'm.read.private') AND thread_id IN ('', 'main')
		GROUP BY room_nid`, userID)
	if err != nil {
		return nil, err
	}
	out := map[int64]int64{}
	for rows.Next() {
		var roomNID, pos int64
		if err := rows.Scan(&roomNID, &pos); err != nil {
			rows.Close()
			return nil, err
		}
		out[roomNID] = pos
	}
	return out, closeRows(rows)
}

// ReserveStreamPos records that stream positions up to pos may be handed out to the
// in-memory stream name; MaxStreamPos counts it, so that a restarted server starts above.
func ReserveStreamPos(ctx context.Context, q Querier, name string, pos int64) error {
	_, err := q.Exec(ctx, `INSERT INTO stream_reservations (name, pos) VALUES ($1, $2)
		ON CONFLICT (name) DO UPDATE SET pos = excluded.pos WHERE stream_reservations.pos < excluded.pos`, name, pos)
	return err
}
