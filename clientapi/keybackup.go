package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/keys"
	"github.com/scrambledeggs/eggs/storage"
)

// Server-side key backups (client-server API "Server-side key backups", key_backup.yaml).
// The server stores what clients encrypted to the backup's public key; it only reads the
// metadata that decides which copy of a session key to keep, and counts the keys and
// changes the etag whenever they change.

func (a *API) keyBackupRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/room_keys/version", authed(a.createBackupVersion))
	r.Method(http.MethodGet, "/room_keys/version", authed(a.getBackupVersion))
	r.Method(http.MethodGet, "/room_keys/version/{version}", authed(a.getBackupVersion))
	r.Method(http.MethodPut, "/room_keys/version/{version}", authed(a.updateBackupVersion))
	r.Method(http.MethodDelete, "/room_keys/version/{version}", authed(a.deleteBackupVersion))
	for _, path := range []string{"/room_keys/keys", "/room_keys/keys/{roomId}", "/room_keys/keys/{roomId}/{sessionId}"} {
		r.Method(http.MethodPut, path, authed(a.putBackupKeys))
		r.Method(http.MethodGet, path, authed(a.getBackupKeys))
		r.Method(http.MethodDelete, path, authed(a.deleteBackupKeys))
	}
}

// Limits of key backup. NOTSPEC: the spec sets none; clients upload keys in batches of a
// few hundred.
const (
	maxBackupVersionBody = 64 * 1024
	maxBackupKeysBody    = 16 << 20
	maxBackupKeysPerPut  = 10_000
	maxBackupSessionData = 64 * 1024
)

// backupVersionRequest is the body of POST and PUT /room_keys/version.
type backupVersionRequest struct {
	Algorithm string          `json:"algorithm"`
	AuthData  json.RawMessage `json:"auth_data"`
	Version   *string         `json:"version"`
}

func (req *backupVersionRequest) check() error {
	if req.Algorithm == "" {
		return httpapi.MissingParam("Missing algorithm")
	}
	if len(req.Algorithm) > maxAccountDataType {
		return httpapi.InvalidParam("algorithm is too long")
	}
	var object map[string]json.RawMessage
	if len(req.AuthData) == 0 || json.Unmarshal(req.AuthData, &object) != nil || object == nil {
		return httpapi.MissingParam("auth_data must be a JSON object")
	}
	return nil
}

// unknownBackup is the 404 for a backup version that does not exist (key_backup.yaml).
func unknownBackup() error { return httpapi.NotFound("Unknown backup version") }

// POST /room_keys/version (key_backup.yaml postRoomKeysVersion): a new backup version,
// which becomes the current one.
func (a *API) createBackupVersion(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req backupVersionRequest
	if err := httpapi.ReadJSON(r, maxBackupVersionBody, &req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	var version int64
	err := a.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		var err error
		version, err = storage.CreateBackupVersion(r.Context(), tx, d.UserID, req.Algorithm, req.AuthData)
		return err
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"version": strconv.FormatInt(version, 10)})
	return nil
}

// backupVersionParam reads the {version} path parameter or the version query parameter.
// ok is false when it is not a version this server could have made.
func backupVersionParam(s string) (int64, bool) {
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil && v > 0
}

// GET /room_keys/version and /room_keys/version/{version} (key_backup.yaml
// getRoomKeysVersionCurrent, getRoomKeysVersion).
func (a *API) getBackupVersion(w http.ResponseWriter, r *http.Request, d *Device) error {
	var version int64
	if s := pathParam(r, "version"); s != "" {
		v, ok := backupVersionParam(s)
		if !ok {
			return unknownBackup()
		}
		version = v
	}
	b, err := storage.LoadBackupVersion(r.Context(), a.db, d.UserID, version)
	if errors.Is(err, storage.ErrNotFound) {
		if version == 0 {
			return httpapi.NotFound("No current backup version")
		}
		return unknownBackup()
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{
		"algorithm": b.Algorithm, "auth_data": json.RawMessage(b.AuthData), "count": b.Count,
		"etag": strconv.FormatInt(b.Etag, 10), "version": strconv.FormatInt(b.Version, 10),
	})
	return nil
}

