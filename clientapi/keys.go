package clientapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/keys"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// End-to-end encryption: the key management API (client-server API "End-to-End
// Encryption" › "Key management API", keys.yaml, cross_signing.yaml). The rules live in
// package keys; these handlers read and write storage, and announce device-list changes
// on the stream so that /sync and /keys/changes report them. Keys of other servers' users
// are read and claimed through the federation (RemoteKeys), and changes of our users'
// device lists are announced to the servers sharing a room with them in the same
// transaction as the change.

// keysRoutes mounts the end-to-end encryption endpoints under one client-server API version
// prefix: keys, to-device messages and key backup.
func (a *API) keysRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/keys/upload", authed(a.uploadKeys))
	r.Method(http.MethodPost, "/keys/query", authed(a.queryKeys))
	r.Method(http.MethodPost, "/keys/claim", authed(a.claimKeys))
	r.Method(http.MethodGet, "/keys/changes", authed(a.keyChanges))
	r.Method(http.MethodPost, "/keys/device_signing/upload", authed(a.uploadCrossSigningKeys))
	r.Method(http.MethodPost, "/keys/signatures/upload", authed(a.uploadSignatures))
	r.Method(http.MethodPut, "/sendToDevice/{eventType}/{txnId}", authed(a.sendToDevice))
	a.keyBackupRoutes(r, authed)
}

// Limits of the key endpoints. NOTSPEC: the spec sets none.
const (
	// maxKeysBody bounds the body of /keys/upload, /keys/query, /keys/claim and the
	// signature uploads.
	maxKeysBody = 1 << 20
	// maxQueriedDevices bounds the users plus devices named in one /keys/query or
	// /keys/claim.
	maxQueriedDevices = 10_000
	// defaultRemoteKeysTimeout is how long /keys/query and /keys/claim wait for other
	// servers when the request names no timeout (keys.yaml: "Defaults to 10 seconds"), and
	// maxRemoteKeysTimeout the longest a request may ask for (NOTSPEC).
	defaultRemoteKeysTimeout = 10 * time.Second
	maxRemoteKeysTimeout     = 60 * time.Second
)

// signedCurve25519 is the one-time key algorithm every Olm client uses; its count is always
// reported, zero included, as Synapse does, so that clients know to upload.
const signedCurve25519 = "signed_curve25519"

// isLocalUser reports whether userID belongs to this server.
func (a *API) isLocalUser(userID string) bool {
	uid, err := spec.ParseUserID(userID)
	return err == nil && string(uid.Server()) == a.cfg.ServerName
}

// serverOf is the server name of a user ID, "" if it cannot be read.
func serverOf(userID string) string {
	uid, err := spec.ParseUserID(userID)
	if err != nil {
		return ""
	}
	return string(uid.Server())
}

// changeDeviceList runs fn in a transaction at a fresh stream position; when fn reports a
// change of userID's device list, the change is recorded and announced to the users of this
// server who share a room with userID (and to userID's own other devices) through the
// stream. For one of our users, the change is also queued for the other servers sharing a
// room with them (server-server API "Device Management": m.device_list_update,
// m.signing_key_update) in the same transaction, so that it reaches them even across a
// restart.
func (a *API) changeDeviceList(ctx context.Context, userID string, fn func(tx *storage.Tx, pos int64) (bool, error)) error {
	stream := a.rooms.Stream()
	pos := stream.Allocate()
	changed := false
	isLocal := a.isLocalUser(userID)
	var destinations []string
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		changed, destinations = false, nil
		c, err := fn(tx, pos)
		if err != nil || !c {
			return err
		}
		changed = true
		if err := storage.MarkDeviceListChanged(ctx, tx, userID, pos); err != nil {
			return err
		}
		if isLocal && a.remoteKeys != nil {
			destinations, err = a.remoteKeys.QueueDeviceListUpdates(ctx, tx, userID)
		}
		return err
	})
	if err != nil || !changed {
		stream.Finish(pos)
		return err
	}
	if a.remoteKeys != nil {
		a.remoteKeys.Wake(destinations...)
	}
	viewers, verr := storage.UsersSharingRooms(ctx, a.db, userID)
	if verr != nil {
		a.log.Warn("list users sharing rooms", "user", userID, "err", verr)
	}
	var local []string
	if isLocal {
		local = append(local, userID)
	}
	for _, v := range viewers {
		if v != userID && a.isLocalUser(v) {
			local = append(local, v)
		}
	}
	changes := make([]string, len(local))
	for i, v := range local {
		changes[i] = streams.DeviceListKey(v)
	}
	stream.MarkChanged(pos, changes...)
	stream.Finish(pos, local...)
	return nil
}

