package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestMediaRows: media is stored once per URI, read back whole, quarantined and released.
func TestMediaRows(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.LoadMedia(ctx, db, "x", "nothing"); err != storage.ErrNotFound {
			t.Fatalf("unknown media: %v", err)
		}
		m := &storage.Media{Origin: "x", MediaID: "abc", ContentType: "image/png", UploadName: "cat ☺.png", Size: 42,
			SHA256: "00ff", UserID: "@a:x", CreatedTS: 1000}
		if err := storage.InsertMedia(ctx, db, m); err != nil {
			t.Fatal(err)
		}
		if err := storage.InsertMedia(ctx, db, m); err != storage.ErrExists {
			t.Fatalf("second insert: %v, want ErrExists", err)
		}
		got, err := storage.LoadMedia(ctx, db, "x", "abc")
		if err != nil || *got != *m || got.Pending() {
			t.Fatalf("loaded %+v, %v; want %+v", got, err, m)
		}
		if err := storage.SetMediaQuarantined(ctx, db, "x", "abc", true); err != nil {
			t.Fatal(err)
		}
		if got, _ := storage.LoadMedia(ctx, db, "x", "abc"); !got.Quarantined {
			t.Fatal("not quarantined")
		}
		if err := storage.SetMediaQuarantined(ctx, db, "x", "abc", false); err != nil {
			t.Fatal(err)
		}
		if got, _ := storage.LoadMedia(ctx, db, "x", "abc"); got.Quarantined {
			t.Fatal("still quarantined")
		}
		if err := storage.SetMediaQuarantined(ctx, db, "x", "none", true); err != storage.ErrNotFound {
			t.Fatalf("quarantine unknown media: %v", err)
		}
	})
}

// TestMediaPendingUploads: a user has at most the allowed number of unexpired pending
// uploads; an upload completes a pending one once; expired ones are deleted.
func TestMediaPendingUploads(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		create := func(id string, expires int64) error {
			return db.WithTx(ctx, func(tx *storage.Tx) error {
				return storage.CreatePendingMedia(ctx, tx, &storage.Media{Origin: "x", MediaID: id, UserID: "@a:x",
					CreatedTS: 100, UnusedExpiresTS: expires}, 2, 500)
			})
		}
		if err := create("old", 400); err != nil { // already expired at 500: does not count
			t.Fatal(err)
		}
		if err := create("p1", 1000); err != nil {
			t.Fatal(err)
		}
		if err := create("p2", 1000); err != nil {
			t.Fatal(err)
		}
		if err := create("p3", 1000); !errors.Is(err, storage.ErrTooManyPending) {
			t.Fatalf("third pending upload: %v, want ErrTooManyPending", err)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.CreatePendingMedia(ctx, tx, &storage.Media{Origin: "x", MediaID: "b1", UserID: "@b:x",
				CreatedTS: 100, UnusedExpiresTS: 1000}, 2, 500)
		}); err != nil {
			t.Fatalf("another user's pending upload: %v", err)
		}
		if m, err := storage.LoadMedia(ctx, db, "x", "p1"); err != nil || !m.Pending() || m.UnusedExpiresTS != 1000 {
			t.Fatalf("pending media = %+v, %v", m, err)
		}

		done := &storage.Media{Origin: "x", MediaID: "p1", ContentType: "text/plain", UploadName: "a.txt", Size: 3,
			SHA256: "beef", CreatedTS: 600}
		if ok, err := storage.CompletePendingMedia(ctx, db, done); !ok || err != nil {
			t.Fatalf("complete: %v, %v", ok, err)
		}
		if ok, err := storage.CompletePendingMedia(ctx, db, done); ok || err != nil {
			t.Fatalf("complete again: %v, %v; want false", ok, err)
		}
		m, err := storage.LoadMedia(ctx, db, "x", "p1")
		if err != nil || m.Pending() || m.SHA256 != "beef" || m.UnusedExpiresTS != 0 || m.UserID != "@a:x" || m.CreatedTS != 600 {
			t.Fatalf("completed media = %+v, %v", m, err)
		}
		if err := create("p3", 1000); err != nil {
			t.Fatalf("pending upload after one completed: %v", err)
		}

		n, err := storage.DeleteExpiredPendingMedia(ctx, db, 1000)
		if err != nil || n != 4 { // old, p2, p3, b1
			t.Fatalf("deleted %d, %v; want 4", n, err)
		}
		if _, err := storage.LoadMedia(ctx, db, "x", "p1"); err != nil {
			t.Fatalf("uploaded media deleted: %v", err)
		}
	})
}

// TestMediaThumbnails: one thumbnail per box and method; the first stored is kept.
func TestMediaThumbnails(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		if _, err := storage.LoadThumbnail(ctx, db, "x", "abc", 32, 32, "crop"); err != storage.ErrNotFound {
			t.Fatalf("no thumbnail yet: %v", err)
		}
		thumb := &storage.Thumbnail{Origin: "x", MediaID: "abc", Width: 32, Height: 32, Method: "crop",
			ContentType: "image/png", Size: 10, SHA256: "aa", CreatedTS: 5}
		if err := storage.InsertThumbnail(ctx, db, thumb); err != nil {
			t.Fatal(err)
		}
		other := *thumb
		other.SHA256 = "bb"
		if err := storage.InsertThumbnail(ctx, db, &other); err != nil {
			t.Fatal(err)
		}
		got, err := storage.LoadThumbnail(ctx, db, "x", "abc", 32, 32, "crop")
		if err != nil || *got != *thumb {
			t.Fatalf("thumbnail = %+v, %v; want %+v", got, err, thumb)
		}
		if _, err := storage.LoadThumbnail(ctx, db, "x", "abc", 32, 32, "scale"); err != storage.ErrNotFound {
			t.Fatalf("other method: %v", err)
		}
	})
}
