package storage

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
)

// Queries of local accounts: users, devices and access tokens, registration tokens,
// account data and filters.

// UserRow is a local account.
type UserRow struct {
	UserID       string
	PasswordHash string
	IsAdmin      bool
	Deactivated  bool
	DisplayName  string
	AvatarURL    string
}

// ErrExists is returned when a row to insert already exists.
var ErrExists = errors.New("already exists")

// InsertUser creates an account; ErrExists if the user ID is taken.
func InsertUser(ctx context.Context, q Querier, u *UserRow, nowMS int64) error {
	res, err := q.Exec(ctx, `INSERT INTO users (user_id, password_hash, is_admin, displayname, created_ts)
		VALUES ($1, $2, $3, $4, $5) ON CONFLICT (user_id) DO NOTHING`,
		u.UserID, u.PasswordHash, u.IsAdmin, nullString(u.DisplayName), nowMS)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrExists
	}
	return nil
}

// LoadUser reads an account; ErrNotFound if there is none.
func LoadUser(ctx context.Context, q Querier, userID string) (*UserRow, error) {
	u := &UserRow{UserID: userID}
	var display, avatar sql.NullString
	err := q.QueryRow(ctx, `SELECT password_hash, is_admin, deactivated, displayname, avatar_url FROM users WHERE user_id = $1`, userID).
		Scan(&u.PasswordHash, &u.IsAdmin, &u.Deactivated, &display, &avatar)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	u.DisplayName, u.AvatarURL = display.String, avatar.String
	return u, err
}

// SetPasswordHash replaces a user's password hash.
func SetPasswordHash(ctx context.Context, q Querier, userID, hash string) error {
	_, err := q.Exec(ctx, `UPDATE users SET password_hash = $1 WHERE user_id = $2`, hash, userID)
	return err
}

// DeactivateUser marks an account deactivated, clears its password and profile (custom
// fields too) and removes its devices. With erase it also removes the account data
// (client-server API "Account deactivation": erasure of non-event data).
func DeactivateUser(ctx context.Context, q Querier, userID string, erase bool) error {
	if _, err := q.Exec(ctx, `UPDATE users SET deactivated = TRUE, password_hash = '', displayname = NULL, avatar_url = NULL WHERE user_id = $1`, userID); err != nil {
		return err
	}
	if _, err := q.Exec(ctx, `DELETE FROM profile_fields WHERE user_id = $1`, userID); err != nil {
		return err
	}
	if erase {
		if _, err := q.Exec(ctx, `DELETE FROM account_data WHERE user_id = $1`, userID); err != nil {
			return err
		}
	}
	_, err := q.Exec(ctx, `DELETE FROM devices WHERE user_id = $1`, userID)
	return err
}

// SetProfile sets a user's display name or avatar URL (field is "displayname" or "avatar_url").
func SetProfile(ctx context.Context, q Querier, userID, field, value string) error {
	query := `UPDATE users SET displayname = $1 WHERE user_id = $2`
	if field == "avatar_url" {
		query = `UPDATE users SET avatar_url = $1 WHERE user_id = $2`
	}
	_, err := q.Exec(ctx, query, nullString(value), userID)
	return err
}

// ProfileFields reads a user's custom profile fields (client-server API "Profiles", v1.16
// keyName): field name → JSON value. displayname and avatar_url live in users instead.
func ProfileFields(ctx context.Context, q Querier, userID string) (map[string]json.RawMessage, error) {
	rows, err := q.Query(ctx, `SELECT field, value FROM profile_fields WHERE user_id = $1`, userID)
	if err != nil {
		return nil, err
	}
	out := map[string]json.RawMessage{}
	for rows.Next() {
		var field, value string
		if err := rows.Scan(&field, &value); err != nil {
			rows.Close()
			return nil, err
		}
		out[field] = json.RawMessage(value)
	}
	return out, closeRows(rows)
}

