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

// TestUnreadEvents counts the events that notify and picks out the highlight candidates.
func TestUnreadEvents(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const room = 1
		empty := ""
		events := []struct {
			evType, sender string
			stateKey       *string
			content        string
			notifies       bool
		}{
			{"m.room.message", "@alice:x", nil, `{"body":"hi","msgtype":"m.text"}`, true},
			{"m.room.message", "@bob:x", nil, `{"body":"my own","msgtype":"m.text"}`, false},
			{"m.room.message", "@alice:x", nil, `{"body":"bot","msgtype":"m.notice"}`, false},
			{"m.room.message", "@alice:x", nil, `{"body":"* fix","m.relates_to":{"rel_type":"m.replace","event_id":"$e0"}}`, false},
			{"m.reaction", "@alice:x", nil, `{"m.relates_to":{"rel_type":"m.annotation","event_id":"$e0","key":"+1"}}`, false},
			{"m.room.encrypted", "@alice:x", nil, `{"algorithm":"m.megolm.v1.aes-sha2","ciphertext":"abc"}`, true},
			{"m.room.message", "@alice:x", nil, `{"body":"hey BOB","msgtype":"m.text"}`, true},
			{"m.room.tombstone", "@alice:x", &empty, `{"body":"moved","replacement_room":"!new:x"}`, true},
			{"m.room.topic", "@alice:x", &empty, `{"topic":"bob"}`, false},
		}
		for i, e := range events {
			js := fmt.Sprintf(`{"type":%q,"sender":%q,"content":%s}`, e.evType, e.sender, e.content)
			if _, err := storage.InsertEvent(ctx, db, &storage.EventRow{
				EventID: fmt.Sprintf("$e%d", i), RoomNID: room, StreamPos: int64(i + 1), Depth: int64(i + 1),
				Type: e.evType, StateKey: e.stateKey, Sender: e.sender, JSON: []byte(js),
			}); err != nil {
				t.Fatal(err)
			}
		}
		// A redacted message does not count.
		if _, err := storage.InsertEvent(ctx, db, &storage.EventRow{
			EventID: "$redacted", RoomNID: room, StreamPos: 100, Depth: 100, Type: "m.room.message", Sender: "@alice:x",
			JSON: []byte(`{"type":"m.room.message","sender":"@alice:x","content":{}}`),
		}); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetRedactedBy(ctx, db, "$redacted", "$redaction"); err != nil {
			t.Fatal(err)
		}

		count, candidates, err := storage.UnreadEvents(ctx, db, room, "@bob:x", 0, 1000, 1000, []string{"bob", ""})
		if err != nil {
			t.Fatal(err)
		}
		if count != 4 {
			t.Fatalf("count = %d, want 4", count)
		}
		if len(candidates) != 2 {
			t.Fatalf("candidates = %q, want the tombstone and the message naming bob", candidates)
		}

		// After the read position, with a limit.
		if count, _, err = storage.UnreadEvents(ctx, db, room, "@bob:x", 6, 1000, 1000, nil); err != nil || count != 2 {
			t.Fatalf("count after 6 = %d, %v; want 2", count, err)
		}
		if count, _, err = storage.UnreadEvents(ctx, db, room, "@bob:x", 0, 1000, 3, nil); err != nil || count != 3 {
			t.Fatalf("count with limit 3 = %d, %v; want 3", count, err)
		}
		if count, _, err = storage.UnreadEvents(ctx, db, room, "@bob:x", 0, 6, 1000, nil); err != nil || count != 2 {
			t.Fatalf("count up to 6 = %d, %v; want 2", count, err)
		}
	})
}
