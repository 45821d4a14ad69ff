package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// signResponse builds a key response signed by signers (key ID → key) as server.
func signResponse(t *testing.T, response KeyResponse, server string, signers map[string]ed25519.PrivateKey) []byte {
	t.Helper()
	raw, err := json.Marshal(response)
	if err != nil {
		t.Fatal(err)
	}
	for keyID, key := range signers {
		if raw, err = spec.SignJSON(raw, server, keyID, key); err != nil {
			t.Fatal(err)
		}
	}
	return raw
}

func publicOf(key ed25519.PrivateKey) string {
	return spec.EncodeBase64(key.Public().(ed25519.PublicKey))
}

// TestKeyRingFetchesAndCaches looks a key up directly from its server, from memory, from the
// database, and again once it needs to be valid later than the cached response says.
func TestKeyRingFetchesAndCaches(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		roots := testRoots(t)
		remote := newTestServer(t, nil, clock, roots)
		ring := newRing(t, db, clock, roots)
		t0 := clock.Now()
		want := remote.keys.identity.Key.Public().(ed25519.PublicKey)

		steps := []struct {
			name         string
			ring         *KeyRing
			advance      time.Duration
			atTS         int64
			wantErr      error
			wantRequests int64
		}{
			{"first lookup fetches", ring, 0, t0.UnixMilli(), nil, 1},
			{"cached in memory", ring, 0, t0.Add(23 * time.Hour).UnixMilli(), nil, 1},
			{"rooms v1-4 ignore validity", ring, 0, 0, nil, 1},
			{"cached in the database", newRing(t, db, clock, roots), 0, t0.UnixMilli(), nil, 1},
			{"beyond validity, refetch rate-limited", ring, 0, t0.Add(25 * time.Hour).UnixMilli(), ErrKeyExpired, 1},
			{"beyond validity, refetched", ring, 2 * time.Hour, t0.Add(25 * time.Hour).UnixMilli(), nil, 2},
		}
		for _, step := range steps {
			clock.Advance(step.advance)
			key, err := step.ring.Lookup(ctx, remote.name, "ed25519:a_1", step.atTS)
			if step.wantErr != nil {
				if !errors.Is(err, step.wantErr) {
					t.Errorf("%s: got %v, want %v", step.name, err, step.wantErr)
				}
			} else if err != nil || !key.Equal(want) {
				t.Errorf("%s: got %v, %v", step.name, key, err)
			}
			if got := remote.keyRequests.Load(); got != step.wantRequests {
				t.Errorf("%s: %d key requests, want %d", step.name, got, step.wantRequests)
			}
		}
		if _, err := ring.Lookup(ctx, remote.name, "ed25519:unknown", 0); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("unknown key: %v", err)
		}
	})
}

// TestKeyRingValidity serves hand-made responses and checks the 7-day cap, old keys and
// what a forged response gets.
func TestKeyRingValidity(t *testing.T) {
	ctx := context.Background()
	clock := newFakeClock()
	roots := testRoots(t)
	remote := newTestServer(t, nil, clock, roots)
	current, old, forger := testKey("current"), testKey("old"), testKey("forger")
	now := clock.Now()
	expired := now.Add(-time.Hour).UnixMilli()
	respond := func(raw []byte) {
		remote.serve(func(w http.ResponseWriter, r *http.Request) { writeRawJSON(w, raw) })
	}
	genuine := KeyResponse{
		ServerName:    remote.name,
		VerifyKeys:    map[string]VerifyKey{"ed25519:cur": {publicOf(current)}},
		OldVerifyKeys: map[string]OldVerifyKey{"ed25519:old": {Key: publicOf(old), ExpiredTS: expired}},
		ValidUntilTS:  now.Add(30 * 24 * time.Hour).UnixMilli(),
	}
	wrongName := genuine
	wrongName.ServerName = "elsewhere.test"
	for _, tc := range []struct {
		name     string
		response []byte
		keyID    string
		atTS     int64
		wantErr  error
	}{
		{"within the 7-day cap", signResponse(t, genuine, remote.name, map[string]ed25519.PrivateKey{"ed25519:cur": current}),
			"ed25519:cur", now.Add(6 * 24 * time.Hour).UnixMilli(), nil},
		{"beyond the 7-day cap", nil, "ed25519:cur", now.Add(8 * 24 * time.Hour).UnixMilli(), ErrKeyExpired},
		{"old key before expiry", nil, "ed25519:old", expired - 1, nil},
		{"old key at any time for rooms v1-4", nil, "ed25519:old", 0, nil},
		{"old key after expiry", nil, "ed25519:old", expired + 1, ErrKeyExpired},
		{"forged signature", signResponse(t, genuine, remote.name, map[string]ed25519.PrivateKey{"ed25519:cur": forger}),
			"ed25519:cur", 0, ErrKeyNotFound},
		{"signed only by a key not published", signResponse(t, genuine, remote.name, map[string]ed25519.PrivateKey{"ed25519:other": current}),
			"ed25519:cur", 0, ErrKeyNotFound},
		{"another server's response", signResponse(t, wrongName, "elsewhere.test", map[string]ed25519.PrivateKey{"ed25519:cur": current}),
			"ed25519:cur", 0, ErrKeyNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// Each case that serves a response uses a fresh ring and database; the others
			// reuse the previous case's.
			ring := newRing(t, storagetest.NewDB(t, storage.SQLite), clock, roots)
			if tc.response == nil {
				respond(signResponse(t, genuine, remote.name, map[string]ed25519.PrivateKey{"ed25519:cur": current}))
			} else {
				respond(tc.response)
			}
			_, err := ring.Lookup(ctx, remote.name, tc.keyID, tc.atTS)
			if tc.wantErr == nil && err != nil || tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
				t.Errorf("got %v, want %v", err, tc.wantErr)
			}
		})
	}
}

