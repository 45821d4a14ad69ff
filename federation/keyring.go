package federation

import (
	"container/list"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Fetching and caching other servers' keys (server-server API §"Retrieving server keys",
// rooms v5+ §"Signing key validity period").

// Key lookup errors.
var (
	// ErrKeyNotFound: the server has no such key, or it could not be fetched.
	ErrKeyNotFound = errors.New("server key not found")
	// ErrKeyExpired: the key exists but was not valid at the time asked about.
	ErrKeyExpired = errors.New("server key not valid at that time")
	// ErrBadKeyResponse: a key response was malformed or not correctly signed.
	ErrBadKeyResponse = errors.New("bad key response")
)

const (
	// ValidityCap is the longest a key response is trusted for after we receive it:
	// "Servers MUST use the lesser of valid_until_ts and 7 days into the future when
	// determining if a key is valid" (keys.yaml, rooms v5 signing requirements).
	ValidityCap = 7 * 24 * time.Hour
	// maxKeyResponseSize bounds a direct key response. NOTSPEC: real ones are well under 1 KiB.
	maxKeyResponseSize = 256 << 10
	// maxNotaryResponseSize bounds a notary's answer, which holds one response per server.
	maxNotaryResponseSize = 1 << 20
	// maxKeysPerResponse bounds verify_keys plus old_verify_keys of one response.
	maxKeysPerResponse = 128
	// defaultKeyCacheSize is how many servers' keys are held in memory.
	defaultKeyCacheSize = 10000
	// defaultRefetchInterval is how soon a server's keys may be fetched again after an
	// attempt: "Requesting servers should limit how frequently they query for certificates".
	// NOTSPEC: one minute.
	defaultRefetchInterval = time.Minute
	// keyFetchTimeout bounds one fetch, shared by every lookup waiting on it.
	keyFetchTimeout = 30 * time.Second
)

// TrustedNotary is a notary server whose answers the key ring believes.
type TrustedNotary struct {
	ServerName string
	// Keys pins the notary's keys by key ID. When empty, the notary's keys are fetched
	// from it directly.
	Keys map[string]ed25519.PublicKey
}

// KeyRingConfig configures a KeyRing.
type KeyRingConfig struct {
	DB *storage.DB
	// Client makes the key requests.
	Client *Client
	// Own answers lookups of our own server name without any request.
	Own *ServerKeys
	// Notaries are asked, in order, when a server's keys cannot be fetched from it directly.
	Notaries []TrustedNotary
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// CacheSize is how many servers' keys are held in memory; 0 means 10,000.
	CacheSize int
	// RefetchInterval is the least time between two fetches of one server's keys; 0 means a
	// minute.
	RefetchInterval time.Duration
}

// KeyRing finds other servers' public keys: from memory, from the database, or by fetching
// them from the server itself (GET /_matrix/key/v2/server) or from trusted notaries
// (POST /_matrix/key/v2/query). Every response is checked (server name, self-signature,
// notary signature) before any of it is kept. It is safe for concurrent use.
type KeyRing struct {
	cfg KeyRingConfig

	mu       sync.Mutex
	cache    *lru[string, *serverKeys]
	inflight map[fetchKey]*fetchCall
}

// serverKeys is what the ring knows of one server. It is replaced, never modified, once
// it is in the cache.
type serverKeys struct {
	keys        map[string]storage.ServerKey
	lastAttempt time.Time
}

type fetchKey struct {
	server     string
	directOnly bool
}

type fetchCall struct {
	done chan struct{}
	err  error
}

// NewKeyRing builds a KeyRing.
func NewKeyRing(cfg KeyRingConfig) *KeyRing {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = defaultKeyCacheSize
	}
	if cfg.RefetchInterval <= 0 {
		cfg.RefetchInterval = defaultRefetchInterval
	}
	return &KeyRing{cfg: cfg, cache: newLRU[string, *serverKeys](cfg.CacheSize), inflight: map[fetchKey]*fetchCall{}}
}

