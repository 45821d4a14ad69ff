package storage_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

func TestSearchTokens(t *testing.T) {
	for _, tc := range []struct {
		text string
		want []string
	}{
		{"Hello, World! hello", []string{"hello", "world"}},
		{"don't stop-me now_2024", []string{"don", "t", "stop", "me", "now", "2024"}},
		{"ÉCOLE école Ecole", []string{"école", "ecole"}},
		{"ΣΊΣΥΦΟΣ σίσυφος", []string{"σίσυφοσ"}},
		{"ｆｕｌｌｗｉｄｔｈ ＡＢＣ", []string{"fullwidth", "abc"}},
		{"東京に行く", []string{"東", "京", "に", "行", "く"}},
		{"Привет мир", []string{"привет", "мир"}},
		{"नमस्ते दुनिया", []string{"नमस्ते", "दुनिया"}}, // vowel signs are marks, inside the word
		{"", nil},
		{" \n\t!?", nil},
		{strings.Repeat("a", 100) + " b", []string{strings.Repeat("a", 64), "b"}},
		{strings.Repeat("é", 40), []string{strings.Repeat("é", 32)}},
	} {
		if got := storage.SearchTokens(tc.text); !slices.Equal(got, tc.want) {
			t.Errorf("SearchTokens(%q) = %q, want %q", tc.text, got, tc.want)
		}
	}
}

func TestSearchParseTerm(t *testing.T) {
	for _, tc := range []struct {
		term   string
		exact  []string
		prefix string
	}{
		{"hello wor", []string{"hello"}, "wor"},
		{"hello wor ", []string{"hello", "wor"}, ""},
		{"Hello, World.", []string{"hello", "world"}, ""},
		{"hello hel", []string{"hello"}, ""}, // "hello" implies "hel…"
		{"hel hello", []string{"hel"}, "hello"},
		{"cat cat", []string{"cat"}, ""},
		{"a", []string{"a"}, ""}, // too short for a prefix
		{"東京", []string{"東", "京"}, ""},
		{"!!!", nil, ""},
		{strings.Repeat("w ", 20) + "x y", []string{"w", "x", "y"}, ""},
	} {
		got := storage.ParseSearchTerm(tc.term)
		if !slices.Equal(got.Exact, tc.exact) || got.Prefix != tc.prefix {
			t.Errorf("ParseSearchTerm(%q) = %q + prefix %q, want %q + %q", tc.term, got.Exact, got.Prefix, tc.exact, tc.prefix)
		}
	}
	var many []string
	for i := range 30 {
		many = append(many, fmt.Sprintf("w%d", i))
	}
	if got := storage.ParseSearchTerm(strings.Join(many, " ") + " "); len(got.Exact) != storage.MaxSearchTerms {
		t.Errorf("%d distinct words kept %d terms, want %d", len(many), len(got.Exact), storage.MaxSearchTerms)
	}
}

// searchFixture is a database holding rooms and events for search tests.
type searchFixture struct {
	t     testing.TB
	db    *storage.DB
	rooms map[string]int64
	next  int64
}

func newSearchFixture(t testing.TB, db *storage.DB) *searchFixture {
	return &searchFixture{t: t, db: db, rooms: map[string]int64{}}
}

// room returns the numeric ID of roomID, creating the room and giving user a membership
// in it (none when membership is "").
func (f *searchFixture) room(roomID, user, membership string) int64 {
	f.t.Helper()
	ctx := context.Background()
	nid, ok := f.rooms[roomID]
	if !ok {
		var err error
		if nid, err = storage.InsertRoom(ctx, f.db, roomID, "12"); err != nil {
			f.t.Fatal(err)
		}
		f.rooms[roomID] = nid
	}
	if membership != "" {
		if err := storage.SetCurrentState(ctx, f.db, nid, "m.room.member", user, 1, membership); err != nil {
			f.t.Fatal(err)
		}
	}
	return nid
}

// event stores an event with content as an accepted timeline event (its stream position
// the next one) unless changed by edit, and returns its ID.
func (f *searchFixture) event(roomID, evType, sender, content string, edit ...func(*storage.EventRow)) string {
	f.t.Helper()
	f.next++
	row := &storage.EventRow{
		EventID: fmt.Sprintf("$e%d", f.next), RoomNID: f.rooms[roomID], StreamPos: f.next, Depth: f.next,
		Type: evType, Sender: sender,
		JSON: []byte(fmt.Sprintf(`{"type":%q,"sender":%q,"content":%s}`, evType, sender, content)),
	}
	if evType != "m.room.message" {
		empty := ""
		row.StateKey = &empty
	}
	for _, fn := range edit {
		fn(row)
	}
	if _, err := storage.InsertEvent(context.Background(), f.db, row); err != nil {
		f.t.Fatal(err)
	}
	return row.EventID
}

