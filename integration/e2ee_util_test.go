//go:build goolm

// Shared helpers of the end-to-end encryption tests, which need the "goolm" tag like them
// (see e2ee_test.go).

package integration

import (
	"context"
	"encoding/base64"
	"encoding/json"
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

// waitForDevice syncs d until its Olm machine knows deviceID of userID: the device-list
// change crossed the servers and the client fetched the new keys, as clients do on
// device_lists.changed.
func waitForDevice(t *testing.T, d *cryptoDevice, userID id.UserID, deviceID id.DeviceID) {
	t.Helper()
	waitForDeviceList(t, d, userID, deviceID, true)
}

// waitForDeviceGone syncs d until its Olm machine no longer knows deviceID of userID: the
// deletion crossed the servers and the client fetched the shorter list.
func waitForDeviceGone(t *testing.T, d *cryptoDevice, userID id.UserID, deviceID id.DeviceID) {
	t.Helper()
	waitForDeviceList(t, d, userID, deviceID, false)
}

func waitForDeviceList(t *testing.T, d *cryptoDevice, userID id.UserID, deviceID id.DeviceID, present bool) {
	t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(30 * time.Second)
	for {
		devices, err := d.mach.CryptoStore.GetDevices(ctx, userID)
		if err != nil {
			t.Fatalf("%s: devices of %s: %v", d.name, userID, err)
		}
		if _, ok := devices[deviceID]; ok == present {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s's device %s present=%v, want %v (knows %v)", d.name, userID, deviceID, !present, present, keysOf(devices))
		}
		d.syncOnce(500)
	}
}

// createEncryptedRoom has cli create the room req describes, with Megolm encryption from
// the start.
func createEncryptedRoom(t *testing.T, cli *mautrix.Client, req *mautrix.ReqCreateRoom) id.RoomID {
	t.Helper()
	req.InitialState = append(req.InitialState, &event.Event{
		Type:    event.StateEncryption,
		Content: event.Content{Parsed: &event.EncryptionEventContent{Algorithm: id.AlgorithmMegolmV1}},
	})
	created, err := cli.CreateRoom(context.Background(), req)
	if err != nil {
		t.Fatalf("create room: %v", err)
	}
	return created.RoomID
}

// fetchKeys has each device ask for the keys of users, as a client does after its initial
// sync ("Tracking the device list for a user").
func fetchKeys(t *testing.T, users []id.UserID, devices ...*cryptoDevice) {
	t.Helper()
	for _, d := range devices {
		if _, err := d.mach.FetchKeys(context.Background(), users, true); err != nil {
			t.Fatalf("%s: fetch keys: %v", d.name, err)
		}
	}
}

// expectOnlyDevice fails unless querier's /keys/query lists exactly one device of user, and
// not removed.
func expectOnlyDevice(t *testing.T, querier *mautrix.Client, user id.UserID, removed, remaining id.DeviceID) {
	t.Helper()
	query, err := querier.QueryKeys(context.Background(), &mautrix.ReqQueryKeys{DeviceKeys: mautrix.DeviceKeysRequest{user: {}}})
	if err != nil {
		t.Fatalf("query keys: %v", err)
	}
	if _, ok := query.DeviceKeys[user][removed]; ok || len(query.DeviceKeys[user]) != 1 {
		t.Fatalf("%s sees %s's devices %v after the logout, want only %s", querier.UserID, user, keysOf(query.DeviceKeys[user]), remaining)
	}
}

// expectShutOut fails if the removed (logged-out) device can decrypt eventID, read through
// reader, or if srv still stores to-device messages for it.
func expectShutOut(t *testing.T, srv *testserver.Server, removed *cryptoDevice, reader *mautrix.Client, roomID id.RoomID, eventID id.EventID) {
	t.Helper()
	ctx := context.Background()
	if _, err := removed.mach.DecryptMegolmEvent(ctx, mustGetEvent(t, reader, roomID, eventID)); err == nil {
		t.Fatalf("the removed device can decrypt a message sent after its removal")
	}
	var inbox int
	if err := srv.Homeserver().DB().QueryRow(ctx, `SELECT COUNT(*) FROM to_device_messages WHERE user_id = $1 AND device_id = $2`,
		removed.cli.UserID.String(), removed.cli.DeviceID.String()).Scan(&inbox); err != nil || inbox != 0 {
		t.Fatalf("to-device messages stored on %s for the removed device: %d (%v)", srv.ServerName, inbox, err)
	}
}

// publishCrossSigning generates and publishes cross-signing keys for d's user and signs d's
// device with them.
func publishCrossSigning(t *testing.T, d *cryptoDevice) *crypto.CrossSigningKeysCache {
	t.Helper()
	ctx := context.Background()
	keysCache, err := d.mach.GenerateCrossSigningKeys()
	if err != nil {
		t.Fatalf("generate cross-signing keys: %v", err)
	}
	if err := d.mach.PublishCrossSigningKeys(ctx, keysCache, nil); err != nil {
		t.Fatalf("publish cross-signing keys: %v", err)
	}
	if err := d.mach.SignOwnDevice(ctx, d.mach.OwnIdentity()); err != nil {
		t.Fatalf("sign own device: %v", err)
	}
	return keysCache
}

// uploadBackup creates a key backup for owner's user on its server and backs up to it, from
// owner's Olm machine, the Megolm session of eventID.
func uploadBackup(t *testing.T, owner *cryptoDevice, roomID id.RoomID, eventID id.EventID) (id.KeyBackupVersion, *backup.MegolmBackupKey) {
	t.Helper()
	ctx := context.Background()
	backupKey, err := backup.NewMegolmBackupKey()
	if err != nil {
		t.Fatal(err)
	}
	version, err := owner.cli.CreateKeyBackupVersion(ctx, &mautrix.ReqRoomKeysVersionCreate[backup.MegolmAuthData]{
		Algorithm: id.KeyBackupAlgorithmMegolmBackupV1,
		AuthData:  backup.MegolmAuthData{PublicKey: id.Ed25519(base64.RawStdEncoding.EncodeToString(backupKey.PublicKey().Bytes()))},
	})
	if err != nil {
		t.Fatalf("%s: create backup: %v", owner.name, err)
	}
	sessionID := mustGetEvent(t, owner.cli, roomID, eventID).Content.AsEncrypted().SessionID
	session, err := owner.mach.CryptoStore.GetGroupSession(ctx, roomID, sessionID)
	if err != nil || session == nil {
		t.Fatalf("%s's session %s: %v", owner.name, sessionID, err)
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
	put, err := owner.cli.PutKeysInBackup(ctx, version.Version, &mautrix.ReqKeyBackup{Rooms: map[id.RoomID]mautrix.ReqRoomKeyBackup{
		roomID: {Sessions: map[id.SessionID]mautrix.ReqKeyBackupData{sessionID: {
			FirstMessageIndex: int(session.Internal.FirstKnownIndex()), SessionData: sessionJSON,
		}}},
	}})
	if err != nil || put.Count != 1 {
		t.Fatalf("%s: put keys in backup: %+v, %v", owner.name, put, err)
	}
	return version.Version, backupKey
}

// restoreBackup has d restore the key backup and decrypt eventID to body with it.
func restoreBackup(t *testing.T, d *cryptoDevice, version id.KeyBackupVersion, backupKey *backup.MegolmBackupKey, roomID id.RoomID, eventID id.EventID, body string) {
	t.Helper()
	ctx := context.Background()
	if err := d.mach.GetAndStoreKeyBackup(ctx, version, backupKey); err != nil {
		t.Fatalf("%s: restore backup: %v", d.name, err)
	}
	restored, err := d.mach.DecryptMegolmEvent(ctx, mustGetEvent(t, d.cli, roomID, eventID))
	if err != nil {
		t.Fatalf("%s: decrypt with restored key: %v", d.name, err)
	}
	_ = restored.Content.ParseRaw(restored.Type)
	if got := restored.Content.AsMessage().Body; got != body {
		t.Fatalf("%s: restored message %q, want %q", d.name, got, body)
	}
}

// backupRoundTrip backs up, from owner's Olm machine, the Megolm session of eventID to
// owner's server, then logs in a fresh device of the same user on srv, which cannot decrypt
// eventID before restoring the backup and decrypts it to body after.
func backupRoundTrip(t *testing.T, srv *testserver.Server, owner *cryptoDevice, localpart string, roomID id.RoomID, eventID id.EventID, body string) {
	t.Helper()
	version, backupKey := uploadBackup(t, owner, roomID, eventID)
	fresh := newCryptoDevice(t, owner.name+"-restored", srv.Login(t, localpart))
	if _, err := fresh.mach.DecryptMegolmEvent(context.Background(), mustGetEvent(t, fresh.cli, roomID, eventID)); err == nil {
		t.Fatalf("%s decrypts %s before restoring the backup", fresh.name, eventID)
	}
	restoreBackup(t, fresh, version, backupKey, roomID, eventID, body)
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
