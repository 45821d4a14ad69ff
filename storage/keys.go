package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Queries of end-to-end encryption (client-server API "End-to-End Encryption",
// "Send-to-Device messaging", "Server-side key backups"; MSC3814 dehydrated devices). Key
// objects are stored as the JSON the client uploaded; package keys checks them first.

// Stream names of ReserveStreamPos for the E2EE streams whose rows are deleted once
// delivered, so that a restarted server never hands out a position a client already holds.
const (
	StreamToDevice    = "to_device"
	StreamDeviceLists = "device_lists"
)

// DeviceKeysRow is the identity keys of one device with its display name.
type DeviceKeysRow struct {
	UserID      string
	DeviceID    string
	KeyJSON     []byte
	DisplayName string
}

// LoadDeviceKeys reads the stored device keys of one device; ErrNotFound if none.
func LoadDeviceKeys(ctx context.Context, q Querier, userID, deviceID string) ([]byte, error) {
	var keyJSON string
	err := q.QueryRow(ctx, `SELECT key_json FROM device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID).Scan(&keyJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(keyJSON), err
}

// PutDeviceKeys stores the identity keys of a device and reports whether they changed.
func PutDeviceKeys(ctx context.Context, q Querier, userID, deviceID string, keyJSON []byte) (bool, error) {
	res, err := q.Exec(ctx, `INSERT INTO device_keys (user_id, device_id, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json
		WHERE device_keys.key_json <> excluded.key_json`, userID, deviceID, string(keyJSON))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// QueryDeviceKeys lists the device keys of userID's devices; deviceIDs empty means all.
// Only devices that still exist are listed.
func QueryDeviceKeys(ctx context.Context, q Querier, userID string, deviceIDs []string) ([]DeviceKeysRow, error) {
	query := `SELECT k.device_id, k.key_json, d.display_name FROM device_keys k
		JOIN devices d ON d.user_id = k.user_id AND d.device_id = k.device_id WHERE k.user_id = $1`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		query += ` AND k.device_id IN (` + placeholders(len(deviceIDs), 2) + `)`
		for _, id := range deviceIDs {
			args = append(args, id)
		}
	}
	rows, err := q.Query(ctx, query+` ORDER BY k.device_id`, args...)
	if err != nil {
		return nil, err
	}
	var out []DeviceKeysRow
	for rows.Next() {
		r := DeviceKeysRow{UserID: userID}
		var keyJSON string
		var name sql.NullString
		if err := rows.Scan(&r.DeviceID, &keyJSON, &name); err != nil {
			rows.Close()
			return nil, err
		}
		r.KeyJSON, r.DisplayName = []byte(keyJSON), name.String
		out = append(out, r)
	}
	return out, closeRows(rows)
}

// OneTimeKey is an uploaded one-time or fallback key: algorithm:key_id and its JSON.
type OneTimeKey struct {
	Algorithm string
	KeyID     string
	KeyJSON   []byte
}

// ErrKeyConflict is returned when a key ID is uploaded again with different contents.
var ErrKeyConflict = errors.New("key ID already used for a different key")

// InsertOneTimeKeys stores one-time keys of a device, as one upload: claims give them out
// after the keys of earlier uploads (ClaimOneTimeKey). A key already stored with the same
// contents is skipped (a retried upload); with different contents it is ErrKeyConflict and
// nothing of this call should be kept, so run it in a transaction.
func InsertOneTimeKeys(ctx context.Context, q Querier, userID, deviceID string, keys []OneTimeKey) error {
	if len(keys) == 0 {
		return nil
	}
	var uploadSeq int64
	if err := q.QueryRow(ctx, `SELECT COALESCE(MAX(upload_seq), 0) + 1 FROM one_time_keys WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID).Scan(&uploadSeq); err != nil {
		return err
	}
	for _, k := range keys {
		res, err := q.Exec(ctx, `INSERT INTO one_time_keys (user_id, device_id, algorithm, key_id, key_json, upload_seq)
			VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, device_id, algorithm, key_id) DO NOTHING`,
			userID, deviceID, k.Algorithm, k.KeyID, string(k.KeyJSON), uploadSeq)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n > 0 {
			continue
		}
		var stored string
		err = q.QueryRow(ctx, `SELECT key_json FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4`,
			userID, deviceID, k.Algorithm, k.KeyID).Scan(&stored)
		if errors.Is(err, sql.ErrNoRows) {
			continue // claimed in between: the key was given out, which is what it was for
		}
		if err != nil {
			return err
		}
		if stored != string(k.KeyJSON) {
			return ErrKeyConflict
		}
	}
	return nil
}

// CountOneTimeKeys counts a device's unclaimed one-time keys by algorithm.
func CountOneTimeKeys(ctx context.Context, q Querier, userID, deviceID string) (map[string]int, error) {
	rows, err := q.Query(ctx, `SELECT algorithm, COUNT(*) FROM one_time_keys WHERE user_id = $1 AND device_id = $2 GROUP BY algorithm`,
		userID, deviceID)
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for rows.Next() {
		var alg string
		var n int
		if err := rows.Scan(&alg, &n); err != nil {
			rows.Close()
			return nil, err
		}
		out[alg] = n
	}
	return out, closeRows(rows)
}

// maxClaimAttempts bounds how often ClaimOneTimeKey retries after losing a race for a key.
const maxClaimAttempts = 5

// ClaimOneTimeKey removes and returns one one-time key of a device for algorithm, one of
// the earliest upload ("One-time keys are given out in the order that they were uploaded",
// keys.yaml claimKeys), or, when none is left, its fallback key of that algorithm, which is
// then marked used. ok is false when the device has neither. Each one-time key is given out
// at most once, also to concurrent claims: the DELETE decides who gets it.
func ClaimOneTimeKey(ctx context.Context, q Querier, userID, deviceID, algorithm string) (key OneTimeKey, ok bool, err error) {
	key.Algorithm = algorithm
	for attempt := 0; attempt < maxClaimAttempts; attempt++ {
		var keyID string
		err = q.QueryRow(ctx, `SELECT key_id FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
			ORDER BY upload_seq, key_id LIMIT 1`, userID, deviceID, algorithm).Scan(&keyID)
		if errors.Is(err, sql.ErrNoRows) {
			break
		}
		if err != nil {
			return key, false, err
		}
		var keyJSON string
		err = q.QueryRow(ctx, `DELETE FROM one_time_keys WHERE user_id = $1 AND device_id = $2 AND algorithm = $3 AND key_id = $4
			RETURNING key_json`, userID, deviceID, algorithm, keyID).Scan(&keyJSON)
		if errors.Is(err, sql.ErrNoRows) {
			continue // another claim took it first
		}
		if err != nil {
			return key, false, err
		}
		key.KeyID, key.KeyJSON = keyID, []byte(keyJSON)
		return key, true, nil
	}
	var keyJSON string
	err = q.QueryRow(ctx, `UPDATE fallback_keys SET used = TRUE WHERE user_id = $1 AND device_id = $2 AND algorithm = $3
		RETURNING key_id, key_json`, userID, deviceID, algorithm).Scan(&key.KeyID, &keyJSON)
	if errors.Is(err, sql.ErrNoRows) {
		return key, false, nil
	}
	if err != nil {
		return key, false, err
	}
	key.KeyJSON = []byte(keyJSON)
	return key, true, nil
}

// PutFallbackKey stores a device's fallback key for its algorithm, replacing the previous
// one. Uploading the key already stored keeps its used flag.
func PutFallbackKey(ctx context.Context, q Querier, userID, deviceID string, key OneTimeKey) error {
	_, err := q.Exec(ctx, `INSERT INTO fallback_keys (user_id, device_id, algorithm, key_id, key_json, used)
		VALUES ($1, $2, $3, $4, $5, FALSE)
		ON CONFLICT (user_id, device_id, algorithm) DO UPDATE SET key_id = excluded.key_id, key_json = excluded.key_json, used = FALSE
		WHERE fallback_keys.key_id <> excluded.key_id OR fallback_keys.key_json <> excluded.key_json`,
		userID, deviceID, key.Algorithm, key.KeyID, string(key.KeyJSON))
	return err
}

// UnusedFallbackKeyTypes lists the algorithms for which a device has an unused fallback key.
func UnusedFallbackKeyTypes(ctx context.Context, q Querier, userID, deviceID string) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT algorithm FROM fallback_keys WHERE user_id = $1 AND device_id = $2 AND NOT used ORDER BY algorithm`,
		userID, deviceID)
}

// Cross-signing key types (client-server API "Cross-signing").
const (
	KeyTypeMaster       = "master"
	KeyTypeSelfSigning  = "self_signing"
	KeyTypeUserSigning  = "user_signing"
	crossSigningColumns = `key_type, key_json`
)

// CrossSigningKeys reads a user's cross-signing keys, by key type.
func CrossSigningKeys(ctx context.Context, q Querier, userID string) (map[string][]byte, error) {
	rows, err := q.Query(ctx, `SELECT `+crossSigningColumns+` FROM cross_signing_keys WHERE user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	for rows.Next() {
		var keyType, keyJSON string
		if err := rows.Scan(&keyType, &keyJSON); err != nil {
			rows.Close()
			return nil, err
		}
		out[keyType] = []byte(keyJSON)
	}
	return out, closeRows(rows)
}

// PutCrossSigningKey stores one cross-signing key of a user, replacing the key of its type.
// replacedPublicKey is the public key of the key it replaces ("" for none): signatures made
// by that key, and of it, no longer apply and are removed.
func PutCrossSigningKey(ctx context.Context, q Querier, userID, keyType string, keyJSON []byte, replacedPublicKey string) error {
	if _, err := q.Exec(ctx, `INSERT INTO cross_signing_keys (user_id, key_type, key_json) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, key_type) DO UPDATE SET key_json = excluded.key_json`, userID, keyType, string(keyJSON)); err != nil {
		return err
	}
	if replacedPublicKey == "" {
		return nil
	}
	_, err := q.Exec(ctx, `DELETE FROM key_signatures WHERE (signer_user_id = $1 AND signer_key_id = $2)
		OR (target_user_id = $1 AND target_key_id = $3)`, userID, "ed25519:"+replacedPublicKey, replacedPublicKey)
	return err
}

// KeySignature is one signature added to a device key or cross-signing key.
type KeySignature struct {
	TargetUserID string
	TargetKeyID  string
	SignerUserID string
	SignerKeyID  string
	Signature    string
}

// PutKeySignature stores a signature, replacing an earlier one by the same signer key.
func PutKeySignature(ctx context.Context, q Querier, s KeySignature) error {
	_, err := q.Exec(ctx, `INSERT INTO key_signatures (target_user_id, target_key_id, signer_user_id, signer_key_id, signature)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (target_user_id, target_key_id, signer_user_id, signer_key_id)
		DO UPDATE SET signature = excluded.signature`, s.TargetUserID, s.TargetKeyID, s.SignerUserID, s.SignerKeyID, s.Signature)
	return err
}

// KeySignaturesOf lists the uploaded signatures of a user's keys that viewer may see: every
// signature by the key's owner, and those by viewer (a user's signature of another user's
// master key is only shown to that signer, as with user-signing keys).
func KeySignaturesOf(ctx context.Context, q Querier, userID, viewer string) ([]KeySignature, error) {
	rows, err := q.Query(ctx, `SELECT target_key_id, signer_user_id, signer_key_id, signature FROM key_signatures
		WHERE target_user_id = $1 AND (signer_user_id = $1 OR signer_user_id = $2)`, userID, viewer)
	if err != nil {
		return nil, err
	}
	var out []KeySignature
	for rows.Next() {
		s := KeySignature{TargetUserID: userID}
		if err := rows.Scan(&s.TargetKeyID, &s.SignerUserID, &s.SignerKeyID, &s.Signature); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, s)
	}
	return out, closeRows(rows)
}

