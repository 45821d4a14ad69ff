package storage_test

import (
	"context"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestPruneTransactionIDs keeps recent transaction IDs and forgets old ones.
func TestPruneTransactionIDs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, row := range []struct {
			txn string
			ts  int64
		}{{"old", 1_000}, {"new", 9_000}} {
			if err := storage.InsertTxn(ctx, db, "@a:x", "DEV", row.txn, "$"+row.txn, row.ts); err != nil {
				t.Fatal(err)
			}
			if err := storage.SaveInboundTxn(ctx, db, "peer.example", row.txn, []byte("{}"), row.ts); err != nil {
				t.Fatal(err)
			}
		}
		n, err := storage.PruneTransactionIDs(ctx, db, 5_000, 5_000)
		if err != nil || n != 2 {
			t.Fatalf("pruned %d rows, %v; want 2", n, err)
		}
		if id, _ := storage.LookupTxn(ctx, db, "@a:x", "DEV", "new"); id != "$new" {
			t.Fatalf("recent transaction ID lost: %q", id)
		}
		if id, _ := storage.LookupTxn(ctx, db, "@a:x", "DEV", "old"); id != "" {
			t.Fatalf("old transaction ID kept: %q", id)
		}
		if resp, _ := storage.InboundTxnResponse(ctx, db, "peer.example", "old"); resp != nil {
			t.Fatal("old inbound transaction kept")
		}
	})
}