// PUT /room_keys/version/{version} (key_backup.yaml putRoomKeysVersion): only auth_data
// changes; the algorithm must stay, and a version in the body must be the path's.
func (a *API) updateBackupVersion(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req backupVersionRequest
	if err := httpapi.ReadJSON(r, maxBackupVersionBody, &req); err != nil {
		return err
	}
	if err := req.check(); err != nil {
		return err
	}
	path := pathParam(r, "version")
	version, ok := backupVersionParam(path)
	if !ok {
		return unknownBackup()
	}
	if req.Version != nil && *req.Version != path {
		return httpapi.InvalidParam("version in body does not match the version in the path")
	}
	err := a.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		b, err := storage.LoadBackupVersion(r.Context(), tx, d.UserID, version)
		if errors.Is(err, storage.ErrNotFound) {
			return unknownBackup()
		}
		if err != nil {
			return err
		}
		if b.Algorithm != req.Algorithm {
			return httpapi.InvalidParam("algorithm does not match the backup's algorithm")
		}
		return storage.UpdateBackupAuthData(r.Context(), tx, d.UserID, version, req.AuthData)
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /room_keys/version/{version} (key_backup.yaml deleteRoomKeysVersion): the backup
// and its keys go; a deleted version is 404 afterwards.
func (a *API) deleteBackupVersion(w http.ResponseWriter, r *http.Request, d *Device) error {
	version, ok := backupVersionParam(pathParam(r, "version"))
	if !ok {
		return unknownBackup()
	}
	err := a.db.WithTx(r.Context(), func(tx *storage.Tx) error {
		return storage.DeleteBackupVersion(r.Context(), tx, d.UserID, version)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return unknownBackup()
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// backupKeyData is a KeyBackupData as uploaded (definitions/key_backup_data.yaml).
type backupKeyData struct {
	FirstMessageIndex *int64          `json:"first_message_index"`
	ForwardedCount    *int64          `json:"forwarded_count"`
	IsVerified        *bool           `json:"is_verified"`
	SessionData       json.RawMessage `json:"session_data"`
}

func (k *backupKeyData) toRow(roomID, sessionID string) (*storage.BackupKey, error) {
	if k.FirstMessageIndex == nil || k.ForwardedCount == nil || k.IsVerified == nil || len(k.SessionData) == 0 {
		return nil, httpapi.MissingParam("Key data needs first_message_index, forwarded_count, is_verified and session_data")
	}
	if *k.FirstMessageIndex < 0 || *k.ForwardedCount < 0 {
		return nil, httpapi.InvalidParam("first_message_index and forwarded_count must not be negative")
	}
	if len(k.SessionData) > maxBackupSessionData {
		return nil, httpapi.TooLarge("session_data exceeds %d bytes", maxBackupSessionData)
	}
	var object map[string]json.RawMessage
	if json.Unmarshal(k.SessionData, &object) != nil || object == nil {
		return nil, httpapi.BadJSON("session_data must be a JSON object")
	}
	if roomID == "" || sessionID == "" || len(roomID) > 255 || len(sessionID) > 255 {
		return nil, httpapi.InvalidParam("Room and session IDs must be 1 to 255 bytes")
	}
	return &storage.BackupKey{RoomID: roomID, SessionID: sessionID, FirstMessageIndex: *k.FirstMessageIndex,
		ForwardedCount: *k.ForwardedCount, IsVerified: *k.IsVerified, SessionData: k.SessionData}, nil
}

func keyDataOf(k *storage.BackupKey) map[string]any {
	return map[string]any{
		"first_message_index": k.FirstMessageIndex, "forwarded_count": k.ForwardedCount,
		"is_verified": k.IsVerified, "session_data": json.RawMessage(k.SessionData),
	}
}

// wrongBackupVersion is the 403 of writing to a backup version that is not the current one.
func wrongBackupVersion(current int64) error {
	e := httpapi.NewError(http.StatusForbidden, "M_WRONG_ROOM_KEYS_VERSION", "Wrong backup version.")
	e.Extra = map[string]any{"current_version": strconv.FormatInt(current, 10)}
	return e
}

// backupForKeys resolves the version query parameter of a /room_keys/keys request. Writes
// (forWrite) must go to the current version (403 M_WRONG_ROOM_KEYS_VERSION otherwise);
// reads and deletes to any existing one.
func (a *API) backupForKeys(ctx context.Context, q storage.Querier, r *http.Request, userID string, forWrite bool) (*storage.BackupVersion, error) {
	s := r.URL.Query().Get("version")
	if s == "" {
		return nil, httpapi.MissingParam("Missing version")
	}
	version, ok := backupVersionParam(s)
	if !ok {
		return nil, unknownBackup()
	}
	if forWrite {
		current, err := storage.LoadBackupVersion(ctx, q, userID, 0)
		if errors.Is(err, storage.ErrNotFound) {
			return nil, unknownBackup()
		}
		if err != nil {
			return nil, err
		}
		if current.Version != version {
			if _, err := storage.LoadBackupVersion(ctx, q, userID, version); errors.Is(err, storage.ErrNotFound) {
				return nil, unknownBackup()
			}
			return nil, wrongBackupVersion(current.Version)
		}
		return current, nil
	}
	b, err := storage.LoadBackupVersion(ctx, q, userID, version)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, unknownBackup()
	}
	return b, err
}

// PUT /room_keys/keys[/{roomId}[/{sessionId}]] (key_backup.yaml putRoomKeys,
// putRoomKeysByRoomId, putRoomKeyBySessionId): each uploaded key replaces the stored key of
// its session only when it is better (keys.BetterBackupKey). The answer is the backup's
// etag and count.
func (a *API) putBackupKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	body, err := httpapi.ReadBody(r, maxBackupKeysBody)
	if err != nil {
		return err
	}
	roomID, sessionID := pathParam(r, "roomId"), pathParam(r, "sessionId")
	var uploaded []*storage.BackupKey
	add := func(room, session string, k *backupKeyData) error {
		if len(uploaded) >= maxBackupKeysPerPut {
			return httpapi.TooLarge("At most %d keys may be uploaded at once", maxBackupKeysPerPut)
		}
		row, err := k.toRow(room, session)
		if err != nil {
			return err
		}
		uploaded = append(uploaded, row)
		return nil
	}
	switch {
	case sessionID != "":
		var k backupKeyData
		if err := httpapi.DecodeJSON(body, &k); err != nil {
			return err
		}
		if err := add(roomID, sessionID, &k); err != nil {
			return err
		}
	case roomID != "":
		var room struct {
			Sessions map[string]*backupKeyData `json:"sessions"`
		}
		if err := httpapi.DecodeJSON(body, &room); err != nil {
			return err
		}
		if room.Sessions == nil {
			return httpapi.MissingParam("Missing sessions")
		}
		for session, k := range room.Sessions {
			if k == nil {
				return httpapi.BadJSON("Key data must be an object")
			}
			if err := add(roomID, session, k); err != nil {
				return err
			}
		}
	default:
		var all struct {
			Rooms map[string]struct {
				Sessions map[string]*backupKeyData `json:"sessions"`
			} `json:"rooms"`
		}
		if err := httpapi.DecodeJSON(body, &all); err != nil {
			return err
		}
		if all.Rooms == nil {
			return httpapi.MissingParam("Missing rooms")
		}
		for room, sessions := range all.Rooms {
			for session, k := range sessions.Sessions {
				if k == nil {
					return httpapi.BadJSON("Key data must be an object")
				}
				if err := add(room, session, k); err != nil {
					return err
				}
			}
		}
	}
	return a.changeBackupKeys(w, r, d, true, func(ctx context.Context, tx *storage.Tx, b *storage.BackupVersion) (bool, error) {
		changed := false
		for _, k := range uploaded {
			stored, err := storage.LoadBackupKey(ctx, tx, d.UserID, b.Version, k.RoomID, k.SessionID)
			if err != nil && !errors.Is(err, storage.ErrNotFound) {
				return false, err
			}
			if stored != nil && !keys.BetterBackupKey(stored, k) {
				continue
			}
			if err := storage.PutBackupKey(ctx, tx, d.UserID, b.Version, k); err != nil {
				return false, err
			}
			changed = true
		}
		return changed, nil
	})
}

// GET /room_keys/keys[/{roomId}[/{sessionId}]] (key_backup.yaml getRoomKeys,
// getRoomKeysByRoomId, getRoomKeyBySessionId). A session without a key is 404; a room
// without keys is an empty sessions object.
func (a *API) getBackupKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	b, err := a.backupForKeys(ctx, a.db, r, d.UserID, false)
	if err != nil {
		return err
	}
	roomID, sessionID := pathParam(r, "roomId"), pathParam(r, "sessionId")
	rows, err := storage.BackupKeys(ctx, a.db, d.UserID, b.Version, roomID, sessionID)
	if err != nil {
		return err
	}
	switch {
	case sessionID != "":
		if len(rows) == 0 {
			return httpapi.NotFound("Key not found.")
		}
		httpapi.WriteJSON(w, http.StatusOK, keyDataOf(&rows[0]))
	case roomID != "":
		sessions := map[string]any{}
		for i := range rows {
			sessions[rows[i].SessionID] = keyDataOf(&rows[i])
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"sessions": sessions})
	default:
		roomsOut := map[string]map[string]map[string]any{}
		for i := range rows {
			room := roomsOut[rows[i].RoomID]
			if room == nil {
				room = map[string]map[string]any{"sessions": {}}
				roomsOut[rows[i].RoomID] = room
			}
			room["sessions"][rows[i].SessionID] = keyDataOf(&rows[i])
		}
		httpapi.WriteJSON(w, http.StatusOK, map[string]any{"rooms": roomsOut})
	}
	return nil
}