// ChangeRemoteDeviceList runs fn in a transaction; when it reports a change of the device
// list of userID, a user of another server (their cached devices or cross-signing keys),
// our users sharing a room with them see userID in device_lists.changed of their next
// /sync (client-server API "Tracking the device list for a user").
func (a *API) ChangeRemoteDeviceList(ctx context.Context, userID string, fn func(tx *storage.Tx) (bool, error)) error {
	if a.isLocalUser(userID) {
		return fmt.Errorf("%s is a user of this server", userID)
	}
	return a.changeDeviceList(ctx, userID, func(tx *storage.Tx, _ int64) (bool, error) { return fn(tx) })
}

// markOneTimeKeysChanged records that a device's one-time or fallback keys changed, so that
// the counts /sync reports are read again.
func (a *API) markOneTimeKeysChanged(userID, deviceID string) {
	stream := a.rooms.Stream()
	pos := stream.Allocate()
	stream.MarkChanged(pos, streams.OneTimeKeysKey(userID, deviceID))
	stream.Finish(pos)
}

// deleteDevicesE2E deletes devices of a user with everything end-to-end encryption keeps
// for them, in tx. The caller announces the device-list change (changeDeviceList).
func deleteDevicesE2E(ctx context.Context, tx *storage.Tx, userID string, deviceIDs []string) error {
	if err := storage.DeleteDevices(ctx, tx, userID, deviceIDs); err != nil {
		return err
	}
	return storage.DeleteDeviceE2E(ctx, tx, userID, deviceIDs)
}

// deleteOtherDevicesE2E is deleteDevicesE2E for every device of the user but keep ("" keeps
// none).
func deleteOtherDevicesE2E(ctx context.Context, tx *storage.Tx, userID, keep string) error {
	ids, err := storage.DeviceIDs(ctx, tx, userID)
	if err != nil {
		return err
	}
	others := ids[:0]
	for _, id := range ids {
		if id != keep {
			others = append(others, id)
		}
	}
	return deleteDevicesE2E(ctx, tx, userID, others)
}

// removeDevicesAnnounced deletes devices with their keys and pending to-device messages and
// announces the device-list change (client-server API "Device Management": "deleting a
// device … also invalidates its keys").
func (a *API) removeDevicesAnnounced(ctx context.Context, userID string, deviceIDs []string) error {
	return a.changeDeviceList(ctx, userID, func(tx *storage.Tx, _ int64) (bool, error) {
		return len(deviceIDs) > 0, deleteDevicesE2E(ctx, tx, userID, deviceIDs)
	})
}

// uploadKeysRequest is the body of POST /keys/upload.
type uploadKeysRequest struct {
	DeviceKeys   json.RawMessage            `json:"device_keys"`
	OneTimeKeys  map[string]json.RawMessage `json:"one_time_keys"`
	FallbackKeys map[string]json.RawMessage `json:"fallback_keys"`
}

// POST /keys/upload (keys.yaml uploadKeys): the device's identity keys, checked to be its
// own and self-signed; one-time keys; fallback keys (one per algorithm, replacing the
// previous). The answer counts the device's unclaimed one-time keys.
func (a *API) uploadKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req uploadKeysRequest
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	counts, err := a.storeDeviceUpload(r.Context(), d.UserID, d.DeviceID, &req)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"one_time_key_counts": counts})
	return nil
}

