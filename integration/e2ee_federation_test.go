//go:build goolm

package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestFederatedEndToEndEncryption runs real Olm/Megolm clients on two federated servers:
// alice with two devices on the first and bob with two on the second (one added later), in
// an encrypted room. Keys are queried and claimed across the servers, room keys travel as
// m.direct_to_device EDUs, every device decrypts every message, bob's device added later
// reaches alice through m.device_list_update and a resync, alice's logged-out device stops
// receiving, to-device messages cross exactly once (also when the receiving server was down
// and both restarted), alice's cross-signing keys reach bob, key backups round-trip on both
// servers, and neither server stores a plaintext.
func TestFederatedEndToEndEncryption(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		aliceCli := hs1.Register(t, "alice")
		bobCli := hs2.Register(t, "bob")
		a1 := newCryptoDevice(t, "alice1", aliceCli)
		a2 := newCryptoDevice(t, "alice2", hs1.Login(t, "alice"))
		b1 := newCryptoDevice(t, "bob1", bobCli)
		users := []id.UserID{aliceCli.UserID, bobCli.UserID}

		roomID := createEncryptedRoom(t, aliceCli, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		joinVia(t, roomID, hs1, bobCli)
		all := []*cryptoDevice{a1, a2, b1}
		settle(t, all...)
		// Each asks for the room's users' keys, which the other's server answers through
		// /user/keys/query.
		fetchKeys(t, users, all...)
		knowEachOther := func(devices []*cryptoDevice) {
			t.Helper()
			for _, d := range devices {
				for _, other := range devices {
					if other != d {
						waitForDevice(t, d, other.cli.UserID, other.cli.DeviceID)
					}
				}
			}
		}
		knowEachOther(all)

		// Every device decrypts every message, whoever sends it: the Megolm keys travel over
		// Olm, with one-time keys claimed through /user/keys/claim and to-device messages as
		// EDUs.
		sent := 0
		lastFrom := map[*cryptoDevice]struct {
			eventID id.EventID
			body    string
		}{}
		sendAll := func(devices []*cryptoDevice, format string) {
			t.Helper()
			for _, sender := range devices {
				body := fmt.Sprintf(format, sent, sender.name)
				eventID := sender.send(roomID, users, body)
				sent++
				waitDecrypted(t, eventID, body, devices...)
				lastFrom[sender] = struct {
					eventID id.EventID
					body    string
				}{eventID, body}
			}
		}
		sendAll(all, "secret omelette %d from %s")

		// Bob adds a device: its keys reach hs1 as an m.device_list_update, hs1 resyncs
		// bob's list, alice's clients see bob in device_lists.changed, and later messages
		// are shared with the new device too — and it can send to everyone.
		b2 := newCryptoDevice(t, "bob2", hs2.Login(t, "bob"))
		all = append(all, b2)
		for _, d := range []*cryptoDevice{a1, a2, b1} {
			waitForDevice(t, d, bobCli.UserID, b2.cli.DeviceID)
		}
		settle(t, all...)
		// As after any initial sync, the new device asks for the keys of the room's users.
		fetchKeys(t, users, b2)
		knowEachOther(all)
		sendAll(all, "secret frittata %d from %s")

		// A to-device message crosses the servers exactly once, addressed to one device or
		// to all of them.
		before := len(a1.custom)
		for n, target := range []id.DeviceID{a1.cli.DeviceID, "*"} {
			_, err := b2.cli.SendToDevice(ctx, event.NewEventType(customToDeviceType), &mautrix.ReqSendToDevice{
				Messages: map[id.UserID]map[id.DeviceID]*event.Content{aliceCli.UserID: {target: {Raw: map[string]any{"n": n}}}},
			})
			if err != nil {
				t.Fatalf("send to device: %v", err)
			}
		}
		deadline := time.Now().Add(30 * time.Second)
		for len(a1.custom) < before+2 && time.Now().Before(deadline) {
			a1.syncOnce(500)
		}
		for i := 0; i < 3; i++ {
			a1.syncOnce(200)
		}
		got := a1.custom[before:]
		if len(got) != 2 {
			t.Fatalf("alice1 received %d to-device messages, want 2", len(got))
		}
		for n, evt := range got {
			if evt.Sender != bobCli.UserID || evt.Content.Raw["n"] != float64(n) {
				t.Fatalf("to-device message %d: from %s, content %v", n, evt.Sender, evt.Content.Raw)
			}
		}

		// A removed device stops receiving: alice2 logs out on hs1, the deletion reaches hs2
		// as an m.device_list_update, bob's clients drop the device (and rotate their Megolm
		// sessions), and the next message from hs2 is shared with the remaining devices only.
		if _, err := a2.cli.Logout(ctx); err != nil {
			t.Fatalf("alice2 logs out: %v", err)
		}
		all = []*cryptoDevice{a1, b1, b2}
		for _, d := range all {
			waitForDeviceGone(t, d, aliceCli.UserID, a2.cli.DeviceID)
		}
		settle(t, all...)
		expectOnlyDevice(t, bobCli, aliceCli.UserID, a2.cli.DeviceID, a1.cli.DeviceID)
		afterLogout := "secret toast after the logout"
		eventID := b1.send(roomID, users, afterLogout)
		sent++
		waitDecrypted(t, eventID, afterLogout, all...)
		sessionID := mustGetEvent(t, b1.cli, roomID, eventID).Content.AsEncrypted().SessionID
		outbound, err := b1.mach.CryptoStore.GetOutboundGroupSession(ctx, roomID)
		if err != nil || outbound == nil || outbound.ID() != sessionID {
			t.Fatalf("bob1's outbound session: %v, %v; want %s", outbound, err, sessionID)
		}
		if state := outbound.Users[crypto.UserDevice{UserID: aliceCli.UserID, DeviceID: a2.cli.DeviceID}]; state != crypto.OGSNotShared {
			t.Fatalf("bob1's session after the logout is shared with the removed device (state %d)", state)
		}
		if state := outbound.Users[crypto.UserDevice{UserID: aliceCli.UserID, DeviceID: a1.cli.DeviceID}]; state != crypto.OGSAlreadyShared {
			t.Fatalf("bob1's session after the logout is not shared with alice1 (state %d)", state)
		}
		expectShutOut(t, hs1, a2, a1.cli, roomID, eventID)

		// A to-device message sent while the receiving server is down waits in the sending
		// server's queue — across a restart of the sender too — and arrives exactly once
		// when the receiver is back, and not again after another restart.
		before = len(b1.custom)
		hs2.Stop()
		_, err = a1.cli.SendToDevice(ctx, event.NewEventType(customToDeviceType), &mautrix.ReqSendToDevice{
			Messages: map[id.UserID]map[id.DeviceID]*event.Content{bobCli.UserID: {b1.cli.DeviceID: {Raw: map[string]any{"n": 7}}}},
		})
		if err != nil {
			t.Fatalf("send to device while %s is down: %v", hs2.ServerName, err)
		}
		hs1.Restart()
		hs2.Restart()
		// Bob speaks, so hs1 hears from hs2 and ends its backoff; the room still works.
		afterRestart := "secret hash browns after the restarts"
		restartEventID := b1.send(roomID, users, afterRestart)
		sent++
		waitDecrypted(t, restartEventID, afterRestart, all...)
		deadline = time.Now().Add(30 * time.Second)
		for len(b1.custom) == before && time.Now().Before(deadline) {
			b1.syncOnce(500)
		}
		hs2.Restart()
		for i := 0; i < 3; i++ {
			b1.syncOnce(200)
		}
		got = b1.custom[before:]
		if len(got) != 1 {
			t.Fatalf("bob1 received the to-device message sent while %s was down %d times, want once", hs2.ServerName, len(got))
		}
		if got[0].Sender != aliceCli.UserID || got[0].Content.Raw["n"] != float64(7) {
			t.Fatalf("to-device message: from %s, content %v", got[0].Sender, got[0].Content.Raw)
		}
		if n := len(b2.custom); n != 0 {
			t.Fatalf("bob2 received %d to-device messages addressed to bob1", n)
		}

		// Alice's cross-signing keys reach bob: hs1 sends m.signing_key_update and the
		// device update with the new signature, hs2 brings its copy up to date.
		keysCache := publishCrossSigning(t, a1)
		master := keysCache.MasterKey.PublicKey()
		selfSigning := keysCache.SelfSigningKey.PublicKey().String()
		deadline = time.Now().Add(30 * time.Second)
		for {
			query, err := bobCli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{aliceCli.UserID: {}}})
			if err != nil {
				t.Fatalf("query keys: %v", err)
			}
			_, signed := query.DeviceKeys[aliceCli.UserID][a1.cli.DeviceID].Signatures[aliceCli.UserID][id.NewKeyID(id.KeyAlgorithmEd25519, selfSigning)]
			gotMaster := query.MasterKeys[aliceCli.UserID].Keys[id.NewKeyID(id.KeyAlgorithmEd25519, master.String())]
			if gotMaster == master && len(query.SelfSigningKeys[aliceCli.UserID].Keys) == 1 && signed && len(query.Failures) == 0 {
				if len(query.UserSigningKeys) != 0 {
					t.Fatalf("bob sees alice's user-signing key: %v", query.UserSigningKeys)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("bob sees master %v, self-signing %v, signed device %v, failures %v", query.MasterKeys,
					query.SelfSigningKeys, signed, query.Failures)
			}
			time.Sleep(200 * time.Millisecond)
		}

		// Key backups round-trip on both servers: each user backs up the session of a
		// message the other sent from the other server, and a fresh device restores it.
		backupRoundTrip(t, hs2, b1, "bob", roomID, lastFrom[a1].eventID, lastFrom[a1].body)
		backupRoundTrip(t, hs1, a1, "alice", roomID, restartEventID, afterRestart)

		// Neither server stored a plaintext: every event of the room is there, encrypted.
		for _, hs := range []*testserver.Server{hs1, hs2} {
			var leaks, encryptedEvents int
			if err := hs.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM events e JOIN rooms r ON r.room_nid = e.room_nid
				WHERE r.room_id = $1 AND e.json LIKE '%secret%'`, roomID.String()).Scan(&leaks); err != nil {
				t.Fatal(err)
			}
			if err := hs.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM events e JOIN rooms r ON r.room_nid = e.room_nid
				WHERE r.room_id = $1 AND e.type = 'm.room.encrypted'`, roomID.String()).Scan(&encryptedEvents); err != nil {
				t.Fatal(err)
			}
			if leaks != 0 || encryptedEvents != sent {
				t.Fatalf("%s: %d stored events of the room hold plaintext, %d are encrypted (want %d)", hs.ServerName, leaks, encryptedEvents, sent)
			}
			var anywhere int
			if err := hs.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE json LIKE '%secret%'`).Scan(&anywhere); err != nil || anywhere != 0 {
				t.Fatalf("%s stored %d events with plaintext (%v)", hs.ServerName, anywhere, err)
			}
		}
	})
}