// DeleteDeviceE2E removes what end-to-end encryption keeps for the named devices of a user:
// their keys, signatures of them, pending to-device messages, and the dehydrated device
// record if it is one of them.
func DeleteDeviceE2E(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	for _, chunk := range chunks(deviceIDs, 500) {
		args := []any{userID}
		for _, id := range chunk {
			args = append(args, id)
		}
		in := `(` + placeholders(len(chunk), 2) + `)`
		for _, query := range []string{
			`DELETE FROM device_keys WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM one_time_keys WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM fallback_keys WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM to_device_messages WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM key_signatures WHERE target_user_id = $1 AND target_key_id IN ` + in,
			`DELETE FROM dehydrated_devices WHERE user_id = $1 AND device_id IN ` + in,
			`DELETE FROM pushers WHERE user_id = $1 AND device_id IN ` + in, // NOTSPEC: as Synapse, pushers go with their device
		} {
			if _, err := q.Exec(ctx, query, args...); err != nil {
				return err
			}
		}
	}
	return nil
}

// DeviceIDs lists the IDs of a user's devices.
func DeviceIDs(ctx context.Context, q Querier, userID string) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT device_id FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
}

// MarkDeviceListChanged records that userID's device list changed at stream position pos.
func MarkDeviceListChanged(ctx context.Context, q Querier, userID string, pos int64) error {
	if _, err := q.Exec(ctx, `INSERT INTO device_list_changes (user_id, stream_pos) VALUES ($1, $2)
		ON CONFLICT (user_id) DO UPDATE SET stream_pos = excluded.stream_pos
		WHERE device_list_changes.stream_pos < excluded.stream_pos`, userID, pos); err != nil {
		return err
	}
	return ReserveStreamPos(ctx, q, StreamDeviceLists, pos)
}

