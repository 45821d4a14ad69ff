//go:build goolm

// The end-to-end encryption tests drive mautrix-go's crypto (OlmMachine) against the server.
// mautrix's crypto links libolm through cgo unless built with the "goolm" tag, which selects
// its pure-Go Olm/Megolm: run them with `go test -tags goolm` (the Makefile does).

package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/crypto"
	"maunium.net/go/mautrix/crypto/backup"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/testserver"
)

// cryptoDevice is one logged-in device with its own Olm machine and stores in memory.
type cryptoDevice struct {
	t     *testing.T
	name  string
	cli   *mautrix.Client
	mach  *crypto.OlmMachine
	state *mautrix.MemoryStateStore
	since string
	// decrypted maps the event IDs this device decrypted to their bodies; pending holds
	// encrypted events whose key has not arrived yet.
	decrypted map[id.EventID]string
	pending   []*event.Event
	// custom collects to-device events of the test's own type.
	custom []*event.Event
}

const customToDeviceType = "org.scrambledeggs.test"

func newCryptoDevice(t *testing.T, name string, cli *mautrix.Client) *cryptoDevice {
	t.Helper()
	ctx := context.Background()
	state := mautrix.NewMemoryStateStore().(*mautrix.MemoryStateStore)
	mach := crypto.NewOlmMachine(cli, nil, crypto.NewMemoryStore(nil), state)
	if err := mach.Load(ctx); err != nil {
		t.Fatalf("%s: load olm machine: %v", name, err)
	}
	if err := mach.ShareKeys(ctx, 0); err != nil {
		t.Fatalf("%s: upload keys: %v", name, err)
	}
	return &cryptoDevice{t: t, name: name, cli: cli, mach: mach, state: state, decrypted: map[id.EventID]string{}}
}

// syncOnce runs one /sync and hands everything to the Olm machine, as a client app does.
func (d *cryptoDevice) syncOnce(timeout int) *mautrix.RespSync {
	d.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := d.cli.SyncRequest(ctx, timeout, d.since, "", false, event.PresenceOnline)
	if err != nil {
		d.t.Fatalf("%s: sync: %v", d.name, err)
	}
	var encrypted []*event.Event
	for roomID, room := range resp.Rooms.Join {
		for _, evt := range append(slices.Clone(room.State.Events), room.Timeline.Events...) {
			evt.RoomID = roomID
			if evt.StateKey != nil {
				evt.Type.Class = event.StateEventType
				_ = evt.Content.ParseRaw(evt.Type)
				mautrix.UpdateStateStore(ctx, d.state, evt)
				continue
			}
			if evt.Type == event.EventEncrypted {
				evt.Type.Class = event.MessageEventType
				if err := evt.Content.ParseRaw(evt.Type); err == nil {
					encrypted = append(encrypted, evt)
				}
			}
		}
	}
	for _, evt := range resp.ToDevice.Events {
		if evt.Type.Type == customToDeviceType {
			d.custom = append(d.custom, evt)
		}
	}
	d.mach.ProcessSyncResponse(ctx, resp, d.since)
	d.since = resp.NextBatch
	d.pending = append(d.pending, encrypted...)
	still := d.pending[:0]
	for _, evt := range d.pending {
		plain, err := d.mach.DecryptMegolmEvent(ctx, evt)
		if err != nil {
			still = append(still, evt)
			continue
		}
		_ = plain.Content.ParseRaw(plain.Type)
		if msg := plain.Content.AsMessage(); msg != nil {
			d.decrypted[evt.ID] = msg.Body
		}
	}
	d.pending = still
	return resp
}

// send encrypts a text message for the room's members as a client does: share the Megolm
// session with every device of users, encrypt, send.
func (d *cryptoDevice) send(roomID id.RoomID, users []id.UserID, body string) id.EventID {
	d.t.Helper()
	ctx := context.Background()
	if err := d.mach.ShareGroupSession(ctx, roomID, users); err != nil {
		d.t.Fatalf("%s: share group session: %v", d.name, err)
	}
	content, err := d.mach.EncryptMegolmEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{MsgType: event.MsgText, Body: body})
	if err != nil {
		d.t.Fatalf("%s: encrypt: %v", d.name, err)
	}
	resp, err := d.cli.SendMessageEvent(ctx, roomID, event.EventEncrypted, content)
	if err != nil {
		d.t.Fatalf("%s: send: %v", d.name, err)
	}
	return resp.EventID
}

// settle syncs every device until a round brings none of them anything new, so that device
// list changes and keys have been seen everywhere.
func settle(t *testing.T, devices ...*cryptoDevice) {
	t.Helper()
	for round := 0; round < 10; round++ {
		quiet := true
		for _, d := range devices {
			resp := d.syncOnce(0)
			if len(resp.DeviceLists.Changed) > 0 || len(resp.DeviceLists.Left) > 0 || len(resp.ToDevice.Events) > 0 || len(resp.Rooms.Join) > 0 {
				quiet = false
			}
		}
		if quiet {
			return
		}
	}
}

