// Package clientapi serves the Matrix Client-Server API (spec v1.19,
// content/client-server-api) on chi: authentication, rooms, /sync and the rest.
//
// One file per area of the API; handlers are methods of API and return errors, which
// httpapi turns into Matrix error responses.
package clientapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/config"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/presence"
	"github.com/scrambledeggs/eggs/push"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// API is the Client-Server API of one homeserver.
type API struct {
	cfg            *config.Config
	db             *storage.DB
	rooms          *rooms.Server
	log            *slog.Logger
	uia            *auth.UIA
	nonces         *auth.NonceStore
	limiters       *auth.Limiters
	clock          func() time.Time
	typing         *typingTracker
	presence       *presence.Tracker
	unread         *boundedMap[unreadKey, unreadEntry]
	memberships    *boundedMap[string, membershipEntry]
	reads          *boundedMap[string, readEntry]
	pushRulesCache *boundedMap[string, *pushRulesEntry]
	evalEvents     *boundedMap[int64, *push.EvalEvent]
	tokens         *boundedMap[string, cachedDevice]
	tokenGen       atomic.Int64
	// toDeviceAcked is, per device inbox, the since token up to which its to-device
	// messages were last deleted; oneTimeKeyCounts caches what /sync reports of a device's
	// one-time and fallback keys.
	toDeviceAcked    *boundedMap[string, int64]
	oneTimeKeyCounts *boundedMap[string, oneTimeKeyEntry]

	remote     RemoteRooms
	remoteKeys RemoteKeys
}

// RemoteRooms reaches rooms that live on other servers (the federation API).
type RemoteRooms interface {
	// JoinRemote joins userID to roomID through one of servers; content is the join's.
	JoinRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error
	// InviteRemote invites invitee, a user of another server, to roomID on behalf of
	// inviter; content is the invite's. Errors other than the room server's mean that the
	// invitee's server did not co-sign the invite.
	InviteRemote(ctx context.Context, roomID, inviter, invitee string, content map[string]any) error
	// LeaveRemote makes userID leave roomID, a room this server is not part of (rejecting
	// an invite, retracting a knock), through one of servers; content is the leave's.
	LeaveRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error
	// KnockRemote knocks on roomID, a room this server is not part of, for userID through
	// one of servers; content is the knock's.
	KnockRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error
	// QueryDirectory resolves a room alias of another server.
	QueryDirectory(ctx context.Context, alias string) (roomID string, servers []string, err error)
	// QueryProfile reads the profile (one field of it when field is set) of another server's
	// user.
	QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error)
	// PublicRooms reads another server's published room directory; request is the body of
	// POST /publicRooms.
	PublicRooms(ctx context.Context, server string, request json.RawMessage) (json.RawMessage, error)
	// SpaceHierarchy reads a space and its children from another server.
	SpaceHierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (json.RawMessage, error)
	// SendTyping and SendReceipt tell the other servers of a room about our users' typing
	// and public read receipts.
	SendTyping(ctx context.Context, roomID, userID string, typing bool) error
	SendReceipt(ctx context.Context, roomID, userID, threadID, eventID string, ts int64) error
	// Backfill fetches up to limit events of roomID's history older than its earliest event
	// here from the other servers in the room (server-server API "Backfilling and
	// retrieving missing events") and stores them below it, at negative stream positions.
	// It returns how many events were added to the room's history; 0 when there is none
	// to be had.
	Backfill(ctx context.Context, roomID string, limit int) (int, error)
}

// SetRemoteRooms connects the federation API; without it, rooms this server does not know
// cannot be joined, and nothing our users do reaches other servers. Call it before the
// server takes requests.
func (a *API) SetRemoteRooms(r RemoteRooms) {
	a.remote = r
	a.typing.expired = a.federateTypingExpiry
}

// RemoteKeys reaches the end-to-end encryption of other servers' users (the federation
// API, server-server API "End-to-End Encryption", "Device Management", "Send-to-device
// messaging").
type RemoteKeys interface {
	// QueryRemoteKeys reads the keys of other servers' users (user ID → device IDs, none
	// meaning all) within timeout; servers that do not answer are listed in failures.
	QueryRemoteKeys(ctx context.Context, request map[string][]string, timeout time.Duration) (devices map[string]map[string]json.RawMessage,
		master, selfSigning map[string]json.RawMessage, failures map[string]any)
	// ClaimRemoteKeys claims one-time keys of other servers' users' devices (user ID →
	// device ID → algorithm) within timeout; servers that do not answer are listed in
	// failures.
	ClaimRemoteKeys(ctx context.Context, request map[string]map[string]string, timeout time.Duration) (
		map[string]map[string]map[string]json.RawMessage, map[string]any)
	// QueueToDevice queues, in q, to-device messages of sender for other servers' users
	// (user ID → device ID or "*" → content) and returns the servers to Wake after commit.
	QueueToDevice(ctx context.Context, q storage.Querier, sender, eventType string, messages map[string]map[string]json.RawMessage) ([]string, error)
	// QueueDeviceListUpdates queues, in q, the announcement of what changed in the device
	// list of userID (one of ours) for the servers sharing a room with them, and returns the
	// servers to Wake after commit.
	QueueDeviceListUpdates(ctx context.Context, q storage.Querier, userID string) ([]string, error)
	// Wake makes the queues of destinations send what was queued for them.
	Wake(destinations ...string)
}