// KeyLookup returns Lookup bound to ctx, as the spec package's signature checks take it.
func (k *KeyRing) KeyLookup(ctx context.Context) spec.KeyLookup {
	return func(serverName, keyID string, atTS int64) (ed25519.PublicKey, error) {
		return k.Lookup(ctx, serverName, keyID, atTS)
	}
}

// Lookup returns the public key keyID of serverName with the semantics of spec.KeyLookup.
// atTS 0 accepts any key ever published, current or old (rooms v1–v4 ignore
// valid_until_ts). Otherwise the key must have been valid at atTS: an old key at or before
// its expired_ts; a current key at or before the lesser of valid_until_ts and 7 days after
// we received it. A key unknown or not valid long enough is fetched again, at most once per
// RefetchInterval, asking for minimum_valid_until_ts of atTS.
func (k *KeyRing) Lookup(ctx context.Context, serverName, keyID string, atTS int64) (ed25519.PublicKey, error) {
	return k.lookup(ctx, serverName, keyID, atTS, false)
}

func (k *KeyRing) lookup(ctx context.Context, serverName, keyID string, atTS int64, directOnly bool) (ed25519.PublicKey, error) {
	if own := k.cfg.Own; own != nil && serverName == own.identity.ServerName {
		return own.Lookup(keyID, atTS)
	}
	known, err := k.known(ctx, serverName)
	if err != nil {
		return nil, err
	}
	key, usableErr := usableKey(known, serverName, keyID, atTS)
	if usableErr == nil {
		return key, nil
	}
	if !k.mayFetch(known) {
		// Fetched too recently — unless that fetch is still running: then its answer is
		// the one to wait for, not a reason to give up.
		if !k.waitInflight(ctx, serverName, directOnly) {
			return nil, usableErr
		}
		if known, err = k.known(ctx, serverName); err != nil {
			return nil, err
		}
		return usableKey(known, serverName, keyID, atTS)
	}
	minValidUntil := max(atTS, k.cfg.Now().UnixMilli())
	if err := k.fetch(ctx, serverName, keyID, minValidUntil, directOnly); err != nil {
		if known, kerr := k.known(ctx, serverName); kerr == nil {
			if key, uerr := usableKey(known, serverName, keyID, atTS); uerr == nil {
				return key, nil
			}
		}
		return nil, fmt.Errorf("%w: %w", usableErr, err)
	}
	known, err = k.known(ctx, serverName)
	if err != nil {
		return nil, err
	}
	return usableKey(known, serverName, keyID, atTS)
}

// waitInflight waits for a running fetch of serverName's keys, reporting whether there was
// one.
func (k *KeyRing) waitInflight(ctx context.Context, serverName string, directOnly bool) bool {
	k.mu.Lock()
	call, running := k.inflight[fetchKey{serverName, directOnly}]
	k.mu.Unlock()
	if !running {
		return false
	}
	select {
	case <-call.done:
	case <-ctx.Done():
	}
	return true
}

// mayFetch reports whether the last fetch of a server is RefetchInterval old.
func (k *KeyRing) mayFetch(known *serverKeys) bool {
	return known.lastAttempt.IsZero() || !k.cfg.Now().Before(known.lastAttempt.Add(k.cfg.RefetchInterval))
}

// usableKey picks keyID out of known if it was valid at atTS.
func usableKey(known *serverKeys, serverName, keyID string, atTS int64) (ed25519.PublicKey, error) {
	stored, ok := known.keys[keyID]
	if !ok {
		return nil, fmt.Errorf("%w: %s %s", ErrKeyNotFound, serverName, keyID)
	}
	if err := validAt(stored, atTS); err != nil {
		return nil, err
	}
	return ed25519.PublicKey(stored.PublicKey), nil
}

