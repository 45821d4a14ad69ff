package federation

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/keys"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Device lists across servers (server-server API "Device Management"): every change of one
// of our users' device lists — a device's keys uploaded or changed, a device deleted, its
// cross-signing keys replaced — becomes m.device_list_update EDUs (one per device, each
// with the user's next stream_id and the previous one as prev_id) and an
// m.signing_key_update for every server sharing a room with the user, queued durably with
// the change itself. Other servers fetch the whole list with GET /user/devices/{userId}.
//
// The device lists of other servers' users that share a room with ours are cached, kept up
// to date from their EDUs: "If the receiving server does not have all of the prev_ids, it
// must resync the device list" (here as soon as the gap is seen, through GET
// /user/devices/{userId} on the user's server). Each change is announced to our users who
// share a room with that user, in device_lists.changed of /sync.

// E2EE is the end-to-end encryption part of the federation API: device lists, key queries
// and claims, and to-device messages (e2ee.go). It shares the API's identity, database and
// queue, and reaches our users' keys and inboxes through Local.
type E2EE struct {
	*API
	Local LocalKeys
}

// LocalKeys is what the client API offers the federation of our users' end-to-end
// encryption.
type LocalKeys interface {
	// QueryLocalKeys answers a key query for our users (user ID → device IDs, none meaning
	// all) as other servers may see them: device keys by user and device, master keys and
	// self-signing keys by user.
	QueryLocalKeys(ctx context.Context, request map[string][]string) (devices map[string]map[string]json.RawMessage,
		master, selfSigning map[string]json.RawMessage, err error)
	// ClaimLocalKeys claims one-time keys (else fallback keys) of our users' devices: user
	// ID → device ID → algorithm in, user ID → device ID → key ID → key out.
	ClaimLocalKeys(ctx context.Context, request map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error)
	// ReceiveToDevice delivers a to-device message of another server's user to our users'
	// devices ("*" meaning all of a user's devices), once per messageID.
	ReceiveToDevice(ctx context.Context, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error
	// ChangeRemoteDeviceList runs fn in a transaction; when it reports a change of the
	// device list of userID (another server's user), our users sharing a room with them are
	// told in their next /sync.
	ChangeRemoteDeviceList(ctx context.Context, userID string, fn func(tx *storage.Tx) (bool, error)) error
}

// EDU types of end-to-end encryption.
const (
	eduDeviceListUpdate = "m.device_list_update"
	eduSigningKeyUpdate = "m.signing_key_update"
	eduDirectToDevice   = "m.direct_to_device"
)

// Limits of device lists over federation. NOTSPEC: the spec sets none.
const (
	// maxKeysBody bounds the bodies of /user/keys/query and /user/keys/claim.
	maxKeysBody = 1 << 20
	// maxRemoteDevices bounds the devices of one user that we accept from another server.
	maxRemoteDevices = 10_000
	// maxDevicesResponse bounds the answer of GET /user/devices and of key queries.
	maxDevicesResponse = 16 << 20
	// maxDeviceDisplayName bounds a remote device's display name we keep.
	maxDeviceDisplayName = 1000
	// resyncTimeout bounds one resync of a remote user's device list.
	resyncTimeout = 30 * time.Second
)

// Routes mounts the end-to-end encryption endpoints on r:
//
//	GET  /_matrix/federation/v1/user/devices/{userId}
//	POST /_matrix/federation/v1/user/keys/query
//	POST /_matrix/federation/v1/user/keys/claim
func (e *E2EE) Routes(r chi.Router) {
	auth := &Authenticator{ServerName: e.ServerName, Keys: e.Keys, Now: e.Clock, MaxBodySize: maxKeysBody}
	r.Group(func(r chi.Router) {
		r.Use(auth.Middleware)
		r.Method(http.MethodGet, "/_matrix/federation/v1/user/devices/{userId}", e.handler(e.userDevices))
		r.Method(http.MethodPost, "/_matrix/federation/v1/user/keys/query", e.handler(e.userKeysQuery))
		r.Method(http.MethodPost, "/_matrix/federation/v1/user/keys/claim", e.handler(e.userKeysClaim))
	})
}

// HandleEDUs registers the handlers of m.device_list_update, m.signing_key_update and
// m.direct_to_device with the Inbound processor.
func (e *E2EE) HandleEDUs() {
	e.Inbound.HandleEDU(eduDeviceListUpdate, e.receiveDeviceListUpdate)
	e.Inbound.HandleEDU(eduSigningKeyUpdate, e.receiveSigningKeyUpdate)
	e.Inbound.HandleEDU(eduDirectToDevice, e.receiveDirectToDevice)
}

// Wake makes the queues of destinations send what was queued for them.
func (e *E2EE) Wake(destinations ...string) {
	if len(destinations) > 0 {
		e.Sender.Notify(destinations...)
	}
}

// userDevice is one device of GET /user/devices and of m.device_list_update.
type userDevice struct {
	DeviceID    string          `json:"device_id"`
	Keys        json.RawMessage `json:"keys"`
	DisplayName string          `json:"device_display_name,omitempty"`
}

// localDeviceList is the device list of one of our users as other servers see it: the
// devices that have identity keys, with the signatures the user made of them, and the
// master and self-signing keys (nil when absent) with the user's own signatures.
func localDeviceList(ctx context.Context, q storage.Querier, userID string) (devices []userDevice, master, selfSigning json.RawMessage, err error) {
	rows, err := storage.QueryDeviceKeys(ctx, q, userID, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	signatures, err := storage.KeySignaturesOf(ctx, q, userID, userID)
	if err != nil {
		return nil, nil, nil, err
	}
	byTarget := map[string][]storage.KeySignature{}
	for _, s := range signatures {
		byTarget[s.TargetKeyID] = append(byTarget[s.TargetKeyID], s)
	}
	devices = make([]userDevice, 0, len(rows))
	for _, row := range rows {
		devices = append(devices, userDevice{DeviceID: row.DeviceID, Keys: keys.WithSignatures(row.KeyJSON, byTarget[row.DeviceID]),
			DisplayName: row.DisplayName})
	}
	cross, err := storage.CrossSigningKeys(ctx, q, userID)
	if err != nil {
		return nil, nil, nil, err
	}
	withSigs := func(keyType string) json.RawMessage {
		key := keys.StoredCrossSigningKey(cross[keyType], userID, keyType)
		if key == nil {
			return nil
		}
		return keys.WithSignatures(cross[keyType], byTarget[key.PublicKey])
	}
	return devices, withSigs(storage.KeyTypeMaster), withSigs(storage.KeyTypeSelfSigning), nil
}

// digest fingerprints what is announced of a device or of the cross-signing keys.
func digest(parts ...[]byte) string {
	h := sha256.New()
	for _, p := range parts {
		fmt.Fprintf(h, "%d:", len(p))
		h.Write(p)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// deviceListUpdate is the content of an m.device_list_update EDU.
type deviceListUpdate struct {
	UserID      string          `json:"user_id"`
	DeviceID    string          `json:"device_id"`
	DisplayName string          `json:"device_display_name,omitempty"`
	StreamID    int64           `json:"stream_id"`
	PrevID      []int64         `json:"prev_id"`
	Deleted     bool            `json:"deleted,omitempty"`
	Keys        json.RawMessage `json:"keys,omitempty"`
}

// signingKeyUpdate is the content of an m.signing_key_update EDU.
type signingKeyUpdate struct {
	UserID         string          `json:"user_id"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// QueueDeviceListUpdates announces, in q (the transaction that changed the device list of
// userID, one of our users), what changed since the last announcement: an
// m.device_list_update for each device whose keys or name changed or that was deleted, and
// an m.signing_key_update when the cross-signing keys changed, queued for every other server
// sharing a room with the user. It returns the servers to Wake once q is committed.
func (e *E2EE) QueueDeviceListUpdates(ctx context.Context, q storage.Querier, userID string) ([]string, error) {
	announced, err := storage.LockOutboundDeviceList(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	devices, master, selfSigning, err := localDeviceList(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	streamID := announced.StreamID
	next := func() (int64, []int64) {
		prev := []int64{}
		if streamID > 0 {
			prev = append(prev, streamID)
		}
		streamID++
		return streamID, prev
	}
	var edus [][]byte
	add := func(eduType string, content any) error {
		edu, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
		if err == nil {
			edus = append(edus, edu)
		}
		return err
	}
	changed := map[string]string{}
	current := map[string]bool{}
	for _, d := range devices {
		current[d.DeviceID] = true
		sum := digest(d.Keys, []byte(d.DisplayName))
		if announced.Devices[d.DeviceID] == sum {
			continue
		}
		changed[d.DeviceID] = sum
		id, prev := next()
		if err := add(eduDeviceListUpdate, deviceListUpdate{UserID: userID, DeviceID: d.DeviceID, DisplayName: d.DisplayName,
			StreamID: id, PrevID: prev, Keys: d.Keys}); err != nil {
			return nil, err
		}
	}
	var deleted []string
	for deviceID := range announced.Devices {
		if !current[deviceID] {
			deleted = append(deleted, deviceID)
		}
	}
	sort.Strings(deleted)
	for _, deviceID := range deleted {
		id, prev := next()
		if err := add(eduDeviceListUpdate, deviceListUpdate{UserID: userID, DeviceID: deviceID, StreamID: id, PrevID: prev,
			Deleted: true}); err != nil {
			return nil, err
		}
	}
	crossDigest := ""
	if master != nil || selfSigning != nil {
		crossDigest = digest(master, selfSigning)
	}
	if crossDigest != announced.CrossSigningDigest {
		if err := add(eduSigningKeyUpdate, signingKeyUpdate{UserID: userID, MasterKey: master, SelfSigningKey: selfSigning}); err != nil {
			return nil, err
		}
	}
	if len(edus) == 0 {
		return nil, nil
	}
	if err := storage.SaveOutboundDeviceList(ctx, q, userID, streamID, crossDigest, changed, deleted); err != nil {
		return nil, err
	}
	destinations, err := e.serversSharingRooms(ctx, q, userID)
	if err != nil || len(destinations) == 0 {
		return nil, err
	}
	now := e.Clock().UnixMilli()
	for _, edu := range edus {
		if err := storage.EnqueueEDU(ctx, q, destinations, edu, now); err != nil {
			return nil, fmt.Errorf("queue device list update: %w", err)
		}
	}
	return destinations, nil
}

// serversSharingRooms lists, sorted, the other servers with users joined to a room userID
// is joined to.
func (e *E2EE) serversSharingRooms(ctx context.Context, q storage.Querier, userID string) ([]string, error) {
	return serversSharingRooms(ctx, q, e.ServerName, userID)
}

// userDevicesResponse is the answer of GET /user/devices/{userId} (user_devices.yaml).
type userDevicesResponse struct {
	UserID         string          `json:"user_id"`
	StreamID       int64           `json:"stream_id"`
	Devices        []userDevice    `json:"devices"`
	MasterKey      json.RawMessage `json:"master_key,omitempty"`
	SelfSigningKey json.RawMessage `json:"self_signing_key,omitempty"`
}

// GET /_matrix/federation/v1/user/devices/{userId} (user_devices.yaml getUserDevices): the
// devices of one of our users with their identity keys and display names, the cross-signing
// keys, and the stream_id of the last m.device_list_update, which the asking server matches
// against later EDUs. A user without devices (or unknown) has an empty list.
func (e *E2EE) userDevices(w http.ResponseWriter, r *http.Request, origin string) error {
	userID := pathParam(r, "userId")
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	if string(user.Server()) != e.ServerName {
		return httpapi.InvalidParam("User %s does not belong to this server", userID)
	}
	ctx := r.Context()
	// The stream_id is read first: a change committed in between is then sent again as an
	// EDU after this stream_id, which the asking server applies once more, harmlessly.
	streamID, err := storage.OutboundDeviceListStreamID(ctx, e.DB, userID)
	if err != nil {
		return err
	}
	devices, master, selfSigning, err := localDeviceList(ctx, e.DB, userID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, userDevicesResponse{UserID: userID, StreamID: streamID, Devices: devices,
		MasterKey: master, SelfSigningKey: selfSigning})
	return nil
}

// userOf checks that userID is a valid user ID of origin.
func userOf(origin, userID string) error {
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return fmt.Errorf("bad user ID %q", userID)
	}
	if string(user.Server()) != origin {
		return fmt.Errorf("%s cannot speak for %s", origin, userID)
	}
	return nil
}

// tracked reports whether we keep userID's device list: one of our users shares a room with
// them. A list we stopped keeping is forgotten, since its updates no longer reach us.
func (e *E2EE) tracked(ctx context.Context, userID string) (bool, error) {
	shares, err := storage.SharesRoomWithServer(ctx, e.DB, userID, e.ServerName)
	if err != nil || shares {
		return shares, err
	}
	return false, storage.DeleteRemoteDeviceList(ctx, e.DB, userID)
}

// receiveDeviceListUpdate applies an m.device_list_update EDU from origin (server-server
// API "Device Management"): to the cached list when every prev_id is known (the cache is at
// or past it), by a resync otherwise. An update at or below the cached stream_id was applied
// already. Our users sharing a room with the user see the change in device_lists.changed.
func (e *E2EE) receiveDeviceListUpdate(ctx context.Context, origin string, raw json.RawMessage) error {
	var u deviceListUpdate
	if err := json.Unmarshal(raw, &u); err != nil {
		return fmt.Errorf("malformed m.device_list_update: %w", err)
	}
	if err := userOf(origin, u.UserID); err != nil {
		return err
	}
	if u.DeviceID == "" || len(u.DeviceID) > keys.MaxKeyIDLength {
		return fmt.Errorf("m.device_list_update of %s: bad device ID", u.UserID)
	}
	if tracked, err := e.tracked(ctx, u.UserID); err != nil || !tracked {
		return err
	}
	var keyJSON []byte
	if !u.Deleted && len(u.Keys) > 0 && string(u.Keys) != "null" {
		_, clean, err := keys.ParseDeviceKeys(u.Keys, u.UserID, u.DeviceID)
		if err != nil {
			return fmt.Errorf("m.device_list_update of %s %s: %w", u.UserID, u.DeviceID, err)
		}
		keyJSON = clean
	}
	displayName := u.DisplayName
	if len(displayName) > maxDeviceDisplayName {
		displayName = ""
	}
	resync := false
	err := e.Local.ChangeRemoteDeviceList(ctx, u.UserID, func(tx *storage.Tx) (bool, error) {
		resync = false
		current, ok, err := storage.RemoteDeviceListStreamID(ctx, tx, u.UserID)
		if err != nil {
			return false, err
		}
		if !ok {
			resync = true
			return false, nil
		}
		if u.StreamID <= current {
			return false, nil
		}
		for _, prev := range u.PrevID {
			if prev > current {
				resync = true
				return false, nil
			}
		}
		switch {
		case u.Deleted:
			err = storage.DeleteRemoteDevice(ctx, tx, u.UserID, u.DeviceID)
		case keyJSON != nil:
			err = storage.PutRemoteDevice(ctx, tx, u.UserID, storage.RemoteDevice{DeviceID: u.DeviceID, KeyJSON: keyJSON, DisplayName: displayName})
		default:
			err = storage.RenameRemoteDevice(ctx, tx, u.UserID, u.DeviceID, displayName)
		}
		if err != nil {
			return false, err
		}
		return true, storage.SetRemoteDeviceListStreamID(ctx, tx, u.UserID, u.StreamID, e.Clock().UnixMilli())
	})
	if err != nil || !resync {
		return err
	}
	return e.ResyncDeviceList(ctx, u.UserID)
}

// ResyncDeviceList fetches the whole device list of another server's user with GET
// /user/devices/{userId} and replaces what is cached. When the user's server cannot be
// reached the cache is dropped, so that key queries ask that server again. Either way our
// users sharing a room with the user are told that the list changed.
func (e *E2EE) ResyncDeviceList(ctx context.Context, userID string) error {
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return err
	}
	list, fetchErr := e.fetchDeviceList(ctx, string(user.Server()), userID)
	err = e.Local.ChangeRemoteDeviceList(ctx, userID, func(tx *storage.Tx) (bool, error) {
		if fetchErr != nil {
			return true, storage.DeleteRemoteDeviceList(ctx, tx, userID)
		}
		return true, storage.ReplaceRemoteDeviceList(ctx, tx, list, e.Clock().UnixMilli())
	})
	if fetchErr != nil {
		return errors.Join(fmt.Errorf("resync devices of %s: %w", userID, fetchErr), err)
	}
	return err
}

// fetchDeviceList asks server for the device list of userID, keeping the devices and
// cross-signing keys that check out.
func (e *E2EE) fetchDeviceList(ctx context.Context, server, userID string) (*storage.RemoteDeviceList, error) {
	ctx, cancel := context.WithTimeout(ctx, resyncTimeout)
	defer cancel()
	var resp userDevicesResponse
	err := e.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: server,
		URI: "/_matrix/federation/v1/user/devices/" + url.PathEscape(userID), MaxResponseSize: maxDevicesResponse}, &resp)
	if err != nil {
		return nil, err
	}
	if resp.UserID != userID {
		return nil, fmt.Errorf("answer is about %q", resp.UserID)
	}
	if len(resp.Devices) > maxRemoteDevices {
		return nil, fmt.Errorf("%d devices", len(resp.Devices))
	}
	list := &storage.RemoteDeviceList{UserID: userID, StreamID: resp.StreamID}
	seen := map[string]bool{}
	for _, d := range resp.Devices {
		if seen[d.DeviceID] || d.DeviceID == "" || len(d.DeviceID) > keys.MaxKeyIDLength {
			continue
		}
		_, clean, err := keys.ParseDeviceKeys(d.Keys, userID, d.DeviceID)
		if err != nil {
			e.Log.Info("federation: device keys refused", "user", userID, "device", d.DeviceID, "reason", err)
			continue
		}
		seen[d.DeviceID] = true
		name := d.DisplayName
		if len(name) > maxDeviceDisplayName {
			name = ""
		}
		list.Devices = append(list.Devices, storage.RemoteDevice{DeviceID: d.DeviceID, KeyJSON: clean, DisplayName: name})
	}
	list.MasterKey = checkedCrossSigningKey(resp.MasterKey, userID, storage.KeyTypeMaster)
	list.SelfSigningKey = checkedCrossSigningKey(resp.SelfSigningKey, userID, storage.KeyTypeSelfSigning)
	return list, nil
}

// checkedCrossSigningKey is a cross-signing key of another server's user in canonical JSON,
// nil when absent or malformed.
func checkedCrossSigningKey(raw json.RawMessage, userID, usage string) []byte {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	key, err := keys.ParseCrossSigningKey(raw, userID, usage)
	if err != nil {
		return nil
	}
	return key.Raw
}

// receiveSigningKeyUpdate applies an m.signing_key_update EDU from origin (server-server API
// "End-to-End Encryption"): the user's new master and self-signing keys replace the cached
// ones, and our users sharing a room with them see the change in device_lists.changed.
func (e *E2EE) receiveSigningKeyUpdate(ctx context.Context, origin string, raw json.RawMessage) error {
	var u signingKeyUpdate
	if err := json.Unmarshal(raw, &u); err != nil {
		return fmt.Errorf("malformed m.signing_key_update: %w", err)
	}
	if err := userOf(origin, u.UserID); err != nil {
		return err
	}
	if tracked, err := e.tracked(ctx, u.UserID); err != nil || !tracked {
		return err
	}
	master := checkedCrossSigningKey(u.MasterKey, u.UserID, storage.KeyTypeMaster)
	selfSigning := checkedCrossSigningKey(u.SelfSigningKey, u.UserID, storage.KeyTypeSelfSigning)
	if master == nil && selfSigning == nil {
		return fmt.Errorf("m.signing_key_update of %s carries no valid key", u.UserID)
	}
	return e.Local.ChangeRemoteDeviceList(ctx, u.UserID, func(tx *storage.Tx) (bool, error) {
		_, err := storage.SetRemoteCrossSigningKeys(ctx, tx, u.UserID, master, selfSigning)
		return true, err
	})
}
