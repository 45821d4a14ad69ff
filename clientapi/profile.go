package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"unicode/utf8"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Profiles (client-server API "Profiles", profile.yaml). displayname and avatar_url are
// kept in the users table and copied into the user's member events; other fields (m.tz
// and custom namespaced keys, since v1.16) are stored as JSON in profile_fields.

// Profile keys the spec defines.
const (
	profileDisplayName = "displayname"
	profileAvatarURL   = "avatar_url"
	profileTimeZone    = "m.tz"
)

// maxDisplayNameLength is the longest display name, in characters. NOTSPEC: Synapse's
// MAX_DISPLAYNAME_LEN.
const maxDisplayNameLength = 256

// maxAvatarURLLength is the longest avatar URL, in bytes. NOTSPEC: Synapse's
// MAX_AVATAR_URL_LEN.
const maxAvatarURLLength = 1000

// maxProfileSize is the limit on a whole profile as JSON: profile.yaml, "the total profile
// MUST be under 64 KiB".
const maxProfileSize = 64 * 1024

// maxProfileKeyLength is the longest profile key, in bytes (profile.yaml M_KEY_TOO_LARGE).
const maxProfileKeyLength = 255

// errProfileNotFound is the 404 of profile look-ups.
func errProfileNotFound() *httpapi.Error {
	return httpapi.NotFound("Profile not found")
}

// checkProfileKey validates a keyName path parameter (profile.yaml): displayname,
// avatar_url, m.tz or a custom key of the Common Namespaced Identifier Grammar. Other keys
// of the reserved m. namespace are refused, since the spec defines no others.
func checkProfileKey(key string) error {
	switch key {
	case profileDisplayName, profileAvatarURL, profileTimeZone:
		return nil
	}
	if len(key) > maxProfileKeyLength {
		return httpapi.NewError(http.StatusBadRequest, "M_KEY_TOO_LARGE", "Profile keys are at most %d bytes", maxProfileKeyLength)
	}
	if spec.ValidateNamespacedIdentifier(key) != nil || strings.HasPrefix(key, "m.") {
		return httpapi.InvalidParam("Invalid profile key")
	}
	return nil
}

// userProfile is the profile of the userId path parameter (only field of it when field is
// set): ours from the database, another server's user's through the federation
// (server-server API "Querying for information", GET /query/profile).
func (a *API) userProfile(r *http.Request, field string) (map[string]json.RawMessage, error) {
	userID := pathParam(r, "userId")
	parsed, err := spec.ParseUserID(userID)
	if err != nil {
		return nil, httpapi.InvalidParam("Invalid user ID")
	}
	if parsed.Server() != a.cfg.ServerName {
		if a.remote == nil {
			return nil, errProfileNotFound()
		}
		profile, err := a.remote.QueryProfile(r.Context(), userID, field)
		if err != nil {
			return nil, federationFailure(err, "Cannot fetch the profile of %s", userID)
		}
		// "If the user does not have a particular field set … exclude it … or give it the
		// value null."
		for key, value := range profile {
			if string(value) == "null" {
				delete(profile, key)
			}
		}
		return profile, nil
	}
	return a.LocalProfile(r.Context(), userID)
}

// federationFailure is the answer when a request to another server failed: the other server's
// Matrix error when it gave one we pass on (the federation API turns those into
// *httpapi.Error), else 502.
func federationFailure(err error, format string, args ...any) error {
	var merr *httpapi.Error
	if errors.As(err, &merr) {
		return merr
	}
	return httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", format, args...)
}

// LocalProfile is the whole profile of one of our users (federation.LocalData): 404 for
// unknown users and deactivated accounts.
func (a *API) LocalProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	u, err := a.localProfileUser(ctx, userID)
	if err != nil {
		return nil, err
	}
	return a.profileOf(ctx, u)
}

// localProfileUser loads the local account userID names. Unknown users and deactivated
// accounts have no profile.
func (a *API) localProfileUser(ctx context.Context, userID string) (*storage.UserRow, error) {
	u, err := storage.LoadUser(ctx, a.db, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, errProfileNotFound()
	}
	if err != nil {
		return nil, err
	}
	if u.Deactivated {
		return nil, errProfileNotFound()
	}
	return u, nil
}