// SetProfileField stores one custom profile field as JSON.
func SetProfileField(ctx context.Context, q Querier, userID, field string, value json.RawMessage) error {
	_, err := q.Exec(ctx, `INSERT INTO profile_fields (user_id, field, value) VALUES ($1, $2, $3)
		ON CONFLICT (user_id, field) DO UPDATE SET value = excluded.value`, userID, field, string(value))
	return err
}

// DeleteProfileField removes one custom profile field; removing an absent field is not an
// error.
func DeleteProfileField(ctx context.Context, q Querier, userID, field string) error {
	_, err := q.Exec(ctx, `DELETE FROM profile_fields WHERE user_id = $1 AND field = $2`, userID, field)
	return err
}

// DeviceRow is one device (login session) of a user.
type DeviceRow struct {
	UserID      string
	DeviceID    string
	DisplayName string
	LastSeenTS  int64
	LastSeenIP  string
}

// UpsertDevice creates a device, or gives an existing device of the user a new access token
// (a login that names its device ID replaces that device's token). The display name is
// only set on a new device: the spec ignores initial_device_display_name for a known one.
func UpsertDevice(ctx context.Context, q Querier, userID, deviceID, displayName string, tokenHash []byte, ip string, nowMS int64) error {
	_, err := q.Exec(ctx, `INSERT INTO devices (user_id, device_id, display_name, token_hash, created_ts, last_seen_ts, last_seen_ip)
		VALUES ($1, $2, $3, $4, $5, $5, $6)
		ON CONFLICT (user_id, device_id) DO UPDATE SET token_hash = excluded.token_hash,
			last_seen_ts = excluded.last_seen_ts, last_seen_ip = excluded.last_seen_ip`,
		userID, deviceID, nullString(displayName), tokenHash, nowMS, ip)
	return err
}

// TokenOwner is the device an access token belongs to, with what every request needs of
// its account: whether it is a server admin, locked or suspended.
type TokenOwner struct {
	UserID    string
	DeviceID  string
	IsAdmin   bool
	Locked    bool
	Suspended bool
}

// DeviceByToken finds the device of an access token hash and the state of its account;
// ErrNotFound if none.
func DeviceByToken(ctx context.Context, q Querier, tokenHash []byte) (*TokenOwner, error) {
	var o TokenOwner
	err := q.QueryRow(ctx, `SELECT d.user_id, d.device_id, u.is_admin, u.locked, u.suspended FROM devices d JOIN users u ON u.user_id = d.user_id
		WHERE d.token_hash = $1 AND NOT u.deactivated`, tokenHash).Scan(&o.UserID, &o.DeviceID, &o.IsAdmin, &o.Locked, &o.Suspended)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &o, nil
}

// TouchDevice records when and from where a device was last seen.
func TouchDevice(ctx context.Context, q Querier, userID, deviceID, ip string, nowMS int64) error {
	_, err := q.Exec(ctx, `UPDATE devices SET last_seen_ts = $1, last_seen_ip = $2 WHERE user_id = $3 AND device_id = $4`,
		nowMS, ip, userID, deviceID)
	return err
}

// ListDevices lists a user's devices.
func ListDevices(ctx context.Context, q Querier, userID string) ([]DeviceRow, error) {
	rows, err := q.Query(ctx, `SELECT device_id, display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 ORDER BY device_id`, userID)
	if err != nil {
		return nil, err
	}
	var out []DeviceRow
	for rows.Next() {
		d := DeviceRow{UserID: userID}
		var name sql.NullString
		if err := rows.Scan(&d.DeviceID, &name, &d.LastSeenTS, &d.LastSeenIP); err != nil {
			rows.Close()
			return nil, err
		}
		d.DisplayName = name.String
		out = append(out, d)
	}
	return out, closeRows(rows)
}

