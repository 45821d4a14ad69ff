package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestLockAndSuspendAccount: new accounts are neither locked nor suspended; the flags are
// set and cleared one at a time, read back by LoadAccountStatus and carried by the
// access-token lookup; unknown and deactivated accounts are ErrNotFound.
func TestLockAndSuspendAccount(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		const user, gone = "@bob:x", "@gone:x"
		token := []byte("token-hash-of-bob")
		for _, id := range []string{user, gone} {
			if err := storage.InsertUser(ctx, db, &storage.UserRow{UserID: id}, 1); err != nil {
				t.Fatal(err)
			}
		}
		if err := storage.UpsertDevice(ctx, db, user, "PHONE", "", token, "", 1); err != nil {
			t.Fatal(err)
		}
		check := func(locked, suspended bool) {
			t.Helper()
			status, err := storage.LoadAccountStatus(ctx, db, user)
			if err != nil || status.Locked != locked || status.Suspended != suspended || status.IsAdmin || status.Deactivated {
				t.Fatalf("status %+v, %v; want locked %v, suspended %v", status, err, locked, suspended)
			}
			owner, err := storage.DeviceByToken(ctx, db, token)
			if err != nil || owner.UserID != user || owner.DeviceID != "PHONE" || owner.Locked != locked || owner.Suspended != suspended {
				t.Fatalf("token owner %+v, %v; want locked %v, suspended %v", owner, err, locked, suspended)
			}
		}
		check(false, false)
		if err := storage.SetAccountLocked(ctx, db, user, true); err != nil {
			t.Fatal(err)
		}
		check(true, false)
		if err := storage.SetAccountSuspended(ctx, db, user, true); err != nil {
			t.Fatal(err)
		}
		check(true, true)
		// Setting a flag to the value it has is no error.
		if err := storage.SetAccountLocked(ctx, db, user, true); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetAccountLocked(ctx, db, user, false); err != nil {
			t.Fatal(err)
		}
		check(false, true)
		if err := storage.SetAccountSuspended(ctx, db, user, false); err != nil {
			t.Fatal(err)
		}
		check(false, false)

		if _, err := storage.LoadAccountStatus(ctx, db, "@nobody:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("status of an unknown account: %v", err)
		}
		if _, err := storage.DeviceByToken(ctx, db, []byte("unknown")); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown token: %v", err)
		}
		if err := storage.DeactivateUser(ctx, db, gone, false); err != nil {
			t.Fatal(err)
		}
		for _, id := range []string{"@nobody:x", gone} {
			if err := storage.SetAccountLocked(ctx, db, id, true); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("locking %s: %v", id, err)
			}
			if err := storage.SetAccountSuspended(ctx, db, id, true); !errors.Is(err, storage.ErrNotFound) {
				t.Fatalf("suspending %s: %v", id, err)
			}
		}
	})
}