// sharedJoinedUsers selects the users joined to a room that $1 is joined to, $1 included.
const sharedJoinedUsers = `SELECT other.state_key FROM current_state mine
	JOIN current_state other ON other.room_nid = mine.room_nid AND other.type = 'm.room.member' AND other.membership = 'join'
	WHERE mine.type = 'm.room.member' AND mine.state_key = $1 AND mine.membership = 'join'`

// DeviceListsChanged lists the users who share a joined room with viewer, or are viewer,
// and whose device list last changed at a position in (from, to]. A user whose list changed
// again after to is left for the next window, which reports the later change.
func DeviceListsChanged(ctx context.Context, q Querier, viewer string, from, to int64) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT user_id FROM device_list_changes
		WHERE stream_pos > $2 AND stream_pos <= $3 AND (user_id = $1 OR user_id IN (`+sharedJoinedUsers+`)) ORDER BY user_id`,
		viewer, from, to)
}

// UsersSharingRooms lists the users joined to any room userID is joined to, userID included.
func UsersSharingRooms(ctx context.Context, q Querier, userID string) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT DISTINCT state_key FROM (`+sharedJoinedUsers+`) AS shared ORDER BY state_key`, userID)
}

// SharesRoom reports whether two users are both joined to some room.
func SharesRoom(ctx context.Context, q Querier, userID, otherID string) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM (`+sharedJoinedUsers+` AND other.state_key = $2) AS shared`, userID, otherID).Scan(&n)
	return n > 0, err
}

// MemberChangesIn lists the users whose membership of one of the rooms changed at a
// position in (from, to].
func MemberChangesIn(ctx context.Context, q Querier, roomNIDs []int64, from, to int64) ([]string, error) {
	seen := map[string]bool{}
	var out []string
	for _, chunk := range chunks(roomNIDs, 500) {
		args := append([]any{from, to}, int64Args(chunk)...)
		users, err := queryColumn[string](ctx, q, `SELECT DISTINCT state_key FROM events WHERE type = 'm.room.member'
			AND stream_pos > $1 AND stream_pos <= $2 AND room_nid IN (`+placeholders(len(chunk), 3)+`)`, args...)
		if err != nil {
			return nil, err
		}
		for _, u := range users {
			if !seen[u] {
				seen[u] = true
				out = append(out, u)
			}
		}
	}
	return out, nil
}

// RoomMembers lists the users joined to a room now.
func RoomMembers(ctx context.Context, q Querier, roomNID int64) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT state_key FROM current_state WHERE room_nid = $1 AND type = 'm.room.member'
		AND membership = 'join'`, roomNID)
}