// validAt checks a stored key against the time it is used at (0: any time).
func validAt(key storage.ServerKey, atTS int64) error {
	if atTS == 0 {
		return nil
	}
	if key.ExpiredTS != 0 {
		if atTS > key.ExpiredTS {
			return fmt.Errorf("%w: %s %s expired at %d, used at %d", ErrKeyExpired, key.ServerName, key.KeyID, key.ExpiredTS, atTS)
		}
		return nil
	}
	if until := EffectiveValidUntil(key); atTS > until {
		return fmt.Errorf("%w: %s %s valid until %d, used at %d", ErrKeyExpired, key.ServerName, key.KeyID, until, atTS)
	}
	return nil
}

// EffectiveValidUntil is the time up to which a current key is trusted: the lesser of the
// response's valid_until_ts and 7 days after we received it (keys.yaml valid_until_ts).
func EffectiveValidUntil(key storage.ServerKey) int64 {
	return min(key.ValidUntilTS, key.FetchedTS+ValidityCap.Milliseconds())
}

// known returns what memory or, failing that, the database holds on serverName.
func (k *KeyRing) known(ctx context.Context, serverName string) (*serverKeys, error) {
	k.mu.Lock()
	known, ok := k.cache.get(serverName)
	k.mu.Unlock()
	if ok {
		return known, nil
	}
	return k.reload(ctx, serverName, time.Time{})
}

