package auth

import (
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"
)

func TestLimiterTokenBucket(t *testing.T) {
	type step struct {
		advance   time.Duration
		key       string
		wantOK    bool
		wantRetry time.Duration
	}
	// 0.5 requests per second, bursts of 2: a token every 2 s.
	tests := []struct {
		name  string
		steps []step
	}{
		{"burst then refused", []step{
			{0, "a", true, 0},
			{0, "a", true, 0},
			{0, "a", false, 2 * time.Second},
			{time.Second, "a", false, time.Second},
		}},
		{"refill one token", []step{
			{0, "a", true, 0},
			{0, "a", true, 0},
			{2 * time.Second, "a", true, 0},
			{0, "a", false, 2 * time.Second},
		}},
		{"keys are independent", []step{
			{0, "a", true, 0},
			{0, "a", true, 0},
			{0, "a", false, 2 * time.Second},
			{0, "b", true, 0},
		}},
		{"refill caps at burst", []step{
			{0, "a", true, 0},
			{time.Hour, "a", true, 0},
			{0, "a", true, 0},
			{0, "a", false, 2 * time.Second},
		}},
		{"clock going backwards refills nothing", []step{
			{0, "a", true, 0},
			{0, "a", true, 0},
			{-time.Minute, "a", false, 2 * time.Second},
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			l := NewLimiter(0.5, 2, clock.Now)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				ok, retry := l.Allow(s.key)
				if ok != s.wantOK || retry != s.wantRetry {
					t.Fatalf("step %d: Allow(%q) = %v, %v; want %v, %v", i, s.key, ok, retry, s.wantOK, s.wantRetry)
				}
			}
		})
	}
}

func TestLimiterPeek(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(1, 1, clock.Now)
	if ok, _ := l.Peek("u"); !ok {
		t.Fatal("Peek of an unknown key refused")
	}
	if l.Len() != 0 {
		t.Fatal("Peek remembered a key")
	}
	if ok, _ := l.Allow("u"); !ok {
		t.Fatal("first Allow refused")
	}
	for range 3 {
		if ok, retry := l.Peek("u"); ok || retry != time.Second {
			t.Fatalf("Peek on an empty bucket = %v, %v; want false, 1s", ok, retry)
		}
	}
	clock.Advance(time.Second)
	if ok, _ := l.Peek("u"); !ok {
		t.Fatal("Peek refused after refill")
	}
	if ok, _ := l.Allow("u"); !ok {
		t.Fatal("Peek took the token")
	}
}

func TestLimiterNilAllowsEverything(t *testing.T) {
	var l *Limiter
	for range 10 {
		if ok, retry := l.Allow("x"); !ok || retry != 0 {
			t.Fatal("nil limiter refused")
		}
	}
	if l.Len() != 0 {
		t.Fatal("nil limiter has keys")
	}
}

func TestLimiterForgetsIdleKeys(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(1, 2, clock.Now) // refills completely in 2 s
	for i := range 1000 {
		l.Allow("ip-" + strconv.Itoa(i))
	}
	if got := l.Len(); got != 1000 {
		t.Fatalf("Len = %d, want 1000", got)
	}
	clock.Advance(2 * time.Second)
	// New keys arriving after the refill period sweep the idle ones out of every shard.
	for i := range 1000 {
		l.Allow("later-" + strconv.Itoa(i))
	}
	if got := l.Len(); got != 1000 {
		t.Errorf("Len after idle period = %d, want 1000 (only the new keys)", got)
	}
}

func TestLimiterMaxKeys(t *testing.T) {
	clock := newFakeClock()
	const maxKeys = 64 * limiterShards
	l := NewLimiter(0.001, 1, clock.Now, WithMaxKeys(maxKeys))
	for i := range 100 * maxKeys {
		l.Allow(fmt.Sprint("k", i))
	}
	if got := l.Len(); got > maxKeys {
		t.Errorf("Len = %d, want at most %d", got, maxKeys)
	}
	// The most recent key is still limited.
	last := fmt.Sprint("k", 100*maxKeys-1)
	if ok, _ := l.Allow(last); ok {
		t.Error("the newest key was forgotten")
	}
}

func TestLimiterConcurrent(t *testing.T) {
	clock := newFakeClock()
	l := NewLimiter(1, 100, clock.Now)
	var wg sync.WaitGroup
	allowed := make([]int, 8)
	for g := range allowed {
		wg.Go(func() {
			for range 50 {
				if ok, _ := l.Allow("shared"); ok {
					allowed[g]++
				}
			}
		})
	}
	wg.Wait()
	total := 0
	for _, n := range allowed {
		total += n
	}
	if total != 100 {
		t.Errorf("%d requests allowed from a burst of 100", total)
	}
}

func TestNewLimiterPanicsOnBadConfig(t *testing.T) {
	tests := []struct {
		rate  float64
		burst int
	}{{0, 1}, {-1, 1}, {1, 0}}
	for _, tt := range tests {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("NewLimiter(%v, %d) did not panic", tt.rate, tt.burst)
				}
			}()
			NewLimiter(tt.rate, tt.burst, nil)
		}()
	}
}

func TestLimits(t *testing.T) {
	defaults := DefaultLimits()
	if err := defaults.Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
	tests := []struct {
		name    string
		edit    func(*Limits)
		wantErr bool
		wantNil bool
	}{
		{"defaults", func(*Limits) {}, false, false},
		{"disabled", func(l *Limits) { l.Enabled = false }, false, true},
		{"disabled ignores bad values", func(l *Limits) { l.Enabled = false; l.Send.Burst = 0 }, false, true},
		{"zero burst", func(l *Limits) { l.Send.Burst = 0 }, true, false},
		{"zero rate", func(l *Limits) { l.Register.PerSecond = 0 }, true, false},
		{"negative max keys", func(l *Limits) { l.MaxKeys = -1 }, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limits := DefaultLimits()
			tt.edit(&limits)
			built, err := limits.Build(newFakeClock().Now)
			if (err != nil) != tt.wantErr {
				t.Fatalf("Build error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			all := []*Limiter{built.Register, built.LoginAddress, built.LoginAccount, built.LoginFailed, built.Send}
			for i, l := range all {
				if (l == nil) != tt.wantNil {
					t.Errorf("limiter %d nil = %v, want %v", i, l == nil, tt.wantNil)
				}
			}
		})
	}
}

func TestRetryAfterSeconds(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want int
	}{{0, 0}, {time.Nanosecond, 1}, {time.Second, 1}, {1500 * time.Millisecond, 2}, {2 * time.Second, 2}}
	for _, tt := range tests {
		if got := RetryAfterSeconds(tt.in); got != tt.want {
			t.Errorf("RetryAfterSeconds(%v) = %d, want %d", tt.in, got, tt.want)
		}
	}
}

func BenchmarkLimiterAllowOneKey(b *testing.B) {
	l := NewLimiter(1e9, 1<<30, nil)
	for b.Loop() {
		l.Allow("@alice:example.org")
	}
}

func BenchmarkLimiterAllowParallel(b *testing.B) {
	l := NewLimiter(1e9, 1<<30, nil)
	keys := make([]string, 1024)
	for i := range keys {
		keys[i] = fmt.Sprintf("@user%d:example.org", i)
	}
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
}
