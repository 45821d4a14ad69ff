package storage_test

import (
	"context"
	"sync"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

func TestOneTimeKeysClaimedOnce(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		user, device := "@alice:example.org", "DEV"
		keys := []storage.OneTimeKey{
			{Algorithm: "signed_curve25519", KeyID: "A", KeyJSON: []byte(`{"key":"a"}`)},
			{Algorithm: "signed_curve25519", KeyID: "B", KeyJSON: []byte(`{"key":"b"}`)},
		}
		if err := storage.InsertOneTimeKeys(ctx, db, user, device, keys); err != nil {
			t.Fatal(err)
		}
		// A retried upload is fine; the same ID with other contents is not.
		if err := storage.InsertOneTimeKeys(ctx, db, user, device, keys[:1]); err != nil {
			t.Fatalf("retried upload: %v", err)
		}
		conflict := []storage.OneTimeKey{{Algorithm: "signed_curve25519", KeyID: "A", KeyJSON: []byte(`{"key":"x"}`)}}
		if err := storage.InsertOneTimeKeys(ctx, db, user, device, conflict); err != storage.ErrKeyConflict {
			t.Fatalf("conflicting upload: %v", err)
		}
		if err := storage.PutFallbackKey(ctx, db, user, device, storage.OneTimeKey{Algorithm: "signed_curve25519", KeyID: "F", KeyJSON: []byte(`{"key":"f","fallback":true}`)}); err != nil {
			t.Fatal(err)
		}
		// Concurrent claims: each one-time key goes to exactly one claimer, then the
		// fallback key serves the rest.
		var mu sync.Mutex
		got := map[string]int{}
		var wg sync.WaitGroup
		for i := 0; i < 6; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				k, ok, err := storage.ClaimOneTimeKey(ctx, db, user, device, "signed_curve25519")
				if err != nil || !ok {
					t.Errorf("claim: %v %v", ok, err)
					return
				}
				mu.Lock()
				got[k.KeyID]++
				mu.Unlock()
			}()
		}
		wg.Wait()
		if got["A"] != 1 || got["B"] != 1 || got["F"] != 4 {
			t.Fatalf("claims = %v, want A and B once, F for the rest", got)
		}
		counts, err := storage.CountOneTimeKeys(ctx, db, user, device)
		if err != nil || counts["signed_curve25519"] != 0 {
			t.Fatalf("counts = %v, %v", counts, err)
		}
		unused, err := storage.UnusedFallbackKeyTypes(ctx, db, user, device)
		if err != nil || len(unused) != 0 {
			t.Fatalf("used fallback still unused: %v %v", unused, err)
		}
		if _, ok, _ := storage.ClaimOneTimeKey(ctx, db, user, "OTHER", "signed_curve25519"); ok {
			t.Fatal("claimed a key of a device without keys")
		}
	})
}

// TestOneTimeKeysClaimedInUploadOrder: claims give out the keys of earlier uploads first
// (v1.13, MSC4225), whatever their key IDs, and an upload after some claims still comes
// after what is left of the earlier ones.
func TestOneTimeKeysClaimedInUploadOrder(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		user, device := "@alice:example.org", "DEV"
		upload := func(ids ...string) {
			t.Helper()
			var keys []storage.OneTimeKey
			for _, id := range ids {
				keys = append(keys, storage.OneTimeKey{Algorithm: "signed_curve25519", KeyID: id, KeyJSON: []byte(`{"key":"` + id + `"}`)})
			}
			if err := storage.InsertOneTimeKeys(ctx, db, user, device, keys); err != nil {
				t.Fatal(err)
			}
		}
		claim := func() string {
			t.Helper()
			k, ok, err := storage.ClaimOneTimeKey(ctx, db, user, device, "signed_curve25519")
			if err != nil || !ok {
				t.Fatalf("claim: %v %v", ok, err)
			}
			return k.KeyID
		}
		upload("Z1", "Z2")
		upload("A1")
		if first := claim(); first != "Z1" && first != "Z2" {
			t.Fatalf("first claim %s, want a key of the first upload", first)
		}
		upload("B1")
		var rest []string
		for range 3 {
			rest = append(rest, claim())
		}
		if (rest[0] != "Z1" && rest[0] != "Z2") || rest[1] != "A1" || rest[2] != "B1" {
			t.Fatalf("claims %v, want the rest of the first upload, then A1, then B1", rest)
		}
	})
}

