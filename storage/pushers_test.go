package storage_test

import (
	"context"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

func testPusher(userID, deviceID, appID, pushKey string) *storage.Pusher {
	return &storage.Pusher{UserID: userID, DeviceID: deviceID, Kind: "http", AppID: appID, PushKey: pushKey,
		AppDisplayName: "App", DeviceDisplayName: "Phone", Lang: "en",
		Data: []byte(`{"url":"https://gw.example/_matrix/push/v1/notify"}`), PushKeyTS: 1000}
}

func putPusher(t *testing.T, db *storage.DB, p *storage.Pusher) bool {
	t.Helper()
	created, err := storage.PutPusher(context.Background(), db, p)
	if err != nil {
		t.Fatalf("put pusher %+v: %v", p, err)
	}
	return created
}

// pushKeys lists the pushkeys of a user's pushers, oldest first.
func pushKeys(t *testing.T, db *storage.DB, userID string) []string {
	t.Helper()
	pushers, err := storage.UserPushers(context.Background(), db, userID)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range pushers {
		out = append(out, p.PushKey)
	}
	return out
}

// TestPushers: a pusher is one per user, app ID and pushkey, updated in place (moving to the
// device that set it last, its failures cleared); deleting by key, other users' pushers of
// the same key, and the pushers of deleted devices.
func TestPushers(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if !putPusher(t, db, testPusher("@a:x", "D1", "app", "k1")) {
			t.Fatal("first pusher not created")
		}
		first, _ := storage.UserPushers(ctx, db, "@a:x")
		if err := storage.SetPusherFailures(ctx, db, first[0].ID, 5, 3, 99); err != nil {
			t.Fatal(err)
		}
		again := testPusher("@a:x", "D2", "app", "k1")
		again.Lang, again.PushKeyTS = "fr", 2000
		if putPusher(t, db, again) {
			t.Fatal("setting the same pusher again created another")
		}
		if again.ID != first[0].ID {
			t.Fatalf("pusher ID changed from %d to %d", first[0].ID, again.ID)
		}
		got, _ := storage.UserPushers(ctx, db, "@a:x")
		if len(got) != 1 || got[0].DeviceID != "D2" || got[0].Lang != "fr" || got[0].PushKeyTS != 2000 ||
			got[0].FailedAttempts != 0 || got[0].RetryAt != 0 || got[0].FailingSince != 0 {
			t.Fatalf("updated pusher = %+v", got)
		}
		putPusher(t, db, testPusher("@a:x", "D1", "app", "k2"))
		putPusher(t, db, testPusher("@a:x", "D1", "other", "k1"))
		putPusher(t, db, testPusher("@b:x", "E1", "app", "k1"))
		putPusher(t, db, testPusher("@c:x", "F1", "app", "k1"))
		if n, _ := storage.CountUserPushers(ctx, db, "@a:x"); n != 3 {
			t.Fatalf("count = %d, want 3", n)
		}
		byUser, err := storage.PushersOfUsers(ctx, db, []string{"@a:x", "@b:x", "@nobody:x"})
		if err != nil || len(byUser["@a:x"]) != 3 || len(byUser["@b:x"]) != 1 || len(byUser["@nobody:x"]) != 0 {
			t.Fatalf("pushers of users = %v, %v", byUser, err)
		}

		// append false: the other users' pushers of app/k1 go, @a's and other/k1 stay.
		if err := storage.DeleteOtherUsersPushers(ctx, db, "app", "k1", "@a:x"); err != nil {
			t.Fatal(err)
		}
		if keys := pushKeys(t, db, "@b:x"); len(keys) != 0 {
			t.Fatalf("@b keeps %v", keys)
		}
		if keys := pushKeys(t, db, "@c:x"); len(keys) != 0 {
			t.Fatalf("@c keeps %v", keys)
		}
		if keys := pushKeys(t, db, "@a:x"); !slices.Equal(keys, []string{"k1", "k2", "k1"}) {
			t.Fatalf("@a has %v", keys)
		}

		if deleted, err := storage.DeletePusher(ctx, db, "@a:x", "app", "k2"); err != nil || !deleted {
			t.Fatalf("delete = %v, %v", deleted, err)
		}
		if deleted, err := storage.DeletePusher(ctx, db, "@a:x", "app", "k2"); err != nil || deleted {
			t.Fatalf("delete again = %v, %v", deleted, err)
		}

		// Deleting device D1 takes its pusher (other/k1); D2's (app/k1) stays.
		if err := storage.DeleteDeviceE2E(ctx, db, "@a:x", []string{"D1"}); err != nil {
			t.Fatal(err)
		}
		got, _ = storage.UserPushers(ctx, db, "@a:x")
		if len(got) != 1 || got[0].AppID != "app" || got[0].DeviceID != "D2" {
			t.Fatalf("after deleting D1: %+v", got)
		}
	})
}

