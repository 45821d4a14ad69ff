// Package driverbench compares the two SQLite drivers considered for package
// storage on the hot path of a homeserver. It is its own Go module so that the
// losing driver never appears in the main module's go.mod; run it with
//
//	cd storage/driverbench && go test -run - -bench . -benchtime 2s
//
// Both drivers are opened exactly as package storage opens SQLite: WAL,
// synchronous=NORMAL, busy_timeout, foreign keys, one writer connection that
// begins transactions IMMEDIATE, and a separate pool of query-only readers.
package driverbench

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	_ "github.com/mattn/go-sqlite3"
	_ "modernc.org/sqlite"
)

// driver describes how to open one SQLite driver with package storage's settings.
type driver struct {
	name      string
	sqlName   string
	writerDSN func(path string) string
	readerDSN func(path string) string
}

var drivers = []driver{
	{
		name:    "mattn",
		sqlName: "sqlite3",
		writerDSN: func(path string) string {
			return "file:" + path + "?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000&_foreign_keys=1&_txlock=immediate"
		},
		readerDSN: func(path string) string {
			return "file:" + path + "?_journal_mode=WAL&_synchronous=NORMAL&_busy_timeout=5000&_foreign_keys=1&_query_only=1"
		},
	},
	{
		name:    "modernc",
		sqlName: "sqlite",
		writerDSN: func(path string) string {
			return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_txlock=immediate"
		},
		readerDSN: func(path string) string {
			return "file:" + path + "?_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=busy_timeout(5000)&_pragma=foreign_keys(1)&_pragma=query_only(1)"
		},
	},
}

const schema = `
CREATE TABLE events (
	event_nid INTEGER PRIMARY KEY AUTOINCREMENT,
	event_id TEXT NOT NULL UNIQUE,
	room_nid INTEGER NOT NULL,
	event_json BLOB NOT NULL
);
CREATE TABLE room_timeline (
	room_nid INTEGER NOT NULL,
	stream_pos INTEGER NOT NULL,
	event_nid INTEGER NOT NULL REFERENCES events(event_nid),
	PRIMARY KEY (room_nid, stream_pos)
);`

const (
	insertEvent    = `INSERT INTO events (event_id, room_nid, event_json) VALUES (?1, ?2, ?3) RETURNING event_nid`
	insertTimeline = `INSERT INTO room_timeline (room_nid, stream_pos, event_nid) VALUES (?1, ?2, ?3)`
	selectEvent    = `SELECT event_id, event_json FROM events WHERE event_nid = ?1`
	selectRange    = `SELECT e.event_nid, e.event_json FROM room_timeline t JOIN events e ON e.event_nid = t.event_nid
		WHERE t.room_nid = ?1 AND t.stream_pos <= ?2 ORDER BY t.stream_pos DESC LIMIT 50`
)

// eventJSON is a ~1 KB stand-in for a signed m.room.message event.
var eventJSON = []byte(`{"type":"m.room.message","sender":"@alice:example.org","content":{"msgtype":"m.text","body":"` +
	strings.Repeat("x", 800) + `"},"origin_server_ts":1700000000000,"hashes":{"sha256":"abc"},"signatures":{}}`)

// openPair opens the writer and reader pools for d on a fresh file.
func openPair(b *testing.B, d driver) (writer, reader *sql.DB) {
	path := filepath.Join(b.TempDir(), "bench.db")
	writer, err := sql.Open(d.sqlName, d.writerDSN(path))
	if err != nil {
		b.Fatal(err)
	}
	writer.SetMaxOpenConns(1)
	if _, err := writer.Exec(schema); err != nil {
		b.Fatal(err)
	}
	reader, err = sql.Open(d.sqlName, d.readerDSN(path))
	if err != nil {
		b.Fatal(err)
	}
	reader.SetMaxOpenConns(4)
	reader.SetMaxIdleConns(4)
	b.Cleanup(func() {
		reader.Close()
		writer.Close()
	})
	return writer, reader
}

// insertOne writes one event and its timeline row in one transaction.
func insertOne(ctx context.Context, writer *sql.DB, n int) error {
	tx, err := writer.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var nid int64
	if err := tx.QueryRowContext(ctx, insertEvent, fmt.Sprintf("$event%d:example.org", n), 1, eventJSON).Scan(&nid); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, insertTimeline, 1, n, nid); err != nil {
		return err
	}
	return tx.Commit()
}

// fill inserts rows events so that reads have something to find.
func fill(b *testing.B, writer *sql.DB, rows int) {
	ctx := context.Background()
	for n := 1; n <= rows; n++ {
		if err := insertOne(ctx, writer, n); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkInsertEventTx(b *testing.B) {
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			writer, _ := openPair(b, d)
			ctx := context.Background()
			n := 0
			for b.Loop() {
				n++
				if err := insertOne(ctx, writer, n); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

const filled = 10000

func BenchmarkPointSelect(b *testing.B) {
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			writer, reader := openPair(b, d)
			fill(b, writer, filled)
			ctx := context.Background()
			var id string
			var body []byte
			n := 0
			for b.Loop() {
				n++
				if err := reader.QueryRowContext(ctx, selectEvent, 1+n%filled).Scan(&id, &body); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkPointSelectParallel(b *testing.B) {
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			writer, reader := openPair(b, d)
			fill(b, writer, filled)
			ctx := context.Background()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				var id string
				var body []byte
				n := 0
				for pb.Next() {
					n++
					if err := reader.QueryRowContext(ctx, selectEvent, 1+n%filled).Scan(&id, &body); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
}

func BenchmarkRangeScan50(b *testing.B) {
	for _, d := range drivers {
		b.Run(d.name, func(b *testing.B) {
			writer, reader := openPair(b, d)
			fill(b, writer, filled)
			ctx := context.Background()
			n := 0
			for b.Loop() {
				n++
				rows, err := reader.QueryContext(ctx, selectRange, 1, 50+n%(filled-50))
				if err != nil {
					b.Fatal(err)
				}
				count := 0
				for rows.Next() {
					var nid int64
					var body []byte
					if err := rows.Scan(&nid, &body); err != nil {
						b.Fatal(err)
					}
					count++
				}
				if err := rows.Err(); err != nil {
					b.Fatal(err)
				}
				rows.Close()
				if count != 50 {
					b.Fatalf("range scan returned %d rows, want 50", count)
				}
			}
		})
	}
}
