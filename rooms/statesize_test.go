package rooms

import (
	"context"
	"fmt"
	"os"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestStateStorageGrowsWithChanges joins 10,000 users to one room and checks that the state
// snapshots take rows in proportion to the state changes (n·log n at most), not to events ×
// room size as a full snapshot per event would (50 million rows here). It logs the database
// size, the figure the project reports.
func TestStateStorageGrowsWithChanges(t *testing.T) {
	joins := 10000
	if testing.Short() {
		joins = 1000
	}
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		alice := "@alice:test.example"
		roomID := createTestRoom(t, s, spec.DefaultRoomVersion, alice)
		for i := 0; i < joins; i++ {
			user := fmt.Sprintf("@user%05d:test.example", i)
			if _, err := s.Send(ctx, roomID, stateReq(user, "m.room.member", user, map[string]string{"membership": "join"})); err != nil {
				t.Fatalf("join %d: %v", i, err)
			}
		}
		var snapshots, deltas, events int64
		for query, into := range map[string]*int64{
			`SELECT COUNT(*) FROM state_snapshots`: &snapshots,
			`SELECT COUNT(*) FROM state_deltas`:    &deltas,
			`SELECT COUNT(*) FROM events`:          &events,
		} {
			if err := db.QueryRow(ctx, query).Scan(into); err != nil {
				t.Fatal(err)
			}
		}
		// Σ lowbit(d) for d ≤ n is about n·log2(n)/2: 66k rows for 10k joins.
		if limit := int64(joins) * 8; deltas > limit {
			t.Fatalf("%d delta rows for %d joins, want at most %d", deltas, joins, limit)
		}
		state, _, err := newTestServer(t, db).CurrentState(ctx, roomID)
		if err != nil || len(state) != joins+4 {
			t.Fatalf("current state after reload has %d entries (%v), want %d", len(state), err, joins+4)
		}
		t.Logf("%s: %d joins → %d events, %d snapshots, %d delta rows, database %s",
			db.Engine(), joins, events, snapshots, deltas, databaseSize(t, ctx, db))
	})
}

// databaseSize is the on-disk size of the database, for the log.
func databaseSize(t *testing.T, ctx context.Context, db *storage.DB) string {
	if db.Engine() == storage.Postgres {
		var size int64
		if err := db.QueryRow(ctx, `SELECT pg_database_size(current_database())`).Scan(&size); err != nil {
			t.Fatal(err)
		}
		return fmt.Sprintf("%.1f MB", float64(size)/1e6)
	}
	var path string
	if err := db.QueryRow(ctx, `SELECT file FROM pragma_database_list WHERE name = 'main'`).Scan(&path); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(ctx, `PRAGMA wal_checkpoint(TRUNCATE)`); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%.1f MB", float64(info.Size())/1e6)
}