// TestPushPosition: the position is stored once, then only moved from where it is.
func TestPushPosition(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, found, err := storage.PushPosition(ctx, db); found || err != nil {
			t.Fatalf("position before the first start: found %v, %v", found, err)
		}
		if pos, err := storage.InitPushPosition(ctx, db, 10); pos != 10 || err != nil {
			t.Fatalf("init = %d, %v", pos, err)
		}
		if pos, err := storage.InitPushPosition(ctx, db, 50); pos != 10 || err != nil {
			t.Fatalf("init again = %d, %v; want the stored 10", pos, err)
		}
		if ok, err := storage.AdvancePushPosition(ctx, db, 10, 20); !ok || err != nil {
			t.Fatalf("advance 10→20 = %v, %v", ok, err)
		}
		if ok, err := storage.AdvancePushPosition(ctx, db, 10, 30); ok || err != nil {
			t.Fatalf("advance from a stale 10 = %v, %v", ok, err)
		}
		if pos, found, err := storage.PushPosition(ctx, db); pos != 20 || !found || err != nil {
			t.Fatalf("position = %d %v %v, want 20", pos, found, err)
		}
	})
}

// TestPushQueue: the heads are each pusher's oldest notification, due ones first; a badge
// update replaces the queued one; trimming keeps the newest; the notifications of deleted
// pushers go.
func TestPushQueue(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		p1, p2, p3 := testPusher("@a:x", "D", "app", "k1"), testPusher("@a:x", "D", "app", "k2"), testPusher("@b:x", "E", "app", "k3")
		for _, p := range []*storage.Pusher{p1, p2, p3} {
			putPusher(t, db, p)
		}
		queue := func(pusherID, eventNID int64, note string) storage.QueuedPush {
			return storage.QueuedPush{PusherID: pusherID, EventNID: eventNID, Notification: []byte(note), Tweaks: []byte(`{}`), CreatedTS: 1}
		}
		if err := storage.EnqueuePushes(ctx, db, []storage.QueuedPush{
			queue(p1.ID, 11, `{"n":1}`), queue(p1.ID, 12, `{"n":2}`), queue(p1.ID, 0, `{"badge":1}`),
			queue(p2.ID, 11, `{"n":3}`), queue(p3.ID, 13, `{"n":4}`),
		}); err != nil {
			t.Fatal(err)
		}
		if err := storage.EnqueuePushes(ctx, db, []storage.QueuedPush{queue(p1.ID, 0, `{"badge":2}`)}); err != nil {
			t.Fatal(err)
		}
		// p2 waits for a retry: it comes last.
		if err := storage.SetPusherFailures(ctx, db, p2.ID, 100, 1, 200); err != nil {
			t.Fatal(err)
		}
		heads, err := storage.PushHeads(ctx, db, nil, 10)
		if err != nil {
			t.Fatal(err)
		}
		var notes []string
		for _, h := range heads {
			notes = append(notes, string(h.Notification))
		}
		if !slices.Equal(notes, []string{`{"n":1}`, `{"n":4}`, `{"n":3}`}) || heads[2].Pusher.RetryAt != 200 || heads[0].Pusher.PushKey != "k1" {
			t.Fatalf("heads = %v", notes)
		}
		if heads, _ := storage.PushHeads(ctx, db, []int64{p1.ID, p3.ID}, 10); len(heads) != 1 || heads[0].PusherID != p2.ID {
			t.Fatalf("heads without p1, p3 = %+v", heads)
		}

		// Delivering p2's head clears its failures.
		if err := storage.DequeuePush(ctx, db, heads[2].QueueID, p2.ID, true); err != nil {
			t.Fatal(err)
		}
		pushers, _ := storage.UserPushers(ctx, db, "@a:x")
		if pushers[1].FailedAttempts != 0 || pushers[1].RetryAt != 0 {
			t.Fatalf("p2 after delivery: %+v", pushers[1])
		}

		// p1 holds n1, n2 and the second badge; trimming to 2 drops n1.
		if err := storage.TrimPushQueue(ctx, db, p1.ID, 2); err != nil {
			t.Fatal(err)
		}
		var p1Notes []string
		for {
			heads, _ := storage.PushHeads(ctx, db, []int64{p2.ID, p3.ID}, 10)
			if len(heads) == 0 {
				break
			}
			p1Notes = append(p1Notes, string(heads[0].Notification))
			if err := storage.DequeuePush(ctx, db, heads[0].QueueID, p1.ID, false); err != nil {
				t.Fatal(err)
			}
		}
		if !slices.Equal(p1Notes, []string{`{"n":2}`, `{"badge":2}`}) {
			t.Fatalf("p1's queue after trimming = %v", p1Notes)
		}

		// p3 is deleted with its device; its notification goes with the sweep.
		if err := storage.DeleteDeviceE2E(ctx, db, "@b:x", []string{"E"}); err != nil {
			t.Fatal(err)
		}
		if heads, _ := storage.PushHeads(ctx, db, nil, 10); len(heads) != 0 {
			t.Fatalf("heads of deleted pushers: %+v", heads)
		}
		if err := storage.DeleteOrphanPushes(ctx, db); err != nil {
			t.Fatal(err)
		}
		var left int
		if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM push_queue`).Scan(&left); err != nil || left != 0 {
			t.Fatalf("queue holds %d after the sweep (%v)", left, err)
		}
	})
}
