package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"encoding/hex"
	"sync"
	"time"
)

// Shared-secret registration is Synapse's admin API POST /_synapse/admin/v1/register: an
// operator who knows registration_shared_secret creates accounts (also admins) without
// UIA. The client first fetches a nonce with GET on the same path, then sends
// mac = hex(HMAC-SHA1(secret, nonce NUL username NUL password NUL "admin"|"notadmin"
// [NUL user_type])).
//
// NOTSPEC: this is not in the Matrix spec; it is implemented as Synapse does it because
// tooling (register_new_matrix_user, bots' setup scripts) relies on it.

// NonceTTL is how long a registration nonce stays valid, as in Synapse.
const NonceTTL = 60 * time.Second

// DefaultMaxNonces bounds the nonces kept at once.
const DefaultMaxNonces = 10_000

// NonceStore hands out single-use, expiring nonces for shared-secret registration. It is
// safe for concurrent use and never holds more than its maximum: when full, the oldest
// nonce is forgotten.
type NonceStore struct {
	mu     sync.Mutex
	clock  func() time.Time
	nonces *ttlCache[struct{}]
}

// NewNonceStore returns a store of nonces valid for NonceTTL, holding at most maxNonces
// (DefaultMaxNonces if maxNonces ≤ 0), reading time from clock (nil means time.Now).
func NewNonceStore(maxNonces int, clock func() time.Time) *NonceStore {
	if clock == nil {
		clock = time.Now
	}
	if maxNonces <= 0 {
		maxNonces = DefaultMaxNonces
	}
	return &NonceStore{clock: clock, nonces: newTTLCache[struct{}](NonceTTL, maxNonces)}
}

// New returns a fresh nonce: 256 random bits as lowercase hex.
func (s *NonceStore) New() string {
	raw := make([]byte, 32)
	rand.Read(raw)
	nonce := hex.EncodeToString(raw)
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.nonces.add(now, nonce, struct{}{})
	return nonce
}

// Consume reports whether nonce was issued by New, has not expired and has not been
// consumed before; it can succeed only once per nonce. Consume the nonce before checking
// the MAC, so that a wrong MAC also burns it and cannot be retried against the same nonce.
func (s *NonceStore) Consume(nonce string) bool {
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nonces.remove(now, nonce)
}

// Len returns the number of live nonces.
func (s *NonceStore) Len() int {
	now := s.clock()
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.nonces.len(now)
}

// RegistrationMAC returns the hex HMAC-SHA1 that shared-secret registration expects for
// the given request fields: over nonce, user, password, "admin" or "notadmin" and, when
// userType is not empty, userType, joined by NUL bytes.
func RegistrationMAC(secret, nonce, user, password string, admin bool, userType string) string {
	return hex.EncodeToString(registrationMAC(secret, nonce, user, password, admin, userType))
}

func registrationMAC(secret, nonce, user, password string, admin bool, userType string) []byte {
	m := hmac.New(sha1.New, []byte(secret))
	m.Write([]byte(nonce))
	m.Write([]byte{0})
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(password))
	m.Write([]byte{0})
	if admin {
		m.Write([]byte("admin"))
	} else {
		m.Write([]byte("notadmin"))
	}
	if userType != "" {
		m.Write([]byte{0})
		m.Write([]byte(userType))
	}
	return m.Sum(nil)
}

// VerifyRegistrationMAC reports whether mac (hex) is the shared-secret registration MAC of
// the request fields under secret. The comparison is constant-time. An empty secret never
// verifies: shared-secret registration is off when no secret is configured.
func VerifyRegistrationMAC(secret, nonce, user, password string, admin bool, userType string, mac string) bool {
	if secret == "" {
		return false
	}
	got, err := hex.DecodeString(mac)
	if err != nil {
		return false
	}
	return hmac.Equal(got, registrationMAC(secret, nonce, user, password, admin, userType))
}