func (f *searchFixture) message(roomID, sender, body string) string {
	f.t.Helper()
	return f.event(roomID, "m.room.message", sender, fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, body))
}

// indexSearch runs search indexing batches until the index has caught up with the events.
func indexSearch(t testing.TB, db *storage.DB) {
	t.Helper()
	for {
		n, err := storage.IndexSearchBatch(context.Background(), db, 100)
		if err != nil {
			t.Fatal(err)
		}
		if n < 100 {
			return
		}
	}
}

// search indexes the events stored so far, runs sq (with the three key types and a limit
// of 100 unless set) and returns the IDs of the events found, in order, and the total.
func (f *searchFixture) search(sq storage.SearchQuery) ([]string, int64) {
	f.t.Helper()
	indexSearch(f.t, f.db)
	if sq.Types == nil {
		sq.Types = []string{"m.room.message", "m.room.name", "m.room.topic"}
	}
	if sq.Limit == 0 {
		sq.Limit = 100
	}
	hits, total, err := storage.SearchRoomEvents(context.Background(), f.db, &sq)
	if err != nil {
		f.t.Fatal(err)
	}
	return f.ids(hits), total
}

func (f *searchFixture) ids(hits []storage.SearchHit) []string {
	f.t.Helper()
	nids := make([]int64, len(hits))
	for i, h := range hits {
		nids[i] = h.EventNID
	}
	rows, err := storage.LoadEventsByNID(context.Background(), f.db, nids)
	if err != nil {
		f.t.Fatal(err)
	}
	byNID := map[int64]string{}
	for _, r := range rows {
		byNID[r.NID] = r.EventID
	}
	out := make([]string, len(hits))
	for i, h := range hits {
		out[i] = byNID[h.EventNID]
	}
	return out
}

func (f *searchFixture) expect(sq storage.SearchQuery, want ...string) {
	f.t.Helper()
	got, total := f.search(sq)
	if !slices.Equal(got, want) || total != int64(len(want)) {
		f.t.Fatalf("search %q (%+v): %q, total %d; want %q", sq.Terms.Tokens(), sq, got, total, want)
	}
}

// TestSearchRoomEvents: AND over the tokens with the last one a prefix, newest first; the
// keys, rooms, senders and membership decide where to look; rank orders by occurrences.
func TestSearchRoomEvents(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		f := newSearchFixture(t, db)
		const alice, bob = "@alice:x", "@bob:x"
		f.room("!a:x", alice, "join")
		f.room("!left:x", alice, "leave")
		f.room("!banned:x", alice, "ban")
		f.room("!forgot:x", alice, "leave")
		f.room("!invited:x", alice, "invite")
		f.room("!other:x", alice, "")
		if err := storage.ForgetRoom(context.Background(), db, alice, "!forgot:x"); err != nil {
			t.Fatal(err)
		}

		cats := f.message("!a:x", alice, "Cats are great")
		dogs := f.message("!a:x", bob, "dogs are great, cats too; CATS!")
		catalog := f.message("!a:x", bob, "the catalogue is great")
		name := f.event("!a:x", "m.room.name", alice, `{"name":"Great cats"}`)
		topic := f.event("!a:x", "m.room.topic", alice, `{"topic":"About felines","m.topic":{"m.text":[{"mimetype":"text/html","body":"<b>html only</b>"},{"body":"About felines, plainly"}]}}`)
		left := f.message("!left:x", bob, "cats of the past")
		banned := f.message("!banned:x", bob, "cats again")
		f.message("!forgot:x", bob, "forgotten cats")
		f.message("!invited:x", bob, "invited cats")
		f.message("!other:x", bob, "cats elsewhere")
		f.event("!a:x", "m.room.message", alice, `{"msgtype":"m.text","body":7}`)
		f.event("!a:x", "m.room.encrypted", alice, `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"cats"}`)
		f.event("!a:x", "m.sticker", alice, `{"body":"cats"}`)

		terms := storage.ParseSearchTerm
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("cats ")}, banned, left, name, dogs, cats)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("great cats ")}, name, dogs, cats)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("great cat")}, name, catalog, dogs, cats)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("CAT GREAT")})
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("felines plainly")}, topic)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("html")})
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("...")})

		// Keys are event types.
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("great"), Types: []string{"m.room.name"}}, name)
		// Rooms and senders.
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("cats "), Rooms: []string{"!left:x", "!other:x"}}, left)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("cats "), Rooms: []string{}})
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("cats "), NotRooms: []string{"!a:x", "!banned:x"}}, left)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("great"), Senders: []string{bob}}, catalog, dogs)
		f.expect(storage.SearchQuery{UserID: alice, Terms: terms("great"), NotSenders: []string{bob}}, name, cats)
		// Another user sees none of alice's rooms.
		f.expect(storage.SearchQuery{UserID: bob, Terms: terms("cats")})

		// Rank: dogs holds "cats" twice (and "great" once), the others once each.
		indexSearch(t, db)
		hits, _, err := storage.SearchRoomEvents(context.Background(), db, &storage.SearchQuery{UserID: alice,
			Terms: terms("cats great"), Types: []string{"m.room.message", "m.room.name"}, ByRank: true, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		if got := f.ids(hits); !slices.Equal(got, []string{dogs, name, cats}) || hits[0].Score != 3 || hits[1].Score != 2 {
			t.Fatalf("by rank: %q %+v", got, hits)
		}
	})
}