// reload reads serverName's keys from the database into memory. lastAttempt is kept from
// the cached entry unless a later one is given.
func (k *KeyRing) reload(ctx context.Context, serverName string, attempt time.Time) (*serverKeys, error) {
	rows, err := storage.ServerKeys(ctx, k.cfg.DB, serverName)
	if err != nil {
		return nil, err
	}
	known := &serverKeys{keys: make(map[string]storage.ServerKey, len(rows)), lastAttempt: attempt}
	for _, row := range rows {
		known.keys[row.KeyID] = row
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if previous, ok := k.cache.get(serverName); ok && previous.lastAttempt.After(known.lastAttempt) {
		known.lastAttempt = previous.lastAttempt
	}
	k.cache.put(serverName, known)
	return known, nil
}

// fetch fetches serverName's keys once for every concurrent caller and records the attempt.
func (k *KeyRing) fetch(ctx context.Context, serverName, keyID string, minValidUntil int64, directOnly bool) error {
	id := fetchKey{serverName, directOnly}
	k.mu.Lock()
	call, running := k.inflight[id]
	if !running {
		// A fetch that finished between the caller's look at the cache and now counts as
		// this one: the caller reads the cache again.
		if known, ok := k.cache.get(serverName); ok && !k.mayFetch(known) {
			k.mu.Unlock()
			return nil
		}
		call = &fetchCall{done: make(chan struct{})}
		k.inflight[id] = call
		if known, ok := k.cache.get(serverName); ok {
			k.cache.put(serverName, &serverKeys{keys: known.keys, lastAttempt: k.cfg.Now()})
		}
	}
	k.mu.Unlock()
	if !running {
		// The fetch serves every waiter, so one caller giving up must not cancel it.
		fetchCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), keyFetchTimeout)
		call.err = k.fetchFrom(fetchCtx, serverName, keyID, minValidUntil, directOnly)
		if _, err := k.reload(fetchCtx, serverName, k.cfg.Now()); err != nil && call.err == nil {
			call.err = err
		}
		cancel()
		k.mu.Lock()
		delete(k.inflight, id)
		k.mu.Unlock()
		close(call.done)
		return call.err
	}
	select {
	case <-call.done:
		return call.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

// fetchFrom asks the server itself, then each trusted notary, until one answer has keyID
// ("" for any key).
func (k *KeyRing) fetchFrom(ctx context.Context, serverName, keyID string, minValidUntil int64, directOnly bool) error {
	if _, err := spec.ParseServerName(serverName); err != nil {
		return fmt.Errorf("%w: %w", ErrKeyNotFound, err)
	}
	direct, directErr := k.fetchDirect(ctx, serverName)
	if directErr == nil && (keyID == "" || direct.has(keyID)) {
		return nil
	}
	errs := []error{directErr}
	if directErr == nil {
		errs[0] = fmt.Errorf("%s does not publish key %s", serverName, keyID)
	}
	if directOnly {
		return errors.Join(errs...)
	}
	for _, notary := range k.cfg.Notaries {
		if notary.ServerName == serverName {
			continue
		}
		found, err := k.fetchFromNotary(ctx, notary, serverName, keyID, minValidUntil)
		if err == nil && (keyID == "" || found) {
			return nil
		}
		if err == nil {
			err = fmt.Errorf("notary %s does not know key %s of %s", notary.ServerName, keyID, serverName)
		}
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// fetchDirect fetches serverName's current key response directly from it, checks and
// stores it. The notary uses it to refresh its cache.
func (k *KeyRing) fetchDirect(ctx context.Context, serverName string) (*verifiedKeys, error) {
	raw, err := k.cfg.Client.Do(ctx, Request{
		Method: http.MethodGet, Destination: serverName, URI: "/_matrix/key/v2/server",
		MaxResponseSize: maxKeyResponseSize,
	})
	if err != nil {
		return nil, fmt.Errorf("fetch keys of %s: %w", serverName, err)
	}
	verified, err := verifyKeyResponse(raw, serverName, k.cfg.Now().UnixMilli())
	if err != nil {
		return nil, fmt.Errorf("fetch keys of %s: %w", serverName, err)
	}
	if err := k.store(ctx, verified); err != nil {
		return nil, err
	}
	return verified, nil
}

// notaryQuery is the body of POST /_matrix/key/v2/query.
type notaryQuery struct {
	ServerKeys map[string]map[string]queryCriteria `json:"server_keys"`
}

type queryCriteria struct {
	MinimumValidUntilTS int64 `json:"minimum_valid_until_ts,omitempty"`
}

// notaryAnswer is the response of both forms of /_matrix/key/v2/query.
type notaryAnswer struct {
	ServerKeys []json.RawMessage `json:"server_keys"`
}

// fetchFromNotary asks notary for serverName's keys, as rooms v5+ want it asked: with
// minimum_valid_until_ts set. Every returned response for serverName must be self-signed
// and signed by the notary; it reports whether one had keyID.
func (k *KeyRing) fetchFromNotary(ctx context.Context, notary TrustedNotary, serverName, keyID string, minValidUntil int64) (bool, error) {
	criteria := map[string]queryCriteria{}
	if keyID != "" {
		criteria[keyID] = queryCriteria{MinimumValidUntilTS: minValidUntil}
	}
	var answer notaryAnswer
	err := k.cfg.Client.DoJSON(ctx, Request{
		Method: http.MethodPost, Destination: notary.ServerName, URI: "/_matrix/key/v2/query",
		Body:            notaryQuery{ServerKeys: map[string]map[string]queryCriteria{serverName: criteria}},
		MaxResponseSize: maxNotaryResponseSize,
	}, &answer)
	if err != nil {
		return false, fmt.Errorf("query notary %s for %s: %w", notary.ServerName, serverName, err)
	}
	found := false
	var errs []error
	for _, raw := range answer.ServerKeys {
		verified, err := verifyKeyResponse(raw, serverName, k.cfg.Now().UnixMilli())
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if err := k.verifyNotarySignature(ctx, raw, notary); err != nil {
			errs = append(errs, err)
			continue
		}
		if err := k.store(ctx, verified); err != nil {
			return false, err
		}
		found = found || keyID == "" || verified.has(keyID)
	}
	if !found && len(errs) > 0 {
		return false, fmt.Errorf("notary %s: %w", notary.ServerName, errors.Join(errs...))
	}
	return found, nil
}

// verifyNotarySignature checks that notary signed a key response it returned: every
// signature of the notary by a key we know must verify, and at least one must exist.
func (k *KeyRing) verifyNotarySignature(ctx context.Context, raw []byte, notary TrustedNotary) error {
	var signed struct {
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if err := json.Unmarshal(raw, &signed); err != nil {
		return fmt.Errorf("%w: %w", ErrBadKeyResponse, err)
	}
	verified := 0
	for keyID := range signed.Signatures[notary.ServerName] {
		if !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		key, ok := notary.Keys[keyID]
		if !ok && len(notary.Keys) == 0 {
			// Direct only: a notary's keys must not depend on asking notaries.
			looked, err := k.lookup(ctx, notary.ServerName, keyID, k.cfg.Now().UnixMilli(), true)
			key, ok = looked, err == nil
		}
		if !ok {
			continue
		}
		if err := spec.VerifyJSON(raw, notary.ServerName, keyID, key); err != nil {
			return fmt.Errorf("%w: notary signature: %w", ErrBadKeyResponse, err)
		}
		verified++
	}
	if verified == 0 {
		return fmt.Errorf("%w: not signed by notary %s with a known key", ErrBadKeyResponse, notary.ServerName)
	}
	return nil
}

// verifiedKeys is a key response that passed verifyKeyResponse, ready to store.
type verifiedKeys struct {
	keys     []storage.ServerKey
	response storage.ServerKeyResponse
}

func (v *verifiedKeys) has(keyID string) bool {
	for _, key := range v.keys {
		if key.KeyID == keyID {
			return true
		}
	}
	return false
}

// verifyKeyResponse checks a key response claimed to be serverName's (§"Retrieving server
// keys", definitions/keys.yaml): strict canonical JSON, server_name equal to serverName,
// valid_until_ts present, every ed25519 key 32 bytes of unpadded base64, and signed by
// serverName with at least one of its verify_keys, every such signature valid. Keys of
// other algorithms are ignored. The stored response keeps serverName's signatures only.
// NOTSPEC: as Synapse, a signature by a key not in verify_keys is ignored rather than fatal,
// since a notary may sign with a key of its own under the same name.
func verifyKeyResponse(raw []byte, serverName string, fetchedTS int64) (*verifiedKeys, error) {
	canonical, err := spec.CanonicalJSON(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKeyResponse, err)
	}
	var response KeyResponse
	if err := json.Unmarshal(canonical, &response); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKeyResponse, err)
	}
	if response.ServerName != serverName {
		return nil, fmt.Errorf("%w: server_name %q, expected %q", ErrBadKeyResponse, response.ServerName, serverName)
	}
	if response.ValidUntilTS <= 0 {
		return nil, fmt.Errorf("%w: no valid_until_ts", ErrBadKeyResponse)
	}
	if len(response.VerifyKeys)+len(response.OldVerifyKeys) > maxKeysPerResponse {
		return nil, fmt.Errorf("%w: more than %d keys", ErrBadKeyResponse, maxKeysPerResponse)
	}
	verified := &verifiedKeys{}
	current := map[string]ed25519.PublicKey{}
	for keyID, verifyKey := range response.VerifyKeys {
		if !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		key, err := decodePublicKey(verifyKey.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: verify key %s: %w", ErrBadKeyResponse, keyID, err)
		}
		current[keyID] = key
		verified.keys = append(verified.keys, storage.ServerKey{ServerName: serverName, KeyID: keyID, PublicKey: key,
			ValidUntilTS: response.ValidUntilTS, FetchedTS: fetchedTS})
	}
	for keyID, old := range response.OldVerifyKeys {
		if !strings.HasPrefix(keyID, "ed25519:") {
			continue
		}
		if _, dup := current[keyID]; dup {
			return nil, fmt.Errorf("%w: key %s both current and old", ErrBadKeyResponse, keyID)
		}
		key, err := decodePublicKey(old.Key)
		if err != nil {
			return nil, fmt.Errorf("%w: old verify key %s: %w", ErrBadKeyResponse, keyID, err)
		}
		if old.ExpiredTS <= 0 {
			return nil, fmt.Errorf("%w: old verify key %s without expired_ts", ErrBadKeyResponse, keyID)
		}
		verified.keys = append(verified.keys, storage.ServerKey{ServerName: serverName, KeyID: keyID, PublicKey: key,
			ValidUntilTS: response.ValidUntilTS, ExpiredTS: old.ExpiredTS, FetchedTS: fetchedTS})
	}
	selfSigned := 0
	for keyID := range response.Signatures[serverName] {
		key, ok := current[keyID]
		if !ok {
			continue
		}
		if err := spec.VerifyJSON(canonical, serverName, keyID, key); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrBadKeyResponse, err)
		}
		selfSigned++
	}
	if selfSigned == 0 {
		return nil, fmt.Errorf("%w: not signed by %s with any of its verify_keys", ErrBadKeyResponse, serverName)
	}
	stripped, err := onlySignaturesOf(canonical, serverName)
	if err != nil {
		return nil, err
	}
	verified.response = storage.ServerKeyResponse{ServerName: serverName, Response: stripped,
		ValidUntilTS: response.ValidUntilTS, FetchedTS: fetchedTS}
	return verified, nil
}

