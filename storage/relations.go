package storage

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/scrambledeggs/eggs/spec"
)

// Event relationships (client-server API "Forming relationships between events",
// "Aggregations of child events", "Threading"): the index of migration 0016 and its queries.
//
// The index holds the timeline events with a valid m.relates_to: accepted events, and
// outliers once backfill has given them a stream position. The functions that store events
// call indexRelations in one line; it reads status, position and redaction from the stored
// row, so an insert that found the event already stored indexes what is stored, and an
// outlier that StoreReceivedEvent turns into an accepted event, or that SetBackfillPosition
// places in the timeline, is indexed then. SetRedactedBy removes the row of a redacted
// event, whose m.relates_to redaction strips (no room version keeps it).

// Relationship types the server aggregates.
const (
	RelThread    = "m.thread"
	RelReplace   = "m.replace"
	RelReference = "m.reference"
)

// relation is the relationship an event forms with its parent.
type relation struct {
	parentID string
	relType  string
}

// relationOf reads the relationship e forms: its content's m.relates_to with a rel_type and
// an event_id. Relationships that do not match the schema, or break the rules of their
// type, are ignored ("Forming relationships between events"): an edit must not be a state
// event and must carry m.new_content ("Validity of replacement events"; an encrypted edit
// carries it in its ciphertext). The rules that need the parent are checked where the
// relationship is used.
func relationOf(e *EventRow) (relation, bool) {
	if !bytes.Contains(e.JSON, []byte(`"m.relates_to"`)) {
		return relation{}, false
	}
	var ev struct {
		Content struct {
			RelatesTo  json.RawMessage `json:"m.relates_to"`
			NewContent json.RawMessage `json:"m.new_content"`
		} `json:"content"`
	}
	if json.Unmarshal(e.JSON, &ev) != nil || len(ev.Content.RelatesTo) == 0 {
		return relation{}, false
	}
	var rel struct {
		RelType string `json:"rel_type"`
		EventID string `json:"event_id"`
	}
	if json.Unmarshal(ev.Content.RelatesTo, &rel) != nil {
		return relation{}, false
	}
	if spec.ValidateNamespacedIdentifier(rel.RelType) != nil || !strings.HasPrefix(rel.EventID, "$") ||
		len(rel.EventID) > spec.MaxIdentifierLength || rel.EventID == e.EventID {
		return relation{}, false
	}
	if rel.RelType == RelReplace {
		newContent := bytes.TrimSpace(ev.Content.NewContent)
		if e.StateKey != nil || (e.Type != "m.room.encrypted" && (len(newContent) == 0 || newContent[0] != '{')) {
			return relation{}, false
		}
	}
	return relation{parentID: rel.EventID, relType: rel.RelType}, true
}

// indexRelations adds to the index those of events that form a relationship and sit in the
// timeline as stored. It passes err, the outcome of storing the events, through, and does
// nothing when it is an error, so that each function storing events calls it in one line.
func indexRelations(ctx context.Context, q Querier, err error, events ...*EventRow) error {
	if err != nil {
		return err
	}
	for _, e := range events {
		if e.StreamPos == 0 || (e.Status != EventAccepted && e.Status != EventOutlier) {
			continue
		}
		rel, ok := relationOf(e)
		if !ok {
			continue
		}
		relationRoomsOf(q).mark(e.RoomNID)
		// The stored row decides: its position, status and redaction.
		res, err := q.Exec(ctx, `INSERT INTO event_relations
				(event_nid, event_id, room_nid, relates_to_id, rel_type, type, sender, stream_pos)
			SELECT event_nid, event_id, room_nid, $2, $3, type, sender, stream_pos FROM events
			WHERE event_id = $1 AND stream_pos <> 0 AND status IN ($4, $5) AND redacted_by IS NULL
			ON CONFLICT (event_nid) DO UPDATE SET stream_pos = excluded.stream_pos`,
			e.EventID, rel.parentID, rel.relType, int(EventAccepted), int(EventOutlier))
		if err != nil {
			return fmt.Errorf("index relation of %s: %w", e.EventID, err)
		}
		if n, _ := res.RowsAffected(); n == 0 || rel.relType != RelThread {
			continue
		}
		if _, err := q.Exec(ctx, `INSERT INTO event_threads (room_nid, root_id, latest_pos)
			SELECT room_nid, relates_to_id, stream_pos FROM event_relations WHERE event_id = $1
			ON CONFLICT (room_nid, root_id) DO UPDATE SET latest_pos = CASE
				WHEN excluded.latest_pos > event_threads.latest_pos THEN excluded.latest_pos
				ELSE event_threads.latest_pos END`, e.EventID); err != nil {
			return fmt.Errorf("index thread of %s: %w", e.EventID, err)
		}
	}
	return nil
}