// ToDeviceMessage is a to-device message waiting for its device.
type ToDeviceMessage struct {
	UserID    string
	DeviceID  string
	StreamPos int64
	Sender    string
	Type      string
	Content   []byte
}

// ToDeviceTxnSeen reports whether a /sendToDevice transaction of this device was done.
func ToDeviceTxnSeen(ctx context.Context, q Querier, userID, deviceID, txnID string) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM to_device_txns WHERE user_id = $1 AND device_id = $2 AND txn_id = $3`,
		userID, deviceID, txnID).Scan(&n)
	return n > 0, err
}

// InsertToDevice stores to-device messages at stream position pos together with the
// sender's transaction ID (txnID "" records none), and reports false, storing nothing, if
// that transaction was already done. Run it in a transaction.
func InsertToDevice(ctx context.Context, q Querier, senderDevice, txnID string, pos, nowMS int64, messages []ToDeviceMessage) (bool, error) {
	if txnID != "" && len(messages) > 0 {
		res, err := q.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
			ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, messages[0].Sender, senderDevice, txnID, nowMS)
		if err != nil {
			return false, err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return false, nil
		}
	}
	for _, m := range messages {
		if _, err := q.Exec(ctx, `INSERT INTO to_device_messages (user_id, device_id, stream_pos, sender, type, content)
			VALUES ($1, $2, $3, $4, $5, $6)`, m.UserID, m.DeviceID, pos, m.Sender, m.Type, string(m.Content)); err != nil {
			return false, err
		}
	}
	return true, ReserveStreamPos(ctx, q, StreamToDevice, pos)
}

// RecordToDeviceTxn records a /sendToDevice transaction that delivered nothing, and reports
// false if it was already recorded.
func RecordToDeviceTxn(ctx context.Context, q Querier, userID, deviceID, txnID string, nowMS int64) (bool, error) {
	res, err := q.Exec(ctx, `INSERT INTO to_device_txns (user_id, device_id, txn_id, created_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id, txn_id) DO NOTHING`, userID, deviceID, txnID, nowMS)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// ToDeviceSince lists up to limit messages of a device with from < stream_pos <= to, oldest
// first.
func ToDeviceSince(ctx context.Context, q Querier, userID, deviceID string, from, to int64, limit int) ([]ToDeviceMessage, error) {
	rows, err := q.Query(ctx, `SELECT stream_pos, sender, type, content FROM to_device_messages
		WHERE user_id = $1 AND device_id = $2 AND stream_pos > $3 AND stream_pos <= $4
		ORDER BY stream_pos, message_nid LIMIT $5`, userID, deviceID, from, to, limit)
	if err != nil {
		return nil, err
	}
	var out []ToDeviceMessage
	for rows.Next() {
		m := ToDeviceMessage{UserID: userID, DeviceID: deviceID}
		var content string
		if err := rows.Scan(&m.StreamPos, &m.Sender, &m.Type, &content); err != nil {
			rows.Close()
			return nil, err
		}
		m.Content = []byte(content)
		out = append(out, m)
	}
	return out, closeRows(rows)
}

// DeleteToDeviceThrough removes the messages of a device with stream_pos <= pos: the device
// acknowledged them by syncing from a token at or after pos.
func DeleteToDeviceThrough(ctx context.Context, q Querier, userID, deviceID string, pos int64) error {
	_, err := q.Exec(ctx, `DELETE FROM to_device_messages WHERE user_id = $1 AND device_id = $2 AND stream_pos <= $3`,
		userID, deviceID, pos)
	return err
}

// BackupVersion is one version of a user's server-side key backup.
type BackupVersion struct {
	Version   int64
	Algorithm string
	AuthData  []byte
	Etag      int64
	Count     int64
}

// CreateBackupVersion makes a new backup version, numbered above every earlier one.
func CreateBackupVersion(ctx context.Context, q Querier, userID, algorithm string, authData []byte) (int64, error) {
	var version int64
	err := q.QueryRow(ctx, `INSERT INTO backup_versions (user_id, version, algorithm, auth_data)
		VALUES ($1, (SELECT COALESCE(MAX(version), 0) + 1 FROM backup_versions WHERE user_id = $1), $2, $3) RETURNING version`,
		userID, algorithm, string(authData)).Scan(&version)
	return version, err
}

// LoadBackupVersion reads a backup version that is not deleted, with its key count;
// version 0 means the current (latest) one. ErrNotFound if there is none.
func LoadBackupVersion(ctx context.Context, q Querier, userID string, version int64) (*BackupVersion, error) {
	b := &BackupVersion{}
	var authData string
	query := `SELECT version, algorithm, auth_data, etag FROM backup_versions WHERE user_id = $1 AND NOT deleted `
	args := []any{userID}
	if version == 0 {
		query += `ORDER BY version DESC LIMIT 1`
	} else {
		query += `AND version = $2`
		args = append(args, version)
	}
	err := q.QueryRow(ctx, query, args...).Scan(&b.Version, &b.Algorithm, &authData, &b.Etag)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	b.AuthData = []byte(authData)
	err = q.QueryRow(ctx, `SELECT COUNT(*) FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, b.Version).Scan(&b.Count)
	return b, err
}