// SetRemoteKeys connects the federation of end-to-end encryption; without it, keys of other
// servers' users are reported as failures and to-device messages to them are dropped. Call
// it before the server takes requests.
func (a *API) SetRemoteKeys(r RemoteKeys) { a.remoteKeys = r }

// New makes the API. clock is time.Now outside tests.
func New(cfg *config.Config, db *storage.DB, roomServer *rooms.Server, log *slog.Logger, clock func() time.Time) (*API, error) {
	limits := auth.DefaultLimits()
	limits.Enabled = cfg.RateLimited()
	limiters, err := limits.Build(clock)
	if err != nil {
		return nil, err
	}
	a := &API{
		cfg: cfg, db: db, rooms: roomServer, log: log, clock: clock,
		uia:      auth.NewUIA(auth.UIAConfig{Clock: clock}),
		nonces:   auth.NewNonceStore(10000, clock),
		limiters: limiters,
	}
	a.typing = newTypingTracker(db, roomServer.Stream(), roomServer.JoinedMembers, log, clock)
	a.presence = presence.New(presence.Config{DB: db, Stream: roomServer.Stream(), ServerName: cfg.ServerName, Clock: clock, Log: log,
		RoomMembers: roomServer.JoinedMembers, Disabled: !cfg.PresenceEnabled()})
	a.unread = newBoundedMap[unreadKey, unreadEntry](maxUnreadEntries)
	a.memberships = newBoundedMap[string, membershipEntry](maxMembershipEntries)
	a.reads = newBoundedMap[string, readEntry](maxMembershipEntries)
	a.pushRulesCache = newBoundedMap[string, *pushRulesEntry](maxPushRulesEntries)
	a.evalEvents = newBoundedMap[int64, *push.EvalEvent](maxEvalEvents)
	a.tokens = newBoundedMap[string, cachedDevice](maxCachedTokens)
	a.toDeviceAcked = newBoundedMap[string, int64](maxCachedInboxes)
	a.oneTimeKeyCounts = newBoundedMap[string, oneTimeKeyEntry](maxCachedInboxes)
	return a, nil
}

// nowMS is the current time in milliseconds since the epoch.
func (a *API) nowMS() int64 { return a.clock().UnixMilli() }

// Routes mounts every endpoint of the Client-Server API under /_matrix/client, plus the
// Synapse-compatible admin registration endpoint.
func (a *API) Routes(r chi.Router) {
	h := func(fn httpapi.Handler) http.Handler { return fn }
	authed := func(fn func(w http.ResponseWriter, r *http.Request, d *Device) error) http.Handler {
		return a.requireAuth(fn)
	}
	r.Get("/.well-known/matrix/client", h(a.wellKnownClient).ServeHTTP)
	r.Route("/_matrix/client", func(r chi.Router) {
		r.Get("/versions", h(a.versions).ServeHTTP)
		r.Route("/v1", func(r chi.Router) {
			a.clientV1Routes(r, authed)
			r.Method(http.MethodGet, "/room_summary/{roomIdOrAlias}", h(a.roomSummary)) // access token optional
		})
		for _, prefix := range []string{"/v3", "/r0"} {
			r.Route(prefix, func(r chi.Router) {
				a.accountRoutes(r, h, authed)
				a.roomRoutes(r, h, authed)
				a.syncRoutes(r, h, authed)
				a.keysRoutes(r, authed)
				a.miscRoutes(r, h, authed)
				a.presenceRoutes(r, authed)
				a.oldSyncRoutes(r, authed)
				a.pushRuleRoutes(r, authed)
				a.pushRoutes(r, authed)
			})
		}
		r.Route("/unstable/org.matrix.msc3814.v1", func(r chi.Router) {
			a.dehydratedRoutes(r, authed)
		})
	})
	r.Route("/_synapse/admin/v1", func(r chi.Router) {
		r.Get("/register", h(a.sharedSecretNonce).ServeHTTP)
		r.Post("/register", h(a.sharedSecretRegister).ServeHTTP)
	})
}

// Device is the authenticated device of a request. Locked and Suspended are the state of
// its account (client-server API "Account moderation"): requireAuth refuses a locked
// account, handlers of what a suspended account may not do call requireNotSuspended.
type Device struct {
	UserID    string
	DeviceID  string
	IsAdmin   bool
	Locked    bool
	Suspended bool
}