// profileOf assembles a user's whole profile as profile.yaml shows it: set fields only.
func (a *API) profileOf(ctx context.Context, u *storage.UserRow) (map[string]json.RawMessage, error) {
	profile, err := storage.ProfileFields(ctx, a.db, u.UserID)
	if err != nil {
		return nil, err
	}
	if u.DisplayName != "" {
		profile[profileDisplayName] = mustJSON(u.DisplayName)
	}
	if u.AvatarURL != "" {
		profile[profileAvatarURL] = mustJSON(u.AvatarURL)
	}
	return profile, nil
}

// GET /profile/{userId} (profile.yaml getUserProfile).
func (a *API) getProfile(w http.ResponseWriter, r *http.Request) error {
	profile, err := a.userProfile(r, "")
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, profile)
	return nil
}

// GET /profile/{userId}/{keyName} (profile.yaml getProfileField): 404 when the field is not
// set.
func (a *API) getProfileField(w http.ResponseWriter, r *http.Request) error {
	key := pathParam(r, "keyName")
	if err := checkProfileKey(key); err != nil {
		return err
	}
	profile, err := a.userProfile(r, key)
	if err != nil {
		return err
	}
	value, ok := profile[key]
	if !ok {
		return httpapi.NotFound("Profile field %s is not set", key)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]json.RawMessage{key: value})
	return nil
}

// ownProfile checks that the userId path parameter is the requesting user, the only one
// whose profile they may change, and loads their account.
func (a *API) ownProfile(r *http.Request, d *Device) (*storage.UserRow, error) {
	userID := pathParam(r, "userId")
	if _, err := spec.ParseUserID(userID); err != nil {
		return nil, httpapi.InvalidParam("Invalid user ID")
	}
	if userID != d.UserID {
		return nil, httpapi.Forbidden("Cannot change the profile of another user")
	}
	return storage.LoadUser(r.Context(), a.db, d.UserID)
}

// checkProfileValue validates the new value of a spec-defined field: displayname a string
// of at most 256 characters, avatar_url an mxc:// URI, m.tz a string. An empty string
// clears displayname and avatar_url. Custom fields take any JSON value.
func checkProfileValue(key string, value json.RawMessage) error {
	var s string
	switch key {
	case profileDisplayName, profileAvatarURL, profileTimeZone:
		if err := json.Unmarshal(value, &s); err != nil {
			return httpapi.InvalidParam("%s must be a string", key)
		}
	default:
		return nil
	}
	switch key {
	case profileDisplayName:
		if utf8.RuneCountInString(s) > maxDisplayNameLength {
			return httpapi.InvalidParam("displayname is longer than %d characters", maxDisplayNameLength)
		}
	case profileAvatarURL:
		if s != "" && !validMXC(s) {
			return httpapi.InvalidParam("avatar_url must be an mxc:// URI")
		}
		if len(s) > maxAvatarURLLength {
			return httpapi.InvalidParam("avatar_url is longer than %d bytes", maxAvatarURLLength)
		}
	case profileTimeZone:
		if s == "" || len(s) > maxProfileKeyLength {
			return httpapi.InvalidParam("m.tz must be a time zone identifier")
		}
	}
	return nil
}