func TestToDeviceInbox(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		msg := func(device string) storage.ToDeviceMessage {
			return storage.ToDeviceMessage{UserID: "@bob:example.org", DeviceID: device, Sender: "@alice:example.org", Type: "m.test", Content: []byte(`{}`)}
		}
		err := db.WithTx(ctx, func(tx *storage.Tx) error {
			stored, err := storage.InsertToDevice(ctx, tx, "ALICEDEV", "txn1", 5, 1, []storage.ToDeviceMessage{msg("B1"), msg("B2")})
			if err != nil || !stored {
				t.Errorf("first send: %v %v", stored, err)
			}
			again, err := storage.InsertToDevice(ctx, tx, "ALICEDEV", "txn1", 6, 1, []storage.ToDeviceMessage{msg("B1")})
			if err != nil || again {
				t.Errorf("repeated transaction stored again: %v %v", again, err)
			}
			_, err = storage.InsertToDevice(ctx, tx, "ALICEDEV", "txn2", 7, 1, []storage.ToDeviceMessage{msg("B1")})
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := storage.ToDeviceSince(ctx, db, "@bob:example.org", "B1", 0, 10, 100)
		if err != nil || len(got) != 2 || got[0].StreamPos != 5 || got[1].StreamPos != 7 {
			t.Fatalf("inbox = %+v, %v", got, err)
		}
		if err := storage.DeleteToDeviceThrough(ctx, db, "@bob:example.org", "B1", 5); err != nil {
			t.Fatal(err)
		}
		got, _ = storage.ToDeviceSince(ctx, db, "@bob:example.org", "B1", 0, 10, 100)
		if len(got) != 1 || got[0].StreamPos != 7 {
			t.Fatalf("after acknowledging 5: %+v", got)
		}
		if pos, err := storage.MaxStreamPos(ctx, db); err != nil || pos < 7 {
			t.Fatalf("MaxStreamPos = %d, %v: the to-device stream must count", pos, err)
		}
		if err := db.WithTx(ctx, func(tx *storage.Tx) error {
			return storage.DeleteDeviceE2E(ctx, tx, "@bob:example.org", []string{"B2"})
		}); err != nil {
			t.Fatal(err)
		}
		got, _ = storage.ToDeviceSince(ctx, db, "@bob:example.org", "B2", 0, 10, 100)
		if len(got) != 0 {
			t.Fatalf("deleted device keeps %d messages", len(got))
		}
	})
}

func TestKeyBackupVersions(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		user := "@alice:example.org"
		v1, err := storage.CreateBackupVersion(ctx, db, user, "m.megolm_backup.v1.curve25519-aes-sha2", []byte(`{"public_key":"a"}`))
		if err != nil || v1 != 1 {
			t.Fatalf("first version %d, %v", v1, err)
		}
		k := &storage.BackupKey{RoomID: "!r:example.org", SessionID: "s", FirstMessageIndex: 1, SessionData: []byte(`{"ciphertext":"x"}`)}
		if err := storage.PutBackupKey(ctx, db, user, v1, k); err != nil {
			t.Fatal(err)
		}
		if err := storage.BumpBackupEtag(ctx, db, user, v1); err != nil {
			t.Fatal(err)
		}
		b, err := storage.LoadBackupVersion(ctx, db, user, 0)
		if err != nil || b.Version != v1 || b.Count != 1 || b.Etag != 1 {
			t.Fatalf("current backup = %+v, %v", b, err)
		}
		if err := storage.DeleteBackupVersion(ctx, db, user, v1); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LoadBackupVersion(ctx, db, user, v1); err != storage.ErrNotFound {
			t.Fatalf("deleted version: %v", err)
		}
		v2, err := storage.CreateBackupVersion(ctx, db, user, "m.megolm_backup.v1.curve25519-aes-sha2", []byte(`{}`))
		if err != nil || v2 != 2 {
			t.Fatalf("a deleted version number was reused: %d, %v", v2, err)
		}
		if keys, _ := storage.BackupKeys(ctx, db, user, v1, "", ""); len(keys) != 0 {
			t.Fatalf("deleted version keeps %d keys", len(keys))
		}
	})
}

