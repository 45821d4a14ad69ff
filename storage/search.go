package storage

import (
	"cmp"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Full-text search of room events (client-server API "Server Side Search", migration 0017).
//
// The index is a table of tokens, event_search (token, room_nid, event_nid, hits), written by
// one Go tokenizer, so that SQLite and PostgreSQL hold the same rows and answer a search
// alike. (PostgreSQL's to_tsvector tokenizes differently from anything SQLite has, and
// SQLite's FTS5 needs mattn/go-sqlite3 built with the sqlite_fts5 tag for every user.)
//
// A search is an AND over the query's tokens, the last one matched as a prefix while the
// user is still typing it: each token is one range of the primary key per room of the
// user, the ranges are grouped by event, and an event matches when every token found it.
// Its score (order_by rank) is how often the query's tokens occur in its text.
//
// Rows are written in the background, not while an event is stored: indexing costs several
// times what storing a message does, and on SQLite every write waits for the one writer.
// IndexSearchBatch indexes the events stored since its last batch, in event_nid order, many
// per statement; a search finds an event once a batch has run after it was stored. Rows are
// deleted when their event is redacted (SetRedactedBy). Outliers are indexed too, but
// whether a row matches is decided when searching, from the events row: only events in a
// room's timeline (stream position not 0, which takes in backfilled history given a
// position by SetBackfillPosition after it was stored), neither soft-failed nor rejected,
// nor redacted.

// SearchKeyTypes maps each key of a room_events search (search.yaml "keys") to the event
// type whose text it names (modules/search.md: content.body in m.room.message, content.name
// in m.room.name, content.topic in m.room.topic). An event's text comes from its type's key
// only.
var SearchKeyTypes = map[string]string{
	"content.body":  "m.room.message",
	"content.name":  "m.room.name",
	"content.topic": "m.room.topic",
}

const (
	// maxSearchTokenBytes cuts longer tokens (URLs, hashes, base64) to their first bytes,
	// in the index and in queries alike.
	maxSearchTokenBytes = 64
	// maxSearchTokensPerEvent bounds the index rows of one event: the first distinct tokens
	// of its text are indexed, the rest not. NOTSPEC: an event may be 64 KiB of words.
	maxSearchTokensPerEvent = 512
	// MaxSearchTerms bounds the tokens of a query; those after the first MaxSearchTerms
	// distinct ones are ignored. NOTSPEC: each costs one index range per room.
	MaxSearchTerms = 16
	// minPrefixRunes is the shortest last token matched as a prefix: a one-letter prefix
	// would read a large part of the index.
	minPrefixRunes = 2
)

// splitSearchText splits text into search tokens: NFKC-normalised, case-folded runs of
// letters, numbers and marks, each cut to maxSearchTokenBytes. Han, Hiragana and Katakana,
// which do not separate words with spaces, make a token of each character. endsInToken
// reports whether text ends inside a run (a word the user may still be typing).
func splitSearchText(text string) (tokens []string, endsInToken bool) {
	var token strings.Builder
	flush := func() {
		if token.Len() > 0 {
			tokens = append(tokens, token.String())
			token.Reset()
		}
	}
	for _, r := range norm.NFKC.String(text) {
		switch {
		case unicode.In(r, unicode.Han, unicode.Hiragana, unicode.Katakana):
			flush()
			tokens = append(tokens, string(r))
		case unicode.IsLetter(r) || unicode.IsNumber(r) || unicode.IsMark(r):
			r = foldRune(r)
			if token.Len()+utf8.RuneLen(r) <= maxSearchTokenBytes {
				token.WriteRune(r)
			}
		default:
			flush()
		}
	}
	endsInToken = token.Len() > 0
	flush()
	return tokens, endsInToken
}

// foldRune maps the runes that differ only by case to one of them (the lower case of the
// least of them), so that Σ, σ and ς are one letter.
func foldRune(r rune) rune {
	if r < utf8.RuneSelf {
		if 'A' <= r && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return r
	}
	least := r
	for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
		least = min(least, f)
	}
	return unicode.ToLower(least)
}