// storeDeviceUpload checks and stores the keys of an upload for one device (also a
// dehydrated one) and returns its one-time key counts.
func (a *API) storeDeviceUpload(ctx context.Context, userID, deviceID string, req *uploadKeysRequest) (map[string]int, error) {
	var deviceKey ed25519.PublicKey
	var deviceKeysJSON []byte
	if len(req.DeviceKeys) > 0 && string(req.DeviceKeys) != "null" {
		parsed, clean, err := keys.ParseDeviceKeys(req.DeviceKeys, userID, deviceID)
		if err != nil {
			return nil, err
		}
		deviceKey = keys.DeviceKeyOf(clean, parsed.DeviceID)
		deviceKeysJSON = clean
	} else {
		stored, err := storage.LoadDeviceKeys(ctx, a.db, userID, deviceID)
		if err != nil && !errors.Is(err, storage.ErrNotFound) {
			return nil, err
		}
		deviceKey = keys.DeviceKeyOf(stored, deviceID)
	}
	oneTime, err := keys.ParseOneTimeKeys(req.OneTimeKeys, userID, deviceID, deviceKey, false)
	if err != nil {
		return nil, err
	}
	fallback, err := keys.ParseOneTimeKeys(req.FallbackKeys, userID, deviceID, deviceKey, true)
	if err != nil {
		return nil, err
	}
	if len(oneTime) > 0 || len(fallback) > 0 {
		err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
			if err := storage.InsertOneTimeKeys(ctx, tx, userID, deviceID, oneTime); err != nil {
				return err
			}
			for _, k := range fallback {
				if err := storage.PutFallbackKey(ctx, tx, userID, deviceID, k); err != nil {
					return err
				}
			}
			return nil
		})
		if errors.Is(err, storage.ErrKeyConflict) {
			// NOTSPEC: as Synapse, a key ID may not be reused for a different key.
			return nil, httpapi.InvalidParam("A one-time key with this ID but different contents was already uploaded")
		}
		if err != nil {
			return nil, err
		}
		a.markOneTimeKeysChanged(userID, deviceID)
	}
	if deviceKeysJSON != nil {
		err := a.changeDeviceList(ctx, userID, func(tx *storage.Tx, _ int64) (bool, error) {
			return storage.PutDeviceKeys(ctx, tx, userID, deviceID, deviceKeysJSON)
		})
		if err != nil {
			return nil, err
		}
	}
	counts, err := storage.CountOneTimeKeys(ctx, a.db, userID, deviceID)
	if err != nil {
		return nil, err
	}
	if _, ok := counts[signedCurve25519]; !ok {
		counts[signedCurve25519] = 0
	}
	return counts, nil
}

// remoteTimeout reads the "timeout" of /keys/query and /keys/claim (milliseconds), with its
// default.
func remoteTimeout(ms *int64) time.Duration {
	if ms == nil || *ms <= 0 {
		return defaultRemoteKeysTimeout
	}
	return min(time.Duration(*ms)*time.Millisecond, maxRemoteKeysTimeout)
}

// serverDisabled is the "failures" entry of a server whose users' keys were asked for
// while this server does not federate. NOTSPEC: Synapse's shape for an unreachable server.
func serverDisabled() map[string]any {
	return map[string]any{"status": http.StatusServiceUnavailable, "message": "Federation is disabled on this server"}
}

// keysOfUsers is the keys of several users, by key kind, as /keys/query answers them.
type keysOfUsers struct {
	devices     map[string]map[string]json.RawMessage
	master      map[string]json.RawMessage
	selfSigning map[string]json.RawMessage
	userSigning map[string]json.RawMessage
}

// localKeys reads the keys of our users named in request (user ID → device IDs, none
// meaning all): device keys with unsigned.device_display_name, master and self-signing keys,
// and the user-signing key of viewer only, each with the signatures uploaded for it that
// viewer may see ("" for another server: the owner's own signatures).
func (a *API) localKeys(ctx context.Context, request map[string][]string, viewer string) (*keysOfUsers, error) {
	out := &keysOfUsers{devices: map[string]map[string]json.RawMessage{}, master: map[string]json.RawMessage{},
		selfSigning: map[string]json.RawMessage{}, userSigning: map[string]json.RawMessage{}}
	for userID, devices := range request {
		if !a.isLocalUser(userID) {
			continue
		}
		rows, err := storage.QueryDeviceKeys(ctx, a.db, userID, devices)
		if err != nil {
			return nil, err
		}
		signatures, err := storage.KeySignaturesOf(ctx, a.db, userID, viewer)
		if err != nil {
			return nil, err
		}
		byTarget := map[string][]storage.KeySignature{}
		for _, s := range signatures {
			byTarget[s.TargetKeyID] = append(byTarget[s.TargetKeyID], s)
		}
		userDevices := map[string]json.RawMessage{}
		for _, row := range rows {
			object := keys.WithSignatures(row.KeyJSON, byTarget[row.DeviceID])
			unsigned := map[string]any{}
			if row.DisplayName != "" {
				unsigned["device_display_name"] = row.DisplayName
			}
			userDevices[row.DeviceID] = keys.WithUnsigned(object, unsigned)
		}
		out.devices[userID] = userDevices
		cross, err := storage.CrossSigningKeys(ctx, a.db, userID)
		if err != nil {
			return nil, err
		}
		add := func(into map[string]json.RawMessage, keyType string) {
			raw, ok := cross[keyType]
			if !ok {
				return
			}
			if key := keys.StoredCrossSigningKey(raw, userID, keyType); key != nil {
				into[userID] = keys.WithSignatures(raw, byTarget[key.PublicKey])
			}
		}
		add(out.master, storage.KeyTypeMaster)
		add(out.selfSigning, storage.KeyTypeSelfSigning)
		if userID == viewer {
			add(out.userSigning, storage.KeyTypeUserSigning)
		}
	}
	return out, nil
}