// UpdateBackupAuthData replaces the auth_data of a backup version.
func UpdateBackupAuthData(ctx context.Context, q Querier, userID string, version int64, authData []byte) error {
	_, err := q.Exec(ctx, `UPDATE backup_versions SET auth_data = $1 WHERE user_id = $2 AND version = $3 AND NOT deleted`,
		string(authData), userID, version)
	return err
}

// DeleteBackupVersion deletes a backup version and its keys; ErrNotFound if it does not
// exist or was deleted already. The row stays, marked deleted, so its number is not reused.
func DeleteBackupVersion(ctx context.Context, q Querier, userID string, version int64) error {
	res, err := q.Exec(ctx, `UPDATE backup_versions SET deleted = TRUE WHERE user_id = $1 AND version = $2 AND NOT deleted`, userID, version)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	_, err = q.Exec(ctx, `DELETE FROM backup_keys WHERE user_id = $1 AND version = $2`, userID, version)
	return err
}

// BackupKey is the backed-up key of one Megolm session (definitions/key_backup_data.yaml).
type BackupKey struct {
	RoomID            string
	SessionID         string
	FirstMessageIndex int64
	ForwardedCount    int64
	IsVerified        bool
	SessionData       []byte
}

// LoadBackupKey reads the stored key of one session; ErrNotFound if none.
func LoadBackupKey(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) (*BackupKey, error) {
	keys, err := BackupKeys(ctx, q, userID, version, roomID, sessionID)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, ErrNotFound
	}
	return &keys[0], nil
}