// SearchTokens is the distinct tokens of text, in order of first appearance, as the index
// holds them.
func SearchTokens(text string) []string {
	tokens, _ := splitSearchText(text)
	counts := countTokens(tokens, len(tokens))
	out := make([]string, len(counts))
	for i, c := range counts {
		out[i] = c.token
	}
	return out
}

type tokenCount struct {
	token string
	hits  int
}

// countTokens counts the occurrences of the first limit distinct tokens, in order of first
// appearance.
func countTokens(tokens []string, limit int) []tokenCount {
	index := map[string]int{}
	var out []tokenCount
	for _, t := range tokens {
		if i, ok := index[t]; ok {
			out[i].hits++
			continue
		}
		if len(out) == limit {
			continue
		}
		index[t] = len(out)
		out = append(out, tokenCount{token: t, hits: 1})
	}
	return out
}

// searchText is the text of an event that a search looks at, "" for events of other types.
// Content that is not what the spec describes (a body that is not a string) adds nothing.
func searchText(evType string, eventJSON []byte) string {
	if !isSearchType(evType) {
		return ""
	}
	var event struct {
		Content map[string]json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(eventJSON, &event); err != nil {
		return ""
	}
	c := event.Content
	switch evType {
	case "m.room.message":
		return jsonString(c["body"])
	case "m.room.name":
		return jsonString(c["name"])
	}
	// m.room.topic: "content.topic as well as the body of the text/plain representation in
	// content['m.topic']" (modules/search.md).
	topic := jsonString(c["topic"])
	var block struct {
		Text []struct {
			MimeType *string         `json:"mimetype"`
			Body     json.RawMessage `json:"body"`
		} `json:"m.text"`
	}
	if json.Unmarshal(c["m.topic"], &block) == nil {
		for _, repr := range block.Text {
			// "The mimetype. Defaults to text/plain if omitted."
			if repr.MimeType == nil || *repr.MimeType == "text/plain" {
				if plain := jsonString(repr.Body); plain != topic {
					topic += "\n" + plain
				}
				break
			}
		}
	}
	return topic
}

func isSearchType(evType string) bool {
	return evType == "m.room.message" || evType == "m.room.name" || evType == "m.room.topic"
}

// jsonString is raw as a string, "" when it is not a JSON string.
func jsonString(raw json.RawMessage) string {
	var s string
	if json.Unmarshal(raw, &s) != nil {
		return ""
	}
	return s
}

// searchRow is one row of event_search.
type searchRow struct {
	token             string
	roomNID, eventNID int64
	hits              int
}

// searchRowsOf is the index rows of one stored event.
func searchRowsOf(roomNID, eventNID int64, evType string, eventJSON []byte) []searchRow {
	text := searchText(evType, eventJSON)
	if text == "" {
		return nil
	}
	tokens, _ := splitSearchText(text)
	counts := countTokens(tokens, maxSearchTokensPerEvent)
	rows := make([]searchRow, len(counts))
	for i, c := range counts {
		rows[i] = searchRow{token: c.token, roomNID: roomNID, eventNID: eventNID, hits: c.hits}
	}
	return rows
}

// IndexSearchBatch indexes up to limit events stored since the last batch, in event_nid
// order, and moves the position (event_search_position) past them, in one transaction. It
// returns how many events it read: limit when more may be waiting. Events stored before
// migration 0017 are indexed by the first batches like any other.
//
// Every event with searchable text is indexed whatever becomes of it: an outlier may join
// the timeline later (StoreReceivedEvent, SetBackfillPosition), keeping its event_nid, and
// SearchRoomEvents decides from the events row which rows match. Only soft-failed and
// rejected events, whose status never changes again, and redacted ones are left out. An
// event redacted while a batch on PostgreSQL is indexing it may keep its rows; they never
// match (redacted_by is checked when searching).
func IndexSearchBatch(ctx context.Context, db *DB, limit int) (n int, err error) {
	var indexed, stored int64
	err = db.QueryRow(ctx, `SELECT (SELECT indexed_nid FROM event_search_position WHERE id = 1),
		(SELECT COALESCE(MAX(event_nid), 0) FROM events)`).Scan(&indexed, &stored)
	if err != nil {
		return 0, fmt.Errorf("read search index position: %w", err)
	}
	if stored <= indexed || limit <= 0 {
		return 0, nil
	}
	// stored, the highest event_nid committed, may be passed only once every lower one is
	// committed or abandoned. On SQLite it is: writes take turns, so an event_nid is drawn
	// and committed before the next one is drawn.
	if db.Engine() == Postgres {
		if err := awaitEventWriters(ctx, db); err != nil {
			return 0, err
		}
	}
	err = db.WithTx(ctx, func(tx *Tx) error {
		n = 0
		// Locks the row, so that a batch of another process waits and then starts from here.
		var from int64
		if err := tx.QueryRow(ctx, `UPDATE event_search_position SET indexed_nid = indexed_nid WHERE id = 1
			RETURNING indexed_nid`).Scan(&from); err != nil {
			return fmt.Errorf("lock search index position: %w", err)
		}
		if from >= stored {
			return nil
		}
		rows, err := tx.Query(ctx, `SELECT room_nid, event_nid, type, json FROM events
			WHERE event_nid > $1 AND event_nid <= $2 AND type IN ('m.room.message', 'm.room.name', 'm.room.topic')
				AND status IN (0, 1) AND redacted_by IS NULL
			ORDER BY event_nid LIMIT $3`, from, stored, limit)
		if err != nil {
			return fmt.Errorf("read events to index: %w", err)
		}
		var index []searchRow
		to := stored
		for rows.Next() {
			var roomNID, eventNID int64
			var evType, js string
			if err := rows.Scan(&roomNID, &eventNID, &evType, &js); err != nil {
				rows.Close()
				return err
			}
			index = append(index, searchRowsOf(roomNID, eventNID, evType, []byte(js))...)
			n++
			to = eventNID
		}
		if err := closeRows(rows); err != nil {
			return err
		}
		if n < limit {
			// The last batch so far: nothing else up to stored has text to index.
			to = stored
		}
		if err := insertSearchRows(ctx, tx, index); err != nil {
			return err
		}
		_, err = tx.Exec(ctx, `UPDATE event_search_position SET indexed_nid = $1 WHERE id = 1`, to)
		return err
	})
	return n, err
}

// maxEventWritersWait bounds how long a batch waits for the transactions writing events.
const maxEventWritersWait = 30 * time.Second

// awaitEventWriters waits, on PostgreSQL, until every transaction that is writing to events
// when it is called has ended. Transactions write concurrently there, so a lower event_nid
// can be committed after a higher one; but a transaction takes its lock on the table before
// it draws an event_nid and keeps it until it ends, so once those holding a lock now have
// ended, every event_nid drawn before is committed or abandoned.
func awaitEventWriters(ctx context.Context, db *DB) error {
	const writers = `SELECT DISTINCT virtualtransaction FROM pg_locks
		WHERE locktype = 'relation' AND relation = 'events'::regclass AND mode = 'RowExclusiveLock'
			AND pid <> pg_backend_pid()`
	waiting, err := queryStrings(ctx, db, writers)
	if err != nil {
		return fmt.Errorf("list transactions writing events: %w", err)
	}
	deadline := time.Now().Add(maxEventWritersWait)
	for pause := time.Millisecond; len(waiting) > 0; pause = min(2*pause, 50*time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("search indexing waited %s for %d transactions writing events (%s)",
				maxEventWritersWait, len(waiting), strings.Join(waiting, ", "))
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(pause):
		}
		now, err := queryStrings(ctx, db, writers)
		if err != nil {
			return fmt.Errorf("list transactions writing events: %w", err)
		}
		waiting = slices.DeleteFunc(waiting, func(vxid string) bool { return !slices.Contains(now, vxid) })
	}
	return nil
}