// onlySignaturesOf returns a canonical JSON object with the signatures of every server but
// serverName removed.
func onlySignaturesOf(canonical []byte, serverName string) ([]byte, error) {
	var object map[string]json.RawMessage
	if err := json.Unmarshal(canonical, &object); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadKeyResponse, err)
	}
	var signatures map[string]json.RawMessage
	if err := json.Unmarshal(object["signatures"], &signatures); err != nil {
		return nil, fmt.Errorf("%w: signatures: %w", ErrBadKeyResponse, err)
	}
	own, err := json.Marshal(map[string]json.RawMessage{serverName: signatures[serverName]})
	if err != nil {
		return nil, err
	}
	object["signatures"] = own
	raw, err := json.Marshal(object)
	if err != nil {
		return nil, err
	}
	return spec.CanonicalJSON(raw)
}

func decodePublicKey(encoded string) (ed25519.PublicKey, error) {
	key, err := spec.DecodeBase64(encoded)
	if err != nil {
		return nil, err
	}
	if len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%d bytes, not an ed25519 public key", len(key))
	}
	return key, nil
}

// store writes a verified response to the database.
func (k *KeyRing) store(ctx context.Context, verified *verifiedKeys) error {
	return k.cfg.DB.WithTx(ctx, func(tx *storage.Tx) error {
		if err := storage.PutServerKeys(ctx, tx, verified.keys); err != nil {
			return err
		}
		return storage.PutServerKeyResponse(ctx, tx, verified.response)
	})
}

