package auth

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"runtime"
	"strconv"
	"strings"

	"golang.org/x/crypto/argon2"
	"golang.org/x/crypto/bcrypt"
	"golang.org/x/text/unicode/norm"
)

// MaxPasswordBytes is the longest password accepted, in bytes of its NFKC form. Longer
// input is refused rather than hashed, so a request cannot make the server hash megabytes.
//
// NOTSPEC: the spec sets no limit; Synapse refuses passwords longer than 512 characters.
const MaxPasswordBytes = 512

// ErrPasswordTooLong is returned by HashPassword for passwords over MaxPasswordBytes.
var ErrPasswordTooLong = fmt.Errorf("password longer than %d bytes", MaxPasswordBytes)

// Argon2id parameters for new hashes, chosen for a small (2-core) server.
//
// OWASP's password-storage guidance lists equivalent argon2id settings; we take its
// lowest-memory one, m = 19 MiB with t = 2 and p = 1, so that a burst of registrations or
// logins does not hold hashSlots × 64 MiB in the server's resident memory (the homeserver
// targets a small idle footprint), while each hash still costs about as much time as the
// 64 MiB single-pass setting. Measure with BenchmarkHashPassword.
//
// Old hashes keep verifying after these change: the parameters are read from each hash,
// and NeedsRehash upgrades them at the next login.
const (
	argonMemoryKiB = 19 * 1024
	argonTime      = 2
	argonThreads   = 1
	argonSaltLen   = 16
	argonKeyLen    = 32
)

// Bounds on parameters read from a stored hash, so that a corrupted or hostile row cannot
// make a login allocate gigabytes or spin for minutes.
const (
	maxArgonMemoryKiB = 1024 * 1024
	maxArgonTime      = 64
	maxArgonKeyLen    = 128
	minArgonKeyLen    = 16
	minArgonSaltLen   = 8
	maxBcryptCost     = 18
	// bcrypt only ever uses the first 72 bytes of its key.
	bcryptMaxKeyBytes = 72
)

// hashSlots bounds the number of argon2id computations running at once.
var hashSlots = make(chan struct{}, max(runtime.GOMAXPROCS(0), 1))

// normalizePassword returns the NFKC form of the password, as Synapse hashes it, so that
// the same password typed on different keyboards (composed or decomposed accents, full-width
// digits) verifies against the same hash, and imported Synapse hashes keep working.
func normalizePassword(pw string) []byte {
	return norm.NFKC.Bytes([]byte(pw))
}

// HashPassword hashes a password with argon2id and returns it in PHC string format:
//
//	$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>
//
// with salt and hash in unpadded standard base64. The password is NFKC-normalised first.
// It returns ErrPasswordTooLong for passwords longer than MaxPasswordBytes.
func HashPassword(pw string) (string, error) {
	key := normalizePassword(pw)
	if len(key) > MaxPasswordBytes {
		return "", ErrPasswordTooLong
	}
	salt := make([]byte, argonSaltLen)
	rand.Read(salt)
	sum := argon2idKey(key, salt, argonTime, argonMemoryKiB, argonThreads, argonKeyLen)
	return fmt.Sprintf("$argon2id$v=%d$m=%d,t=%d,p=%d$%s$%s", argon2.Version,
		argonMemoryKiB, argonTime, argonThreads,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(sum)), nil
}

func argon2idKey(key, salt []byte, time, memory uint32, threads uint8, keyLen uint32) []byte {
	hashSlots <- struct{}{}
	defer func() { <-hashSlots }()
	return argon2.IDKey(key, salt, time, memory, threads, keyLen)
}