// validMXC reports whether uri has the form mxc://<server-name>/<media-id> (client-server
// API "Matrix Content (mxc://) URIs"): media IDs are [A-Za-z0-9_-]+.
func validMXC(uri string) bool {
	rest, ok := strings.CutPrefix(uri, "mxc://")
	if !ok {
		return false
	}
	server, mediaID, ok := strings.Cut(rest, "/")
	if !ok || mediaID == "" || spec.ValidateServerName(server) != nil {
		return false
	}
	for i := 0; i < len(mediaID); i++ {
		c := mediaID[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}

// PUT /profile/{userId}/{keyName} (profile.yaml setProfileField). The body is an object
// whose keyName member is the new value. A new displayname or avatar_url is sent to every
// room the user is joined to in an updated member event (client-server API "Events on
// Change of Profile Information").
func (a *API) setProfileField(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	key := pathParam(r, "keyName")
	if err := checkProfileKey(key); err != nil {
		return err
	}
	u, err := a.ownProfile(r, d)
	if err != nil {
		return err
	}
	var body map[string]json.RawMessage
	if err := httpapi.ReadJSON(r, maxProfileSize, &body); err != nil {
		return err
	}
	value, ok := body[key]
	if !ok {
		return httpapi.MissingParam("Missing %s", key)
	}
	if bytes.Equal(bytes.TrimSpace(value), []byte("null")) {
		// profile.yaml: servers MAY reject null; DELETE removes a field.
		return httpapi.InvalidParam("%s must not be null; use DELETE to remove it", key)
	}
	if err := checkProfileValue(key, value); err != nil {
		return err
	}
	profile, err := a.profileOf(r.Context(), u)
	if err != nil {
		return err
	}
	profile[key] = value
	if encoded, err := json.Marshal(profile); err != nil {
		return httpapi.BadJSON("Invalid profile value")
	} else if len(encoded) >= maxProfileSize {
		return httpapi.NewError(http.StatusBadRequest, "M_PROFILE_TOO_LARGE", "The profile would exceed %d bytes", maxProfileSize)
	}
	if err := a.storeProfileField(r, d, key, value); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /profile/{userId}/{keyName} (profile.yaml deleteProfileField): removing a field
// that is not set succeeds too.
func (a *API) deleteProfileField(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	key := pathParam(r, "keyName")
	if err := checkProfileKey(key); err != nil {
		return err
	}
	if _, err := a.ownProfile(r, d); err != nil {
		return err
	}
	if err := a.storeProfileField(r, d, key, nil); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// storeProfileField sets (value not nil) or removes one field, and propagates displayname
// and avatar_url to the user's rooms.
func (a *API) storeProfileField(r *http.Request, d *Device, key string, value json.RawMessage) error {
	ctx := r.Context()
	switch key {
	case profileDisplayName, profileAvatarURL:
		var s string
		if value != nil {
			if err := json.Unmarshal(value, &s); err != nil {
				return httpapi.InvalidParam("%s must be a string", key)
			}
		}
		if err := storage.SetProfile(ctx, a.db, d.UserID, key, s); err != nil {
			return err
		}
		a.propagateProfile(r, d, key, s)
		return nil
	default:
		if value == nil {
			return storage.DeleteProfileField(ctx, a.db, d.UserID, key)
		}
		var compact bytes.Buffer
		if err := json.Compact(&compact, value); err != nil {
			return httpapi.BadJSON("Invalid profile value")
		}
		return storage.SetProfileField(ctx, a.db, d.UserID, key, compact.Bytes())
	}
}

// propagateProfile sends, to every room the user is joined to, their member event again
// with the new displayname or avatar_url (removed when value is empty) and the other keys
// kept. reason and join_authorised_via_users_server are dropped: they describe the original
// membership change. A room where the send fails is logged and skipped, as in Synapse: the
// profile itself has changed.
func (a *API) propagateProfile(r *http.Request, d *Device, key, value string) {
	ctx := context.WithoutCancel(r.Context())
	memberships, err := storage.UserMemberships(ctx, a.db, d.UserID, "join")
	if err != nil {
		a.log.Error("list rooms for profile change", "user", d.UserID, "err", err)
		return
	}
	for _, m := range memberships {
		membership, current, err := a.rooms.Membership(ctx, m.RoomID, d.UserID)
		if err != nil || membership != "join" || current == nil {
			continue
		}
		content := map[string]json.RawMessage{}
		if err := json.Unmarshal(current.Content(), &content); err != nil {
			continue
		}
		old, had := content[key]
		if value == "" {
			if !had {
				continue
			}
			delete(content, key)
		} else {
			encoded := mustJSON(value)
			if had && bytes.Equal(old, encoded) {
				continue
			}
			content[key] = encoded
		}
		delete(content, "reason")
		delete(content, "join_authorised_via_users_server")
		stateKey := d.UserID
		_, err = a.rooms.Send(ctx, m.RoomID, rooms.EventRequest{
			Sender: d.UserID, DeviceID: d.DeviceID, Type: "m.room.member", StateKey: &stateKey, Content: mustJSON(content),
		})
		if err != nil {
			a.log.Warn("propagate profile change", "user", d.UserID, "room", m.RoomID, "err", err)
		}
	}
}