// PutBackupKey stores the key of one session, replacing any stored one; the caller decides
// which key is better.
func PutBackupKey(ctx context.Context, q Querier, userID string, version int64, k *BackupKey) error {
	_, err := q.Exec(ctx, `INSERT INTO backup_keys (user_id, version, room_id, session_id, first_message_index, forwarded_count, is_verified, session_data)
		VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
		ON CONFLICT (user_id, version, room_id, session_id) DO UPDATE SET first_message_index = excluded.first_message_index,
			forwarded_count = excluded.forwarded_count, is_verified = excluded.is_verified, session_data = excluded.session_data`,
		userID, version, k.RoomID, k.SessionID, k.FirstMessageIndex, k.ForwardedCount, k.IsVerified, string(k.SessionData))
	return err
}

// BumpBackupEtag changes the etag of a backup version after its keys changed.
func BumpBackupEtag(ctx context.Context, q Querier, userID string, version int64) error {
	_, err := q.Exec(ctx, `UPDATE backup_versions SET etag = etag + 1 WHERE user_id = $1 AND version = $2`, userID, version)
	return err
}

// backupKeyFilter is the WHERE clause selecting a backup's keys, of one room (roomID not
// "") and one session (sessionID not "").
func backupKeyFilter(userID string, version int64, roomID, sessionID string) (string, []any) {
	where := `user_id = $1 AND version = $2`
	args := []any{userID, version}
	if roomID != "" {
		where += ` AND room_id = $3`
		args = append(args, roomID)
		if sessionID != "" {
			where += ` AND session_id = $4`
			args = append(args, sessionID)
		}
	}
	return where, args
}

// BackupKeys lists the keys of a backup version, of one room (roomID not "") and one
// session (sessionID not "").
func BackupKeys(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) ([]BackupKey, error) {
	where, args := backupKeyFilter(userID, version, roomID, sessionID)
	rows, err := q.Query(ctx, `SELECT room_id, session_id, first_message_index, forwarded_count, is_verified, session_data
		FROM backup_keys WHERE `+where+` ORDER BY room_id, session_id`, args...)
	if err != nil {
		return nil, err
	}
	var out []BackupKey
	for rows.Next() {
		var k BackupKey
		var data string
		if err := rows.Scan(&k.RoomID, &k.SessionID, &k.FirstMessageIndex, &k.ForwardedCount, &k.IsVerified, &data); err != nil {
			rows.Close()
			return nil, err
		}
		k.SessionData = []byte(data)
		out = append(out, k)
	}
	return out, closeRows(rows)
}

// DeleteBackupKeys removes the keys of a backup version, of one room (roomID not "") and
// one session (sessionID not ""), and reports how many it removed.
func DeleteBackupKeys(ctx context.Context, q Querier, userID string, version int64, roomID, sessionID string) (int64, error) {
	where, args := backupKeyFilter(userID, version, roomID, sessionID)
	res, err := q.Exec(ctx, `DELETE FROM backup_keys WHERE `+where, args...)
	if err != nil {
		return 0, err
	}
	return res.RowsAffected()
}

// DehydratedDevice is a user's dehydrated device (MSC3814).
type DehydratedDevice struct {
	DeviceID   string
	DeviceData []byte
}