// CheckPassword reports whether pw matches hash. It accepts argon2id hashes in PHC format
// (as HashPassword makes them) and bcrypt hashes ($2a$, $2b$, $2y$) as Synapse stores
// them, so users imported from Synapse keep their passwords. The comparison of the
// derived keys is constant-time. Malformed hashes, hashes with out-of-range parameters and
// over-long passwords never match.
//
// NOTSPEC: Synapse's optional password_pepper is not supported; hashes made with a pepper
// must be re-set after import.
func CheckPassword(hash, pw string) bool {
	key := normalizePassword(pw)
	if len(key) > MaxPasswordBytes {
		return false
	}
	switch {
	case strings.HasPrefix(hash, "$argon2id$"):
		p, err := parseArgon2id(hash)
		if err != nil {
			return false
		}
		sum := argon2idKey(key, p.salt, p.time, p.memory, p.threads, uint32(len(p.key)))
		return subtle.ConstantTimeCompare(sum, p.key) == 1
	case strings.HasPrefix(hash, "$2a$"), strings.HasPrefix(hash, "$2b$"), strings.HasPrefix(hash, "$2y$"):
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || cost > maxBcryptCost {
			return false
		}
		// Python's bcrypt (used by Synapse) hashed only the first 72 bytes of longer
		// passwords; cutting here keeps such hashes verifying.
		if len(key) > bcryptMaxKeyBytes {
			key = key[:bcryptMaxKeyBytes]
		}
		return bcrypt.CompareHashAndPassword([]byte(hash), key) == nil
	default:
		return false
	}
}

// NeedsRehash reports whether a stored hash should be replaced by HashPassword's output
// the next time the user proves the password: it is bcrypt, or argon2id with parameters
// other than the current ones.
func NeedsRehash(hash string) bool {
	p, err := parseArgon2id(hash)
	if err != nil {
		return true
	}
	return p.memory != argonMemoryKiB || p.time != argonTime || p.threads != argonThreads ||
		len(p.key) != argonKeyLen || len(p.salt) < argonSaltLen
}

type argon2idHash struct {
	memory  uint32
	time    uint32
	threads uint8
	salt    []byte
	key     []byte
}

var errBadHash = errors.New("malformed argon2id hash")

// parseArgon2id parses "$argon2id$v=19$m=M,t=T,p=P$salt$key" (PHC string format).
func parseArgon2id(hash string) (argon2idHash, error) {
	var p argon2idHash
	parts := strings.Split(hash, "$")
	// "", "argon2id", "v=19", "m=..,t=..,p=..", salt, key
	if len(parts) != 6 || parts[0] != "" || parts[1] != "argon2id" {
		return p, errBadHash
	}
	if parts[2] != "v="+strconv.Itoa(argon2.Version) {
		return p, fmt.Errorf("%w: unsupported version %q", errBadHash, parts[2])
	}
	params := strings.Split(parts[3], ",")
	if len(params) != 3 {
		return p, errBadHash
	}
	var seen [3]bool
	for _, kv := range params {
		name, value, ok := strings.Cut(kv, "=")
		if !ok {
			return p, errBadHash
		}
		n, err := strconv.ParseUint(value, 10, 32)
		if err != nil {
			return p, errBadHash
		}
		switch name {
		case "m":
			p.memory, seen[0] = uint32(n), true
		case "t":
			p.time, seen[1] = uint32(n), true
		case "p":
			if n > 255 {
				return p, errBadHash
			}
			p.threads, seen[2] = uint8(n), true
		default:
			return p, errBadHash
		}
	}
	if !seen[0] || !seen[1] || !seen[2] {
		return p, errBadHash
	}
	if p.time < 1 || p.time > maxArgonTime || p.threads < 1 ||
		p.memory < 8*uint32(p.threads) || p.memory > maxArgonMemoryKiB {
		return p, fmt.Errorf("%w: parameters out of range", errBadHash)
	}
	var err error
	if p.salt, err = base64.RawStdEncoding.Strict().DecodeString(parts[4]); err != nil || len(p.salt) < minArgonSaltLen {
		return p, errBadHash
	}
	if p.key, err = base64.RawStdEncoding.Strict().DecodeString(parts[5]); err != nil ||
		len(p.key) < minArgonKeyLen || len(p.key) > maxArgonKeyLen {
		return p, errBadHash
	}
	return p, nil
}
