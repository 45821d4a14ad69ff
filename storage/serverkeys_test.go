package storage_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestServerKeysKeepFreshest stores key rows in sequence and checks what survives: a row
// from a longer-valid response replaces the stored one, a staler one does not, and an
// expired_ts once learnt is kept.
func TestServerKeysKeepFreshest(t *testing.T) {
	key := func(pub byte, validUntil, expired, fetched int64) storage.ServerKey {
		return storage.ServerKey{ServerName: "remote.example", KeyID: "ed25519:a", PublicKey: []byte{pub},
			ValidUntilTS: validUntil, ExpiredTS: expired, FetchedTS: fetched}
	}
	for _, tc := range []struct {
		name string
		puts []storage.ServerKey
		want storage.ServerKey
	}{
		{"first", []storage.ServerKey{key(1, 100, 0, 10)}, key(1, 100, 0, 10)},
		{"fresher replaces", []storage.ServerKey{key(1, 100, 0, 10), key(2, 200, 0, 20)}, key(2, 200, 0, 20)},
		{"equal replaces", []storage.ServerKey{key(1, 100, 0, 10), key(1, 100, 0, 30)}, key(1, 100, 0, 30)},
		{"staler ignored", []storage.ServerKey{key(1, 200, 0, 10), key(2, 100, 0, 20)}, key(1, 200, 0, 10)},
		{"expiry learnt", []storage.ServerKey{key(1, 100, 0, 10), key(1, 200, 150, 20)}, key(1, 200, 150, 20)},
		{"expiry kept", []storage.ServerKey{key(1, 100, 90, 10), key(1, 200, 0, 20)}, key(1, 200, 90, 20)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storagetest.Each(t, func(t *testing.T, db *storage.DB) {
				ctx := context.Background()
				for _, k := range tc.puts {
					if err := storage.PutServerKeys(ctx, db, []storage.ServerKey{k}); err != nil {
						t.Fatal(err)
					}
				}
				got, err := storage.ServerKeys(ctx, db, "remote.example")
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != 1 {
					t.Fatalf("got %d rows, want 1", len(got))
				}
				if !bytes.Equal(got[0].PublicKey, tc.want.PublicKey) || got[0].ValidUntilTS != tc.want.ValidUntilTS ||
					got[0].ExpiredTS != tc.want.ExpiredTS || got[0].FetchedTS != tc.want.FetchedTS {
					t.Errorf("got %+v, want %+v", got[0], tc.want)
				}
			})
		})
	}
}

// TestServerKeysPerServer lists only the asked server's keys, in key ID order.
func TestServerKeysPerServer(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		err := storage.PutServerKeys(ctx, db, []storage.ServerKey{
			{ServerName: "a.example", KeyID: "ed25519:z", PublicKey: []byte{1}, ValidUntilTS: 5},
			{ServerName: "a.example", KeyID: "ed25519:b", PublicKey: []byte{2}, ValidUntilTS: 5, ExpiredTS: 3},
			{ServerName: "b.example", KeyID: "ed25519:c", PublicKey: []byte{3}, ValidUntilTS: 5},
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := storage.ServerKeys(ctx, db, "a.example")
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0].KeyID != "ed25519:b" || got[1].KeyID != "ed25519:z" || got[0].ExpiredTS != 3 {
			t.Errorf("got %+v", got)
		}
		none, err := storage.ServerKeys(ctx, db, "c.example")
		if err != nil || len(none) != 0 {
			t.Errorf("unknown server: %+v, %v", none, err)
		}
	})
}

// TestServerKeyResponses keeps the longest-valid response of each server.
func TestServerKeyResponses(t *testing.T) {
	resp := func(body string, validUntil, fetched int64) storage.ServerKeyResponse {
		return storage.ServerKeyResponse{ServerName: "remote.example", Response: []byte(body), ValidUntilTS: validUntil, FetchedTS: fetched}
	}
	for _, tc := range []struct {
		name string
		puts []storage.ServerKeyResponse
		want string
	}{
		{"first", []storage.ServerKeyResponse{resp("a", 100, 1)}, "a"},
		{"longer valid wins", []storage.ServerKeyResponse{resp("a", 100, 1), resp("b", 200, 2)}, "b"},
		{"shorter ignored", []storage.ServerKeyResponse{resp("a", 200, 1), resp("b", 100, 2)}, "a"},
		{"tie to later fetch", []storage.ServerKeyResponse{resp("a", 100, 1), resp("b", 100, 2)}, "b"},
		{"tie earlier fetch ignored", []storage.ServerKeyResponse{resp("a", 100, 2), resp("b", 100, 1)}, "a"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			storagetest.Each(t, func(t *testing.T, db *storage.DB) {
				ctx := context.Background()
				if _, found, err := storage.GetServerKeyResponse(ctx, db, "remote.example"); err != nil || found {
					t.Fatalf("before any put: found=%v err=%v", found, err)
				}
				for _, r := range tc.puts {
					if err := storage.PutServerKeyResponse(ctx, db, r); err != nil {
						t.Fatal(err)
					}
				}
				got, found, err := storage.GetServerKeyResponse(ctx, db, "remote.example")
				if err != nil || !found {
					t.Fatalf("found=%v err=%v", found, err)
				}
				if string(got.Response) != tc.want {
					t.Errorf("response %q, want %q", got.Response, tc.want)
				}
			})
		})
	}
}
