package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestPreviewCache: a cached URL preview is read back whole until it expires, replaced by
// the next one for its URL, and deleted once expired.
func TestPreviewCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const page = "https://example.org/a?b=c"
		if _, err := storage.LoadURLPreview(ctx, db, page, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("nothing cached: %v", err)
		}
		first := &storage.URLPreview{URL: page, OG: `{"og:title":"Café ☕"}`, Status: 200, CreatedTS: 1000, ExpiresTS: 2000}
		if err := storage.StoreURLPreview(ctx, db, first); err != nil {
			t.Fatal(err)
		}
		if got, err := storage.LoadURLPreview(ctx, db, page, 1999); err != nil || *got != *first {
			t.Fatalf("loaded %+v, %v; want %+v", got, err, first)
		}
		if _, err := storage.LoadURLPreview(ctx, db, page, 2000); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("expired: %v", err)
		}

		failed := &storage.URLPreview{URL: page, Status: 502, ErrCode: "M_UNKNOWN", Message: "down", CreatedTS: 2500, ExpiresTS: 3000}
		if err := storage.StoreURLPreview(ctx, db, failed); err != nil {
			t.Fatal(err)
		}
		if got, err := storage.LoadURLPreview(ctx, db, page, 2500); err != nil || *got != *failed {
			t.Fatalf("replaced: %+v, %v; want %+v", got, err, failed)
		}
		other := &storage.URLPreview{URL: "https://example.org/", OG: `{}`, Status: 200, CreatedTS: 2500, ExpiresTS: 9000}
		if err := storage.StoreURLPreview(ctx, db, other); err != nil {
			t.Fatal(err)
		}
		if n, err := storage.DeleteExpiredURLPreviews(ctx, db, 3000); err != nil || n != 1 {
			t.Fatalf("deleted %d, %v; want 1", n, err)
		}
		if _, err := storage.LoadURLPreview(ctx, db, page, 0); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("deleted preview: %v", err)
		}
		if _, err := storage.LoadURLPreview(ctx, db, other.URL, 3000); err != nil {
			t.Fatalf("unexpired preview: %v", err)
		}
	})
}
