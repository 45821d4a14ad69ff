package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Queries of the room server: rooms, events, state snapshots and current state.

// RoomRow is a room's stored header.
type RoomRow struct {
	NID             int64
	RoomID          string
	Version         string
	CurrentSnapshot int64
}

// EventRow is one stored event.
type EventRow struct {
	NID          int64
	EventID      string
	RoomNID      int64
	StreamPos    int64
	Depth        int64
	Type         string
	StateKey     *string
	Sender       string
	OriginTS     int64
	StateBefore  int64
	StateAfter   int64
	Status       EventStatus
	ReplacesNID  int64
	RedactedBy   string
	SenderDevice string
	TxnID        string
	JSON         []byte
}

// SnapshotLink is one stored snapshot: its ID, depth, base and delta (tuple NID → event NID).
type SnapshotLink struct {
	NID     int64
	BaseNID int64
	Depth   int64
	Delta   map[int64]int64
}

// ErrNotFound is returned by lookups of a single row that does not exist.
var ErrNotFound = errors.New("not found")

// InsertRoom stores a new room and returns its numeric ID.
func InsertRoom(ctx context.Context, q Querier, roomID, version string) (int64, error) {
	var nid int64
	err := q.QueryRow(ctx, `INSERT INTO rooms (room_id, room_version) VALUES ($1, $2) RETURNING room_nid`,
		roomID, version).Scan(&nid)
	return nid, err
}