// TestSearchPagination: pages continue after their last hit, in both orders, without
// duplicates or gaps, and the total counts every match.
func TestSearchPagination(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		f := newSearchFixture(t, db)
		f.room("!a:x", "@u:x", "join")
		var all []string
		for i := range 23 {
			all = append(all, f.message("!a:x", "@u:x", "word "+strings.Repeat("echo ", i%4)))
		}
		for _, byRank := range []bool{false, true} {
			sq := storage.SearchQuery{UserID: "@u:x", Terms: storage.ParseSearchTerm("echo word"), Types: []string{"m.room.message"},
				ByRank: byRank, Limit: 4}
			var got []string
			var lastScore int64 = 1 << 40
			indexSearch(t, db)
			for page := 0; ; page++ {
				hits, total, err := storage.SearchRoomEvents(context.Background(), db, &sq)
				if err != nil {
					t.Fatal(err)
				}
				if len(hits) > 0 && total != 17 {
					t.Fatalf("total %d, want 17", total)
				}
				for _, h := range hits {
					if byRank && h.Score > lastScore {
						t.Fatalf("scores not descending: %d after %d", h.Score, lastScore)
					}
					lastScore = h.Score
				}
				got = append(got, f.ids(hits)...)
				if len(hits) < sq.Limit {
					break
				}
				cursor := hits[len(hits)-1].Cursor()
				sq.After = &cursor
			}
			var want []string
			for i, id := range all {
				if i%4 != 0 {
					want = append(want, id)
				}
			}
			slices.Reverse(want)
			if !byRank && !slices.Equal(got, want) {
				t.Fatalf("recent pages: %q, want %q", got, want)
			}
			slices.Sort(got)
			slices.Sort(want)
			if !slices.Equal(got, want) {
				t.Fatalf("rank pages (byRank %v): %q, want %q", byRank, got, want)
			}
		}
	})
}

