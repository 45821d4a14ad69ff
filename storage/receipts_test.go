package storage_test

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

func putReceipt(t *testing.T, db *storage.DB, r storage.ReceiptRow) bool {
	t.Helper()
	stored, err := storage.PutReceipt(context.Background(), db, &r)
	if err != nil {
		t.Fatalf("put receipt %+v: %v", r, err)
	}
	return stored
}

// TestPutReceiptMovesForward keeps one receipt per user, type and thread, replaced only by
// one for a later event.
func TestPutReceiptMovesForward(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		base := storage.ReceiptRow{RoomNID: 1, UserID: "@a:x", Type: storage.ReceiptRead}
		for _, tc := range []struct {
			eventPos, streamPos int64
			thread              string
			stored              bool
		}{
			{10, 100, "", true},
			{5, 101, "", false},  // behind the current one
			{10, 102, "", false}, // the same event again
			{20, 103, "", true},
			{5, 104, "main", true}, // another thread is another receipt
		} {
			r := base
			r.EventID, r.EventPos, r.StreamPos, r.ThreadID, r.TS = fmt.Sprintf("$e%d", tc.eventPos), tc.eventPos, tc.streamPos, tc.thread, tc.streamPos*10
			if got := putReceipt(t, db, r); got != tc.stored {
				t.Fatalf("receipt for event %d thread %q: stored = %v, want %v", tc.eventPos, tc.thread, got, tc.stored)
			}
		}
		rows, err := storage.LatestReceipts(ctx, db, 1, "@a:x", 1000, 10)
		if err != nil {
			t.Fatal(err)
		}
		if len(rows) != 2 || rows[0].EventID != "$e5" || rows[0].ThreadID != "main" || rows[1].EventID != "$e20" || rows[1].StreamPos != 103 || rows[1].TS != 1030 {
			t.Fatalf("latest receipts = %+v", rows)
		}
		pos, err := storage.MaxStreamPos(ctx, db)
		if err != nil || pos != 104 {
			t.Fatalf("MaxStreamPos = %d, %v; want 104 from receipts", pos, err)
		}
		if err := storage.ReserveStreamPos(ctx, db, "typing", 500); err != nil {
			t.Fatal(err)
		}
		if err := storage.ReserveStreamPos(ctx, db, "typing", 300); err != nil {
			t.Fatal(err)
		}
		pos, err = storage.MaxStreamPos(ctx, db)
		if err != nil || pos != 500 {
			t.Fatalf("MaxStreamPos = %d, %v; want the reservation 500", pos, err)
		}
	})
}

// TestReceiptsVisibility delivers receipts of joined rooms only, and private receipts only
// to their owner.
func TestReceiptsVisibility(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const joinedRoom, otherRoom = 1, 2
		if err := storage.SetCurrentState(ctx, db, joinedRoom, "m.room.member", "@bob:x", 1, "join"); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetCurrentState(ctx, db, otherRoom, "m.room.member", "@bob:x", 2, "leave"); err != nil {
			t.Fatal(err)
		}
		for i, r := range []storage.ReceiptRow{
			{RoomNID: joinedRoom, UserID: "@alice:x", Type: storage.ReceiptRead},
			{RoomNID: joinedRoom, UserID: "@alice:x", Type: storage.ReceiptReadPrivate},
			{RoomNID: joinedRoom, UserID: "@bob:x", Type: storage.ReceiptReadPrivate},
			{RoomNID: otherRoom, UserID: "@alice:x", Type: storage.ReceiptRead},
			{RoomNID: joinedRoom, UserID: "@carol:x", Type: storage.ReceiptRead},
		} {
			r.EventID, r.EventPos, r.StreamPos = fmt.Sprintf("$e%d", i), int64(i+1), int64(10+i)
			putReceipt(t, db, r)
		}
		describe := func(rows []storage.ReceiptRow) []string {
			var out []string
			for _, r := range rows {
				out = append(out, r.UserID+" "+r.Type)
			}
			return out
		}

		rows, err := storage.ReceiptsBetween(ctx, db, "@bob:x", 9, 13, 100)
		if err != nil {
			t.Fatal(err)
		}
		want := []string{"@bob:x m.read.private", "@alice:x m.read"} // newest first; carol's is after 13
		if got := describe(rows); !slices.Equal(got, want) {
			t.Fatalf("ReceiptsBetween = %v, want %v", got, want)
		}
		if rows, err = storage.ReceiptsBetween(ctx, db, "@bob:x", 9, 14, 1); err != nil || len(rows) != 1 || rows[0].UserID != "@carol:x" {
			t.Fatalf("ReceiptsBetween with limit 1 = %v, %v", describe(rows), err)
		}

		rows, err = storage.LatestReceipts(ctx, db, joinedRoom, "@bob:x", 100, 100)
		if err != nil {
			t.Fatal(err)
		}
		want = []string{"@bob:x m.read.private", "@carol:x m.read", "@alice:x m.read"} // own first
		if got := describe(rows); !slices.Equal(got, want) {
			t.Fatalf("LatestReceipts = %v, want %v", got, want)
		}
	})
}

// TestReadPositions takes the furthest of m.read and m.read.private, unthreaded or main.
func TestReadPositions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for i, r := range []storage.ReceiptRow{
			{RoomNID: 1, Type: storage.ReceiptRead, EventPos: 10},
			{RoomNID: 1, Type: storage.ReceiptReadPrivate, EventPos: 30},
			{RoomNID: 1, Type: storage.ReceiptRead, ThreadID: "$root", EventPos: 50},
			{RoomNID: 2, Type: storage.ReceiptRead, ThreadID: "main", EventPos: 7},
		} {
			r.UserID, r.EventID, r.StreamPos = "@a:x", fmt.Sprintf("$e%d", i), int64(100+i)
			putReceipt(t, db, r)
		}
		got, err := storage.ReadPositions(context.Background(), db, "@a:x")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[1] != 30 || got[2] != 7 {
			t.Fatalf("ReadPositions = %v, want room 1 at 30, room 2 at 7", got)
		}
	})
}
