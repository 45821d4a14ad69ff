package storage_test

import (
	"context"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestPresenceRows: rows are replaced whole, touched without a new position, and listed when
// not offline and stale; the stream position counts towards MaxStreamPos.
func TestPresenceRows(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.LoadPresence(ctx, db, "@a:x"); err != storage.ErrNotFound {
			t.Fatalf("no row yet: %v", err)
		}
		rows := []storage.PresenceRow{
			{UserID: "@a:x", Presence: "online", StatusMsg: "hi", LastActiveTS: 10, CurrentlyActive: true, UpdatedTS: 100, StreamPos: 7},
			{UserID: "@b:y", Presence: "unavailable", UpdatedTS: 200, StreamPos: 8},
			{UserID: "@c:y", Presence: "offline", UpdatedTS: 50, StreamPos: 9},
		}
		for _, r := range rows {
			if err := storage.PutPresence(ctx, db, r); err != nil {
				t.Fatal(err)
			}
		}
		got, err := storage.LoadPresence(ctx, db, "@a:x")
		if err != nil || got != rows[0] {
			t.Fatalf("load: %+v, %v", got, err)
		}
		stale, err := storage.PresenceNotOffline(ctx, db, 150, 10)
		if err != nil || len(stale) != 1 || stale[0].UserID != "@a:x" {
			t.Fatalf("stale before 150: %+v, %v", stale, err)
		}
		if err := storage.TouchPresence(ctx, db, "@a:x", 300); err != nil {
			t.Fatal(err)
		}
		if stale, _ := storage.PresenceNotOffline(ctx, db, 250, 10); len(stale) != 1 || stale[0].UserID != "@b:y" {
			t.Fatalf("stale before 250 after touching @a:x: %+v", stale)
		}
		replaced := storage.PresenceRow{UserID: "@a:x", Presence: "offline", UpdatedTS: 400, StreamPos: 12}
		if err := storage.PutPresence(ctx, db, replaced); err != nil {
			t.Fatal(err)
		}
		if got, _ := storage.LoadPresence(ctx, db, "@a:x"); got != replaced {
			t.Fatalf("replaced: %+v", got)
		}
		if pos, err := storage.MaxStreamPos(ctx, db); err != nil || pos < 12 {
			t.Fatalf("MaxStreamPos %d, %v", pos, err)
		}
	})
}
