package storage_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestUpdateAccountData: the update sees the current content, nil or an error leaves it
// as it is, and concurrent updates of one piece all land.
func TestUpdateAccountData(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const user, room, typ = "@a:x", "!r:x", "m.tag"
		appendTo := func(suffix string) func([]byte) ([]byte, error) {
			return func(current []byte) ([]byte, error) { return append(current, suffix...), nil }
		}
		if changed, err := storage.UpdateAccountData(ctx, db, user, room, typ, 10, appendTo("a")); err != nil || !changed {
			t.Fatalf("first update: %v, %v", changed, err)
		}
		if changed, err := storage.UpdateAccountData(ctx, db, user, room, typ, 11,
			func([]byte) ([]byte, error) { return nil, nil }); err != nil || changed {
			t.Fatalf("no-op update: %v, %v", changed, err)
		}
		refused := errors.New("refused")
		if _, err := storage.UpdateAccountData(ctx, db, user, room, typ, 12,
			func([]byte) ([]byte, error) { return []byte("zzz"), refused }); !errors.Is(err, refused) {
			t.Fatalf("failing update: %v", err)
		}
		rows, err := storage.AccountDataSince(ctx, db, user, 0, 100)
		if err != nil || len(rows) != 1 || string(rows[0].Content) != "a" || rows[0].StreamPos != 10 || rows[0].RoomID != room {
			t.Fatalf("after updates: %+v, %v", rows, err)
		}

		// Concurrent updates, of a new piece and of the existing one.
		for _, target := range []string{"m.other", typ} {
			var wg sync.WaitGroup
			const writers = 8
			for i := range writers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if _, err := storage.UpdateAccountData(ctx, db, user, room, target, int64(20+i), appendTo("b")); err != nil {
						t.Error(err)
					}
				}()
			}
			wg.Wait()
			content, err := storage.GetAccountData(ctx, db, user, room, target)
			if err != nil || strings.Count(string(content), "b") != writers {
				t.Fatalf("%s after %d concurrent updates: %q, %v", target, writers, content, err)
			}
		}
	})
}

// TestMutualJoinedRooms pages through the rooms where both users are joined, in room ID
// order, and counts them; other memberships do not count.
func TestMutualJoinedRooms(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		member := func(roomNID int64, roomID, userID, membership string) {
			t.Helper()
			if _, err := db.Exec(ctx, `INSERT INTO rooms (room_nid, room_id, room_version) VALUES ($1, $2, '12')
				ON CONFLICT (room_id) DO NOTHING`, roomNID, roomID); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(ctx, `INSERT INTO current_state (room_nid, type, state_key, event_nid, membership)
				VALUES ($1, 'm.room.member', $2, 1, $3)`, roomNID, userID, membership); err != nil {
				t.Fatal(err)
			}
		}
		for i := int64(1); i <= 5; i++ {
			roomID := fmt.Sprintf("!room%d:x", i)
			member(i, roomID, "@a:x", "join")
			member(i, roomID, "@b:y", "join")
		}
		member(6, "!room6:x", "@a:x", "join")
		member(6, "!room6:x", "@b:y", "invite")
		member(7, "!room7:x", "@a:x", "leave")
		member(7, "!room7:x", "@b:y", "join")

		var all []string
		after := ""
		for {
			page, err := storage.MutualJoinedRooms(ctx, db, "@a:x", "@b:y", after, 2)
			if err != nil {
				t.Fatal(err)
			}
			if len(page) == 0 {
				break
			}
			all = append(all, page...)
			after = page[len(page)-1]
		}
		want := []string{"!room1:x", "!room2:x", "!room3:x", "!room4:x", "!room5:x"}
		if !slices.Equal(all, want) {
			t.Fatalf("mutual rooms %v, want %v", all, want)
		}
		if n, err := storage.CountMutualJoinedRooms(ctx, db, "@b:y", "@a:x"); err != nil || n != 5 {
			t.Fatalf("count = %d, %v", n, err)
		}
		if n, err := storage.CountMutualJoinedRooms(ctx, db, "@a:x", "@nobody:x"); err != nil || n != 0 {
			t.Fatalf("count with a stranger = %d, %v", n, err)
		}
	})
}

// TestReports stores reports of every kind and lists them newest first, filtered and paged.
func TestReports(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		reason, score := "spam", int64(-100)
		blank := ""
		for _, r := range []storage.ReportRow{
			{Kind: storage.ReportEvent, Reporter: "@a:x", RoomID: "!r:x", EventID: "$e", Reason: &reason, Score: &score, ReceivedTS: 1},
			{Kind: storage.ReportEvent, Reporter: "@a:x", RoomID: "!r:x", EventID: "$f", ReceivedTS: 2},
			{Kind: storage.ReportRoom, Reporter: "@b:x", RoomID: "!r:x", Reason: &blank, ReceivedTS: 3},
			{Kind: storage.ReportUser, Reporter: "@b:x", UserID: "@c:x", Reason: &reason, ReceivedTS: 4},
		} {
			if _, err := storage.InsertReport(ctx, db, &r); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := storage.InsertReport(ctx, db, &storage.ReportRow{Kind: "nonsense", Reporter: "@a:x"}); err == nil {
			t.Fatal("a report of unknown kind was stored")
		}

		all, err := storage.ListReports(ctx, db, storage.ReportQuery{})
		if err != nil || len(all) != 4 {
			t.Fatalf("all reports: %+v, %v", all, err)
		}
		if all[0].Kind != storage.ReportUser || all[0].UserID != "@c:x" || all[0].RoomID != "" || *all[0].Reason != "spam" {
			t.Fatalf("newest report %+v", all[0])
		}
		if all[1].Reason == nil || *all[1].Reason != "" || all[1].Score != nil {
			t.Fatalf("room report %+v", all[1])
		}
		if all[2].Reason != nil || all[2].EventID != "$f" {
			t.Fatalf("event report without reason %+v", all[2])
		}
		if e := all[3]; e.Score == nil || *e.Score != -100 || e.Reporter != "@a:x" || e.ReceivedTS != 1 {
			t.Fatalf("event report with score %+v", e)
		}

		inRoom, err := storage.ListReports(ctx, db, storage.ReportQuery{RoomID: "!r:x", Limit: 2})
		if err != nil || len(inRoom) != 2 || inRoom[0].Kind != storage.ReportRoom || inRoom[1].EventID != "$f" {
			t.Fatalf("first page of the room's reports: %+v, %v", inRoom, err)
		}
		rest, err := storage.ListReports(ctx, db, storage.ReportQuery{RoomID: "!r:x", Before: inRoom[1].ID, Limit: 2})
		if err != nil || len(rest) != 1 || rest[0].EventID != "$e" {
			t.Fatalf("second page of the room's reports: %+v, %v", rest, err)
		}
		aboutUser, err := storage.ListReports(ctx, db, storage.ReportQuery{UserID: "@c:x"})
		if err != nil || len(aboutUser) != 1 || aboutUser[0].Kind != storage.ReportUser {
			t.Fatalf("reports about @c:x: %+v, %v", aboutUser, err)
		}
	})
}