// TestSearchTimelineOnly: outliers, soft-failed and rejected events never match; an outlier
// matches once it joins the timeline (received again, or backfilled); a redacted event
// stops matching and loses its index rows.
func TestSearchTimelineOnly(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newSearchFixture(t, db)
		roomNID := f.room("!a:x", "@u:x", "join")
		msg := func(id, body string, status storage.EventStatus) *storage.EventRow {
			return &storage.EventRow{EventID: id, RoomNID: roomNID, Status: status, Type: "m.room.message", Sender: "@u:x", Depth: 1,
				JSON: []byte(`{"type":"m.room.message","content":{"body":"` + body + `"}}`)}
		}
		terms := storage.SearchQuery{UserID: "@u:x", Terms: storage.ParseSearchTerm("zebra ")}

		// A received outlier, then the same event accepted.
		if _, err := storage.StoreReceivedEvent(ctx, db, msg("$out", "zebra outlier", storage.EventOutlier)); err != nil {
			t.Fatal(err)
		}
		f.expect(terms)
		accepted := msg("$out", "zebra outlier", storage.EventAccepted)
		accepted.StreamPos = 50
		if _, err := storage.StoreReceivedEvent(ctx, db, accepted); err != nil {
			t.Fatal(err)
		}
		f.expect(terms, "$out")

		// Outliers of a join, one of them backfilled later.
		stored, err := storage.InsertEventsIfAbsent(ctx, db, []*storage.EventRow{
			msg("$join1", "zebra join one", storage.EventOutlier), msg("$join2", "zebra join two", storage.EventOutlier),
			msg("$out", "zebra outlier", storage.EventOutlier)})
		if err != nil {
			t.Fatal(err)
		}
		f.expect(terms, "$out")
		if err := storage.SetBackfillPosition(ctx, db, stored["$join2"].NID, -5); err != nil {
			t.Fatal(err)
		}
		f.expect(terms, "$out", "$join2")

		// Soft-failed and rejected events.
		for _, status := range []storage.EventStatus{storage.EventSoftFailed, storage.EventRejected} {
			if _, err := storage.StoreReceivedEvent(ctx, db, msg(fmt.Sprintf("$status%d", status), "zebra failed", status)); err != nil {
				t.Fatal(err)
			}
		}
		f.expect(terms, "$out", "$join2")

		// Redaction.
		rowsOf := func(id string) int {
			indexSearch(t, db)
			var n int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM event_search s JOIN events e ON e.event_nid = s.event_nid
				WHERE e.event_id = $1`, id).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		if rowsOf("$out") != 2 {
			t.Fatalf("$out has %d index rows, want 2", rowsOf("$out"))
		}
		if err := storage.SetRedactedBy(ctx, db, "$out", "$redaction"); err != nil {
			t.Fatal(err)
		}
		f.expect(terms, "$join2")
		if n := rowsOf("$out"); n != 0 {
			t.Fatalf("redacted event keeps %d index rows", n)
		}
		// Stored again (a join carrying it as an outlier), the redacted event stays out.
		if _, err := storage.InsertEventsIfAbsent(ctx, db, []*storage.EventRow{msg("$out", "zebra outlier", storage.EventOutlier)}); err != nil {
			t.Fatal(err)
		}
		if n := rowsOf("$out"); n != 0 {
			t.Fatalf("redacted event indexed again: %d rows", n)
		}
		// Redacting an unknown event is harmless.
		if err := storage.SetRedactedBy(ctx, db, "$unknown", "$redaction2"); err != nil {
			t.Fatal(err)
		}
	})
}

// TestSearchIndexBatch: events are found once a batch has indexed them, batches take them
// in order up to the limit, events stored before any batch (before search existed) are
// indexed like the rest, and the position passes events without searchable text.
func TestSearchIndexBatch(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newSearchFixture(t, db)
		f.room("!a:x", "@u:x", "join")
		var want []string
		for i := range 5 {
			want = append(want, f.message("!a:x", "@u:x", fmt.Sprintf("narwhal %d", i)))
			f.event("!a:x", "m.room.member", "@u:x", `{"membership":"join","displayname":"narwhal"}`)
		}
		f.event("!a:x", "m.room.message", "@u:x", `{"body":"narwhal rejected"}`, func(e *storage.EventRow) { e.Status = storage.EventRejected })
		slices.Reverse(want)
		sq := &storage.SearchQuery{UserID: "@u:x", Terms: storage.ParseSearchTerm("narwhal"), Types: []string{"m.room.message"}, Limit: 10}
		found := func() int64 {
			_, total, err := storage.SearchRoomEvents(ctx, db, sq)
			if err != nil {
				t.Fatal(err)
			}
			return total
		}
		if n := found(); n != 0 {
			t.Fatalf("%d events found before indexing", n)
		}
		for i, wantN := range []int{2, 2, 1, 0} {
			n, err := storage.IndexSearchBatch(ctx, db, 2)
			if err != nil {
				t.Fatal(err)
			}
			if n != wantN || found() != int64(min(2*(i+1), 5)) {
				t.Fatalf("batch %d indexed %d events (want %d), %d found", i, n, wantN, found())
			}
		}
		f.expect(storage.SearchQuery{UserID: "@u:x", Terms: storage.ParseSearchTerm("narwhal")}, want...)

		// The position ends at the last event, searchable or not.
		f.event("!a:x", "m.room.member", "@u:x", `{"membership":"join"}`)
		indexSearch(t, db)
		var position, last int64
		if err := db.QueryRow(ctx, `SELECT (SELECT indexed_nid FROM event_search_position), (SELECT MAX(event_nid) FROM events)`).
			Scan(&position, &last); err != nil {
			t.Fatal(err)
		}
		if position != last {
			t.Fatalf("indexed up to %d of %d", position, last)
		}
		if n, err := storage.IndexSearchBatch(ctx, db, 2); n != 0 || err != nil {
			t.Fatalf("caught-up batch: %d, %v", n, err)
		}
	})
}

// TestSearchIndexAwaitsWriters: on PostgreSQL, an event can commit after one with a higher
// event_nid; a batch waits for it rather than moving the position past it for ever.
func TestSearchIndexAwaitsWriters(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		if db.Engine() != storage.Postgres {
			return // SQLite commits one write after the other, in event_nid order.
		}
		ctx := context.Background()
		f := newSearchFixture(t, db)
		roomNID := f.room("!a:x", "@u:x", "join")
		inserted, release := make(chan error, 1), make(chan struct{})
		committed := make(chan error, 1)
		go func() {
			committed <- db.WithTx(ctx, func(tx *storage.Tx) error {
				_, err := storage.InsertEvent(ctx, tx, &storage.EventRow{EventID: "$early", RoomNID: roomNID, StreamPos: 1000, Depth: 1,
					Type: "m.room.message", Sender: "@u:x", JSON: []byte(`{"content":{"body":"walrus early"}}`)})
				inserted <- err
				<-release
				return err
			})
		}()
		if err := <-inserted; err != nil {
			t.Fatal(err)
		}
		late := f.message("!a:x", "@u:x", "walrus late")

		type result struct {
			n   int
			err error
		}
		batch := make(chan result, 1)
		go func() {
			n, err := storage.IndexSearchBatch(ctx, db, 100)
			batch <- result{n, err}
		}()
		select {
		case r := <-batch:
			t.Fatalf("batch ended (%d, %v) while an event with a lower event_nid was being written", r.n, r.err)
		case <-time.After(300 * time.Millisecond):
		}
		close(release)
		if err := <-committed; err != nil {
			t.Fatal(err)
		}
		if r := <-batch; r.n != 2 || r.err != nil {
			t.Fatalf("batch: %d events, %v; want 2", r.n, r.err)
		}
		f.expect(storage.SearchQuery{UserID: "@u:x", Terms: storage.ParseSearchTerm("walrus")}, "$early", late)
	})
}

// searchVocabulary makes the benchmark's messages: words drawn with a skewed distribution,
// so that some are in most messages and most in few.
var searchVocabulary = func() []string {
	words := strings.Fields(`the and you that was for are with his they this have from one had word but not what all were
		when your can said there use each which she how their will other about out many then them these some her would
		make like him into time has look two more write see number way could people than first water been call who oil
		its now find long down day did get come made may part over new sound take only little work know place year live
		back give most very after thing our just name good sentence man think say great where help through much before
		line right too mean old any same tell boy follow came want show also around form three small set put end does
		another well large must big even such because turn here why ask went men read need land different home move try
		kind hand picture again change off play spell air away animal house point page letter mother answer found study
		still learn should america world high every near add food between own below country plant last school father keep
		tree never start city earth eye light thought head under story saw left few while along might close something seem
		next hard open example begin life always those both paper together got group often run important until children
		side feet car mile night walk white sea began grow took river four carry state once book hear stop without second
		later miss idea enough eat face watch far indian real almost let above girl sometimes mountain cut young talk soon
		list song being leave family zebra quokka`)
	return words
}()

// fillSearchBench stores and indexes n messages of 12 words each, half of them in one room
// that user has joined.
func fillSearchBench(b testing.TB, db *storage.DB, user string, n int) {
	storeSearchBench(b, db, user, n)
	indexSearch(b, db)
	if _, err := db.Exec(context.Background(), `ANALYZE`); err != nil {
		b.Fatal(err)
	}
}

// storeSearchBench stores the messages of fillSearchBench.
func storeSearchBench(b testing.TB, db *storage.DB, user string, n int) {
	ctx := context.Background()
	f := newSearchFixture(b, db)
	f.room("!bench:x", user, "join")
	f.room("!elsewhere:x", user, "")
	rng := rand.New(rand.NewPCG(1, 2))
	zipf := rand.NewZipf(rng, 1.1, 1, uint64(len(searchVocabulary)-3))
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		for i := range n {
			words := make([]string, 12)
			for j := range words {
				words[j] = searchVocabulary[zipf.Uint64()]
			}
			if i%1000 == 0 {
				words[0] = "quokka"
			}
			room := "!bench:x"
			if i%2 == 1 {
				room = "!elsewhere:x"
			}
			js := fmt.Sprintf(`{"type":"m.room.message","sender":"@s:x","content":{"msgtype":"m.text","body":%q}}`, strings.Join(words, " "))
			if _, err := storage.InsertEvent(ctx, tx, &storage.EventRow{EventID: fmt.Sprintf("$b%d", i), RoomNID: f.rooms[room],
				StreamPos: int64(i + 1), Depth: int64(i + 1), Type: "m.room.message", Sender: "@s:x", JSON: []byte(js)}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// BenchmarkSearch searches 10,000 messages (5,000 of them in the user's room): a word in
// most of them, a rare one, two words with a prefix, and the first by rank.
func BenchmarkSearch(b *testing.B) {
	const user = "@u:x"
	for _, engine := range []storage.Engine{storage.SQLite, storage.Postgres} {
		b.Run(engine.String(), func(b *testing.B) {
			db := storagetest.NewDB(b, engine)
			fillSearchBench(b, db, user, 10000)
			ctx := context.Background()
			for _, tc := range []struct {
				name, term string
				byRank     bool
			}{
				{"common", "the ", false},
				{"rare", "quokka ", false},
				{"two+prefix", "the wor", false},
				{"common-rank", "the ", true},
			} {
				b.Run(tc.name, func(b *testing.B) {
					sq := &storage.SearchQuery{UserID: user, Terms: storage.ParseSearchTerm(tc.term),
						Types: []string{"m.room.message", "m.room.name", "m.room.topic"}, ByRank: tc.byRank, Limit: 11}
					var total int64
					for b.Loop() {
						var err error
						if _, total, err = storage.SearchRoomEvents(ctx, db, sq); err != nil {
							b.Fatal(err)
						}
					}
					b.ReportMetric(float64(total), "matches")
				})
			}
		})
	}
}

// BenchmarkSearchIndexing is the cost of search on the send path: storing a message
// (indexed later, by IndexSearchBatch) against storing the same JSON under a type that is
// never indexed. They should cost the same.
func BenchmarkSearchIndexing(b *testing.B) {
	body := strings.Join(searchVocabulary[:20], " ")
	for _, engine := range []storage.Engine{storage.SQLite, storage.Postgres} {
		b.Run(engine.String(), func(b *testing.B) {
			db := storagetest.NewDB(b, engine)
			f := newSearchFixture(b, db)
			roomNID := f.room("!bench:x", "@u:x", "join")
			ctx := context.Background()
			n := 0 // across both, for distinct event IDs and stream positions
			for _, evType := range []string{"m.room.message", "m.unindexed"} {
				b.Run(evType, func(b *testing.B) {
					for b.Loop() {
						n++
						js := fmt.Sprintf(`{"type":%q,"content":{"msgtype":"m.text","body":%q}}`, evType, body)
						err := db.WithTx(ctx, func(tx *storage.Tx) error {
							_, err := storage.InsertEvent(ctx, tx, &storage.EventRow{EventID: fmt.Sprintf("$%s%d", evType, n),
								RoomNID: roomNID, StreamPos: int64(n), Depth: int64(n), Type: evType, Sender: "@u:x", JSON: []byte(js)})
							return err
						})
						if err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		})
	}
}

// BenchmarkIndexSearchBatch is the background indexer's throughput: 4,000 messages of 12
// words, indexed from the start in batches of each size.
func BenchmarkIndexSearchBatch(b *testing.B) {
	const messages = 4000
	for _, engine := range []storage.Engine{storage.SQLite, storage.Postgres} {
		b.Run(engine.String(), func(b *testing.B) {
			db := storagetest.NewDB(b, engine)
			storeSearchBench(b, db, "@u:x", messages)
			ctx := context.Background()
			for _, limit := range []int{20, 200, 1000} {
				b.Run(fmt.Sprintf("batch=%d", limit), func(b *testing.B) {
					for b.Loop() {
						b.StopTimer()
						for _, reset := range []string{`DELETE FROM event_search`, `UPDATE event_search_position SET indexed_nid = 0`} {
							if _, err := db.Exec(ctx, reset); err != nil {
								b.Fatal(err)
							}
						}
						b.StartTimer()
						for {
							n, err := storage.IndexSearchBatch(ctx, db, limit)
							if err != nil {
								b.Fatal(err)
							}
							if n < limit {
								break
							}
						}
					}
					b.ReportMetric(float64(messages*b.N)/b.Elapsed().Seconds(), "events/s")
				})
			}
		})
	}
}