// QueryLocalKeys answers another server's POST /user/keys/query (server-server API
// "End-to-End Encryption") for our users: their device keys, master and self-signing keys.
func (a *API) QueryLocalKeys(ctx context.Context, request map[string][]string) (devices map[string]map[string]json.RawMessage,
	master, selfSigning map[string]json.RawMessage, err error) {
	found, err := a.localKeys(ctx, request, "")
	if err != nil {
		return nil, nil, nil, err
	}
	return found.devices, found.master, found.selfSigning, nil
}

// POST /keys/query (keys.yaml queryKeys): the device keys of the named users (all devices,
// or those listed), each with unsigned.device_display_name, and their cross-signing keys —
// the user-signing key only of the requester — with the signatures uploaded for them. Keys
// of other servers' users come through the federation within "timeout"; servers that do
// not answer are listed under "failures".
func (a *API) queryKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		DeviceKeys map[string][]string `json:"device_keys"`
		Timeout    *int64              `json:"timeout"`
	}
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return httpapi.MissingParam("Missing device_keys")
	}
	named := 0
	for _, devices := range req.DeviceKeys {
		named += 1 + len(devices)
	}
	if named > maxQueriedDevices {
		return httpapi.TooLarge("At most %d users and devices may be queried at once", maxQueriedDevices)
	}
	ctx := r.Context()
	remote := map[string][]string{}
	for userID, devices := range req.DeviceKeys {
		if !a.isLocalUser(userID) && serverOf(userID) != "" {
			remote[userID] = devices
		}
	}
	found, err := a.localKeys(ctx, req.DeviceKeys, d.UserID)
	if err != nil {
		return err
	}
	failures := map[string]any{}
	if len(remote) > 0 {
		if a.remoteKeys == nil {
			for userID := range remote {
				failures[serverOf(userID)] = serverDisabled()
			}
		} else {
			devices, master, selfSigning, failed := a.remoteKeys.QueryRemoteKeys(ctx, remote, remoteTimeout(req.Timeout))
			for userID, v := range devices {
				found.devices[userID] = v
			}
			for userID, v := range master {
				signed, err := a.withViewerSignatures(ctx, userID, d.UserID, v)
				if err != nil {
					return err
				}
				found.master[userID] = signed
			}
			for userID, v := range selfSigning {
				found.selfSigning[userID] = v
			}
			for server, v := range failed {
				failures[server] = v
			}
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"device_keys": found.devices, "master_keys": found.master, "self_signing_keys": found.selfSigning,
		"user_signing_keys": found.userSigning, "failures": failures,
	})
	return nil
}

// withViewerSignatures adds to the master key of another server's user the signatures that
// viewer (one of ours) made of it with their user-signing key and uploaded here.
func (a *API) withViewerSignatures(ctx context.Context, userID, viewer string, master json.RawMessage) (json.RawMessage, error) {
	key := keys.StoredCrossSigningKey(master, userID, storage.KeyTypeMaster)
	if key == nil {
		return master, nil
	}
	signatures, err := storage.KeySignaturesOf(ctx, a.db, userID, viewer)
	if err != nil {
		return nil, err
	}
	var mine []storage.KeySignature
	for _, s := range signatures {
		if s.SignerUserID == viewer && s.TargetKeyID == key.PublicKey {
			mine = append(mine, s)
		}
	}
	if len(mine) == 0 {
		return master, nil
	}
	return keys.WithSignatures(master, mine), nil
}

// ClaimLocalKeys claims keys of our users' devices (user ID → device ID → algorithm): one
// one-time key each, else the fallback key. It answers both /keys/claim and another
// server's POST /user/keys/claim.
func (a *API) ClaimLocalKeys(ctx context.Context, request map[string]map[string]string) (map[string]map[string]map[string]json.RawMessage, error) {
	claimed := map[string]map[string]map[string]json.RawMessage{}
	for userID, devices := range request {
		if !a.isLocalUser(userID) {
			continue
		}
		for deviceID, algorithm := range devices {
			key, ok, err := storage.ClaimOneTimeKey(ctx, a.db, userID, deviceID, algorithm)
			if err != nil {
				return nil, err
			}
			if !ok {
				continue
			}
			a.markOneTimeKeysChanged(userID, deviceID)
			if claimed[userID] == nil {
				claimed[userID] = map[string]map[string]json.RawMessage{}
			}
			claimed[userID][deviceID] = map[string]json.RawMessage{key.Algorithm + ":" + key.KeyID: key.KeyJSON}
		}
	}
	return claimed, nil
}