// LoadRoom reads a room's header.
func LoadRoom(ctx context.Context, q Querier, roomID string) (*RoomRow, error) {
	r := &RoomRow{RoomID: roomID}
	err := q.QueryRow(ctx, `SELECT room_nid, room_version, current_snapshot FROM rooms WHERE room_id = $1`, roomID).
		Scan(&r.NID, &r.Version, &r.CurrentSnapshot)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

// SetCurrentSnapshot records the room's current state snapshot.
func SetCurrentSnapshot(ctx context.Context, q Querier, roomNID, snapshotNID int64) error {
	_, err := q.Exec(ctx, `UPDATE rooms SET current_snapshot = $1 WHERE room_nid = $2`, snapshotNID, roomNID)
	return err
}

// InternTuple returns the numeric ID of a state tuple, creating it if needed.
func InternTuple(ctx context.Context, q Querier, evType, stateKey string) (int64, error) {
	var nid int64
	err := q.QueryRow(ctx, `INSERT INTO state_tuples (type, state_key) VALUES ($1, $2)
		ON CONFLICT (type, state_key) DO UPDATE SET type = excluded.type RETURNING tuple_nid`,
		evType, stateKey).Scan(&nid)
	return nid, err
}

// LoadTuples reads the tuples with the given numeric IDs.
func LoadTuples(ctx context.Context, q Querier, nids []int64) (map[int64][2]string, error) {
	out := make(map[int64][2]string, len(nids))
	for _, chunk := range chunks(nids, 500) {
		rows, err := q.Query(ctx, `SELECT tuple_nid, type, state_key FROM state_tuples WHERE tuple_nid IN (`+placeholders(len(chunk), 1)+`)`, int64Args(chunk)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var nid int64
			var t [2]string
			if err := rows.Scan(&nid, &t[0], &t[1]); err != nil {
				rows.Close()
				return nil, err
			}
			out[nid] = t
		}
		if err := closeRows(rows); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// EventStatus says how an event was received: accepted into the room, or stored for
// reference only.
type EventStatus int

const (
	// EventAccepted events are part of the room: in the DAG, the timeline and the state.
	EventAccepted EventStatus = iota
	// EventOutlier events are known (as auth events, say) without the state around them.
	EventOutlier
	// EventSoftFailed events passed the auth checks against their own state but not against
	// the room's current state: kept, but neither relayed to clients nor built upon.
	EventSoftFailed
	// EventRejected events failed the auth checks; kept so they are not processed again.
	EventRejected
)

// InsertEvent stores an event and returns its numeric ID.
func InsertEvent(ctx context.Context, q Querier, e *EventRow) (int64, error) {
	err := q.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, stream_pos, status, depth, type, state_key, sender,
		origin_ts, state_before, state_after, replaces_nid, sender_device, txn_id, json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING event_nid`,
		e.EventID, e.RoomNID, e.StreamPos, int(e.Status), e.Depth, e.Type, e.StateKey, e.Sender, e.OriginTS,
		e.StateBefore, e.StateAfter, e.ReplacesNID, nullString(e.SenderDevice), nullString(e.TxnID), string(e.JSON)).Scan(&e.NID)
	err = indexRelations(ctx, q, err, e)
	return e.NID, err
}

// StoreReceivedEvent stores an event received from another server: inserted, or — when the
// event is already held as an outlier (from an auth chain or a state fetch) — that row takes
// its place in the room, keeping its numeric ID. ErrExists if the event is stored otherwise.
func StoreReceivedEvent(ctx context.Context, q Querier, e *EventRow) (int64, error) {
	err := q.QueryRow(ctx, `INSERT INTO events (event_id, room_nid, stream_pos, status, depth, type, state_key, sender,
		origin_ts, state_before, state_after, replaces_nid, sender_device, txn_id, json)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
		ON CONFLICT (event_id) DO UPDATE SET stream_pos = excluded.stream_pos, status = excluded.status,
			state_before = excluded.state_before, state_after = excluded.state_after, replaces_nid = excluded.replaces_nid
		WHERE events.status = 1
		RETURNING event_nid`,
		e.EventID, e.RoomNID, e.StreamPos, int(e.Status), e.Depth, e.Type, e.StateKey, e.Sender, e.OriginTS,
		e.StateBefore, e.StateAfter, e.ReplacesNID, nullString(e.SenderDevice), nullString(e.TxnID), string(e.JSON)).Scan(&e.NID)
	err = indexRelations(ctx, q, err, e)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("event %s: %w", e.EventID, ErrExists)
	}
	return e.NID, err
}

// SetStateAfter records the snapshot after a state event, made once the event had its ID.
func SetStateAfter(ctx context.Context, q Querier, eventNID, snapshotNID int64) error {
	_, err := q.Exec(ctx, `UPDATE events SET state_after = $1 WHERE event_nid = $2`, snapshotNID, eventNID)
	return err
}

// DeleteCurrentState removes a tuple from a room's current state (after a state resolution
// dropped it).
func DeleteCurrentState(ctx context.Context, q Querier, roomNID int64, evType, stateKey string) error {
	_, err := q.Exec(ctx, `DELETE FROM current_state WHERE room_nid = $1 AND type = $2 AND state_key = $3`, roomNID, evType, stateKey)
	return err
}

const eventColumns = `event_nid, event_id, room_nid, stream_pos, status, depth, type, state_key, sender, origin_ts,
	state_before, state_after, replaces_nid, COALESCE(redacted_by, ''), COALESCE(sender_device, ''), COALESCE(txn_id, ''), json`

func scanEvent(scan func(...any) error) (*EventRow, error) {
	e := &EventRow{}
	var stateKey sql.NullString
	var js string
	var status int
	if err := scan(&e.NID, &e.EventID, &e.RoomNID, &e.StreamPos, &status, &e.Depth, &e.Type, &stateKey, &e.Sender,
		&e.OriginTS, &e.StateBefore, &e.StateAfter, &e.ReplacesNID, &e.RedactedBy, &e.SenderDevice, &e.TxnID, &js); err != nil {
		return nil, err
	}
	e.Status = EventStatus(status)
	if stateKey.Valid {
		e.StateKey = &stateKey.String
	}
	e.JSON = []byte(js)
	return e, nil
}

func queryEvents(ctx context.Context, q Querier, query string, args ...any) ([]*EventRow, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []*EventRow
	for rows.Next() {
		e, err := scanEvent(rows.Scan)
		if err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, e)
	}
	return out, closeRows(rows)
}

// LoadEventByID reads one event by its event ID.
func LoadEventByID(ctx context.Context, q Querier, eventID string) (*EventRow, error) {
	e, err := scanEvent(q.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE event_id = $1`, eventID).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return e, err
}

// LoadEventsByNID reads events by numeric ID (in no particular order).
func LoadEventsByNID(ctx context.Context, q Querier, nids []int64) ([]*EventRow, error) {
	var out []*EventRow
	for _, chunk := range chunks(nids, 500) {
		evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE event_nid IN (`+placeholders(len(chunk), 1)+`)`, int64Args(chunk)...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// LoadEventsByID reads events by event ID (in no particular order); missing ones are left out.
func LoadEventsByID(ctx context.Context, q Querier, ids []string) ([]*EventRow, error) {
	var out []*EventRow
	for _, chunk := range chunks(ids, 500) {
		args := make([]any, len(chunk))
		for i, id := range chunk {
			args[i] = id
		}
		evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE event_id IN (`+placeholders(len(chunk), 1)+`)`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// RoomEventsBetween reads a room's timeline events with from < stream_pos <= to, newest
// first, at most limit of them.
func RoomEventsBetween(ctx context.Context, q Querier, roomNID, from, to int64, limit int) ([]*EventRow, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos DESC LIMIT $4`,
		roomNID, from, to, limit)
}

// RoomEventsAfter reads a room's timeline events with from < stream_pos <= to, oldest first.
func RoomEventsAfter(ctx context.Context, q Querier, roomNID, from, to int64, limit int) ([]*EventRow, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_nid = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos ASC LIMIT $4`,
		roomNID, from, to, limit)
}

// SetRedactedBy marks an event as redacted by a redaction event.
func SetRedactedBy(ctx context.Context, q Querier, eventID, redactionID string) error {
	_, err := q.Exec(ctx, `UPDATE events SET redacted_by = $1 WHERE event_id = $2 AND redacted_by IS NULL`, redactionID, eventID)
	err = unindexForSearch(ctx, q, err, eventID)
	return unindexRelation(ctx, q, err, eventID)
}

// InsertSnapshot stores a state snapshot as a delta against baseNID.
func InsertSnapshot(ctx context.Context, q Querier, roomNID, baseNID, depth int64, delta map[int64]int64) (int64, error) {
	var nid int64
	if err := q.QueryRow(ctx, `INSERT INTO state_snapshots (room_nid, base_nid, depth) VALUES ($1, $2, $3) RETURNING snapshot_nid`,
		roomNID, baseNID, depth).Scan(&nid); err != nil {
		return 0, err
	}
	tuples := make([]int64, 0, len(delta))
	for t := range delta {
		tuples = append(tuples, t)
	}
	for _, chunk := range chunks(tuples, 300) {
		var sb strings.Builder
		args := make([]any, 0, 3*len(chunk))
		sb.WriteString(`INSERT INTO state_deltas (snapshot_nid, tuple_nid, event_nid) VALUES `)
		for i, t := range chunk {
			if i > 0 {
				sb.WriteByte(',')
			}
			fmt.Fprintf(&sb, "($%d, $%d, $%d)", 3*i+1, 3*i+2, 3*i+3)
			args = append(args, nid, t, delta[t])
		}
		if _, err := q.Exec(ctx, sb.String(), args...); err != nil {
			return 0, err
		}
	}
	return nid, nil
}

// LoadSnapshotChain reads the chain of deltas through which snapshot nid is read, root first.
func LoadSnapshotChain(ctx context.Context, q Querier, nid int64) ([]SnapshotLink, error) {
	if nid == 0 {
		return nil, nil
	}
	rows, err := q.Query(ctx, `WITH RECURSIVE chain(snapshot_nid, base_nid, depth) AS (
			SELECT snapshot_nid, base_nid, depth FROM state_snapshots WHERE snapshot_nid = $1
			UNION ALL
			SELECT s.snapshot_nid, s.base_nid, s.depth FROM state_snapshots s JOIN chain c ON s.snapshot_nid = c.base_nid
		)
		SELECT c.snapshot_nid, c.base_nid, c.depth, d.tuple_nid, d.event_nid
		FROM chain c LEFT JOIN state_deltas d ON d.snapshot_nid = c.snapshot_nid
		ORDER BY c.depth`, nid)
	if err != nil {
		return nil, err
	}
	var links []SnapshotLink
	for rows.Next() {
		var snap, base, depth int64
		var tuple, event sql.NullInt64
		if err := rows.Scan(&snap, &base, &depth, &tuple, &event); err != nil {
			rows.Close()
			return nil, err
		}
		if len(links) == 0 || links[len(links)-1].NID != snap {
			links = append(links, SnapshotLink{NID: snap, BaseNID: base, Depth: depth, Delta: map[int64]int64{}})
		}
		if tuple.Valid {
			links[len(links)-1].Delta[tuple.Int64] = event.Int64
		}
	}
	return links, closeRows(rows)
}

// Extremities reads the numeric IDs of a room's forward extremities.
func Extremities(ctx context.Context, q Querier, roomNID int64) ([]int64, error) {
	return queryColumn[int64](ctx, q, `SELECT event_nid FROM forward_extremities WHERE room_nid = $1`, roomNID)
}

// queryColumn runs a query of one column and returns its values.
func queryColumn[T any](ctx context.Context, q Querier, query string, args ...any) ([]T, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	out := []T{}
	for rows.Next() {
		var v T
		if err := rows.Scan(&v); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, v)
	}
	return out, closeRows(rows)
}

// ReplaceExtremities makes add the room's only forward extremity, given the previous ones.
func ReplaceExtremities(ctx context.Context, q Querier, roomNID int64, remove []int64, add int64) error {
	if len(remove) > 0 {
		args := append([]any{roomNID}, int64Args(remove)...)
		if _, err := q.Exec(ctx, `DELETE FROM forward_extremities WHERE room_nid = $1 AND event_nid IN (`+placeholders(len(remove), 2)+`)`, args...); err != nil {
			return err
		}
	}
	_, err := q.Exec(ctx, `INSERT INTO forward_extremities (room_nid, event_nid) VALUES ($1, $2)`, roomNID, add)
	return err
}

// SetCurrentState records a change of a room's current state.
func SetCurrentState(ctx context.Context, q Querier, roomNID int64, evType, stateKey string, eventNID int64, membership string) error {
	_, err := q.Exec(ctx, `INSERT INTO current_state (room_nid, type, state_key, event_nid, membership) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (room_nid, type, state_key) DO UPDATE SET event_nid = excluded.event_nid, membership = excluded.membership`,
		roomNID, evType, stateKey, eventNID, nullString(membership))
	return err
}

// RoomMembership is one room a user has a membership in.
type RoomMembership struct {
	RoomID     string
	RoomNID    int64
	Membership string
	EventNID   int64
}

// UserMemberships lists the rooms in which user's current membership is one of memberships.
func UserMemberships(ctx context.Context, q Querier, userID string, memberships ...string) ([]RoomMembership, error) {
	args := []any{userID}
	for _, m := range memberships {
		args = append(args, m)
	}
	rows, err := q.Query(ctx, `SELECT r.room_id, r.room_nid, c.membership, c.event_nid FROM current_state c
		JOIN rooms r ON r.room_nid = c.room_nid
		WHERE c.type = 'm.room.member' AND c.state_key = $1 AND c.membership IN (`+placeholders(len(memberships), 2)+`)`, args...)
	if err != nil {
		return nil, err
	}
	var out []RoomMembership
	for rows.Next() {
		var m RoomMembership
		if err := rows.Scan(&m.RoomID, &m.RoomNID, &m.Membership, &m.EventNID); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, m)
	}
	return out, closeRows(rows)
}

// MembershipChanges lists user's membership events with from < stream_pos <= to, oldest first.
func MembershipChanges(ctx context.Context, q Querier, userID string, from, to int64) ([]*EventRow, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE type = 'm.room.member' AND state_key = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`,
		userID, from, to)
}

// LookupTxn returns the event ID sent earlier with this transaction ID, or "".
func LookupTxn(ctx context.Context, q Querier, userID, deviceID, txnID string) (string, error) {
	var eventID string
	err := q.QueryRow(ctx, `SELECT event_id FROM txn_ids WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
		userID, deviceID, txnID).Scan(&eventID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return eventID, err
}

// InsertTxn records the event sent with a transaction ID.
func InsertTxn(ctx context.Context, q Querier, userID, deviceID, txnID, eventID string, nowMS int64) error {
	_, err := q.Exec(ctx, `INSERT INTO txn_ids (user_id, device_id, txn_id, event_id, created_ts) VALUES ($1, $2, $3, $4, $5)`,
		userID, deviceID, txnID, eventID, nowMS)
	return err
}

// MaxStreamPos is the highest stream position stored by any stream.
func MaxStreamPos(ctx context.Context, q Querier) (int64, error) {
	var pos int64
	err := q.QueryRow(ctx, `SELECT MAX(p) FROM (
		SELECT COALESCE(MAX(stream_pos), 0) AS p FROM events
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM account_data
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM receipts
		UNION ALL SELECT COALESCE(MAX(stream_pos), 0) FROM presence
		UNION ALL SELECT COALESCE(MAX(pos), 0) FROM stream_reservations) AS positions`).Scan(&pos)
	return pos, err
}

func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// placeholders is "$start, $start+1, …" n times.
func placeholders(n, start int) string {
	var sb strings.Builder
	for i := 0; i < n; i++ {
		if i > 0 {
			sb.WriteString(", ")
		}
		fmt.Fprintf(&sb, "$%d", start+i)
	}
	return sb.String()
}

func int64Args(v []int64) []any {
	out := make([]any, len(v))
	for i, x := range v {
		out[i] = x
	}
	return out
}

func chunks[T any](v []T, size int) [][]T {
	var out [][]T
	for len(v) > size {
		out = append(out, v[:size])
		v = v[size:]
	}
	if len(v) > 0 {
		out = append(out, v)
	}
	return out
}

func closeRows(rows *sql.Rows) error {
	if err := rows.Err(); err != nil {
		rows.Close()
		return err
	}
	return rows.Close()
}

// LastEventAtOrBefore reads a room's last timeline event with stream_pos <= pos; ErrNotFound if none.
func LastEventAtOrBefore(ctx context.Context, q Querier, roomNID, pos int64) (*EventRow, error) {
	evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_nid = $1 AND stream_pos > 0 AND stream_pos <= $2 ORDER BY stream_pos DESC LIMIT 1`, roomNID, pos)
	if err != nil {
		return nil, err
	}
	if len(evs) == 0 {
		return nil, ErrNotFound
	}
	return evs[0], nil
}

// LookupAlias returns the room an alias points to, or "".
func LookupAlias(ctx context.Context, q Querier, alias string) (string, error) {
	var roomID string
	err := q.QueryRow(ctx, `SELECT room_id FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	return roomID, err
}

// InsertAlias creates an alias; ErrExists if it is taken.
func InsertAlias(ctx context.Context, q Querier, alias, roomID, creator string) error {
	res, err := q.Exec(ctx, `INSERT INTO room_aliases (alias, room_id, creator) VALUES ($1, $2, $3) ON CONFLICT (alias) DO NOTHING`,
		alias, roomID, creator)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrExists
	}
	return nil
}