// queryStrings runs a query of one text column and returns its values.
func queryStrings(ctx context.Context, q Querier, query string, args ...any) ([]string, error) {
	rows, err := q.Query(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	var out []string
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, s)
	}
	return out, closeRows(rows)
}

// insertSearchRows writes index rows; rows already there are left as they are. The rows go
// in key order, in statements of a few fixed lengths (the last padded with copies of its
// last row, which the conflict clause skips), so that each statement is prepared once.
func insertSearchRows(ctx context.Context, q Querier, rows []searchRow) error {
	slices.SortFunc(rows, func(a, b searchRow) int {
		return cmp.Or(strings.Compare(a.token, b.token), cmp.Compare(a.roomNID, b.roomNID), cmp.Compare(a.eventNID, b.eventNID))
	})
	for len(rows) > 0 {
		n := searchInsertLength(len(rows))
		chunk := rows[:min(n, len(rows))]
		rows = rows[len(chunk):]
		args := make([]any, 0, 4*n)
		var sb strings.Builder
		sb.WriteString(`INSERT INTO event_search (token, room_nid, event_nid, hits) VALUES `)
		for i := range n {
			if i > 0 {
				sb.WriteByte(',')
			}
			sb.WriteString("(" + placeholders(4, 4*i+1) + ")")
			row := chunk[min(i, len(chunk)-1)]
			args = append(args, []byte(row.token), row.roomNID, row.eventNID, row.hits)
		}
		sb.WriteString(` ON CONFLICT (token, room_nid, event_nid) DO NOTHING`)
		if _, err := q.Exec(ctx, sb.String(), args...); err != nil {
			return fmt.Errorf("index events for search: %w", err)
		}
	}
	return nil
}