// POST /keys/claim (keys.yaml claimKeys): for each named device one one-time key of the
// requested algorithm, else its fallback key. A one-time key is given out once; a fallback
// key is marked used, which /sync reports to its device. Keys of other servers' users are
// claimed through the federation within "timeout"; servers that do not answer are listed
// under "failures".
func (a *API) claimKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
		Timeout     *int64                       `json:"timeout"`
	}
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return httpapi.MissingParam("Missing one_time_keys")
	}
	named := 0
	for _, devices := range req.OneTimeKeys {
		named += 1 + len(devices)
	}
	if named > maxQueriedDevices {
		return httpapi.TooLarge("At most %d users and devices may be named at once", maxQueriedDevices)
	}
	ctx := r.Context()
	claimed, err := a.ClaimLocalKeys(ctx, req.OneTimeKeys)
	if err != nil {
		return err
	}
	remote := map[string]map[string]string{}
	for userID, devices := range req.OneTimeKeys {
		if !a.isLocalUser(userID) && serverOf(userID) != "" {
			remote[userID] = devices
		}
	}
	failures := map[string]any{}
	if len(remote) > 0 {
		if a.remoteKeys == nil {
			for userID := range remote {
				failures[serverOf(userID)] = serverDisabled()
			}
		} else {
			remoteClaimed, failed := a.remoteKeys.ClaimRemoteKeys(ctx, remote, remoteTimeout(req.Timeout))
			for userID, v := range remoteClaimed {
				claimed[userID] = v
			}
			for server, v := range failed {
				failures[server] = v
			}
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"one_time_keys": claimed, "failures": failures})
	return nil
}

// GET /keys/changes (keys.yaml getKeysChanges): the users sharing a room with the requester
// whose device lists changed between two sync tokens, and those who stopped sharing any.
func (a *API) keyChanges(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	if q.Get("from") == "" || q.Get("to") == "" {
		return httpapi.MissingParam("from and to are required")
	}
	from, ok := parseStreamToken(q.Get("from"))
	if !ok {
		return httpapi.InvalidParam("Invalid from token")
	}
	to, ok := parseStreamToken(q.Get("to"))
	if !ok {
		return httpapi.InvalidParam("Invalid to token")
	}
	to = min(to, a.rooms.Stream().Current())
	changed, left := []string{}, []string{}
	if from < to {
		var err error
		changed, left, _, err = a.deviceListChanges(r.Context(), d.UserID, from, to, nil)
		if err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"changed": changed, "left": left})
	return nil
}

// deviceListChanges computes device_lists for (from, to] (client-server API "Tracking the
// device list for a user"): changed are the users, the requester included, whose device
// list changed and who share a room with userID, plus those who started sharing one; left
// are those who no longer share any room after a membership change in the window, and
// newlyShared those who share one after such a change (presence goes to them too). gate,
// when set, says which rooms can have had membership changes (the stream's change index);
// nil reads them all.
func (a *API) deviceListChanges(ctx context.Context, userID string, from, to int64, gate func(roomNID int64) bool) (changed, left, newlyShared []string, err error) {
	changedSet := map[string]bool{}
	stream := a.rooms.Stream()
	if gate == nil || stream.ChangedSince(streams.DeviceListKey(userID), from) {
		users, err := storage.DeviceListsChanged(ctx, a.db, userID, from, to)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, u := range users {
			changedSet[u] = true
		}
	}
	// Membership changes: the user's own (rooms joined and left), and others' in the rooms
	// the user is joined to.
	candidates := map[string]bool{}
	if gate == nil || stream.ChangedSince(streams.MembershipKey(userID), from) {
		rows, err := storage.MembershipChanges(ctx, a.db, userID, from, to)
		if err != nil {
			return nil, nil, nil, err
		}
		seenRooms := map[int64]bool{}
		for _, row := range rows {
			if seenRooms[row.RoomNID] {
				continue
			}
			seenRooms[row.RoomNID] = true
			members, err := storage.RoomMembers(ctx, a.db, row.RoomNID)
			if err != nil {
				return nil, nil, nil, err
			}
			for _, m := range members {
				candidates[m] = true
			}
		}
	}
	memberships, err := a.userMemberships(ctx, userID)
	if err != nil {
		return nil, nil, nil, err
	}
	var active []int64
	for _, m := range memberships {
		if m.Membership == "join" && (gate == nil || gate(m.RoomNID)) {
			active = append(active, m.RoomNID)
		}
	}
	if len(active) > 0 {
		users, err := storage.MemberChangesIn(ctx, a.db, active, from, to)
		if err != nil {
			return nil, nil, nil, err
		}
		for _, u := range users {
			candidates[u] = true
		}
	}
	leftSet := map[string]bool{}
	for u := range candidates {
		if u == userID {
			continue
		}
		shares, err := storage.SharesRoom(ctx, a.db, userID, u)
		if err != nil {
			return nil, nil, nil, err
		}
		if shares {
			changedSet[u] = true
			newlyShared = append(newlyShared, u)
		} else {
			leftSet[u] = true
			delete(changedSet, u)
		}
	}
	return sortedKeys(changedSet), sortedKeys(leftSet), newlyShared, nil
}