// DeleteAlias removes an alias.
func DeleteAlias(ctx context.Context, q Querier, alias string) error {
	_, err := q.Exec(ctx, `DELETE FROM room_aliases WHERE alias = $1`, alias)
	return err
}

// AliasesOfRoom lists a room's local aliases.
func AliasesOfRoom(ctx context.Context, q Querier, roomID string) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT alias FROM room_aliases WHERE room_id = $1 ORDER BY alias`, roomID)
}

// SetRoomPublic publishes a room in (or removes it from) the room directory.
func SetRoomPublic(ctx context.Context, q Querier, roomID string, public bool) error {
	_, err := q.Exec(ctx, `UPDATE rooms SET is_public = $1 WHERE room_id = $2`, public, roomID)
	return err
}

// RoomIDByNID is the room ID of a room numeric ID.
func RoomIDByNID(ctx context.Context, q Querier, roomNID int64) (string, error) {
	var roomID string
	err := q.QueryRow(ctx, `SELECT room_id FROM rooms WHERE room_nid = $1`, roomNID).Scan(&roomID)
	return roomID, err
}

// UnforgetRoom forgets that a user forgot a room (they are back in it).
func UnforgetRoom(ctx context.Context, q Querier, userID, roomID string) error {
	_, err := q.Exec(ctx, `DELETE FROM forgotten_rooms WHERE user_id = $1 AND room_id = $2`, userID, roomID)
	return err
}

// ForgetRoom records that a user forgot a room they left.
func ForgetRoom(ctx context.Context, q Querier, userID, roomID string) error {
	_, err := q.Exec(ctx, `INSERT INTO forgotten_rooms (user_id, room_id) VALUES ($1, $2) ON CONFLICT DO NOTHING`, userID, roomID)
	return err
}

// SnapshotStateEventNIDs looks up a few state tuples (type, state key) in a snapshot
// without reading the whole state: for each tuple, the event of the deepest delta of the
// snapshot's chain that sets it. Tuples that the snapshot does not hold are left out.
func SnapshotStateEventNIDs(ctx context.Context, q Querier, snapshotNID int64, tuples [][2]string) (map[[2]string]int64, error) {
	out := make(map[[2]string]int64, len(tuples))
	if snapshotNID == 0 || len(tuples) == 0 {
		return out, nil
	}
	for _, chunk := range chunks(tuples, 200) {
		args := []any{snapshotNID}
		var match strings.Builder
		for i, t := range chunk {
			if i > 0 {
				match.WriteString(" OR ")
			}
			fmt.Fprintf(&match, "(type = $%d AND state_key = $%d)", len(args)+1, len(args)+2)
			args = append(args, t[0], t[1])
		}
		rows, err := q.Query(ctx, `WITH RECURSIVE chain(snapshot_nid, base_nid, depth) AS (
				SELECT snapshot_nid, base_nid, depth FROM state_snapshots WHERE snapshot_nid = $1
				UNION ALL
				SELECT s.snapshot_nid, s.base_nid, s.depth FROM state_snapshots s JOIN chain c ON s.snapshot_nid = c.base_nid
			)
			SELECT t.type, t.state_key, d.event_nid
			FROM chain c
			JOIN state_deltas d ON d.snapshot_nid = c.snapshot_nid
			JOIN state_tuples t ON t.tuple_nid = d.tuple_nid
			WHERE d.tuple_nid IN (SELECT tuple_nid FROM state_tuples WHERE `+match.String()+`)
			ORDER BY c.depth DESC`, args...)
		if err != nil {
			return nil, err
		}
		seen := map[[2]string]bool{}
		for rows.Next() {
			var t [2]string
			var eventNID int64
			if err := rows.Scan(&t[0], &t[1], &eventNID); err != nil {
				rows.Close()
				return nil, err
			}
			// The deepest delta that mentions a tuple decides; 0 there means removed.
			if seen[t] {
				continue
			}
			seen[t] = true
			if eventNID != 0 {
				out[t] = eventNID
			}
		}
		if err := closeRows(rows); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// UserMemberEventsBefore reads up to limit of user's member events in a room with
// 0 < stream_pos <= before, newest first.
func UserMemberEventsBefore(ctx context.Context, q Querier, roomNID int64, userID string, before int64, limit int) ([]*EventRow, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE type = 'm.room.member' AND state_key = $1 AND room_nid = $2 AND stream_pos > 0 AND stream_pos <= $3
		ORDER BY stream_pos DESC LIMIT $4`, userID, roomNID, before, limit)
}

