//go:build goolm

package integration

import (
	"context"
	"fmt"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// waitForDevice syncs d until its Olm machine knows deviceID of userID: the device-list
// change crossed the servers and the client fetched the new keys, as clients do on
// device_lists.changed.
func waitForDevice(t *testing.T, d *cryptoDevice, userID id.UserID, deviceID id.DeviceID) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		devices, err := d.mach.CryptoStore.GetDevices(ctx, userID)
		if err != nil {
			t.Fatalf("%s: devices of %s: %v", d.name, userID, err)
		}
		if _, ok := devices[deviceID]; ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s never learnt of %s's device %s (knows %v)", d.name, userID, deviceID, keysOf(devices))
		}
		d.syncOnce(500)
	}
}

// TestFederatedEndToEndEncryption runs real Olm/Megolm clients on two federated servers:
// alice on the first and bob on the second, in an encrypted room. Keys are queried and
// claimed across the servers, room keys travel as m.direct_to_device EDUs, bob's device
// added later reaches alice through m.device_list_update and a resync, to-device messages
// cross exactly once, and alice's cross-signing keys reach bob.
func TestFederatedEndToEndEncryption(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		ca := testserver.NewCA(t)
		hs1 := testserver.StartFederated(t, engine, ca)
		hs2 := testserver.StartFederated(t, engine, ca)
		aliceCli := hs1.Register(t, "alice")
		bobCli := hs2.Register(t, "bob")
		a1 := newCryptoDevice(t, "alice1", aliceCli)
		b1 := newCryptoDevice(t, "bob1", bobCli)
		users := []id.UserID{aliceCli.UserID, bobCli.UserID}

		created, err := aliceCli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "public_chat",
			InitialState: []*event.Event{{
				Type:    event.StateEncryption,
				Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
			}},
		})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		roomID := created.RoomID
		if _, err := bobCli.JoinRoom(ctx, roomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.ServerName}}); err != nil {
			t.Fatalf("bob joins through %s: %v", hs1.ServerName, err)
		}
		settle(t, a1, b1)
		// Each asks for the other's keys, which the other's server answers through
		// /user/keys/query.
		for _, d := range []*cryptoDevice{a1, b1} {
			if _, err := d.mach.FetchKeys(ctx, users, true); err != nil {
				t.Fatalf("%s: fetch keys: %v", d.name, err)
			}
		}
		waitForDevice(t, a1, bobCli.UserID, b1.cli.DeviceID)
		waitForDevice(t, b1, aliceCli.UserID, a1.cli.DeviceID)

		// Each decrypts the other's messages: the Megolm keys travel over Olm, with one-time
		// keys claimed through /user/keys/claim and to-device messages as EDUs.
		for i, sender := range []*cryptoDevice{a1, b1, a1} {
			body := fmt.Sprintf("secret omelette %d from %s", i, sender.name)
			eventID := sender.send(roomID, users, body)
			waitDecrypted(t, eventID, body, a1, b1)
		}

		// Bob adds a device: its keys reach hs1 as an m.device_list_update, hs1 resyncs
		// bob's list, alice's client sees bob in device_lists.changed, and the next message
		// is shared with the new device too.
		b2 := newCryptoDevice(t, "bob2", hs2.Login(t, "bob"))
		waitForDevice(t, a1, bobCli.UserID, b2.cli.DeviceID)
		settle(t, a1, b1, b2)
		// As after any initial sync, the new device asks for the keys of the room's users.
		if _, err := b2.mach.FetchKeys(ctx, users, true); err != nil {
			t.Fatalf("bob2: fetch keys: %v", err)
		}
		later := "secret frittata for the new device"
		eventID := a1.send(roomID, users, later)
		waitDecrypted(t, eventID, later, b1, b2)
		fromNew := "secret scramble from the new device"
		eventID = b2.send(roomID, users, fromNew)
		waitDecrypted(t, eventID, fromNew, a1, b1)

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

		// Alice's cross-signing keys reach bob: hs1 sends m.signing_key_update and the
		// device update with the new signature, hs2 brings its copy up to date.
		keysCache, err := a1.mach.GenerateCrossSigningKeys()
		if err != nil {
			t.Fatalf("generate cross-signing keys: %v", err)
		}
		if err := a1.mach.PublishCrossSigningKeys(ctx, keysCache, nil); err != nil {
			t.Fatalf("publish cross-signing keys: %v", err)
		}
		if err := a1.mach.SignOwnDevice(ctx, a1.mach.OwnIdentity()); err != nil {
			t.Fatalf("sign own device: %v", err)
		}
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

		// Neither server stored a plaintext.
		for _, hs := range []*testserver.Server{hs1, hs2} {
			var leaks int
			if err := hs.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM events WHERE json LIKE '%secret%'`).Scan(&leaks); err != nil {
				t.Fatal(err)
			}
			if leaks != 0 {
				t.Fatalf("%s stored %d events with plaintext", hs.ServerName, leaks)
			}
		}
	})
}
