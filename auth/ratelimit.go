package auth

import (
	"fmt"
	"hash/maphash"
	"math"
	"sync"
	"time"
)

// Limiter is a token-bucket rate limiter keyed by string: a user ID, a device or an IP
// address. Each key has a bucket of at most burst tokens that refills at rate tokens per
// second; every allowed request takes one token.
//
// Client-Server API, "Rate limiting": a refused request gets 429 M_LIMIT_EXCEEDED with a
// Retry-After header; Allow returns the wait to put in it.
//
// A Limiter is safe for concurrent use. Keys are spread over shards, each with its own
// lock, so the send path does not serialise on one mutex. Memory is bounded: a bucket that
// has refilled to full is indistinguishable from a missing one and is dropped by a sweep
// at most once per refill period, and each shard holds at most its share of MaxKeys.
//
// A nil *Limiter allows everything; use it when rate limiting is disabled.
type Limiter struct {
	rate   float64 // tokens per nanosecond
	burst  float64
	clock  func() time.Time
	origin time.Time // bucket times are nanoseconds since origin (monotonic when clock has it)
	// idleNanos is how long an untouched bucket takes to refill completely.
	idleNanos int64
	shardCap  int
	seed      maphash.Seed
	shards    [limiterShards]limiterShard
}

// limiterShards is a power of two so the shard index is a mask of the key's hash.
const limiterShards = 32

// DefaultMaxKeys is the number of keys a Limiter tracks at most unless WithMaxKeys says
// otherwise: about 10 MB of buckets at the worst.
const DefaultMaxKeys = 100_000

type limiterShard struct {
	mu        sync.Mutex
	buckets   map[string]*bucket
	nextSweep int64
	_         [40]byte // keep neighbouring shards' locks on separate cache lines
}

type bucket struct {
	tokens float64
	last   int64 // nanoseconds since Limiter.origin at which tokens was computed
}

// LimiterOption configures a Limiter.
type LimiterOption func(*Limiter)

// WithMaxKeys bounds the number of keys the limiter remembers. When full, idle buckets are
// dropped first and then arbitrary ones, which at worst gives a dropped key a fresh burst.
func WithMaxKeys(n int) LimiterOption {
	return func(l *Limiter) {
		l.shardCap = max(n/limiterShards, 1)
	}
}

// NewLimiter returns a limiter allowing rate requests per second per key with bursts of
// up to burst requests. clock is the time source (nil means time.Now); tests inject a fake
// one. It panics if rate is not positive and finite or burst is below 1: configuration is
// checked by Limits.Validate before it gets here.
func NewLimiter(rate float64, burst int, clock func() time.Time, opts ...LimiterOption) *Limiter {
	if !(rate > 0) || math.IsInf(rate, 0) || burst < 1 {
		panic(fmt.Sprintf("auth.NewLimiter: invalid rate %v or burst %d", rate, burst))
	}
	if clock == nil {
		clock = time.Now
	}
	l := &Limiter{
		rate:   rate / float64(time.Second),
		burst:  float64(burst),
		clock:  clock,
		origin: clock(),
		seed:   maphash.MakeSeed(),
	}
	idle := float64(burst) / l.rate
	l.idleNanos = int64(min(idle, float64(math.MaxInt64/2)))
	WithMaxKeys(DefaultMaxKeys)(l)
	for _, opt := range opts {
		opt(l)
	}
	for i := range l.shards {
		l.shards[i].buckets = make(map[string]*bucket)
	}
	return l
}

// Allow takes one token from key's bucket. It reports whether the request may go ahead
// and, if not, how long until a token is available (the Retry-After of a 429).
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	return l.take(key, true)
}

// Peek reports what Allow would, without taking a token. It suits limits that are charged
// only afterwards, such as failed login attempts: Peek before checking the password, Allow
// when the check fails.
func (l *Limiter) Peek(key string) (ok bool, retryAfter time.Duration) {
	return l.take(key, false)
}