// requireAuth authenticates the request's access token (Authenticate) and runs fn with its
// device.
func (a *API) requireAuth(fn func(w http.ResponseWriter, r *http.Request, d *Device) error) http.Handler {
	return httpapi.Handler(func(w http.ResponseWriter, r *http.Request) error {
		d, err := a.Authenticate(r)
		if err != nil {
			return err
		}
		return fn(w, r, d)
	})
}

// Authenticate finds the device of a request's access token (client-server API "Using
// access tokens"), for this API and the others served on the client listener (media): 401
// M_MISSING_TOKEN without one, M_UNKNOWN_TOKEN for a bad one, and M_USER_LOCKED for a
// locked account except on the endpoints it may still use (see lockedMayUse).
func (a *API) Authenticate(r *http.Request) (*Device, error) {
	token, err := accessToken(r)
	if err != nil {
		return nil, err
	}
	d, err := a.deviceForToken(r.Context(), token)
	if err != nil {
		return nil, err
	}
	if d.Locked && !lockedMayUse(r) {
		return nil, errUserLocked()
	}
	return d, nil
}

// accessToken takes the token from the Authorization header, or the deprecated query
// parameter.
func accessToken(r *http.Request) (string, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		const prefix = "Bearer "
		if len(h) > len(prefix) && strings.EqualFold(h[:len(prefix)], prefix) {
			return strings.TrimSpace(h[len(prefix):]), nil
		}
		return "", unknownToken("Invalid Authorization header")
	}
	if t := r.URL.Query().Get("access_token"); t != "" {
		return t, nil
	}
	return "", httpapi.NewError(http.StatusUnauthorized, "M_MISSING_TOKEN", "Missing access token")
}

func unknownToken(msg string) *httpapi.Error {
	e := httpapi.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "%s", msg)
	e.Extra = map[string]any{"soft_logout": false}
	return e
}

// deviceForToken looks an access token up by its hash, through a cache that every change
// of devices (login, logout, deletion, deactivation) or of an account's lock or suspension
// empties: see forgetTokens. Entries also expire after maxTokenCacheAge, so that changes
// made outside this process (eggs user lock, another process on the same PostgreSQL) take
// effect within that time.
func (a *API) deviceForToken(ctx context.Context, token string) (*Device, error) {
	hash := auth.HashToken(token)
	gen := a.tokenGen.Load()
	now := a.clock()
	if cached, ok := a.tokens.get(string(hash)); ok && cached.gen == gen && now.Sub(cached.at) < maxTokenCacheAge {
		return cached.device, nil
	}
	owner, err := storage.DeviceByToken(ctx, a.db, hash)
	if err == storage.ErrNotFound {
		return nil, unknownToken("Unknown access token")
	}
	if err != nil {
		return nil, err
	}
	d := &Device{UserID: owner.UserID, DeviceID: owner.DeviceID, IsAdmin: owner.IsAdmin,
		Locked: owner.Locked, Suspended: owner.Suspended}
	// Stored with the generation read before the lookup: a change in between makes the
	// entry stale at once.
	a.tokens.put(string(hash), cachedDevice{device: d, gen: gen, at: now})
	return d, nil
}

// cachedDevice is a token's device as looked up, at time at, in generation gen of the
// devices.
type cachedDevice struct {
	device *Device
	gen    int64
	at     time.Time
}

// maxCachedTokens bounds the token cache; maxTokenCacheAge bounds how long a lookup is
// trusted, which is how long a change made by another process may go unnoticed.
const (
	maxCachedTokens  = 100_000
	maxTokenCacheAge = time.Minute
)

// forgetTokens invalidates every cached token lookup. Call it after any write that ends or
// replaces an access token, or locks, unlocks, suspends or unsuspends an account, before
// answering the request.
func (a *API) forgetTokens() { a.tokenGen.Add(1) }

// rateLimit answers M_LIMIT_EXCEEDED when key has used up its budget on limiter.
func rateLimit(limiter *auth.Limiter, key string) error {
	if limiter == nil {
		return nil
	}
	if ok, retry := limiter.Allow(key); !ok {
		return httpapi.LimitExceeded(retry)
	}
	return nil
}

// LimitMedia charges one upload, media ID or URL preview to userID's media rate limit
// (package media asks it): M_LIMIT_EXCEEDED with retry_after_ms when it is spent.
func (a *API) LimitMedia(userID string) error { return rateLimit(a.limiters.Media, userID) }

// pathParam is a path parameter, percent-decoded. chi matches routes against the escaped
// path when the request's escaping differs from Go's default (encodeURIComponent's "%3A" for
// ":" does), and then hands back escaped parameters.
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if decoded, err := url.PathUnescape(v); err == nil {
		return decoded
	}
	return v
}