// indexPositionedRelation indexes the relationship of an event that SetBackfillPosition
// placed in the timeline; err as for indexRelations.
func indexPositionedRelation(ctx context.Context, q Querier, err error, eventNID int64) error {
	if err != nil {
		return err
	}
	e, err := scanEvent(q.QueryRow(ctx, `SELECT `+eventColumns+` FROM events WHERE event_nid = $1`, eventNID).Scan)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	return indexRelations(ctx, q, err, e)
}

// unindexRelation removes a redacted event from the index: "when a child event is redacted
// then the relationship is broken" ("Aggregations of child events"). A thread that loses its
// latest child falls back to the one before, and goes when none is left. err as for
// indexRelations.
func unindexRelation(ctx context.Context, q Querier, err error, eventID string) error {
	if err != nil {
		return err
	}
	var roomNID int64
	var parentID, relType string
	err = q.QueryRow(ctx, `DELETE FROM event_relations WHERE event_id = $1 RETURNING room_nid, relates_to_id, rel_type`,
		eventID).Scan(&roomNID, &parentID, &relType)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil || relType != RelThread {
		return err
	}
	if _, err := q.Exec(ctx, `DELETE FROM event_threads WHERE room_nid = $1 AND root_id = $2 AND NOT EXISTS (
			SELECT 1 FROM event_relations WHERE relates_to_id = $2 AND rel_type = $3 AND room_nid = $1)`,
		roomNID, parentID, RelThread); err != nil {
		return err
	}
	_, err = q.Exec(ctx, `UPDATE event_threads SET latest_pos = (SELECT MAX(stream_pos) FROM event_relations
			WHERE relates_to_id = $2 AND rel_type = $3 AND room_nid = $1)
		WHERE room_nid = $1 AND root_id = $2`, roomNID, parentID, RelThread)
	return err
}

// RelationQuery selects one page of a parent's children, as GET /relations asks.
type RelationQuery struct {
	RoomNID  int64
	ParentID string
	// RelType and EventType, when set, keep only children of that relationship type and
	// event type, at every level.
	RelType   string
	EventType string
	// Depth is how many levels of relationships are followed: 1 for the parent's own
	// children, 2 for their children too, and so on.
	Depth int
	// Backwards pages down from From to Bound (Bound < stream_pos <= From, newest first);
	// forwards pages up (From < stream_pos <= Bound, oldest first), as /messages does.
	From, Bound int64
	Backwards   bool
	Limit       int
}

// RelatedEvent is one child event found in the index.
type RelatedEvent struct {
	EventNID  int64
	StreamPos int64
}

// RelatedEvents reads one page of the children that rq selects.
func RelatedEvents(ctx context.Context, q Querier, rq RelationQuery) ([]RelatedEvent, error) {
	args := []any{rq.ParentID, rq.RoomNID}
	filter := func(prefix string) string {
		var sb strings.Builder
		n := 2
		if rq.RelType != "" {
			n++
			fmt.Fprintf(&sb, " AND %srel_type = $%d", prefix, n)
		}
		if rq.EventType != "" {
			n++
			fmt.Fprintf(&sb, " AND %stype = $%d", prefix, n)
		}
		return sb.String()
	}
	if rq.RelType != "" {
		args = append(args, rq.RelType)
	}
	if rq.EventType != "" {
		args = append(args, rq.EventType)
	}
	lo, hi, order := rq.Bound, rq.From, "DESC"
	if !rq.Backwards {
		lo, hi, order = rq.From, rq.Bound, "ASC"
	}
	args = append(args, lo, hi, rq.Limit)
	n := len(args)
	window := fmt.Sprintf(`stream_pos > $%d AND stream_pos <= $%d ORDER BY stream_pos %s LIMIT $%d`, n-2, n-1, order, n)
	var query string
	if rq.Depth <= 1 {
		query = `SELECT event_nid, stream_pos FROM event_relations
			WHERE relates_to_id = $1 AND room_nid = $2` + filter("") + ` AND ` + window
	} else {
		args = append(args, rq.Depth)
		// Relationships form a forest (each event names one parent), so the walk only
		// repeats an event on a cycle, which event IDs chosen by senders (room versions 1
		// and 2) allow; the depth bounds it and DISTINCT drops the repeats.
		query = `WITH RECURSIVE related(event_nid, event_id, stream_pos, depth) AS (
				SELECT event_nid, event_id, stream_pos, 1 FROM event_relations
				WHERE relates_to_id = $1 AND room_nid = $2` + filter("") + `
				UNION ALL
				SELECT r.event_nid, r.event_id, r.stream_pos, c.depth + 1
				FROM event_relations r JOIN related c ON r.relates_to_id = c.event_id
				WHERE c.depth < $` + fmt.Sprint(len(args)) + ` AND r.room_nid = $2` + filter("r.") + `
			)
			SELECT DISTINCT event_nid, stream_pos FROM related WHERE ` + window
	}
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []RelatedEvent
	for rows.Next() {
		var r RelatedEvent
		if err := rows.Scan(&r.EventNID, &r.StreamPos); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, r)
	}
	return out, closeRows(rows)
}