// TestVerifyKeyResponse checks the rules a key response must meet before anything of it is
// kept.
func TestVerifyKeyResponse(t *testing.T) {
	key := testKey("k")
	base := func() KeyResponse {
		return KeyResponse{ServerName: "hs.test", VerifyKeys: map[string]VerifyKey{"ed25519:k": {publicOf(key)}}, ValidUntilTS: 10}
	}
	signed := func(r KeyResponse) []byte {
		return signResponse(t, r, "hs.test", map[string]ed25519.PrivateKey{"ed25519:k": key})
	}
	tooMany := base()
	tooMany.OldVerifyKeys = map[string]OldVerifyKey{}
	for i := range maxKeysPerResponse {
		tooMany.OldVerifyKeys["ed25519:o"+strings.Repeat("x", i)] = OldVerifyKey{Key: publicOf(key), ExpiredTS: 1}
	}
	for _, tc := range []struct {
		name   string
		raw    func() []byte
		wantOK bool
	}{
		{"valid", func() []byte { return signed(base()) }, true},
		{"other algorithms ignored", func() []byte {
			r := base()
			r.VerifyKeys["curve25519:x"] = VerifyKey{"anything"}
			return signed(r)
		}, true},
		{"no valid_until_ts", func() []byte { r := base(); r.ValidUntilTS = 0; return signed(r) }, false},
		{"short key", func() []byte { r := base(); r.VerifyKeys["ed25519:s"] = VerifyKey{"AAAA"}; return signed(r) }, false},
		{"old key without expired_ts", func() []byte {
			r := base()
			r.OldVerifyKeys = map[string]OldVerifyKey{"ed25519:o": {Key: publicOf(key)}}
			return signed(r)
		}, false},
		{"key both current and old", func() []byte {
			r := base()
			r.OldVerifyKeys = map[string]OldVerifyKey{"ed25519:k": {Key: publicOf(key), ExpiredTS: 1}}
			return signed(r)
		}, false},
		{"too many keys", func() []byte { return signed(tooMany) }, false},
		{"unsigned", func() []byte { raw, _ := json.Marshal(base()); return raw }, false},
		{"float", func() []byte {
			return []byte(strings.Replace(string(signed(base())), `"valid_until_ts":10`, `"valid_until_ts":10.5`, 1))
		}, false},
		{"altered after signing", func() []byte {
			return []byte(strings.Replace(string(signed(base())), `"valid_until_ts":10`, `"valid_until_ts":11`, 1))
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			verified, err := verifyKeyResponse(tc.raw(), "hs.test", 5)
			if tc.wantOK != (err == nil) {
				t.Fatalf("got %v, want ok=%v", err, tc.wantOK)
			}
			if err != nil && !errors.Is(err, ErrBadKeyResponse) {
				t.Errorf("error %v is not ErrBadKeyResponse", err)
			}
			if err == nil && (len(verified.keys) != 1 || verified.keys[0].FetchedTS != 5 || verified.keys[0].ValidUntilTS != 10) {
				t.Errorf("verified %+v", verified.keys)
			}
		})
	}
}

