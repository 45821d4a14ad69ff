package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Publishing our keys (server-server API §"Publishing Keys", GET /_matrix/key/v2/server).

// KeyValidity is how far ahead our key response's valid_until_ts lies.
// NOTSPEC: Synapse's default key_refresh_interval of one day; peers refetch daily, and the
// 7-day cap of rooms v5+ never shortens it.
const KeyValidity = 24 * time.Hour

// keyResponseRefresh is how long a signed response is reused before it is signed again with
// a later valid_until_ts, so that hostile callers cannot make us sign on every request.
const keyResponseRefresh = time.Hour

// server_meta keys of our key history.
const (
	metaCurrentKey = "federation.verify_key"
	metaOldKeys    = "federation.old_verify_keys"
)

// VerifyKey is a public key as published under verify_keys.
type VerifyKey struct {
	Key string `json:"key"`
}

// OldVerifyKey is a public key as published under old_verify_keys.
type OldVerifyKey struct {
	Key       string `json:"key"`
	ExpiredTS int64  `json:"expired_ts"`
}

// KeyResponse is the body of GET /_matrix/key/v2/server (definitions/keys.yaml).
type KeyResponse struct {
	ServerName    string                       `json:"server_name"`
	VerifyKeys    map[string]VerifyKey         `json:"verify_keys"`
	OldVerifyKeys map[string]OldVerifyKey      `json:"old_verify_keys,omitempty"`
	Signatures    map[string]map[string]string `json:"signatures,omitempty"`
	ValidUntilTS  int64                        `json:"valid_until_ts"`
}

// storedKey is the current key as remembered in server_meta.
type storedKey struct {
	KeyID string `json:"key_id"`
	Key   string `json:"key"`
}

// ServerKeys is this server's signing identity as other servers see it: the current key,
// and the keys it used before with the time each stopped being used.
type ServerKeys struct {
	identity rooms.Identity
	now      func() time.Time
	old      map[string]OldVerifyKey

	mu       sync.Mutex
	response []byte
	signedAt time.Time
}

// NewServerKeys loads the history of our keys from server_meta. When the key of identity is
// not the one recorded as current (the signing key file was replaced), the recorded one
// becomes an old key that expired now, so that events it signed stay verifiable.
func NewServerKeys(ctx context.Context, db *storage.DB, identity rooms.Identity, now func() time.Time) (*ServerKeys, error) {
	if len(identity.Key) != ed25519.PrivateKeySize {
		return nil, errors.New("server keys: bad ed25519 private key")
	}
	if now == nil {
		now = time.Now
	}
	public := spec.EncodeBase64(identity.Key.Public().(ed25519.PublicKey))
	old := map[string]OldVerifyKey{}
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		clear(old)
		if raw, found, err := storage.GetMeta(ctx, tx, metaOldKeys); err != nil {
			return err
		} else if found {
			if err := json.Unmarshal(raw, &old); err != nil {
				return fmt.Errorf("server_meta %s: %w", metaOldKeys, err)
			}
		}
		var current storedKey
		if raw, found, err := storage.GetMeta(ctx, tx, metaCurrentKey); err != nil {
			return err
		} else if found {
			if err := json.Unmarshal(raw, &current); err != nil {
				return fmt.Errorf("server_meta %s: %w", metaCurrentKey, err)
			}
		}
		// A key ID names one key: a key reused under its old ID is current again, and a
		// different key under the current ID simply replaces it.
		if current.KeyID != "" && current.KeyID != identity.KeyID {
			old[current.KeyID] = OldVerifyKey{Key: current.Key, ExpiredTS: now().UnixMilli()}
		}
		delete(old, identity.KeyID)
		rawOld, err := json.Marshal(old)
		if err != nil {
			return err
		}
		rawCurrent, err := json.Marshal(storedKey{KeyID: identity.KeyID, Key: public})
		if err != nil {
			return err
		}
		if err := storage.SetMeta(ctx, tx, metaOldKeys, rawOld); err != nil {
			return err
		}
		return storage.SetMeta(ctx, tx, metaCurrentKey, rawCurrent)
	})
	if err != nil {
		return nil, fmt.Errorf("server keys: %w", err)
	}
	return &ServerKeys{identity: identity, now: now, old: old}, nil
}

// Identity is our server name and signing key.
func (s *ServerKeys) Identity() rooms.Identity { return s.identity }

// Response returns our signed key response, signing a new one when the last is an hour old.
func (s *ServerKeys) Response() ([]byte, error) {
	now := s.now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.response != nil && now.Sub(s.signedAt) < keyResponseRefresh && !now.Before(s.signedAt) {
		return s.response, nil
	}
	response := KeyResponse{
		ServerName: s.identity.ServerName,
		VerifyKeys: map[string]VerifyKey{
			s.identity.KeyID: {Key: spec.EncodeBase64(s.identity.Key.Public().(ed25519.PublicKey))},
		},
		OldVerifyKeys: s.old,
		ValidUntilTS:  now.Add(KeyValidity).UnixMilli(),
	}
	raw, err := json.Marshal(response)
	if err != nil {
		return nil, err
	}
	signed, err := spec.SignJSON(raw, s.identity.ServerName, s.identity.KeyID, s.identity.Key)
	if err != nil {
		return nil, err
	}
	s.response, s.signedAt = signed, now
	return signed, nil
}

// Sign adds our signature to a JSON object, as a notary does to the key responses it
// returns.
func (s *ServerKeys) Sign(raw []byte) ([]byte, error) {
	return spec.SignJSON(raw, s.identity.ServerName, s.identity.KeyID, s.identity.Key)
}

// Lookup finds one of our own public keys with the semantics of spec.KeyLookup: the current
// key is valid at any time; an old key only at or before its expired_ts (or at atTS 0).
func (s *ServerKeys) Lookup(keyID string, atTS int64) (ed25519.PublicKey, error) {
	if keyID == s.identity.KeyID {
		return s.identity.Key.Public().(ed25519.PublicKey), nil
	}
	old, ok := s.old[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %s has no key %s", ErrKeyNotFound, s.identity.ServerName, keyID)
	}
	if atTS != 0 && atTS > old.ExpiredTS {
		return nil, fmt.Errorf("%w: key %s of %s expired at %d", ErrKeyExpired, keyID, s.identity.ServerName, old.ExpiredTS)
	}
	key, err := spec.DecodeBase64(old.Key)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: stored old key %s is not an ed25519 key", ErrKeyNotFound, keyID)
	}
	return key, nil
}

// serveKeys answers GET /_matrix/key/v2/server and the deprecated
// GET /_matrix/key/v2/server/{keyId}, whose key ID, as in Synapse, does not narrow the answer.
func (s *ServerKeys) serveKeys(w http.ResponseWriter, r *http.Request) error {
	response, err := s.Response()
	if err != nil {
		return err
	}
	writeRawJSON(w, response)
	return nil
}

// writeRawJSON sends an already encoded JSON object with status 200.
func writeRawJSON(w http.ResponseWriter, body []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(body)
}