// RoomIsPublic reports whether a room is published in the room directory; ErrNotFound if
// the room is unknown.
func RoomIsPublic(ctx context.Context, q Querier, roomID string) (bool, error) {
	var public bool
	err := q.QueryRow(ctx, `SELECT is_public FROM rooms WHERE room_id = $1`, roomID).Scan(&public)
	if errors.Is(err, sql.ErrNoRows) {
		return false, ErrNotFound
	}
	return public, err
}

// AliasCreator returns the room an alias points to and the user who created it;
// ErrNotFound if the alias does not exist.
func AliasCreator(ctx context.Context, q Querier, alias string) (roomID, creator string, err error) {
	err = q.QueryRow(ctx, `SELECT room_id, creator FROM room_aliases WHERE alias = $1`, alias).Scan(&roomID, &creator)
	if errors.Is(err, sql.ErrNoRows) {
		return "", "", ErrNotFound
	}
	return roomID, creator, err
}

// PublicRoom is a room published in the room directory with its joined member count.
type PublicRoom struct {
	RoomID        string
	RoomNID       int64
	JoinedMembers int64
}

// PublicRooms lists up to limit published rooms, the most joined members first (then by
// room ID, so that the order is stable).
func PublicRooms(ctx context.Context, q Querier, limit int) ([]PublicRoom, error) {
	rows, err := q.Query(ctx, `SELECT r.room_id, r.room_nid,
			(SELECT COUNT(*) FROM current_state c
			 WHERE c.room_nid = r.room_nid AND c.type = 'm.room.member' AND c.membership = 'join') AS joined
		FROM rooms r WHERE r.is_public = $1
		ORDER BY joined DESC, r.room_id LIMIT $2`, true, limit)
	if err != nil {
		return nil, err
	}
	var out []PublicRoom
	for rows.Next() {
		var p PublicRoom
		if err := rows.Scan(&p.RoomID, &p.RoomNID, &p.JoinedMembers); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, p)
	}
	return out, closeRows(rows)
}