func TestOutboundDeviceListStream(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		user := "@alice:example.org"
		if id, err := storage.OutboundDeviceListStreamID(ctx, db, user); err != nil || id != 0 {
			t.Fatalf("stream_id before any update: %d, %v", id, err)
		}
		state, err := storage.LockOutboundDeviceList(ctx, db, user)
		if err != nil || state.StreamID != 0 || len(state.Devices) != 0 {
			t.Fatalf("fresh state: %+v, %v", state, err)
		}
		if err := storage.SaveOutboundDeviceList(ctx, db, user, 2, "cross", map[string]string{"A": "a", "B": "b"}, nil); err != nil {
			t.Fatal(err)
		}
		if err := storage.SaveOutboundDeviceList(ctx, db, user, 3, "cross", map[string]string{"A": "a2"}, []string{"B"}); err != nil {
			t.Fatal(err)
		}
		state, err = storage.LockOutboundDeviceList(ctx, db, user)
		if err != nil || state.StreamID != 3 || state.CrossSigningDigest != "cross" || len(state.Devices) != 1 || state.Devices["A"] != "a2" {
			t.Fatalf("state after updates: %+v, %v", state, err)
		}
		if id, err := storage.OutboundDeviceListStreamID(ctx, db, user); err != nil || id != 3 {
			t.Fatalf("stream_id: %d, %v", id, err)
		}
	})
}

func TestRemoteDeviceListCache(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		user := "@bob:remote.example"
		if _, ok, err := storage.RemoteDeviceListStreamID(ctx, db, user); ok || err != nil {
			t.Fatalf("uncached user: %v, %v", ok, err)
		}
		if cached, err := storage.SetRemoteCrossSigningKeys(ctx, db, user, []byte(`{"m":1}`), nil); cached || err != nil {
			t.Fatalf("cross-signing keys of an uncached user: %v, %v", cached, err)
		}
		list := &storage.RemoteDeviceList{UserID: user, StreamID: 7, MasterKey: []byte(`{"m":1}`), Devices: []storage.RemoteDevice{
			{DeviceID: "X", KeyJSON: []byte(`{"x":1}`), DisplayName: "phone"},
			{DeviceID: "Y", KeyJSON: []byte(`{"y":1}`)},
		}}
		if err := storage.ReplaceRemoteDeviceList(ctx, db, list, 1); err != nil {
			t.Fatal(err)
		}
		if err := storage.PutRemoteDevice(ctx, db, user, storage.RemoteDevice{DeviceID: "Z", KeyJSON: []byte(`{"z":1}`)}); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteRemoteDevice(ctx, db, user, "Y"); err != nil {
			t.Fatal(err)
		}
		if err := storage.RenameRemoteDevice(ctx, db, user, "Z", "laptop"); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetRemoteDeviceListStreamID(ctx, db, user, 9, 2); err != nil {
			t.Fatal(err)
		}
		if cached, err := storage.SetRemoteCrossSigningKeys(ctx, db, user, nil, []byte(`{"s":1}`)); !cached || err != nil {
			t.Fatalf("cross-signing keys: %v, %v", cached, err)
		}
		got, err := storage.LoadRemoteDeviceList(ctx, db, user, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.StreamID != 9 || string(got.MasterKey) != `{"m":1}` || string(got.SelfSigningKey) != `{"s":1}` || len(got.Devices) != 2 ||
			got.Devices[0].DeviceID != "X" || got.Devices[0].DisplayName != "phone" || got.Devices[1].DeviceID != "Z" || got.Devices[1].DisplayName != "laptop" {
			t.Fatalf("cached list: %+v", got)
		}
		one, err := storage.LoadRemoteDeviceList(ctx, db, user, []string{"Z"})
		if err != nil || len(one.Devices) != 1 || string(one.Devices[0].KeyJSON) != `{"z":1}` {
			t.Fatalf("one device: %+v, %v", one, err)
		}
		if err := storage.DeleteRemoteDeviceList(ctx, db, user); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.LoadRemoteDeviceList(ctx, db, user, nil); err != storage.ErrNotFound {
			t.Fatalf("after delete: %v", err)
		}
	})
}