func (l *Limiter) take(key string, consume bool) (bool, time.Duration) {
	if l == nil {
		return true, 0
	}
	now := int64(l.clock().Sub(l.origin))
	s := &l.shards[maphash.String(l.seed, key)&(limiterShards-1)]
	s.mu.Lock()
	defer s.mu.Unlock()
	b := s.buckets[key]
	if b == nil {
		if !consume {
			return true, 0
		}
		s.makeRoom(l, now)
		b = &bucket{tokens: l.burst, last: now}
		s.buckets[key] = b
	} else if now > b.last {
		b.tokens = min(l.burst, b.tokens+float64(now-b.last)*l.rate)
		b.last = now
	}
	if b.tokens >= 1 {
		if consume {
			b.tokens--
		}
		return true, 0
	}
	return false, time.Duration(math.Ceil((1 - b.tokens) / l.rate))
}

// makeRoom is called with s.mu held before a new key is added. It drops buckets that have
// refilled completely, at most once per refill period unless the shard is full, and, if
// the shard is still full, arbitrary buckets until one eighth of it is free so the next
// full sweep is far away (keeping the cost per new key constant on average).
func (s *limiterShard) makeRoom(l *Limiter, now int64) {
	full := len(s.buckets) >= l.shardCap
	if !full && now < s.nextSweep {
		return
	}
	for key, b := range s.buckets {
		if now-b.last >= l.idleNanos {
			delete(s.buckets, key)
		}
	}
	s.nextSweep = now + l.idleNanos
	if len(s.buckets) < l.shardCap {
		return
	}
	target := l.shardCap - max(l.shardCap/8, 1)
	for key := range s.buckets {
		if len(s.buckets) <= target {
			break
		}
		delete(s.buckets, key)
	}
}

// Len returns the number of keys currently remembered.
func (l *Limiter) Len() int {
	if l == nil {
		return 0
	}
	n := 0
	for i := range l.shards {
		s := &l.shards[i]
		s.mu.Lock()
		n += len(s.buckets)
		s.mu.Unlock()
	}
	return n
}

// RateLimit is one configured limit: a steady rate and the burst allowed above it.
type RateLimit struct {
	PerSecond float64 `json:"per_second" yaml:"per_second"`
	Burst     int     `json:"burst_count" yaml:"burst_count"`
}

// Validate reports whether the limit can build a Limiter.
func (r RateLimit) Validate() error {
	if !(r.PerSecond > 0) || math.IsInf(r.PerSecond, 0) {
		return fmt.Errorf("per_second must be a positive number, got %v", r.PerSecond)
	}
	if r.Burst < 1 {
		return fmt.Errorf("burst_count must be at least 1, got %d", r.Burst)
	}
	return nil
}

// Limits is the rate-limit configuration of the Client-Server API. The defaults are
// Synapse's (rc_registration, rc_login, rc_message), which real clients are tuned for.
type Limits struct {
	// Enabled switches all of them; when false, Build returns nil limiters that allow
	// everything.
	Enabled bool `json:"enabled" yaml:"enabled"`
	// Register limits POST /register per client IP address.
	Register RateLimit `json:"register" yaml:"register"`
	// LoginAddress limits POST /login per client IP address.
	LoginAddress RateLimit `json:"login_address" yaml:"login_address"`
	// LoginAccount limits POST /login per target account.
	LoginAccount RateLimit `json:"login_account" yaml:"login_account"`
	// LoginFailed limits failed password attempts per target account: Peek before
	// checking a password, Allow (charge) only when the check fails.
	LoginFailed RateLimit `json:"login_failed_attempts" yaml:"login_failed_attempts"`
	// Send limits sending events (PUT /rooms/{roomId}/send, /state, …) per user.
	Send RateLimit `json:"send" yaml:"send"`
	// LoginToken limits POST /login/get_token per user.
	LoginToken RateLimit `json:"login_token" yaml:"login_token"`
	// Media limits uploads, media IDs created and URL previews per user.
	Media RateLimit `json:"media" yaml:"media"`
	// Report limits reports of events, rooms and users per user.
	Report RateLimit `json:"report" yaml:"report"`
	// MaxKeys bounds the keys each limiter remembers (0 means DefaultMaxKeys).
	MaxKeys int `json:"max_keys" yaml:"max_keys"`
}