// AggregationParent is an event whose children are to be aggregated.
type AggregationParent struct {
	EventID string
	// Sender and Type are the parent's: only an edit by the same sender, of the same type,
	// replaces it ("Validity of replacement events").
	Sender string
	Type   string
	// Replaceable is false where no edit applies: a state event, an edit, a redacted event.
	Replaceable bool
}

// Aggregation is what the index holds of one parent's aggregated children.
type Aggregation struct {
	// ThreadCount counts the m.thread children, ThreadLatestNID is the latest of them and
	// ThreadParticipated whether the user asked about sent one.
	ThreadCount        int64
	ThreadLatestNID    int64
	ThreadParticipated bool
	// ReplaceNID is the most recent valid edit (0 if none).
	ReplaceNID int64
	// References are the event IDs of the m.reference children, oldest first.
	References []string
}

// MaxBundledReferences bounds the references aggregated for one parent. NOTSPEC: the spec
// sets no bound; a parent with more (a poll's votes, say) lists the oldest, and the rest are
// read through /relations.
const MaxBundledReferences = 100

// aggregationChunk bounds the parents of one query.
const aggregationChunk = 150

// paddedLength rounds a list length up to one of a few sizes (at most aggregationChunk).
func paddedLength(n int) int {
	for _, size := range []int{4, 16, 50} {
		if n <= size {
			return size
		}
	}
	return aggregationChunk
}

// relationRooms remembers, per room, whether it has any relation in the index, so that
// responses about rooms without any (most of them, most of the time) skip the aggregation
// queries. A room is marked as having relations as soon as one is indexed, before the
// indexing transaction commits; "none" is only recorded when nothing marked the room, so a
// reader never keeps a stale "none" over a concurrent writer's mark. A redaction that
// removes a room's last relation leaves the mark: the queries then find nothing.
type relationRooms struct {
	mu  sync.Mutex
	has map[int64]bool
}

func (r *relationRooms) mark(roomNID int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.has == nil {
		r.has = map[int64]bool{}
	}
	r.has[roomNID] = true
}

func (r *relationRooms) get(roomNID int64) (has, known bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	has, known = r.has[roomNID]
	return has, known
}

func (r *relationRooms) setNone(roomNID int64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.has == nil {
		r.has = map[int64]bool{}
	}
	if _, known := r.has[roomNID]; !known {
		r.has[roomNID] = false
	}
}

func relationRoomsOf(q Querier) *relationRooms {
	switch q := q.(type) {
	case *DB:
		return &q.relationRooms
	case *Tx:
		return q.relationRooms
	}
	return &relationRooms{} // remembers nothing beyond this call
}