// LoadDevice reads one device; ErrNotFound if the user has no such device.
func LoadDevice(ctx context.Context, q Querier, userID, deviceID string) (*DeviceRow, error) {
	d := &DeviceRow{UserID: userID, DeviceID: deviceID}
	var name sql.NullString
	err := q.QueryRow(ctx, `SELECT display_name, last_seen_ts, last_seen_ip FROM devices WHERE user_id = $1 AND device_id = $2`, userID, deviceID).
		Scan(&name, &d.LastSeenTS, &d.LastSeenIP)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	d.DisplayName = name.String
	return d, err
}

// RenameDevice sets a device's display name; ErrNotFound if there is no such device.
func RenameDevice(ctx context.Context, q Querier, userID, deviceID, name string) error {
	res, err := q.Exec(ctx, `UPDATE devices SET display_name = $1 WHERE user_id = $2 AND device_id = $3`, name, userID, deviceID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrNotFound
	}
	return nil
}

// DeleteDevices removes the named devices of a user, and so their access tokens. Unknown
// device IDs are ignored.
func DeleteDevices(ctx context.Context, q Querier, userID string, deviceIDs []string) error {
	for _, chunk := range chunks(deviceIDs, 500) {
		args := []any{userID}
		for _, id := range chunk {
			args = append(args, id)
		}
		if _, err := q.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id IN (`+placeholders(len(chunk), 2)+`)`, args...); err != nil {
			return err
		}
	}
	return nil
}

// DeleteOtherDevices removes every device of a user except keepDeviceID ("" keeps none).
func DeleteOtherDevices(ctx context.Context, q Querier, userID, keepDeviceID string) error {
	_, err := q.Exec(ctx, `DELETE FROM devices WHERE user_id = $1 AND device_id <> $2`, userID, keepDeviceID)
	return err
}

// RegistrationTokenValid reports whether a registration token exists, has uses left and
// has not expired.
func RegistrationTokenValid(ctx context.Context, q Querier, token string, nowMS int64) (bool, error) {
	var n int
	err := q.QueryRow(ctx, `SELECT COUNT(*) FROM registration_tokens WHERE token = $1
		AND (uses_allowed IS NULL OR pending + completed < uses_allowed)
		AND (expiry_ts IS NULL OR expiry_ts > $2)`, token, nowMS).Scan(&n)
	return n > 0, err
}

// UseRegistrationToken counts a completed registration against a token, if the token is
// still usable at nowMS; it reports whether it was. Run it in the transaction that creates
// the account, so that concurrent registrations cannot use a token more often than allowed.
func UseRegistrationToken(ctx context.Context, q Querier, token string, nowMS int64) (bool, error) {
	res, err := q.Exec(ctx, `UPDATE registration_tokens SET completed = completed + 1 WHERE token = $1
		AND (uses_allowed IS NULL OR pending + completed < uses_allowed)
		AND (expiry_ts IS NULL OR expiry_ts > $2)`, token, nowMS)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	return n > 0, err
}

// InsertRegistrationToken creates a registration token (usesAllowed 0 = unlimited, expiryMS 0 = never).
func InsertRegistrationToken(ctx context.Context, q Querier, token string, usesAllowed, expiryMS int64) error {
	var uses, expiry any
	if usesAllowed > 0 {
		uses = usesAllowed
	}
	if expiryMS > 0 {
		expiry = expiryMS
	}
	_, err := q.Exec(ctx, `INSERT INTO registration_tokens (token, uses_allowed, expiry_ts) VALUES ($1, $2, $3)`, token, uses, expiry)
	return err
}

// AccountDataRow is one piece of account data.
type AccountDataRow struct {
	RoomID    string
	Type      string
	Content   []byte
	StreamPos int64
}

// PutAccountData stores global (roomID "") or per-room account data at a stream position.
func PutAccountData(ctx context.Context, q Querier, userID, roomID, dataType string, content []byte, pos int64) error {
	_, err := q.Exec(ctx, `INSERT INTO account_data (user_id, room_id, type, content, stream_pos) VALUES ($1, $2, $3, $4, $5)
		ON CONFLICT (user_id, room_id, type) DO UPDATE SET content = excluded.content, stream_pos = excluded.stream_pos`,
		userID, roomID, dataType, string(content), pos)
	return err
}

// GetAccountData reads one piece of account data; ErrNotFound if none.
func GetAccountData(ctx context.Context, q Querier, userID, roomID, dataType string) ([]byte, error) {
	var content string
	err := q.QueryRow(ctx, `SELECT content FROM account_data WHERE user_id = $1 AND room_id = $2 AND type = $3`,
		userID, roomID, dataType).Scan(&content)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(content), err
}

// AccountDataSince lists a user's account data changed with from < stream_pos <= to.
func AccountDataSince(ctx context.Context, q Querier, userID string, from, to int64) ([]AccountDataRow, error) {
	rows, err := q.Query(ctx, `SELECT room_id, type, content, stream_pos FROM account_data
		WHERE user_id = $1 AND stream_pos > $2 AND stream_pos <= $3 ORDER BY stream_pos`, userID, from, to)
	if err != nil {
		return nil, err
	}
	var out []AccountDataRow
	for rows.Next() {
		var r AccountDataRow
		var content string
		if err := rows.Scan(&r.RoomID, &r.Type, &content, &r.StreamPos); err != nil {
			rows.Close()
			return nil, err
		}
		r.Content = []byte(content)
		out = append(out, r)
	}
	return out, closeRows(rows)
}

// InsertFilter stores a filter and returns its per-user ID.
func InsertFilter(ctx context.Context, q Querier, userID string, filter []byte) (int64, error) {
	var id int64
	err := q.QueryRow(ctx, `INSERT INTO filters (user_id, filter_id, filter)
		VALUES ($1, (SELECT COALESCE(MAX(filter_id), -1) + 1 FROM filters WHERE user_id = $1), $2) RETURNING filter_id`,
		userID, string(filter)).Scan(&id)
	return id, err
}

// LoadFilter reads a stored filter; ErrNotFound if none.
func LoadFilter(ctx context.Context, q Querier, userID string, filterID int64) ([]byte, error) {
	var filter string
	err := q.QueryRow(ctx, `SELECT filter FROM filters WHERE user_id = $1 AND filter_id = $2`, userID, filterID).Scan(&filter)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return []byte(filter), err
}

// AccountStatus is what the account moderation of the server administrators (client-server
// API "Account locking", "Account suspension") needs to know of an account.
type AccountStatus struct {
	IsAdmin     bool
	Deactivated bool
	Locked      bool
	Suspended   bool
}

// LoadAccountStatus reads the status of an account; ErrNotFound if there is none.
func LoadAccountStatus(ctx context.Context, q Querier, userID string) (*AccountStatus, error) {
	var s AccountStatus
	err := q.QueryRow(ctx, `SELECT is_admin, deactivated, locked, suspended FROM users WHERE user_id = $1`, userID).
		Scan(&s.IsAdmin, &s.Deactivated, &s.Locked, &s.Suspended)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// SetAccountLocked locks or unlocks an account; ErrNotFound if there is no such account or
// it is deactivated. Its access tokens stay: they work again once it is unlocked.
func SetAccountLocked(ctx context.Context, q Querier, userID string, locked bool) error {
	return setAccountFlag(ctx, q, `UPDATE users SET locked = $1 WHERE user_id = $2 AND NOT deactivated`, userID, locked)
}

// SetAccountSuspended suspends or unsuspends an account; ErrNotFound if there is no such
// account or it is deactivated.
func SetAccountSuspended(ctx context.Context, q Querier, userID string, suspended bool) error {
	return setAccountFlag(ctx, q, `UPDATE users SET suspended = $1 WHERE user_id = $2 AND NOT deactivated`, userID, suspended)
}

func setAccountFlag(ctx context.Context, q Querier, query, userID string, value bool) error {
	res, err := q.Exec(ctx, query, value, userID)
	if err != nil {
		return err
	}
	if n, err := res.RowsAffected(); err != nil {
		return err
	} else if n == 0 {
		return ErrNotFound
	}
	return nil
}