// LoadDehydratedDevice reads a user's dehydrated device; ErrNotFound if none.
func LoadDehydratedDevice(ctx context.Context, q Querier, userID string) (*DehydratedDevice, error) {
	d := &DehydratedDevice{}
	var data string
	err := q.QueryRow(ctx, `SELECT device_id, device_data FROM dehydrated_devices WHERE user_id = $1`, userID).Scan(&d.DeviceID, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	d.DeviceData = []byte(data)
	return d, err
}

// PutDehydratedDevice records deviceID as the user's dehydrated device.
func PutDehydratedDevice(ctx context.Context, q Querier, userID, deviceID string, deviceData []byte) error {
	_, err := q.Exec(ctx, `INSERT INTO dehydrated_devices (user_id, device_id, device_data) VALUES ($1, $2, $3)
		ON CONFLICT (user_id) DO UPDATE SET device_id = excluded.device_id, device_data = excluded.device_data`,
		userID, deviceID, string(deviceData))
	return err
}

// Device lists over federation (server-server API "Device Management"): the outbound
// m.device_list_update stream of each local user, and the cached device lists of other
// servers' users.

// OutboundDeviceList is what was last announced to other servers of a local user's device
// list: the stream_id of the last m.device_list_update, the digest of the cross-signing
// keys, and the digest of each device's keys and display name.
type OutboundDeviceList struct {
	StreamID           int64
	CrossSigningDigest string
	Devices            map[string]string
}

// LockOutboundDeviceList reads what was last announced of userID's device list, creating
// its row if needed. The row is written first so that, in a transaction, concurrent changes
// of the same user's device list are announced one after the other.
func LockOutboundDeviceList(ctx context.Context, q Querier, userID string) (*OutboundDeviceList, error) {
	if _, err := q.Exec(ctx, `INSERT INTO device_list_outbound (user_id, stream_id) VALUES ($1, 0)
		ON CONFLICT (user_id) DO UPDATE SET stream_id = device_list_outbound.stream_id`, userID); err != nil {
		return nil, err
	}
	out := &OutboundDeviceList{Devices: map[string]string{}}
	if err := q.QueryRow(ctx, `SELECT stream_id, cross_signing_digest FROM device_list_outbound WHERE user_id = $1`, userID).
		Scan(&out.StreamID, &out.CrossSigningDigest); err != nil {
		return nil, err
	}
	rows, err := q.Query(ctx, `SELECT device_id, digest FROM device_list_outbound_devices WHERE user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var deviceID, digest string
		if err := rows.Scan(&deviceID, &digest); err != nil {
			rows.Close()
			return nil, err
		}
		out.Devices[deviceID] = digest
	}
	return out, closeRows(rows)
}

// SaveOutboundDeviceList records what was announced of userID's device list: the new
// stream_id and cross-signing digest, the digests of changed devices and the removal of
// deleted ones.
func SaveOutboundDeviceList(ctx context.Context, q Querier, userID string, streamID int64, crossSigningDigest string,
	changed map[string]string, deleted []string) error {
	if _, err := q.Exec(ctx, `UPDATE device_list_outbound SET stream_id = $2, cross_signing_digest = $3 WHERE user_id = $1`,
		userID, streamID, crossSigningDigest); err != nil {
		return err
	}
	for deviceID, digest := range changed {
		if _, err := q.Exec(ctx, `INSERT INTO device_list_outbound_devices (user_id, device_id, digest) VALUES ($1, $2, $3)
			ON CONFLICT (user_id, device_id) DO UPDATE SET digest = excluded.digest`, userID, deviceID, digest); err != nil {
			return err
		}
	}
	for _, deviceID := range deleted {
		if _, err := q.Exec(ctx, `DELETE FROM device_list_outbound_devices WHERE user_id = $1 AND device_id = $2`,
			userID, deviceID); err != nil {
			return err
		}
	}
	return nil
}

// OutboundDeviceListStreamID is the stream_id of the last m.device_list_update made for a
// local user, 0 if none.
func OutboundDeviceListStreamID(ctx context.Context, q Querier, userID string) (int64, error) {
	var id int64
	err := q.QueryRow(ctx, `SELECT stream_id FROM device_list_outbound WHERE user_id = $1`, userID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return id, err
}

// SharesRoomWithServer reports whether userID is joined to a room that a user of server
// is joined to.
func SharesRoomWithServer(ctx context.Context, q Querier, userID, server string) (bool, error) {
	suffix := ":" + server
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM (`+sharedJoinedUsers+`
		AND length(other.state_key) > $3 AND substr(other.state_key, length(other.state_key) - $3 + 1) = $2
		LIMIT 1) AS shared`, userID, suffix, len(suffix)).Scan(&n)
	return n > 0, err
}

// RemoteDevice is one device of another server's user in the cache.
type RemoteDevice struct {
	DeviceID    string
	KeyJSON     []byte
	DisplayName string
}

// RemoteDeviceList is the cached device list of another server's user.
type RemoteDeviceList struct {
	UserID         string
	StreamID       int64
	MasterKey      []byte
	SelfSigningKey []byte
	Devices        []RemoteDevice
}

// RemoteDeviceListStreamID is the stream_id the cached device list of userID is at; ok is
// false when it is not cached.
func RemoteDeviceListStreamID(ctx context.Context, q Querier, userID string) (id int64, ok bool, err error) {
	err = q.QueryRow(ctx, `SELECT stream_id FROM remote_device_lists WHERE user_id = $1`, userID).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, false, nil
	}
	return id, err == nil, err
}