// RoomLevelStateEvents reads the current room-level state events (state key "") of the
// given types in the given rooms.
func RoomLevelStateEvents(ctx context.Context, q Querier, roomNIDs []int64, types []string) ([]*EventRow, error) {
	if len(types) == 0 {
		return nil, nil
	}
	var out []*EventRow
	for _, chunk := range chunks(roomNIDs, 400) {
		args := int64Args(chunk)
		for _, t := range types {
			args = append(args, t)
		}
		evs, err := queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE event_nid IN (
				SELECT event_nid FROM current_state WHERE state_key = ''
				AND room_nid IN (`+placeholders(len(chunk), 1)+`)
				AND type IN (`+placeholders(len(types), len(chunk)+1)+`))`, args...)
		if err != nil {
			return nil, err
		}
		out = append(out, evs...)
	}
	return out, nil
}

// RoomLevelStateEventsLike reads the current room-level state events of one type, in every
// room, whose JSON contains one of the given substrings. It is a cheap pre-filter: callers
// check the content of what it returns.
func RoomLevelStateEventsLike(ctx context.Context, q Querier, evType string, substrings []string, limit int) ([]*EventRow, error) {
	if len(substrings) == 0 {
		return nil, nil
	}
	args := []any{evType}
	var like strings.Builder
	for i, s := range substrings {
		if i > 0 {
			like.WriteString(" OR ")
		}
		fmt.Fprintf(&like, `json LIKE $%d ESCAPE '\'`, len(args)+1)
		args = append(args, "%"+EscapeLike(s)+"%")
	}
	args = append(args, limit)
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events WHERE event_nid IN (
			SELECT event_nid FROM current_state WHERE state_key = '' AND type = $1)
		AND (`+like.String()+`) LIMIT $`+fmt.Sprint(len(args)), args...)
}

// EscapeLike escapes the wildcards of a LIKE pattern (with ESCAPE '\').
func EscapeLike(s string) string {
	return strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`).Replace(s)
}

// DirectoryMember is a joined member found by SearchJoinedMembers, with the local profile
// of the user when they have an account here.
type DirectoryMember struct {
	UserID      string
	RoomNID     int64
	EventNID    int64
	Local       bool
	Deactivated bool
	DisplayName string
	AvatarURL   string
}