// searchInsertLengths are the lengths of the INSERT statements into event_search, longest
// first: 4 parameters a row, well within SQLite's 32,766 and PostgreSQL's 65,535.
var searchInsertLengths = []int{2048, 512, 128, 32, 8}

// searchInsertLength is the length of the next statement for n rows: the longest that they
// fill, or the shortest.
func searchInsertLength(n int) int {
	for _, length := range searchInsertLengths {
		if n >= length {
			return length
		}
	}
	return searchInsertLengths[len(searchInsertLengths)-1]
}

// unindexForSearch deletes the index rows of a redacted event, found again by tokenizing
// its stored text (the row keeps the original JSON; redaction happens as it is read). A
// change of tokenizer therefore needs a migration that rebuilds event_search. It passes err,
// the outcome of marking the event redacted, through, and does nothing when it is an error.
func unindexForSearch(ctx context.Context, q Querier, err error, eventID string) error {
	if err != nil {
		return err
	}
	var roomNID, eventNID int64
	var evType, js string
	err = q.QueryRow(ctx, `SELECT room_nid, event_nid, type, json FROM events WHERE event_id = $1`, eventID).
		Scan(&roomNID, &eventNID, &evType, &js)
	if errors.Is(err, sql.ErrNoRows) {
		return nil
	}
	if err != nil {
		return err
	}
	rows := searchRowsOf(roomNID, eventNID, evType, []byte(js))
	for _, chunk := range chunks(rows, 500) {
		args := []any{roomNID, eventNID}
		for _, row := range chunk {
			args = append(args, []byte(row.token))
		}
		if _, err := q.Exec(ctx, `DELETE FROM event_search WHERE room_nid = $1 AND event_nid = $2
			AND token IN (`+placeholders(len(chunk), 3)+`)`, args...); err != nil {
			return fmt.Errorf("unindex redacted event: %w", err)
		}
	}
	return nil
}

// SearchTerms is a parsed search term: tokens that an event's text must all hold, the last
// one possibly as a prefix.
type SearchTerms struct {
	Exact []string
	// Prefix, when not "", must begin a token of the text.
	Prefix string
}