// LoadRemoteDeviceList reads the cached device list of userID, with the devices named in
// deviceIDs (all when empty); ErrNotFound if it is not cached.
func LoadRemoteDeviceList(ctx context.Context, q Querier, userID string, deviceIDs []string) (*RemoteDeviceList, error) {
	l := &RemoteDeviceList{UserID: userID}
	var master, selfSigning string
	err := q.QueryRow(ctx, `SELECT stream_id, master_key, self_signing_key FROM remote_device_lists WHERE user_id = $1`, userID).
		Scan(&l.StreamID, &master, &selfSigning)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	if master != "" {
		l.MasterKey = []byte(master)
	}
	if selfSigning != "" {
		l.SelfSigningKey = []byte(selfSigning)
	}
	query := `SELECT device_id, key_json, display_name FROM remote_device_keys WHERE user_id = $1`
	args := []any{userID}
	if len(deviceIDs) > 0 {
		query += ` AND device_id IN (` + placeholders(len(deviceIDs), 2) + `)`
		for _, id := range deviceIDs {
			args = append(args, id)
		}
	}
	rows, err := q.Query(ctx, query+` ORDER BY device_id`, args...)
	if err != nil {
		return nil, err
	}
	for rows.Next() {
		var d RemoteDevice
		var keyJSON string
		if err := rows.Scan(&d.DeviceID, &keyJSON, &d.DisplayName); err != nil {
			rows.Close()
			return nil, err
		}
		d.KeyJSON = []byte(keyJSON)
		l.Devices = append(l.Devices, d)
	}
	return l, closeRows(rows)
}

// ReplaceRemoteDeviceList stores the whole device list of another server's user, as a
// resync fetched it, in place of what was cached.
func ReplaceRemoteDeviceList(ctx context.Context, q Querier, l *RemoteDeviceList, nowMS int64) error {
	if err := DeleteRemoteDeviceList(ctx, q, l.UserID); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, `INSERT INTO remote_device_lists (user_id, stream_id, master_key, self_signing_key, updated_ts)
		VALUES ($1, $2, $3, $4, $5)`, l.UserID, l.StreamID, string(l.MasterKey), string(l.SelfSigningKey), nowMS); err != nil {
		return err
	}
	for _, d := range l.Devices {
		if err := PutRemoteDevice(ctx, q, l.UserID, d); err != nil {
			return err
		}
	}
	return nil
}

// DeleteRemoteDeviceList forgets the cached device list of another server's user.
func DeleteRemoteDeviceList(ctx context.Context, q Querier, userID string) error {
	if _, err := q.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1`, userID); err != nil {
		return err
	}
	_, err := q.Exec(ctx, `DELETE FROM remote_device_lists WHERE user_id = $1`, userID)
	return err
}

// SetRemoteDeviceListStreamID moves the cached device list of userID to stream_id id.
func SetRemoteDeviceListStreamID(ctx context.Context, q Querier, userID string, id, nowMS int64) error {
	_, err := q.Exec(ctx, `UPDATE remote_device_lists SET stream_id = $2, updated_ts = $3 WHERE user_id = $1`, userID, id, nowMS)
	return err
}

// PutRemoteDevice stores one device of another server's user in the cache.
func PutRemoteDevice(ctx context.Context, q Querier, userID string, d RemoteDevice) error {
	_, err := q.Exec(ctx, `INSERT INTO remote_device_keys (user_id, device_id, key_json, display_name) VALUES ($1, $2, $3, $4)
		ON CONFLICT (user_id, device_id) DO UPDATE SET key_json = excluded.key_json, display_name = excluded.display_name`,
		userID, d.DeviceID, string(d.KeyJSON), d.DisplayName)
	return err
}

// RenameRemoteDevice changes the display name of a cached device, if it is cached.
func RenameRemoteDevice(ctx context.Context, q Querier, userID, deviceID, displayName string) error {
	_, err := q.Exec(ctx, `UPDATE remote_device_keys SET display_name = $3 WHERE user_id = $1 AND device_id = $2`,
		userID, deviceID, displayName)
	return err
}

// DeleteRemoteDevice removes one device of another server's user from the cache.
func DeleteRemoteDevice(ctx context.Context, q Querier, userID, deviceID string) error {
	_, err := q.Exec(ctx, `DELETE FROM remote_device_keys WHERE user_id = $1 AND device_id = $2`, userID, deviceID)
	return err
}

// SetRemoteCrossSigningKeys replaces the cached master and self-signing keys of another
// server's user (nil leaves that key as it is) and reports whether the user is cached.
func SetRemoteCrossSigningKeys(ctx context.Context, q Querier, userID string, master, selfSigning []byte) (bool, error) {
	res, err := q.Exec(ctx, `UPDATE remote_device_lists SET master_key = COALESCE($2, master_key),
		self_signing_key = COALESCE($3, self_signing_key) WHERE user_id = $1`, userID, nullableText(master), nullableText(selfSigning))
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// nullableText is b as a text parameter, NULL when b is nil.
func nullableText(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}
