//go:build goolm

// The end-to-end encryption tests drive mautrix-go's crypto (OlmMachine) against the server.
// mautrix's crypto links libolm through cgo unless built with the "goolm" tag, which selects
// its pure-Go Olm/Megolm: run them with `go test -tags goolm` (the Makefile does).

package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/testserver"
)

// TestEndToEndEncryption runs real Olm/Megolm clients against one server: two users with two
// devices each in an encrypted room, a device added later, a device removed, to-device
// messages across a restart, cross-signing and key backup — and no plaintext in the
// database.
func TestEndToEndEncryption(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		aliceCli := srv.Register(t, "alice")
		bobCli := srv.Register(t, "bob")
		a1 := newCryptoDevice(t, "alice1", aliceCli)
		a2 := newCryptoDevice(t, "alice2", srv.Login(t, "alice"))
		b1 := newCryptoDevice(t, "bob1", bobCli)
		b2 := newCryptoDevice(t, "bob2", srv.Login(t, "bob"))
		users := []id.UserID{aliceCli.UserID, bobCli.UserID}

		roomID := createEncryptedRoom(t, aliceCli, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bobCli.UserID}})
		if _, err := bobCli.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		all := []*cryptoDevice{a1, a2, b1, b2}
		settle(t, all...)
		// After its initial sync a client asks for the keys of the users it shares
		// encrypted rooms with ("Tracking the device list for a user"); from then on it
		// follows device_lists in incremental syncs.
		fetchKeys(t, users, all...)

		// Every device decrypts every message, whoever sends it.
		for i, sender := range all {
			body := fmt.Sprintf("secret breakfast %d from %s", i, sender.name)
			eventID := sender.send(roomID, users, body)
			waitDecrypted(t, eventID, body, all...)
		}

		// A device added later receives later messages.
		b3 := newCryptoDevice(t, "bob3", srv.Login(t, "bob"))
		all = append(all, b3)
		settle(t, all...)
		later := "secret eggs for the new device"
		eventID := a1.send(roomID, users, later)
		waitDecrypted(t, eventID, later, all...)

		// A removed device stops receiving: its keys are gone from /keys/query, and the next
		// message is shared with the remaining devices only.
		if _, err := a2.cli.Logout(ctx); err != nil {
			t.Fatalf("alice2 logs out: %v", err)
		}
		all = []*cryptoDevice{a1, b1, b2, b3}
		settle(t, all...)
		expectOnlyDevice(t, bobCli, aliceCli.UserID, a2.cli.DeviceID, a1.cli.DeviceID)
		afterLogout := "secret toast after the logout"
		eventID = b1.send(roomID, users, afterLogout)
		waitDecrypted(t, eventID, afterLogout, all...)
		expectShutOut(t, srv, a2, b1.cli, roomID, eventID)

		// To-device messages survive a restart and arrive exactly once.
		_, err := b2.cli.SendToDevice(ctx, event.NewEventType(customToDeviceType), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{
				aliceCli.UserID: {a1.cli.DeviceID: {Raw: map[string]any{"n": 1}}},
			},
		})
		if err != nil {
			t.Fatalf("send to device: %v", err)
		}
		srv.Restart()
		deadline := time.Now().Add(20 * time.Second)
		for len(a1.custom) == 0 && time.Now().Before(deadline) {
			a1.syncOnce(500)
		}
		for i := 0; i < 3; i++ {
			a1.syncOnce(0)
		}
		if len(a1.custom) != 1 || a1.custom[0].Sender != b2.cli.UserID {
			t.Fatalf("alice1 received the to-device message %d times, want once", len(a1.custom))
		}

		// Cross-signing keys are published, visible to others, and signatures go through.
		keysCache := publishCrossSigning(t, a1)
		query, err := bobCli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{aliceCli.UserID: {}}})
		if err != nil {
			t.Fatalf("query keys: %v", err)
		}
		master := keysCache.MasterKey.PublicKey()
		if got := query.MasterKeys[aliceCli.UserID].Keys[id.NewKeyID(id.KeyAlgorithmEd25519, master.String())]; got != master {
			t.Fatalf("bob sees alice's master key %q, want %q", got, master)
		}
		if len(query.SelfSigningKeys[aliceCli.UserID].Keys) != 1 || len(query.UserSigningKeys) != 0 {
			t.Fatalf("bob sees self-signing %v and user-signing %v", query.SelfSigningKeys, query.UserSigningKeys)
		}
		selfSigning := keysCache.SelfSigningKey.PublicKey().String()
		if _, ok := query.DeviceKeys[aliceCli.UserID][a1.cli.DeviceID].Signatures[aliceCli.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, selfSigning)]; !ok {
			t.Fatalf("alice1's device keys lack the self-signing signature: %v", query.DeviceKeys[aliceCli.UserID][a1.cli.DeviceID].Signatures)
		}
		own, err := aliceCli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{aliceCli.UserID: {}}})
		if err != nil || len(own.UserSigningKeys[aliceCli.UserID].Keys) != 1 {
			t.Fatalf("alice does not see her user-signing key: %v %v", own, err)
		}

		// A key backup round-trips: a fresh device of bob restores the room keys and reads
		// an old message with them.
		version, backupKey := uploadBackup(t, b1, roomID, eventID)
		b4 := newCryptoDevice(t, "bob4", srv.Login(t, "bob"))
		restoreBackup(t, b4, version, backupKey, roomID, eventID, afterLogout)

		// The server never saw a plaintext: no stored event of the room holds one.
		var leaks int
		if err := srv.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE json LIKE '%secret%'`).Scan(&leaks); err != nil {
			t.Fatal(err)
		}
		var encryptedEvents int
		if err := srv.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE type = 'm.room.encrypted'`).Scan(&encryptedEvents); err != nil {
			t.Fatal(err)
		}
		if leaks != 0 || encryptedEvents < 6 {
			t.Fatalf("%d stored events hold plaintext, %d are encrypted", leaks, encryptedEvents)
		}
	})
}