// ParseSearchTerm parses what a user typed. The last word is a prefix while it is being
// typed (the term does not end with a space or punctuation) and at least two letters long;
// up to MaxSearchTerms distinct tokens count.
func ParseSearchTerm(term string) SearchTerms {
	tokens, endsInToken := splitSearchText(term)
	counts := countTokens(tokens, MaxSearchTerms)
	var t SearchTerms
	for _, c := range counts {
		t.Exact = append(t.Exact, c.token)
	}
	if !endsInToken || len(tokens) == 0 {
		return t
	}
	last := tokens[len(tokens)-1]
	if utf8.RuneCountInString(last) < minPrefixRunes {
		return t
	}
	// The prefix replaces the exact token, unless another token already implies it
	// ("hello hel": "hello" begins with "hel").
	i := -1
	for j, c := range counts {
		if c.token == last {
			i = j
		}
	}
	if i < 0 || counts[i].hits > 1 {
		return t
	}
	t.Exact = append(t.Exact[:i], t.Exact[i+1:]...)
	for _, exact := range t.Exact {
		if strings.HasPrefix(exact, last) {
			return t
		}
	}
	t.Prefix = last
	return t
}

// Empty reports whether the term has nothing to search for (only punctuation, say).
func (t SearchTerms) Empty() bool { return len(t.Exact) == 0 && t.Prefix == "" }

// Tokens is every token of the term, the prefix last.
func (t SearchTerms) Tokens() []string {
	out := append([]string(nil), t.Exact...)
	if t.Prefix != "" {
		out = append(out, t.Prefix)
	}
	return out
}

// SearchQuery is one page of a room_events search by one user.
type SearchQuery struct {
	// UserID's rooms are searched: those they are joined to, have left or were banned from
	// ("all rooms that the user has been in, including those that they have left"), except
	// rooms they forgot. Which of the events the user may see is for the caller to decide.
	UserID string
	Terms  SearchTerms
	// Types are the event types searched (from the keys); none finds nothing.
	Types []string
	// Rooms, when not nil, narrows the search to these room IDs; NotRooms leaves rooms out.
	Rooms, NotRooms []string
	// Senders, when not nil, narrows the search to these senders; NotSenders leaves
	// senders out.
	Senders, NotSenders []string
	// ByRank orders by score, then by recency; otherwise by recency alone (stream position,
	// newest first).
	ByRank bool
	// After, when set, continues after the hit it was made from.
	After *SearchCursor
	Limit int
}

// SearchCursor is where a page of search hits ended.
type SearchCursor struct {
	Score     int64
	StreamPos int64
}

// SearchHit is one matching event.
type SearchHit struct {
	EventNID  int64
	RoomNID   int64
	StreamPos int64
	// Score is how often the query's tokens occur in the event's text.
	Score int64
}

// Cursor is the cursor that continues after h.
func (h SearchHit) Cursor() SearchCursor { return SearchCursor{Score: h.Score, StreamPos: h.StreamPos} }