// TestEffectiveValidUntil checks the lesser of valid_until_ts and 7 days after receipt.
func TestEffectiveValidUntil(t *testing.T) {
	week := ValidityCap.Milliseconds()
	for _, tc := range []struct {
		validUntil, fetched, want int64
	}{
		{100, 0, 100},
		{week + 100, 0, week},
		{week + 100, 100, week + 100},
	} {
		if got := EffectiveValidUntil(storage.ServerKey{ValidUntilTS: tc.validUntil, FetchedTS: tc.fetched}); got != tc.want {
			t.Errorf("EffectiveValidUntil(%d, %d) = %d, want %d", tc.validUntil, tc.fetched, got, tc.want)
		}
	}
}

// TestKeyRingThroughNotary fetches a key through a notary while its server is down, and
// refuses a notary whose signature does not check out.
func TestKeyRingThroughNotary(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		roots := testRoots(t)
		remote := newTestServer(t, nil, clock, roots)
		notary := newTestServer(t, nil, clock, roots)
		// The notary learns the remote's keys while it is up.
		if _, err := notary.ring.Lookup(ctx, remote.name, "ed25519:a_1", 0); err != nil {
			t.Fatal(err)
		}
		remote.down.Store(true)

		ring := newRing(t, db, clock, roots, TrustedNotary{ServerName: notary.name})
		key, err := ring.Lookup(ctx, remote.name, "ed25519:a_1", clock.Now().UnixMilli())
		if err != nil || !key.Equal(remote.keys.identity.Key.Public().(ed25519.PublicKey)) {
			t.Fatalf("through notary: %v, %v", key, err)
		}

		pinnedWrong := newRing(t, storagetest.NewDB(t, storage.SQLite), clock, roots,
			TrustedNotary{ServerName: notary.name, Keys: map[string]ed25519.PublicKey{"ed25519:a_1": testKey("wrong").Public().(ed25519.PublicKey)}})
		if _, err := pinnedWrong.Lookup(ctx, remote.name, "ed25519:a_1", 0); !errors.Is(err, ErrKeyNotFound) {
			t.Errorf("notary with a wrong pinned key believed: %v", err)
		}
		pinnedRight := newRing(t, storagetest.NewDB(t, storage.SQLite), clock, roots,
			TrustedNotary{ServerName: notary.name, Keys: map[string]ed25519.PublicKey{"ed25519:a_1": notary.keys.identity.Key.Public().(ed25519.PublicKey)}})
		if _, err := pinnedRight.Lookup(ctx, remote.name, "ed25519:a_1", 0); err != nil {
			t.Errorf("notary with the right pinned key: %v", err)
		}
	})
}

// TestLRU evicts the least recently used entry.
func TestLRU(t *testing.T) {
	var evicted []int
	cache := newLRU[string, int](2)
	cache.onEvict = func(v int) { evicted = append(evicted, v) }
	cache.put("a", 1)
	cache.put("b", 2)
	cache.get("a")
	cache.put("c", 3)
	if _, ok := cache.get("b"); ok || cache.len() != 2 || len(evicted) != 1 || evicted[0] != 2 {
		t.Errorf("after eviction: len %d, evicted %v", cache.len(), evicted)
	}
}

// TestKeyRingConcurrentLookupsWaitForTheFetch: lookups that arrive while another one is
// fetching the same server's keys wait for that fetch instead of failing for having
// "fetched too recently".
func TestKeyRingConcurrentLookupsWaitForTheFetch(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		roots := testRoots(t)
		remote := newTestServer(t, nil, clock, roots)
		ring := newRing(t, db, clock, roots)
		t0 := clock.Now()
		if _, err := ring.Lookup(ctx, remote.name, "ed25519:a_1", t0.UnixMilli()); err != nil {
			t.Fatal(err)
		}
		// Later the cached key has expired for events of that time: everyone refetches.
		clock.Advance(2 * time.Hour)
		atTS := t0.Add(25 * time.Hour).UnixMilli()
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for i := 0; i < 8; i++ {
			wg.Go(func() {
				_, err := ring.Lookup(ctx, remote.name, "ed25519:a_1", atTS)
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("a concurrent lookup failed: %v", err)
			}
		}
		if got := remote.keyRequests.Load(); got != 2 {
			t.Fatalf("%d key requests, want 2 (one merged refetch)", got)
		}
	})
}
