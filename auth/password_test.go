package auth

import (
	"encoding/base64"
	"errors"
	"regexp"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"
)

var phcArgon2id = regexp.MustCompile(`^\$argon2id\$v=19\$m=19456,t=2,p=1\$[A-Za-z0-9+/]{22}\$[A-Za-z0-9+/]{43}$`)

func TestHashPasswordRoundTrip(t *testing.T) {
	hash, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if !phcArgon2id.MatchString(hash) {
		t.Fatalf("hash %q is not in the expected PHC format", hash)
	}
	other, err := HashPassword("correct horse battery staple")
	if err != nil {
		t.Fatal(err)
	}
	if hash == other {
		t.Fatal("two hashes of one password are equal: salt is not random")
	}
	tests := []struct {
		name string
		pw   string
		want bool
	}{
		{"same password", "correct horse battery staple", true},
		{"different password", "correct horse battery stapler", false},
		{"empty password", "", false},
		{"case differs", "Correct horse battery staple", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckPassword(hash, tt.pw); got != tt.want {
				t.Errorf("CheckPassword(%q) = %v, want %v", tt.pw, got, tt.want)
			}
		})
	}
	if NeedsRehash(hash) {
		t.Error("NeedsRehash of a fresh hash = true")
	}
}

func TestPasswordUnicodeNormalisation(t *testing.T) {
	// "é" precomposed (U+00E9) and decomposed (e + U+0301) are the same password.
	hash, err := HashPassword("caf\u00e9")
	if err != nil {
		t.Fatal(err)
	}
	if !CheckPassword(hash, "cafe\u0301") {
		t.Error("decomposed form of the password does not verify")
	}
}

func TestPasswordLengthLimit(t *testing.T) {
	longest := strings.Repeat("a", MaxPasswordBytes)
	if _, err := HashPassword(longest); err != nil {
		t.Fatalf("HashPassword of %d bytes: %v", MaxPasswordBytes, err)
	}
	tooLong := longest + "a"
	if _, err := HashPassword(tooLong); !errors.Is(err, ErrPasswordTooLong) {
		t.Fatalf("HashPassword of %d bytes: err = %v, want ErrPasswordTooLong", len(tooLong), err)
	}
	// A matching bcrypt hash of the first 72 bytes must still not accept an over-long
	// password.
	hash, err := bcrypt.GenerateFromPassword([]byte(tooLong[:72]), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	if CheckPassword(string(hash), tooLong) {
		t.Error("CheckPassword accepted a password over the limit")
	}
}

func TestCheckPasswordBcrypt(t *testing.T) {
	hash2a, err := bcrypt.GenerateFromPassword([]byte("synapse-user-pw"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	// Python's bcrypt, which Synapse uses, writes $2b$; the algorithm is the same.
	hash2b := "$2b$" + string(hash2a[4:])
	long := strings.Repeat("x", 100)
	hashLong, err := bcrypt.GenerateFromPassword([]byte(long[:72]), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		hash string
		pw   string
		want bool
	}{
		{"$2a$ match", string(hash2a), "synapse-user-pw", true},
		{"$2a$ mismatch", string(hash2a), "synapse-user-pW", false},
		{"$2b$ match", hash2b, "synapse-user-pw", true},
		{"$2b$ mismatch", hash2b, "", false},
		// Known-answer vector of the crypt_blowfish test suite.
		{"openwall vector", "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U", true},
		{"longer than 72 bytes, as Python bcrypt truncated", string(hashLong), long, true},
		{"cost too high", "$2b$31$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U", false},
		{"truncated hash", "$2b$05$CCCC", "U*U", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := CheckPassword(tt.hash, tt.pw); got != tt.want {
				t.Errorf("CheckPassword = %v, want %v", got, tt.want)
			}
		})
	}
	if !NeedsRehash(string(hash2a)) {
		t.Error("NeedsRehash of a bcrypt hash = false")
	}
}

func TestCheckPasswordMalformedArgon2id(t *testing.T) {
	const salt = "c29tZXNhbHRzb21lc2FsdA" // 16 bytes
	const key = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
	tests := []struct {
		name string
		hash string
	}{
		{"empty", ""},
		{"unknown scheme", "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key},
		{"old version", "$argon2id$v=16$m=19456,t=2,p=1$" + salt + "$" + key},
		{"missing param", "$argon2id$v=19$m=65536,t=1$" + salt + "$" + key},
		{"unknown param", "$argon2id$v=19$m=65536,t=1,x=2$" + salt + "$" + key},
		{"duplicate param", "$argon2id$v=19$m=65536,m=1,p=2$" + salt + "$" + key},
		{"memory too large", "$argon2id$v=19$m=4194304,t=1,p=2$" + salt + "$" + key},
		{"memory below 8p", "$argon2id$v=19$m=8,t=1,p=2$" + salt + "$" + key},
		{"time zero", "$argon2id$v=19$m=65536,t=0,p=2$" + salt + "$" + key},
		{"time too large", "$argon2id$v=19$m=65536,t=1000,p=2$" + salt + "$" + key},
		{"threads zero", "$argon2id$v=19$m=65536,t=1,p=0$" + salt + "$" + key},
		{"threads overflow", "$argon2id$v=19$m=19456,t=2,p=156$" + salt + "$" + key},
		{"negative", "$argon2id$v=19$m=-1,t=1,p=2$" + salt + "$" + key},
		{"padded salt", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "==$" + key},
		{"short salt", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$" + key},
		{"short key", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$AAAA"},
		{"extra field", "$argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key + "$x"},
		{"no leading dollar", "argon2id$v=19$m=19456,t=2,p=1$" + salt + "$" + key},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if CheckPassword(tt.hash, "password") {
				t.Error("CheckPassword accepted a malformed hash")
			}
			if !NeedsRehash(tt.hash) {
				t.Error("NeedsRehash of a malformed hash = false")
			}
		})
	}
}

func TestCheckPasswordOtherArgon2Parameters(t *testing.T) {
	// A hash made with other (smaller) parameters still verifies: parameters come from
	// the hash, and NeedsRehash asks for an upgrade.
	salt := []byte("0123456789abcdef")
	sum := argon2idKey([]byte("pw"), salt, 2, 1024, 1, 32)
	hash := "$argon2id$v=19$m=1024,t=2,p=1$MDEyMzQ1Njc4OWFiY2RlZg$" + b64(sum)
	if !CheckPassword(hash, "pw") {
		t.Error("CheckPassword rejected a valid hash with other parameters")
	}
	if CheckPassword(hash, "pW") {
		t.Error("CheckPassword accepted a wrong password")
	}
	if !NeedsRehash(hash) {
		t.Error("NeedsRehash = false for old parameters")
	}
}

// BenchmarkHashPassword measures one argon2id hash with the production parameters. On the
// 2-core development machine it takes about the time reported in ns/op.
func BenchmarkHashPassword(b *testing.B) {
	for b.Loop() {
		if _, err := HashPassword("correct horse battery staple"); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkCheckPasswordBcryptCost12(b *testing.B) {
	hash, err := bcrypt.GenerateFromPassword([]byte("pw"), 12)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		CheckPassword(string(hash), "pw")
	}
}

func b64(b []byte) string { return base64.RawStdEncoding.EncodeToString(b) }