// SearchRoomEvents returns up to sq.Limit events that match sq, in its order, and how many
// match in all (sq.After aside). The total is counted in the same pass: the ordering needs
// every match anyway.
func SearchRoomEvents(ctx context.Context, q Querier, sq *SearchQuery) (hits []SearchHit, total int64, err error) {
	if sq.Terms.Empty() || len(sq.Types) == 0 || sq.Limit <= 0 || (sq.Rooms != nil && len(sq.Rooms) == 0) ||
		(sq.Senders != nil && len(sq.Senders) == 0) {
		return nil, 0, nil
	}
	args := []any{sq.UserID}
	arg := func(v any) string {
		args = append(args, v)
		return "$" + strconv.Itoa(len(args))
	}
	list := func(values []string) string {
		params := make([]string, len(values))
		for i, v := range values {
			params[i] = arg(v)
		}
		return strings.Join(params, ", ")
	}

	var sb strings.Builder
	sb.WriteString(`WITH user_rooms AS (
		SELECT c.room_nid FROM current_state c
		WHERE c.type = 'm.room.member' AND c.state_key = $1 AND c.membership IN ('join', 'leave', 'ban')
			AND c.room_nid NOT IN (SELECT r.room_nid FROM forgotten_rooms f JOIN rooms r ON r.room_id = f.room_id WHERE f.user_id = $1)`)
	if sq.Rooms != nil {
		sb.WriteString(` AND c.room_nid IN (SELECT room_nid FROM rooms WHERE room_id IN (` + list(sq.Rooms) + `))`)
	}
	if len(sq.NotRooms) > 0 {
		sb.WriteString(` AND c.room_nid NOT IN (SELECT room_nid FROM rooms WHERE room_id IN (` + list(sq.NotRooms) + `))`)
	}
	// One branch per token, labelled with its term: an event matches when all terms found it.
	sb.WriteString(`), matches AS (SELECT event_nid, SUM(hits) AS score FROM (`)
	terms := 0
	branch := func(condition string) {
		if terms > 0 {
			sb.WriteString(` UNION ALL `)
		}
		sb.WriteString(`SELECT event_nid, hits, ` + strconv.Itoa(terms) + ` AS term FROM event_search WHERE ` + condition +
			` AND room_nid IN (SELECT room_nid FROM user_rooms)`)
		terms++
	}
	for _, token := range sq.Terms.Exact {
		branch(`token = ` + arg([]byte(token)))
	}
	if p := sq.Terms.Prefix; p != "" {
		// Every UTF-8 string that begins with p sorts below p + 0xFF, a byte UTF-8 never holds.
		branch(`token >= ` + arg([]byte(p)) + ` AND token < ` + arg(append([]byte(p), 0xff)))
	}
	sb.WriteString(`) t GROUP BY event_nid HAVING COUNT(DISTINCT term) = ` + strconv.Itoa(terms))
	sb.WriteString(`), found AS (
		SELECT m.event_nid, e.room_nid, e.stream_pos, m.score, COUNT(*) OVER () AS total
		FROM matches m JOIN events e ON e.event_nid = m.event_nid
		WHERE e.stream_pos <> 0 AND e.status IN (0, 1) AND e.redacted_by IS NULL AND e.type IN (` + list(sq.Types) + `)`)
	if sq.Senders != nil {
		sb.WriteString(` AND e.sender IN (` + list(sq.Senders) + `)`)
	}
	if len(sq.NotSenders) > 0 {
		sb.WriteString(` AND e.sender NOT IN (` + list(sq.NotSenders) + `)`)
	}
	sb.WriteString(`) SELECT event_nid, room_nid, stream_pos, score, total FROM found`)
	switch {
	case sq.After != nil && sq.ByRank:
		score, pos := arg(sq.After.Score), arg(sq.After.StreamPos)
		sb.WriteString(` WHERE score < ` + score + ` OR (score = ` + score + ` AND stream_pos < ` + pos + `)`)
	case sq.After != nil:
		sb.WriteString(` WHERE stream_pos < ` + arg(sq.After.StreamPos))
	}
	if sq.ByRank {
		sb.WriteString(` ORDER BY score DESC, stream_pos DESC`)
	} else {
		sb.WriteString(` ORDER BY stream_pos DESC`)
	}
	sb.WriteString(` LIMIT ` + arg(sq.Limit))

	rows, err := q.Query(ctx, sb.String(), args...)
	if err != nil {
		return nil, 0, fmt.Errorf("search: %w", err)
	}
	for rows.Next() {
		var h SearchHit
		if err := rows.Scan(&h.EventNID, &h.RoomNID, &h.StreamPos, &h.Score, &total); err != nil {
			rows.Close()
			return nil, 0, err
		}
		hits = append(hits, h)
	}
	return hits, total, closeRows(rows)
}
