package auth

import (
	"strings"
	"testing"
	"time"
)

// The expected MACs were computed independently with Python's hmac module, as
// register_new_matrix_user does.
func TestVerifyRegistrationMAC(t *testing.T) {
	const (
		plainMAC = "9dbfce7551045d48270507f18a6503af7b36282c"
		adminMAC = "db7eaaa0e9df096df592e96586f98404634dc023"
		botMAC   = "d3bc4f480b6a1bcafa193ef0ac2da122b36a4ae2"
	)
	tests := []struct {
		name     string
		secret   string
		nonce    string
		user     string
		password string
		admin    bool
		userType string
		mac      string
		want     bool
	}{
		{"not admin", "s3cret", "abcdef", "alice", "hunter2", false, "", plainMAC, true},
		{"admin", "s3cret", "abcdef", "alice", "hunter2", true, "", adminMAC, true},
		{"user type", "s3cret", "abcdef", "bot", "pw", false, "bot", botMAC, true},
		{"uppercase hex", "s3cret", "abcdef", "alice", "hunter2", false, "", strings.ToUpper(plainMAC), true},
		{"admin flag flipped", "s3cret", "abcdef", "alice", "hunter2", true, "", plainMAC, false},
		{"user type dropped", "s3cret", "abcdef", "bot", "pw", false, "", botMAC, false},
		{"wrong secret", "secret", "abcdef", "alice", "hunter2", false, "", plainMAC, false},
		{"wrong nonce", "s3cret", "abcdeg", "alice", "hunter2", false, "", plainMAC, false},
		{"wrong password", "s3cret", "abcdef", "alice", "hunter3", false, "", plainMAC, false},
		{"fields shifted across NUL", "s3cret", "abcdef", "alice\x00hunter2", "", false, "", plainMAC, false},
		{"empty secret", "", "abcdef", "alice", "hunter2", false, "", RegistrationMAC("", "abcdef", "alice", "hunter2", false, ""), false},
		{"not hex", "s3cret", "abcdef", "alice", "hunter2", false, "", "zz" + plainMAC[2:], false},
		{"truncated", "s3cret", "abcdef", "alice", "hunter2", false, "", plainMAC[:38], false},
		{"empty mac", "s3cret", "abcdef", "alice", "hunter2", false, "", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := VerifyRegistrationMAC(tt.secret, tt.nonce, tt.user, tt.password, tt.admin, tt.userType, tt.mac)
			if got != tt.want {
				t.Errorf("VerifyRegistrationMAC = %v, want %v", got, tt.want)
			}
		})
	}
	if got := RegistrationMAC("s3cret", "abcdef", "alice", "hunter2", false, ""); got != plainMAC {
		t.Errorf("RegistrationMAC = %s, want %s", got, plainMAC)
	}
}

func TestNonceStore(t *testing.T) {
	clock := newFakeClock()
	store := NewNonceStore(3, clock.Now)

	first := store.New()
	if len(first) != 64 {
		t.Fatalf("nonce %q is not 64 hex digits", first)
	}
	if store.New() == first {
		t.Fatal("nonces repeat")
	}
	if !store.Consume(first) {
		t.Fatal("a fresh nonce was refused")
	}
	if store.Consume(first) {
		t.Fatal("a nonce was accepted twice")
	}
	if store.Consume("never-issued") {
		t.Fatal("an unknown nonce was accepted")
	}

	expiring := store.New()
	clock.Advance(NonceTTL - time.Second)
	fresh := store.New()
	clock.Advance(time.Second)
	if store.Consume(expiring) {
		t.Fatal("a nonce was accepted at its expiry time")
	}
	if !store.Consume(fresh) {
		t.Fatal("an unexpired nonce was refused")
	}
}

func TestNonceStoreBounded(t *testing.T) {
	clock := newFakeClock()
	store := NewNonceStore(3, clock.Now)
	nonces := []string{store.New(), store.New(), store.New(), store.New()}
	if got := store.Len(); got != 3 {
		t.Fatalf("Len = %d, want 3", got)
	}
	if store.Consume(nonces[0]) {
		t.Error("the oldest nonce survived eviction")
	}
	for _, n := range nonces[1:] {
		if !store.Consume(n) {
			t.Error("a recent nonce was evicted")
		}
	}
	clock.Advance(NonceTTL)
	store.New()
	if got := store.Len(); got != 1 {
		t.Errorf("Len after expiry = %d, want 1", got)
	}
}