// SearchJoinedMembers finds up to limit joined members whose user ID or local display
// name contains pattern (already lower-cased; matched case-insensitively), or, for users
// without a local account, whose member event JSON contains it (a pre-filter the caller
// refines). It searches the rooms in roomNIDs, or, when sharedWith is set, the rooms that
// user is joined to.
func SearchJoinedMembers(ctx context.Context, q Querier, sharedWith string, roomNIDs []int64, pattern string, limit int) ([]DirectoryMember, error) {
	like := "%" + EscapeLike(pattern) + "%"
	const columns = `SELECT c.state_key, c.room_nid, c.event_nid, u.user_id IS NOT NULL,
			COALESCE(u.deactivated, $1), COALESCE(u.displayname, ''), COALESCE(u.avatar_url, '')
		FROM current_state c
		JOIN events e ON e.event_nid = c.event_nid
		LEFT JOIN users u ON u.user_id = c.state_key
		WHERE c.type = 'm.room.member' AND c.membership = 'join'
		AND (LOWER(c.state_key) LIKE $2 ESCAPE '\' OR LOWER(u.displayname) LIKE $2 ESCAPE '\'
			OR (u.user_id IS NULL AND LOWER(e.json) LIKE $2 ESCAPE '\'))`
	type query struct {
		sql  string
		args []any
	}
	var queries []query
	if sharedWith != "" {
		queries = append(queries, query{columns + ` AND c.room_nid IN (SELECT room_nid FROM current_state
			WHERE type = 'm.room.member' AND state_key = $3 AND membership = 'join')
			ORDER BY c.state_key LIMIT $4`, []any{false, like, sharedWith, limit}})
	}
	for _, chunk := range chunks(roomNIDs, 400) {
		args := append([]any{false, like}, int64Args(chunk)...)
		args = append(args, limit)
		queries = append(queries, query{columns + ` AND c.room_nid IN (` + placeholders(len(chunk), 3) + `)
			ORDER BY c.state_key LIMIT $` + fmt.Sprint(len(args)), args})
	}
	var out []DirectoryMember
	for _, qu := range queries {
		rows, err := q.Query(ctx, qu.sql, qu.args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var m DirectoryMember
			if err := rows.Scan(&m.UserID, &m.RoomNID, &m.EventNID, &m.Local, &m.Deactivated, &m.DisplayName, &m.AvatarURL); err != nil {
				rows.Close()
				return nil, err
			}
			out = append(out, m)
		}
		if err := closeRows(rows); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// ForgottenRooms lists the rooms a user has forgotten.
func ForgottenRooms(ctx context.Context, q Querier, userID string) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT room_id FROM forgotten_rooms WHERE user_id = $1`, userID)
}

// EarliestRoomEvents reads up to limit of a room's events with the lowest stream positions
// (backfilled ones, below zero, included): the oldest history the server holds of the room.
func EarliestRoomEvents(ctx context.Context, q Querier, roomNID int64, limit int) ([]*EventRow, error) {
	return queryEvents(ctx, q, `SELECT `+eventColumns+` FROM events
		WHERE room_nid = $1 AND stream_pos <> 0 ORDER BY stream_pos ASC LIMIT $2`, roomNID, limit)
}

// AllocateBackfillPositions reserves n negative stream positions below every one handed
// out before and returns the lowest: the positions are lowest … lowest+n-1. The row lock
// of the update serialises concurrent writers (several processes on PostgreSQL).
func AllocateBackfillPositions(ctx context.Context, q Querier, n int) (int64, error) {
	var lowest int64
	err := q.QueryRow(ctx, `UPDATE backfill_stream SET lowest = lowest - $1 WHERE id = 1 RETURNING lowest`, n).Scan(&lowest)
	return lowest, err
}

// SetBackfillPosition gives an event held without a stream position (an outlier) a
// negative one from AllocateBackfillPositions.
func SetBackfillPosition(ctx context.Context, q Querier, eventNID, pos int64) error {
	_, err := q.Exec(ctx, `UPDATE events SET stream_pos = $1 WHERE event_nid = $2 AND stream_pos = 0`, pos, eventNID)
	return indexPositionedRelation(ctx, q, err, eventNID)
}

// StoredEventRef is the numeric ID and status of a stored event.
type StoredEventRef struct {
	NID    int64
	Status EventStatus
}

// insertEventsChunk bounds the rows of one multi-row INSERT into events (15 parameters each).
const insertEventsChunk = 100

// InsertEventsIfAbsent stores the events whose event ID is not stored yet, several rows per
// statement, and returns the numeric ID and status of every one of them by event ID: the new
// row's, or that of the row stored before (by an earlier join, say, or concurrently).
func InsertEventsIfAbsent(ctx context.Context, q Querier, events []*EventRow) (map[string]StoredEventRef, error) {
	ids := make([]string, 0, len(events))
	for _, chunk := range chunks(events, insertEventsChunk) {
		var sb strings.Builder
		args := make([]any, 0, 15*len(chunk))
		sb.WriteString(`INSERT INTO events (event_id, room_nid, stream_pos, status, depth, type, state_key, sender,
			origin_ts, state_before, state_after, replaces_nid, sender_device, txn_id, json) VALUES `)
		for i, e := range chunk {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(" + placeholders(15, 15*i+1) + ")")
			args = append(args, e.EventID, e.RoomNID, e.StreamPos, int(e.Status), e.Depth, e.Type, e.StateKey, e.Sender,
				e.OriginTS, e.StateBefore, e.StateAfter, e.ReplacesNID, nullString(e.SenderDevice), nullString(e.TxnID), string(e.JSON))
			ids = append(ids, e.EventID)
		}
		sb.WriteString(` ON CONFLICT (event_id) DO NOTHING`)
		if _, err := q.Exec(ctx, sb.String(), args...); err != nil {
			return nil, err
		}
	}
	if err := indexRelations(ctx, q, nil, events...); err != nil {
		return nil, err
	}
	return StoredEventRefs(ctx, q, ids)
}

// StoredEventRefs looks up the numeric ID and status of events by event ID; events not
// stored are left out.
func StoredEventRefs(ctx context.Context, q Querier, ids []string) (map[string]StoredEventRef, error) {
	out := make(map[string]StoredEventRef, len(ids))
	for _, chunk := range chunks(ids, 500) {
		rows, err := q.Query(ctx, `SELECT event_id, event_nid, status FROM events WHERE event_id IN (`+placeholders(len(chunk), 1)+`)`, textArgs(chunk)...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var id string
			var ref StoredEventRef
			var status int
			if err := rows.Scan(&id, &ref.NID, &status); err != nil {
				rows.Close()
				return nil, err
			}
			ref.Status = EventStatus(status)
			out[id] = ref
		}
		if err := closeRows(rows); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func textArgs(v []string) []any {
	out := make([]any, len(v))
	for i, x := range v {
		out[i] = x
	}
	return out
}

// Staging of federated joins (migration 0014): the state and auth chain of a send_join
// response, held in the database while they are checked.

// JoinStagedEvent is one event of a send_join response in a join stage.
type JoinStagedEvent struct {
	EventID  string
	InState  bool
	Type     string
	StateKey *string
	JSON     []byte
	// AuthIDs are the events it must be checked against, which are checked before it.
	AuthIDs []string
}

// JoinStagedState is one entry of the room state of a join stage: a state event that passed
// its checks and is stored.
type JoinStagedState struct {
	Type     string
	StateKey string
	EventNID int64
}

// NewJoinStage opens the staging of a join to roomID and returns its numeric ID.
func NewJoinStage(ctx context.Context, q Querier, roomID string, nowMS int64) (int64, error) {
	var nid int64
	err := q.QueryRow(ctx, `INSERT INTO join_stages (room_id, created_ts) VALUES ($1, $2) RETURNING stage_nid`,
		roomID, nowMS).Scan(&nid)
	return nid, err
}

// stageEventsChunk bounds the rows of one multi-row INSERT into join_staged_events.
const stageEventsChunk = 100

// StageJoinEvents adds events to a stage, numbering them in order of arrival from firstSeq.
// An event staged twice (listed in the state and in the auth chain) keeps its first copy
// and is in the state if either listing put it there; its auth edges are recorded twice,
// which CountJoinStageDependencies and FinishJoinStageBatch count and discount alike.
func StageJoinEvents(ctx context.Context, q Querier, stageNID, firstSeq int64, events []JoinStagedEvent) error {
	// One statement may not upsert a row twice (PostgreSQL): merge repeats first.
	first := make(map[string]int, len(events))
	unique := make([]JoinStagedEvent, 0, len(events))
	for _, e := range events {
		if i, ok := first[e.EventID]; ok {
			unique[i].InState = unique[i].InState || e.InState
			continue
		}
		first[e.EventID] = len(unique)
		unique = append(unique, e)
	}
	events = unique
	type edge struct{ eventID, authID string }
	var edges []edge
	for start, chunk := range chunks(events, stageEventsChunk) {
		var sb strings.Builder
		args := make([]any, 0, 7*len(chunk))
		sb.WriteString(`INSERT INTO join_staged_events (stage_nid, event_id, seq, in_state, type, state_key, json) VALUES `)
		for i, e := range chunk {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(" + placeholders(7, 7*i+1) + ")")
			args = append(args, stageNID, e.EventID, firstSeq+int64(start*stageEventsChunk+i), e.InState, e.Type, e.StateKey, string(e.JSON))
			for i, authID := range e.AuthIDs {
				if !slices.Contains(e.AuthIDs[:i], authID) {
					edges = append(edges, edge{e.EventID, authID})
				}
			}
		}
		sb.WriteString(` ON CONFLICT (stage_nid, event_id) DO UPDATE SET in_state = join_staged_events.in_state OR excluded.in_state`)
		if _, err := q.Exec(ctx, sb.String(), args...); err != nil {
			return err
		}
	}
	for _, chunk := range chunks(edges, 300) {
		var sb strings.Builder
		args := make([]any, 0, 3*len(chunk))
		sb.WriteString(`INSERT INTO join_staged_auth (stage_nid, event_id, auth_id) VALUES `)
		for i, e := range chunk {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(" + placeholders(3, 3*i+1) + ")")
			args = append(args, stageNID, e.eventID, e.authID)
		}
		if _, err := q.Exec(ctx, sb.String(), args...); err != nil {
			return err
		}
	}
	return nil
}

// AnalyzeJoinStaging refreshes the planner's statistics of the staging tables, which grow
// from nothing to a room's whole state within seconds, long before the engine would notice:
// without them PostgreSQL plans the joins of a large stage as if it held one row.
func AnalyzeJoinStaging(ctx context.Context, q Querier) error {
	for _, table := range []string{"join_staged_events", "join_staged_auth"} {
		if _, err := q.Exec(ctx, `ANALYZE `+table); err != nil {
			return err
		}
	}
	return nil
}

// CountJoinStageDependencies sets, for every event of a stage, how many of its auth events
// are staged too: the ones to check before it. Call it once everything is staged.
func CountJoinStageDependencies(ctx context.Context, q Querier, stageNID int64) error {
	_, err := q.Exec(ctx, `UPDATE join_staged_events SET pending = d.n
		FROM (SELECT a.event_id, COUNT(*) AS n FROM join_staged_auth a
			JOIN join_staged_events s ON s.stage_nid = a.stage_nid AND s.event_id = a.auth_id
			WHERE a.stage_nid = $1 GROUP BY a.event_id) AS d
		WHERE join_staged_events.stage_nid = $1 AND join_staged_events.event_id = d.event_id`, stageNID)
	return err
}

// ReadyJoinStagedEvents reads up to limit events of a stage that wait to be checked and whose
// staged auth events have all been checked, in order of arrival (ID and JSON only).
func ReadyJoinStagedEvents(ctx context.Context, q Querier, stageNID int64, limit int) ([]JoinStagedEvent, error) {
	rows, err := q.Query(ctx, `SELECT event_id, json FROM join_staged_events
		WHERE stage_nid = $1 AND status = 0 AND pending = 0 ORDER BY seq LIMIT $2`, stageNID, limit)
	if err != nil {
		return nil, err
	}
	var out []JoinStagedEvent
	for rows.Next() {
		var e JoinStagedEvent
		var js string
		if err := rows.Scan(&e.EventID, &js); err != nil {
			rows.Close()
			return nil, err
		}
		e.JSON = []byte(js)
		out = append(out, e)
	}
	return out, closeRows(rows)
}

// JoinStagedEventJSON reads the JSON of one staged event; ErrNotFound if it is not staged.
func JoinStagedEventJSON(ctx context.Context, q Querier, stageNID int64, eventID string) ([]byte, error) {
	var js string
	err := q.QueryRow(ctx, `SELECT json FROM join_staged_events WHERE stage_nid = $1 AND event_id = $2`, stageNID, eventID).Scan(&js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(js), err
}

// Statuses of staged events.
const (
	joinStagedPassed = 1
	joinStagedFailed = 2
)

// FinishJoinStageBatch records the outcome of checking a batch of staged events: the
// events that passed and are stored, those that failed. The events that wait on them have
// that many staged auth events fewer to wait for.
func FinishJoinStageBatch(ctx context.Context, q Querier, stageNID int64, passed, failed []string) error {
	for _, outcome := range []struct {
		status int
		ids    []string
	}{{joinStagedPassed, passed}, {joinStagedFailed, failed}} {
		for _, chunk := range chunks(outcome.ids, 500) {
			args := append([]any{stageNID, outcome.status}, textArgs(chunk)...)
			if _, err := q.Exec(ctx, `UPDATE join_staged_events SET status = $2
				WHERE stage_nid = $1 AND event_id IN (`+placeholders(len(chunk), 3)+`)`, args...); err != nil {
				return err
			}
			if _, err := q.Exec(ctx, `UPDATE join_staged_events SET pending = pending - d.n
				FROM (SELECT event_id, COUNT(*) AS n FROM join_staged_auth
					WHERE stage_nid = $1 AND auth_id IN (`+placeholders(len(chunk), 2)+`) GROUP BY event_id) AS d
				WHERE join_staged_events.stage_nid = $1 AND join_staged_events.event_id = d.event_id
				AND join_staged_events.status = 0`, append([]any{stageNID}, textArgs(chunk)...)...); err != nil {
				return err
			}
		}
	}
	return nil
}

// JoinStageState reads the state of a stage: its state events that passed their checks,
// with their stored numeric IDs, in order of arrival.
func JoinStageState(ctx context.Context, q Querier, stageNID int64) ([]JoinStagedState, error) {
	rows, err := q.Query(ctx, `SELECT s.type, s.state_key, e.event_nid FROM join_staged_events s
		JOIN events e ON e.event_id = s.event_id
		WHERE s.stage_nid = $1 AND s.in_state = $2 AND s.status = $3 AND s.state_key IS NOT NULL
		ORDER BY s.seq`, stageNID, true, joinStagedPassed)
	if err != nil {
		return nil, err
	}
	var out []JoinStagedState
	for rows.Next() {
		var e JoinStagedState
		if err := rows.Scan(&e.Type, &e.StateKey, &e.EventNID); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, e)
	}
	return out, closeRows(rows)
}

// DeleteJoinStage removes a stage and everything staged in it.
func DeleteJoinStage(ctx context.Context, q Querier, stageNID int64) error {
	for _, query := range []string{
		`DELETE FROM join_staged_auth WHERE stage_nid = $1`,
		`DELETE FROM join_staged_events WHERE stage_nid = $1`,
		`DELETE FROM join_stages WHERE stage_nid = $1`,
	} {
		if _, err := q.Exec(ctx, query, stageNID); err != nil {
			return err
		}
	}
	return nil
}

// DeleteJoinStagesBefore removes the stages opened before beforeMS: left behind by a join
// that did not end (the process stopped).
func DeleteJoinStagesBefore(ctx context.Context, q Querier, beforeMS int64) error {
	for _, query := range []string{
		`DELETE FROM join_staged_auth WHERE stage_nid IN (SELECT stage_nid FROM join_stages WHERE created_ts < $1)`,
		`DELETE FROM join_staged_events WHERE stage_nid IN (SELECT stage_nid FROM join_stages WHERE created_ts < $1)`,
		`DELETE FROM join_stages WHERE created_ts < $1`,
	} {
		if _, err := q.Exec(ctx, query, beforeMS); err != nil {
			return err
		}
	}
	return nil
}

// PruneTransactionIDs forgets client transaction IDs older than beforeMS (the spec asks
// that a retry after a restart find its event; a week is far beyond any client's retries)
// and transactions received from other servers older than inboundBeforeMS. It returns how
// many rows went.
func PruneTransactionIDs(ctx context.Context, q Querier, beforeMS, inboundBeforeMS int64) (int64, error) {
	res, err := q.Exec(ctx, `DELETE FROM txn_ids WHERE created_ts < $1`, beforeMS)
	if err != nil {
		return 0, err
	}
	n, _ := res.RowsAffected()
	res, err = q.Exec(ctx, `DELETE FROM federation_inbound_txns WHERE received_ts < $1`, inboundBeforeMS)
	if err != nil {
		return n, err
	}
	m, _ := res.RowsAffected()
	return n + m, nil
}