// waitDecrypted syncs the devices until each has decrypted eventID to body.
func waitDecrypted(t *testing.T, eventID id.EventID, body string, devices ...*cryptoDevice) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, d := range devices {
		for d.decrypted[eventID] != body {
			if time.Now().After(deadline) {
				t.Fatalf("%s did not decrypt %s (%q); got %q, %d pending", d.name, eventID, body, d.decrypted[eventID], len(d.pending))
			}
			d.syncOnce(500)
		}
	}
}

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

		created, err := aliceCli.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Preset: "private_chat", Invite: []id.UserID{bobCli.UserID},
			InitialState: []*event.Event{{
				Type:    event.StateEncryption,
				Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
			}},
		})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		roomID := created.RoomID
		if _, err := bobCli.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		all := []*cryptoDevice{a1, a2, b1, b2}
		settle(t, all...)
		// After its initial sync a client asks for the keys of the users it shares
		// encrypted rooms with ("Tracking the device list for a user"); from then on it
		// follows device_lists in incremental syncs.
		for _, d := range all {
			if _, err := d.mach.FetchKeys(ctx, users, true); err != nil {
				t.Fatalf("%s: fetch keys: %v", d.name, err)
			}
		}

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
		query, err := bobCli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{aliceCli.UserID: {}}})
		if err != nil {
			t.Fatalf("query keys: %v", err)
		}
		if _, ok := query.DeviceKeys[aliceCli.UserID][a2.cli.DeviceID]; ok || len(query.DeviceKeys[aliceCli.UserID]) != 1 {
			t.Fatalf("alice's devices after logout: %v, want only %s", keysOf(query.DeviceKeys[aliceCli.UserID]), a1.cli.DeviceID)
		}
		afterLogout := "secret toast after the logout"
		eventID = b1.send(roomID, users, afterLogout)
		waitDecrypted(t, eventID, afterLogout, all...)
		if _, err := a2.mach.DecryptMegolmEvent(ctx, mustGetEvent(t, b1.cli, roomID, eventID)); err == nil {
			t.Fatalf("the removed device can decrypt a message sent after its removal")
		}
		var inbox int
		if err := srv.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1 AND device_id = $2`,
			aliceCli.UserID.String(), a2.cli.DeviceID.String()).Scan(&inbox); err != nil || inbox != 0 {
			t.Fatalf("to-device messages stored for the removed device: %d (%v)", inbox, err)
		}

		// To-device messages survive a restart and arrive exactly once.
		_, err = b2.cli.SendToDevice(ctx, event.NewEventType(customToDeviceType), &mautrix.ReqSendToDevice{
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
		query, err = bobCli.QueryKeys(ctx, &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{aliceCli.UserID: {}}})
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
		backupKey, err := backup.NewMegolmBackupKey()
		if err != nil {
			t.Fatal(err)
		}
		version, err := bobCli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
			Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
			AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))},
		})
		if err != nil {
			t.Fatalf("create backup: %v", err)
		}
		var sessionID id.SessionID
		for _, evt := range []*event.Event{mustGetEvent(t, bobCli, roomID, eventID)} {
			sessionID = evt.Content.AsEncrypted().SessionID
		}
		session, err := b1.mach.CryptoStore.GetGroupSession(ctx, roomID, sessionID)
		if err != nil || session == nil {
			t.Fatalf("bob1's session %s: %v", sessionID, err)
		}
		exported, err := session.Internal.Export(session.Internal.FirstKnownIndex())
		if err != nil {
			t.Fatal(err)
		}
		encrypted, err := backup.EncryptSessionData(backupKey, backup.MegolmSessionData{
			Algorithm: id.AlgorithmMegolmV1, SenderKey: session.SenderKey, SessionKey: string(exported),
			SenderClaimedKeys: backup.SenderClaimedKeys{Ed25519: session.SigningKey}, ForwardingKeyChain: []string{},
		})
		if err != nil {
			t.Fatal(err)
		}
		sessionJSON, _ := json.Marshal(encrypted)
		put, err := bobCli.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
			roomID: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sessionID: {
				FirstMessageIndex: int(session.Internal.FirstKnownIndex()), SessionData: sessionJSON,
			}}},
		}})
		if err != nil || put.Count != 1 {
			t.Fatalf("put keys in backup: %+v, %v", put, err)
		}
		b4 := newCryptoDevice(t, "bob4", srv.Login(t, "bob"))
		if err := b4.mach.GetAndStoreKeyBackup(ctx, version.Version, backupKey); err != nil {
			t.Fatalf("restore backup: %v", err)
		}
		restored, err := b4.mach.DecryptMegolmEvent(ctx, mustGetEvent(t, b4.cli, roomID, eventID))
		if err != nil {
			t.Fatalf("decrypt with restored key: %v", err)
		}
		_ = restored.Content.ParseRaw(restored.Type)
		if restored.Content.AsMessage().Body != afterLogout {
			t.Fatalf("restored message %q, want %q", restored.Content.AsMessage().Body, afterLogout)
		}

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

// mustGetEvent fetches an encrypted event through the client API, ready to decrypt.
func mustGetEvent(t *testing.T, cli *mautrix.Client, roomID id.RoomID, eventID id.EventID) *event.Event {
	t.Helper()
	evt, err := cli.GetEvent(context.Background(), roomID, eventID)
	if err != nil {
		t.Fatalf("get event %s: %v", eventID, err)
	}
	evt.RoomID = roomID
	evt.Type.Class = event.MessageEventType
	if err := evt.Content.ParseRaw(evt.Type); err != nil {
		t.Fatalf("parse %s: %v", eventID, err)
	}
	return evt
}

func keysOf[V any](m map[id.DeviceID]V) []id.DeviceID {
	var out []id.DeviceID
	for k := range m {
		out = append(out, k)
	}
	return out
}