// lru is a map of bounded size that forgets the least recently used entry first. It is not
// safe for concurrent use.
type lru[K comparable, V any] struct {
	capacity int
	order    *list.List // front: most recently used; elements hold *lruEntry
	entries  map[K]*list.Element
	onEvict  func(V)
}

type lruEntry[K comparable, V any] struct {
	key   K
	value V
}

func newLRU[K comparable, V any](capacity int) *lru[K, V] {
	return &lru[K, V]{capacity: max(1, capacity), order: list.New(), entries: map[K]*list.Element{}}
}

func (c *lru[K, V]) get(key K) (V, bool) {
	element, ok := c.entries[key]
	if !ok {
		var zero V
		return zero, false
	}
	c.order.MoveToFront(element)
	return element.Value.(*lruEntry[K, V]).value, true
}

func (c *lru[K, V]) put(key K, value V) {
	if element, ok := c.entries[key]; ok {
		element.Value.(*lruEntry[K, V]).value = value
		c.order.MoveToFront(element)
		return
	}
	c.entries[key] = c.order.PushFront(&lruEntry[K, V]{key, value})
	for c.order.Len() > c.capacity {
		oldest := c.order.Back()
		entry := oldest.Value.(*lruEntry[K, V])
		c.order.Remove(oldest)
		delete(c.entries, entry.key)
		if c.onEvict != nil {
			c.onEvict(entry.value)
		}
	}
}

func (c *lru[K, V]) len() int { return c.order.Len() }