func sortedKeys(set map[string]bool) []string {
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// crossSigningRequest is the body of POST /keys/device_signing/upload.
type crossSigningRequest struct {
	Auth        json.RawMessage `json:"auth"`
	MasterKey   json.RawMessage `json:"master_key"`
	SelfSigning json.RawMessage `json:"self_signing_key"`
	UserSigning json.RawMessage `json:"user_signing_key"`
}

func present(raw json.RawMessage) bool { return len(raw) > 0 && string(raw) != "null" }

// POST /keys/device_signing/upload (cross_signing.yaml uploadCrossSigningKeys). UIA
// [m.login.password] is needed unless the user has no master key yet, or the request only
// repeats the keys already stored (the v1.11 rule). The self-signing and user-signing keys
// must be signed by the master key (the new one, or else the stored one); no key may equal
// a device ID of the user (403).
func (a *API) uploadCrossSigningKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req crossSigningRequest
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	ctx := r.Context()
	stored, err := storage.CrossSigningKeys(ctx, a.db, d.UserID)
	if err != nil {
		return err
	}
	type upload struct {
		keyType string
		key     *keys.CrossSigningKey
	}
	var uploads []upload
	for _, part := range []struct {
		raw     json.RawMessage
		keyType string
	}{{req.MasterKey, storage.KeyTypeMaster}, {req.SelfSigning, storage.KeyTypeSelfSigning}, {req.UserSigning, storage.KeyTypeUserSigning}} {
		if !present(part.raw) {
			continue
		}
		key, err := keys.ParseCrossSigningKey(part.raw, d.UserID, part.keyType)
		if err != nil {
			return err
		}
		uploads = append(uploads, upload{part.keyType, key})
	}
	master := keys.StoredCrossSigningKey(stored[storage.KeyTypeMaster], d.UserID, storage.KeyTypeMaster)
	needsAuth := false
	if master != nil {
		for _, u := range uploads {
			if !keys.SameKey(stored[u.keyType], u.key.Raw) {
				needsAuth = true
			}
		}
	}
	if needsAuth {
		proceed, session, err := a.passwordUIA(w, r, d, req.Auth, "")
		if err != nil || !proceed {
			return err
		}
		defer a.uia.Delete(session)
	}
	for _, u := range uploads {
		if u.keyType == storage.KeyTypeMaster {
			master = u.key
		}
	}
	if master == nil {
		return httpapi.MissingParam("No master signing key is available")
	}
	deviceIDs, err := storage.DeviceIDs(ctx, a.db, d.UserID)
	if err != nil {
		return err
	}
	for _, u := range uploads {
		for _, id := range deviceIDs {
			if id == u.key.PublicKey {
				return httpapi.Forbidden("Key ID in use")
			}
		}
		if u.keyType != storage.KeyTypeMaster {
			if err := master.VerifySignedBy(u.key.Raw); err != nil {
				return err
			}
		}
	}
	if len(uploads) == 0 {
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	err = a.changeDeviceList(ctx, d.UserID, func(tx *storage.Tx, _ int64) (bool, error) {
		changed := false
		for _, u := range uploads {
			if keys.SameKey(stored[u.keyType], u.key.Raw) && string(stored[u.keyType]) == string(u.key.Raw) {
				continue
			}
			replaced := ""
			if old := keys.StoredCrossSigningKey(stored[u.keyType], d.UserID, u.keyType); old != nil && old.PublicKey != u.key.PublicKey {
				replaced = old.PublicKey
			}
			if err := storage.PutCrossSigningKey(ctx, tx, d.UserID, u.keyType, u.key.Raw, replaced); err != nil {
				return false, err
			}
			changed = true
		}
		return changed, nil
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// remoteMasterKey is the master key of another server's user, nil when it is not known or
// their server cannot be reached.
func (a *API) remoteMasterKey(ctx context.Context, userID string) *keys.CrossSigningKey {
	if a.remoteKeys == nil || serverOf(userID) == "" {
		return nil
	}
	_, master, _, _ := a.remoteKeys.QueryRemoteKeys(ctx, map[string][]string{userID: {}}, defaultRemoteKeysTimeout)
	return keys.StoredCrossSigningKey(master[userID], userID, storage.KeyTypeMaster)
}

// signatureFailure is one entry of the failures of /keys/signatures/upload.
func signatureFailure(errcode, message string) map[string]string {
	return map[string]string{"errcode": errcode, "error": message}
}

// POST /keys/signatures/upload (cross_signing.yaml uploadCrossSigningSignatures). Accepted
// signatures, each checked against the signer's key: the requester's self-signing key
// signing their own devices, a device of the requester signing their master key, and the
// requester's user-signing key signing another user's master key. The signed object must
// be the stored key apart from its signatures; what fails is reported per key.
func (a *API) uploadSignatures(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req map[string]map[string]json.RawMessage
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	named := 0
	for _, objects := range req {
		named += 1 + len(objects)
	}
	if named > maxQueriedDevices {
		return httpapi.TooLarge("At most %d keys may be signed at once", maxQueriedDevices)
	}
	ctx := r.Context()
	own, err := storage.CrossSigningKeys(ctx, a.db, d.UserID)
	if err != nil {
		return err
	}
	selfSigning := keys.StoredCrossSigningKey(own[storage.KeyTypeSelfSigning], d.UserID, storage.KeyTypeSelfSigning)
	userSigning := keys.StoredCrossSigningKey(own[storage.KeyTypeUserSigning], d.UserID, storage.KeyTypeUserSigning)
	failures := map[string]map[string]any{}
	fail := func(userID, keyID string, f map[string]string) {
		if failures[userID] == nil {
			failures[userID] = map[string]any{}
		}
		failures[userID][keyID] = f
	}
	accepted := map[string][]storage.KeySignature{}
	for userID, objects := range req {
		var targetMaster *keys.CrossSigningKey
		if a.isLocalUser(userID) {
			targetCross, err := storage.CrossSigningKeys(ctx, a.db, userID)
			if err != nil {
				return err
			}
			targetMaster = keys.StoredCrossSigningKey(targetCross[storage.KeyTypeMaster], userID, storage.KeyTypeMaster)
		} else {
			// Another server's user: their master key as their server (or our copy of their
			// device list) has it. The signature stays here, visible to the signer only.
			targetMaster = a.remoteMasterKey(ctx, userID)
		}
		for keyID, object := range objects {
			sig, f, err := a.checkUploadedSignature(ctx, d, userID, keyID, object, targetMaster, selfSigning, userSigning)
			if err != nil {
				return err
			}
			if f != nil {
				fail(userID, keyID, f)
				continue
			}
			accepted[userID] = append(accepted[userID], *sig)
		}
	}
	for userID, sigs := range accepted {
		err := a.changeDeviceList(ctx, userID, func(tx *storage.Tx, _ int64) (bool, error) {
			for _, s := range sigs {
				if err := storage.PutKeySignature(ctx, tx, s); err != nil {
					return false, err
				}
			}
			return true, nil
		})
		if err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"failures": failures})
	return nil
}

// checkUploadedSignature decides on one signed object of /keys/signatures/upload: the
// signature to store, or the failure to report.
func (a *API) checkUploadedSignature(ctx context.Context, d *Device, userID, keyID string, object json.RawMessage,
	targetMaster, selfSigning, userSigning *keys.CrossSigningKey) (*storage.KeySignature, map[string]string, error) {
	if len(object) > keys.MaxKeyObjectSize {
		return nil, signatureFailure("M_TOO_LARGE", "Signed object is too large"), nil
	}
	sign := func(signer *keys.CrossSigningKey, stored []byte, missing string) (*storage.KeySignature, map[string]string) {
		if signer == nil {
			return nil, signatureFailure("M_INVALID_SIGNATURE", missing)
		}
		if !keys.SameKey(stored, object) {
			return nil, signatureFailure("M_INVALID_SIGNATURE", "Signed object does not match the stored key")
		}
		if err := signer.VerifySignedBy(object); err != nil {
			return nil, signatureFailure("M_INVALID_SIGNATURE", "Invalid signature")
		}
		signature, _ := keys.SignatureBy(object, d.UserID, "ed25519:"+signer.PublicKey)
		return &storage.KeySignature{TargetUserID: userID, TargetKeyID: keyID, SignerUserID: d.UserID,
			SignerKeyID: "ed25519:" + signer.PublicKey, Signature: signature}, nil
	}
	if userID != d.UserID {
		// Another user's master key, signed with the requester's user-signing key.
		if targetMaster == nil || targetMaster.PublicKey != keyID {
			return nil, signatureFailure("M_NOT_FOUND", "Unknown key"), nil
		}
		sig, f := sign(userSigning, targetMaster.Raw, "No user-signing key")
		return sig, f, nil
	}
	if targetMaster != nil && targetMaster.PublicKey == keyID {
		// The requester's master key, signed by one of their devices.
		for _, signer := range signersOf(object, d.UserID) {
			deviceID, ok := strings.CutPrefix(signer, "ed25519:")
			if !ok || deviceID == targetMaster.PublicKey {
				continue
			}
			stored, err := storage.LoadDeviceKeys(ctx, a.db, d.UserID, deviceID)
			if errors.Is(err, storage.ErrNotFound) {
				continue
			}
			if err != nil {
				return nil, nil, err
			}
			if !keys.SameKey(targetMaster.Raw, object) {
				return nil, signatureFailure("M_INVALID_SIGNATURE", "Signed object does not match the stored key"), nil
			}
			if keys.VerifyDeviceSignature(object, d.UserID, deviceID, keys.DeviceKeyOf(stored, deviceID)) != nil {
				return nil, signatureFailure("M_INVALID_SIGNATURE", "Invalid signature"), nil
			}
			signature, _ := keys.SignatureBy(object, d.UserID, signer)
			return &storage.KeySignature{TargetUserID: userID, TargetKeyID: keyID, SignerUserID: d.UserID,
				SignerKeyID: signer, Signature: signature}, nil, nil
		}
		return nil, signatureFailure("M_INVALID_SIGNATURE", "No signature by a device of the user"), nil
	}
	// One of the requester's devices, signed with their self-signing key.
	stored, err := storage.LoadDeviceKeys(ctx, a.db, d.UserID, keyID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, signatureFailure("M_NOT_FOUND", "Unknown key"), nil
	}
	if err != nil {
		return nil, nil, err
	}
	sig, f := sign(selfSigning, stored, "No self-signing key")
	return sig, f, nil
}

// signersOf lists the key IDs that signed object for userID, sorted.
func signersOf(object []byte, userID string) []string {
	var parsed struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if json.Unmarshal(object, &parsed) != nil {
		return nil
	}
	out := make([]string, 0, len(parsed.Signatures[userID]))
	for keyID := range parsed.Signatures[userID] {
		out = append(out, keyID)
	}
	sort.Strings(out)
	return out
}

// maxCachedInboxes bounds the per-device caches of the E2EE parts of /sync.
const maxCachedInboxes = 100_000

// oneTimeKeyEntry is what /sync reports of a device's keys, as read at stream position asOf.
type oneTimeKeyEntry struct {
	asOf     int64
	counts   map[string]int
	fallback []string
}

// oneTimeKeyState is a device's device_one_time_keys_count and
// device_unused_fallback_key_types for /sync (client-server API "Extensions to /sync"),
// from a cache that holds until the stream's change index says the keys changed.
func (a *API) oneTimeKeyState(ctx context.Context, userID, deviceID string) (map[string]int, []string, error) {
	stream := a.rooms.Stream()
	cacheKey := userID + "\x00" + deviceID
	if cached, ok := a.oneTimeKeyCounts.get(cacheKey); ok && !stream.ChangedSince(streams.OneTimeKeysKey(userID, deviceID), cached.asOf) {
		return cached.counts, cached.fallback, nil
	}
	// Every position up to asOf has finished, so the queries see all of them; a change above
	// it invalidates the entry.
	asOf := stream.Current()
	counts, err := storage.CountOneTimeKeys(ctx, a.db, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	if _, ok := counts[signedCurve25519]; !ok {
		counts[signedCurve25519] = 0
	}
	fallback, err := storage.UnusedFallbackKeyTypes(ctx, a.db, userID, deviceID)
	if err != nil {
		return nil, nil, err
	}
	if fallback == nil {
		fallback = []string{}
	}
	a.oneTimeKeyCounts.put(cacheKey, oneTimeKeyEntry{asOf: asOf, counts: counts, fallback: fallback})
	return counts, fallback, nil
}
