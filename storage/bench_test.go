package storage_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// benchTables models the hottest tables of a homeserver: events and the room
// timeline that indexes them.
var benchTables = fstest.MapFS{
	"9201_bench_tables.sql": {Data: []byte(`
CREATE TABLE bench_events (
	event_nid {{BIGSERIAL}},
	event_id TEXT NOT NULL UNIQUE,
	room_nid {{BIGINT}} NOT NULL,
	event_json {{BYTES}} NOT NULL
);
CREATE TABLE bench_timeline (
	room_nid {{BIGINT}} NOT NULL,
	stream_pos {{BIGINT}} NOT NULL,
	event_nid {{BIGINT}} NOT NULL REFERENCES bench_events (event_nid),
	PRIMARY KEY (room_nid, stream_pos)
);`)},
}

const (
	benchInsertEvent = `INSERT INTO bench_events (event_id, room_nid, event_json) VALUES ($1, $2, $3) RETURNING event_nid`
	benchInsertIndex = `INSERT INTO bench_timeline (room_nid, stream_pos, event_nid) VALUES ($1, $2, $3)`
	benchSelectEvent = `SELECT event_id, event_json FROM bench_events WHERE event_nid = $1`
	benchSelectRange = `SELECT e.event_nid, e.event_json FROM bench_timeline t JOIN bench_events e ON e.event_nid = t.event_nid
		WHERE t.room_nid = $1 AND t.stream_pos <= $2 ORDER BY t.stream_pos DESC LIMIT 50`
	benchFilled = 5000
)

// benchEvent is a ~1 KB stand-in for a signed m.room.message event.
var benchEvent = []byte(`{"type":"m.room.message","sender":"@alice:example.org","content":{"msgtype":"m.text","body":"` +
	strings.Repeat("x", 800) + `"},"origin_server_ts":1700000000000,"hashes":{"sha256":"abc"},"signatures":{}}`)

// benchInsert persists event n and its timeline row in one transaction.
func benchInsert(ctx context.Context, db *storage.DB, n int) error {
	return db.WithTx(ctx, func(tx *storage.Tx) error {
		var nid int64
		if err := tx.QueryRow(ctx, benchInsertEvent, fmt.Sprintf("$e%d:example.org", n), 1, benchEvent).Scan(&nid); err != nil {
			return err
		}
		_, err := tx.Exec(ctx, benchInsertIndex, 1, n, nid)
		return err
	})
}

// eachEngine runs fn as sub-benchmarks on a fresh database per engine,
// holding benchFilled events when filled is set.
func eachEngine(b *testing.B, filled bool, fn func(b *testing.B, db *storage.DB)) {
	for _, engine := range []storage.Engine{storage.SQLite, storage.Postgres} {
		b.Run(engine.String(), func(b *testing.B) {
			db := storagetest.NewDB(b, engine)
			addBenchTables(b, db, filled)
			b.ResetTimer()
			fn(b, db)
		})
	}
}

// addBenchTables creates the benchmark tables and optionally fills them.
func addBenchTables(b *testing.B, db *storage.DB, filled bool) {
	ctx := context.Background()
	if _, err := db.MigrateFS(ctx, benchTables); err != nil {
		b.Fatal(err)
	}
	if !filled {
		return
	}
	for n := 1; n <= benchFilled; n++ {
		if err := benchInsert(ctx, db, n); err != nil {
			b.Fatal(err)
		}
	}
	if db.Engine() == storage.Postgres {
		// Autovacuum would gather statistics soon enough in a real server;
		// without them the planner may scan the whole table.
		if _, err := db.Exec(ctx, `ANALYZE`); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInsertEvent(b *testing.B) {
	eachEngine(b, false, func(b *testing.B, db *storage.DB) {
		ctx := context.Background()
		n := 0
		for b.Loop() {
			n++
			if err := benchInsert(ctx, db, n); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkPointSelect(b *testing.B) {
	eachEngine(b, true, func(b *testing.B, db *storage.DB) {
		ctx := context.Background()
		var id string
		var body []byte
		n := 0
		for b.Loop() {
			n++
			if err := db.QueryRow(ctx, benchSelectEvent, 1+n%benchFilled).Scan(&id, &body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkRangeScan50(b *testing.B) {
	eachEngine(b, true, func(b *testing.B, db *storage.DB) {
		ctx := context.Background()
		n := 0
		for b.Loop() {
			n++
			rows, err := db.Query(ctx, benchSelectRange, 1, 50+n%(benchFilled-50))
			if err != nil {
				b.Fatal(err)
			}
			got := 0
			for rows.Next() {
				var nid int64
				var body []byte
				if err := rows.Scan(&nid, &body); err != nil {
					b.Fatal(err)
				}
				got++
			}
			if err := rows.Close(); err != nil {
				b.Fatal(err)
			}
			if got != 50 {
				b.Fatalf("range scan returned %d rows, want 50", got)
			}
		}
	})
}
