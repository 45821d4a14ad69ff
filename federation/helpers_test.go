package federation

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// fakeClock is a clock that moves only when told to.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{now: time.UnixMilli(1_700_000_000_000)} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// testKey derives a signing key from a label, so that tests are reproducible.
func testKey(label string) ed25519.PrivateKey {
	seed := sha256.Sum256([]byte(label))
	return ed25519.NewKeyFromSeed(seed[:])
}

// testServer is a homeserver's federation key API on an httptest TLS server, named
// "127.0.0.1:<port>" so that its certificate (issued by httptest for 127.0.0.1) is valid
// for its name.
type testServer struct {
	name   string
	srv    *httptest.Server
	keys   *ServerKeys
	ring   *KeyRing
	client *Client
	// keyRequests counts GET /_matrix/key/v2/server.
	keyRequests atomic.Int64
	// down makes every request answer 503.
	down atomic.Bool
	// override, when set, answers instead of the real routes.
	override atomic.Pointer[http.HandlerFunc]
}

// testRoots trusts the certificate httptest issues to every TLS server it starts.
func testRoots(t testing.TB) *x509.CertPool {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return pool
}

// newTestServer starts a server on db (a fresh SQLite database when nil).
func newTestServer(t *testing.T, db *storage.DB, clock *fakeClock, roots *x509.CertPool, notaries ...TrustedNotary) *testServer {
	t.Helper()
	if db == nil {
		db = storagetest.NewDB(t, storage.SQLite)
	}
	ts := &testServer{}
	router := chi.NewRouter()
	ts.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_matrix/key/v2/server" {
			ts.keyRequests.Add(1)
		}
		if ts.down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return
		}
		if h := ts.override.Load(); h != nil {
			(*h)(w, r)
			return
		}
		router.ServeHTTP(w, r)
	}))
	ts.srv.StartTLS()
	t.Cleanup(ts.srv.Close)
	ts.name = ts.srv.Listener.Addr().String()
	identity := rooms.Identity{ServerName: ts.name, KeyID: "ed25519:a_1", Key: testKey(ts.name)}
	var err error
	ts.keys, err = NewServerKeys(context.Background(), db, identity, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	ts.client, err = NewClient(ClientConfig{
		Identity: identity,
		Resolver: NewResolver(ResolverConfig{RootCAs: roots, Now: clock.Now}),
		RootCAs:  roots,
	})
	if err != nil {
		t.Fatal(err)
	}
	ts.ring = NewKeyRing(KeyRingConfig{DB: db, Client: ts.client, Own: ts.keys, Notaries: notaries, Now: clock.Now})
	Routes(router, ts.keys, ts.ring)
	return ts
}

// serve makes the server answer every request with h.
func (ts *testServer) serve(h http.HandlerFunc) { ts.override.Store(&h) }

// newRing builds a key ring of our own, on db, trusting notaries.
func newRing(t *testing.T, db *storage.DB, clock *fakeClock, roots *x509.CertPool, notaries ...TrustedNotary) *KeyRing {
	t.Helper()
	identity := rooms.Identity{ServerName: "local.test", KeyID: "ed25519:l", Key: testKey("local")}
	client, err := NewClient(ClientConfig{Identity: identity, RootCAs: roots,
		Resolver: NewResolver(ResolverConfig{RootCAs: roots, Now: clock.Now})})
	if err != nil {
		t.Fatal(err)
	}
	return NewKeyRing(KeyRingConfig{DB: db, Client: client, Notaries: notaries, Now: clock.Now})
}

// newRequest builds a request with an optional JSON body.
func newRequest(method, url, body string) (*http.Request, error) {
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	return http.NewRequest(method, url, reader)
}

// verifyJSONWith checks one signature on a JSON object.
func verifyJSONWith(raw []byte, server, keyID string, key crypto.PublicKey) error {
	return spec.VerifyJSON(raw, server, keyID, key.(ed25519.PublicKey))
}

// mustCanonical canonicalises JSON or fails the test.
func mustCanonical(t *testing.T, raw []byte) []byte {
	t.Helper()
	canonical, err := spec.CanonicalJSON(raw)
	if err != nil {
		t.Fatal(err)
	}
	return canonical
}

// hereAndPeer is our rooms server "here.example" (key ed25519:h) and a peer "peer.example"
// (key ed25519:p) that signs events, with a key lookup that knows both.
type hereAndPeer struct {
	log      *slog.Logger
	identity rooms.Identity
	rs       *rooms.Server
	peer     *peerServer
	keys     spec.KeyLookup
}

// newHereAndPeer builds the rooms server of here.example on db and the peer.
func newHereAndPeer(t *testing.T, db *storage.DB) *hereAndPeer {
	t.Helper()
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	identity := rooms.Identity{ServerName: "here.example", KeyID: "ed25519:h", Key: testKey("here.example")}
	rs := rooms.New(db, identity, streams.NewTracker(0), func() int64 { return time.Now().UnixMilli() }, log)
	peerKey := testKey("peer.example")
	keys := func(server, _ string, _ int64) (ed25519.PublicKey, error) {
		switch server {
		case "peer.example":
			return peerKey.Public().(ed25519.PublicKey), nil
		case "here.example":
			return identity.Key.Public().(ed25519.PublicKey), nil
		}
		return nil, fmt.Errorf("unknown server %s", server)
	}
	return &hereAndPeer{log: log, identity: identity, rs: rs, keys: keys,
		peer: &peerServer{name: "peer.example", key: peerKey, ts: time.Now().UnixMilli()}}
}