// roomHasRelations reports whether the room has any relation in the index.
func RoomHasRelations(ctx context.Context, q Querier, roomNID int64) (bool, error) {
	rooms := relationRoomsOf(q)
	if has, known := rooms.get(roomNID); known {
		return has, nil
	}
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM (SELECT 1 FROM event_relations WHERE room_nid = $1 LIMIT 1) AS one`, roomNID).Scan(&n)
	if err != nil {
		return false, err
	}
	if n > 0 {
		rooms.mark(roomNID)
		return true, nil
	}
	rooms.setNone(roomNID)
	has, _ := rooms.get(roomNID)
	return has, nil
}

// Aggregations reads the aggregations of parents in a room for userID, from their children
// at stream positions up to upper. Parents without children are left out. It costs one
// query when no parent has children, and one more for each kind of aggregation found.
func Aggregations(ctx context.Context, q Querier, roomNID int64, parents []AggregationParent, upper int64, userID string) (map[string]*Aggregation, error) {
	out := map[string]*Aggregation{}
	if has, err := RoomHasRelations(ctx, q, roomNID); err != nil || !has {
		return out, err
	}
	byID := make(map[string]AggregationParent, len(parents))
	for _, p := range parents {
		byID[p.EventID] = p
	}
	var threads [][2]any // (root ID, latest position)
	var edited []AggregationParent
	var referenced []string
	for _, chunk := range chunks(parents, aggregationChunk) {
		args := []any{roomNID, upper, userID, RelThread, RelReplace, RelReference}
		for _, p := range chunk {
			args = append(args, p.EventID)
		}
		// A few fixed list lengths, padded with an ID no event has, so that the statement
		// is prepared once per length rather than once per number of parents.
		n := paddedLength(len(chunk))
		for len(args) < 6+n {
			args = append(args, "")
		}
		rows, err := q.Query(ctx, `SELECT relates_to_id, rel_type, COUNT(*), MAX(stream_pos),
				MAX(CASE WHEN sender = $3 THEN 1 ELSE 0 END)
			FROM event_relations
			WHERE room_nid = $1 AND stream_pos <= $2 AND rel_type IN ($4, $5, $6)
			AND relates_to_id IN (`+placeholders(n, 7)+`)
			GROUP BY relates_to_id, rel_type`, args...)
		if err != nil {
			return nil, err
		}
		for rows.Next() {
			var parentID, relType string
			var count, latest, participated int64
			if err := rows.Scan(&parentID, &relType, &count, &latest, &participated); err != nil {
				rows.Close()
				return nil, err
			}
			agg := out[parentID]
			if agg == nil {
				agg = &Aggregation{}
				out[parentID] = agg
			}
			switch relType {
			case RelThread:
				agg.ThreadCount, agg.ThreadParticipated = count, participated == 1
				threads = append(threads, [2]any{parentID, latest})
			case RelReplace:
				if p := byID[parentID]; p.Replaceable {
					edited = append(edited, p)
				}
			case RelReference:
				referenced = append(referenced, parentID)
			}
		}
		if err := closeRows(rows); err != nil {
			return nil, err
		}
	}
	if err := latestThreadEvents(ctx, q, roomNID, threads, out); err != nil {
		return nil, err
	}
	if err := latestEdits(ctx, q, roomNID, upper, edited, out); err != nil {
		return nil, err
	}
	if err := references(ctx, q, roomNID, upper, referenced, out); err != nil {
		return nil, err
	}
	for id, agg := range out {
		if agg.ThreadCount == 0 && agg.ReplaceNID == 0 && len(agg.References) == 0 {
			delete(out, id)
		}
	}
	return out, nil
}

// latestThreadEvents finds the child at each thread's latest position.
func latestThreadEvents(ctx context.Context, q Querier, roomNID int64, threads [][2]any, out map[string]*Aggregation) error {
	for _, chunk := range chunks(threads, aggregationChunk) {
		args := []any{roomNID, RelThread}
		var match strings.Builder
		for i, t := range chunk {
			if i > 0 {
				match.WriteString(" OR ")
			}
			fmt.Fprintf(&match, "(relates_to_id = $%d AND stream_pos = $%d)", len(args)+1, len(args)+2)
			args = append(args, t[0], t[1])
		}
		rows, err := q.Query(ctx, `SELECT relates_to_id, event_nid FROM event_relations
			WHERE room_nid = $1 AND rel_type = $2 AND (`+match.String()+`)`, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var parentID string
			var nid int64
			if err := rows.Scan(&parentID, &nid); err != nil {
				rows.Close()
				return err
			}
			out[parentID].ThreadLatestNID = nid
		}
		if err := closeRows(rows); err != nil {
			return err
		}
	}
	return nil
}

// latestEdits finds each parent's most recent valid edit: by the parent's sender, of the
// parent's type; the most recent by origin_server_ts, then by the lexicographically
// largest event ID ("Server-side aggregation of m.replace relationships"). Event IDs are
// compared here, byte by byte, not by the database's collation.
func latestEdits(ctx context.Context, q Querier, roomNID, upper int64, parents []AggregationParent, out map[string]*Aggregation) error {
	type candidate struct {
		nid     int64
		eventID string
	}
	best := map[string]candidate{}
	for _, chunk := range chunks(parents, aggregationChunk) {
		args := []any{roomNID, upper, RelReplace}
		var match strings.Builder
		for i, p := range chunk {
			if i > 0 {
				match.WriteString(" OR ")
			}
			n := len(args)
			fmt.Fprintf(&match, "(r.relates_to_id = $%d AND r.sender = $%d AND r.type = $%d)", n+1, n+2, n+3)
			args = append(args, p.EventID, p.Sender, p.Type)
		}
		rows, err := q.Query(ctx, `SELECT relates_to_id, event_nid, event_id FROM (
				SELECT r.relates_to_id, r.event_nid, r.event_id,
					RANK() OVER (PARTITION BY r.relates_to_id ORDER BY e.origin_ts DESC) AS ranked
				FROM event_relations r JOIN events e ON e.event_nid = r.event_nid
				WHERE r.room_nid = $1 AND r.stream_pos <= $2 AND r.rel_type = $3 AND (`+match.String()+`)
			) edits WHERE ranked = 1`, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var parentID string
			var c candidate
			if err := rows.Scan(&parentID, &c.nid, &c.eventID); err != nil {
				rows.Close()
				return err
			}
			if prev, ok := best[parentID]; !ok || c.eventID > prev.eventID {
				best[parentID] = c
			}
		}
		if err := closeRows(rows); err != nil {
			return err
		}
	}
	for parentID, c := range best {
		out[parentID].ReplaceNID = c.nid
	}
	return nil
}

// references lists the m.reference children of parents, oldest first, at most
// MaxBundledReferences of each.
func references(ctx context.Context, q Querier, roomNID, upper int64, parents []string, out map[string]*Aggregation) error {
	for _, chunk := range chunks(parents, aggregationChunk) {
		args := append([]any{roomNID, upper, RelReference, MaxBundledReferences}, textArgs(chunk)...)
		rows, err := q.Query(ctx, `SELECT relates_to_id, event_id FROM (
				SELECT relates_to_id, event_id, stream_pos,
					ROW_NUMBER() OVER (PARTITION BY relates_to_id ORDER BY stream_pos) AS n
				FROM event_relations
				WHERE room_nid = $1 AND stream_pos <= $2 AND rel_type = $3
				AND relates_to_id IN (`+placeholders(len(chunk), 5)+`)
			) refs WHERE n <= $4 ORDER BY stream_pos`, args...)
		if err != nil {
			return err
		}
		for rows.Next() {
			var parentID, eventID string
			if err := rows.Scan(&parentID, &eventID); err != nil {
				rows.Close()
				return err
			}
			out[parentID].References = append(out[parentID].References, eventID)
		}
		if err := closeRows(rows); err != nil {
			return err
		}
	}
	return nil
}

// ThreadRoot is one thread of a room: its root's event ID and the stream position of its
// latest child.
type ThreadRoot struct {
	RootID    string
	LatestPos int64
}

// Threads reads up to limit threads of a room whose latest child is at or below before, the
// most recently active first. With participant set, only the threads that user took part
// in: sent the root or a child ("Server-side aggregation of m.thread relationships").
func Threads(ctx context.Context, q Querier, roomNID, before int64, participant string, limit int) ([]ThreadRoot, error) {
	args := []any{roomNID, before, limit}
	participated := ""
	if participant != "" {
		args = append(args, participant, RelThread)
		participated = ` AND (EXISTS (SELECT 1 FROM event_relations r WHERE r.relates_to_id = t.root_id
				AND r.rel_type = $5 AND r.sender = $4 AND r.room_nid = t.room_nid)
			OR EXISTS (SELECT 1 FROM events e WHERE e.event_id = t.root_id AND e.sender = $4))`
	}
	rows, err := q.Query(ctx, `SELECT t.root_id, t.latest_pos FROM event_threads t
		WHERE t.room_nid = $1 AND t.latest_pos <= $2`+participated+`
		ORDER BY t.latest_pos DESC LIMIT $3`, args...)
	if err != nil {
		return nil, err
	}
	var out []ThreadRoot
	for rows.Next() {
		var t ThreadRoot
		if err := rows.Scan(&t.RootID, &t.LatestPos); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, t)
	}
	return out, closeRows(rows)
}