// DELETE /room_keys/keys[/{roomId}[/{sessionId}]] (key_backup.yaml deleteRoomKeys,
// deleteRoomKeysByRoomId, deleteRoomKeyBySessionId): the answer is the etag and count after.
func (a *API) deleteBackupKeys(w http.ResponseWriter, r *http.Request, d *Device) error {
	return a.changeBackupKeys(w, r, d, false, func(ctx context.Context, tx *storage.Tx, b *storage.BackupVersion) (bool, error) {
		n, err := storage.DeleteBackupKeys(ctx, tx, d.UserID, b.Version, pathParam(r, "roomId"), pathParam(r, "sessionId"))
		return n > 0, err
	})
}

// changeBackupKeys runs change on the keys of the backup version the request names (the
// current one must be named when write is set), moves the version's etag on if change changed
// anything, all in one transaction, and answers the etag and count after (key_backup.yaml).
func (a *API) changeBackupKeys(w http.ResponseWriter, r *http.Request, d *Device, write bool,
	change func(ctx context.Context, tx *storage.Tx, b *storage.BackupVersion) (bool, error)) error {
	ctx := r.Context()
	var result *storage.BackupVersion
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		b, err := a.backupForKeys(ctx, tx, r, d.UserID, write)
		if err != nil {
			return err
		}
		changed, err := change(ctx, tx, b)
		if err != nil {
			return err
		}
		if changed {
			if err := storage.BumpBackupEtag(ctx, tx, d.UserID, b.Version); err != nil {
				return err
			}
		}
		result, err = storage.LoadBackupVersion(ctx, tx, d.UserID, b.Version)
		return err
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"etag": strconv.FormatInt(result.Etag, 10), "count": result.Count})
	return nil
}