// DefaultLimits returns rate limiting switched on with Synapse's default values.
func DefaultLimits() Limits {
	return Limits{
		Enabled:      true,
		Register:     RateLimit{PerSecond: 0.17, Burst: 3},
		LoginAddress: RateLimit{PerSecond: 0.003, Burst: 5},
		LoginAccount: RateLimit{PerSecond: 0.003, Burst: 5},
		LoginFailed:  RateLimit{PerSecond: 0.17, Burst: 3},
		Send:         RateLimit{PerSecond: 0.2, Burst: 10},
		// NOTSPEC: a login token is asked for when signing in another device, a rare act;
		// one a minute with a burst of 3 (Synapse also limits it tightly).
		LoginToken: RateLimit{PerSecond: 1.0 / 60, Burst: 3},
		// Synapse's rc_media_create.
		Media: RateLimit{PerSecond: 10, Burst: 50},
		// NOTSPEC: one report every 10 s with a burst of 5; reports go to people.
		Report: RateLimit{PerSecond: 0.1, Burst: 5},
	}
}

// Validate checks every limit when rate limiting is enabled.
func (l Limits) Validate() error {
	if !l.Enabled {
		return nil
	}
	if l.MaxKeys < 0 {
		return fmt.Errorf("rate limits: max_keys must not be negative, got %d", l.MaxKeys)
	}
	for _, c := range []struct {
		name  string
		limit RateLimit
	}{
		{"register", l.Register},
		{"login_address", l.LoginAddress},
		{"login_account", l.LoginAccount},
		{"login_failed_attempts", l.LoginFailed},
		{"send", l.Send},
		{"login_token", l.LoginToken},
		{"media", l.Media},
		{"report", l.Report},
	} {
		if err := c.limit.Validate(); err != nil {
			return fmt.Errorf("rate limit %s: %w", c.name, err)
		}
	}
	return nil
}

// Limiters holds one Limiter per configured limit. Its fields are nil (allow everything)
// when rate limiting is disabled.
type Limiters struct {
	Register     *Limiter
	LoginAddress *Limiter
	LoginAccount *Limiter
	LoginFailed  *Limiter
	Send         *Limiter
	LoginToken   *Limiter
	Media        *Limiter
	Report       *Limiter
}

// Build validates the limits and makes their limiters, reading time from clock (nil means
// time.Now).
func (l Limits) Build(clock func() time.Time) (*Limiters, error) {
	if !l.Enabled {
		return &Limiters{}, nil
	}
	if err := l.Validate(); err != nil {
		return nil, err
	}
	maxKeys := l.MaxKeys
	if maxKeys == 0 {
		maxKeys = DefaultMaxKeys
	}
	build := func(r RateLimit) *Limiter {
		return NewLimiter(r.PerSecond, r.Burst, clock, WithMaxKeys(maxKeys))
	}
	return &Limiters{
		Register:     build(l.Register),
		LoginAddress: build(l.LoginAddress),
		LoginAccount: build(l.LoginAccount),
		LoginFailed:  build(l.LoginFailed),
		Send:         build(l.Send),
		LoginToken:   build(l.LoginToken),
		Media:        build(l.Media),
		Report:       build(l.Report),
	}, nil
}

// RetryAfterSeconds converts a wait from Allow into the whole number of seconds of a
// Retry-After header (RFC 9110 §10.2.3), rounding up so the client never retries early.
func RetryAfterSeconds(d time.Duration) int {
	return int((d + time.Second - 1) / time.Second)
}
