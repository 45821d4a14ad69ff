package auth

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
)

// TokenPrefix is the prefix of access and refresh tokens this server issues. A readable
// prefix lets secret scanners and humans recognise a leaked token (Synapse uses "syt_").
const TokenPrefix = "eggs_"

// tokenEntropyBytes is the randomness in a token: 256 bits.
const tokenEntropyBytes = 32

// NewToken returns a fresh opaque token, prefix followed by 256 random bits in unpadded
// URL-safe base64, and its SHA-256 hash (HashToken). Store only the hash and look tokens
// up by it, so that a leaked database does not hold usable tokens.
//
// Client-Server API, "Using access tokens": access tokens are opaque strings; the
// characters used here are all safe in an Authorization header and in a query string.
func NewToken(prefix string) (token string, hash []byte) {
	raw := make([]byte, tokenEntropyBytes)
	rand.Read(raw)
	token = prefix + base64.RawURLEncoding.EncodeToString(raw)
	return token, HashToken(token)
}

// HashToken returns the SHA-256 of a token, the key under which it is stored. A fast hash
// is enough: tokens carry 256 random bits, so there is nothing to brute-force.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}

// ConstantTimeEqual reports whether a and b are equal, in time that depends only on
// their lengths.
func ConstantTimeEqual(a, b []byte) bool {
	return subtle.ConstantTimeCompare(a, b) == 1
}

// deviceIDLength and deviceIDAlphabet follow Synapse: ten uppercase ASCII letters.
const (
	deviceIDLength   = 10
	deviceIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
)

// NewDeviceID returns a random device ID of ten uppercase letters (about 47 bits), the
// shape Synapse uses. The caller must still check it is unused for the user.
//
// NOTSPEC: the spec leaves the format of server-generated device IDs to the server.
func NewDeviceID() string {
	return randomString(deviceIDLength, deviceIDAlphabet)
}

// randomString returns n characters drawn uniformly from alphabet (at most 256 symbols)
// using crypto/rand, by rejection sampling so that no character is more likely.
func randomString(n int, alphabet string) string {
	limit := 256 - 256%len(alphabet)
	out := make([]byte, 0, n)
	buf := make([]byte, n+n/4+8)
	for len(out) < n {
		rand.Read(buf)
		for _, b := range buf {
			if int(b) >= limit {
				continue
			}
			out = append(out, alphabet[int(b)%len(alphabet)])
			if len(out) == n {
				break
			}
		}
	}
	return string(out)
}

// NewRegistrationToken returns a random registration token: 16 letters and digits, about
// 95 bits, inside the spec's grammar for tokens ([A-Za-z0-9._~-], at most 64).
func NewRegistrationToken() string {
	return randomString(16, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789")
}
