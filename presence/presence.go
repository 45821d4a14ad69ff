// Package presence keeps who is online (client-server API "Presence", server-server API
// "Presence").
//
// For our own users the state is worked out in memory from what each of their devices does:
// a device that syncs (with set_presence online or unavailable, or after an explicit PUT
// /presence) or acts (sends, reads, types) is live for syncOnlineTimeout after it last did;
// the user's presence is the most present state of their live devices, offline when none is
// live, and unavailable once they have not been active for idleTimeout. Other servers' users
// have what their servers last told us, offline once it is older than federationTimeout.
//
// What the users sharing a room with someone must hear about (a change of state or status
// message, currently_active turning, a last-active time that moved while not currently
// active: the rule of Synapse's should_notify) is stored, one row per user, at a new stream
// position; /sync reads the rows of its window, and the users sharing a room are woken.
// Changes of our users also go to the other servers sharing a room with them, and are
// repeated every federationPing so that theirs do not time out.
package presence

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// The presence states (m.presence "presence").
const (
	Online      = "online"
	Unavailable = "unavailable"
	Offline     = "offline"
)

// Timings. NOTSPEC: the spec gives 5 minutes as an example of the idle threshold and leaves
// the rest to the server; these are Synapse's.
const (
	// syncOnlineTimeout is how long a device counts as live after its last /sync or action.
	syncOnlineTimeout = 30 * time.Second
	// idleTimeout turns an online user without activity unavailable.
	idleTimeout = 5 * time.Minute
	// activeGranularity is how long after activity a user is currently_active.
	activeGranularity = time.Minute
	// federationTimeout turns another server's user offline when their server has not told
	// us anything of them for that long.
	federationTimeout = 30 * time.Minute
	// federationPing is how often our users' presence is repeated to other servers while it
	// is not offline, so that it does not time out there.
	federationPing = 25 * time.Minute
	// sweepInterval is how often timeouts of our users are looked at.
	sweepInterval = 5 * time.Second
	// remoteSweepInterval is how often other servers' users are looked at.
	remoteSweepInterval = time.Minute
)

// MaxStatusMsg bounds a status message, in bytes. NOTSPEC: the spec sets no limit; this
// keeps one user's status from bloating every sync of everyone sharing a room with them.
const MaxStatusMsg = 4096

// maxRemoteBatch bounds how many stale users of other servers one sweep turns offline.
const maxRemoteBatch = 1000

// ErrInvalid is returned for a presence state that is none of the three.
var ErrInvalid = errors.New("presence must be online, unavailable or offline")

// Valid reports whether p is one of the three presence states.
func Valid(p string) bool { return p == Online || p == Unavailable || p == Offline }

// rank orders the states by how present they are.
func rank(p string) int {
	switch p {
	case Online:
		return 2
	case Unavailable:
		return 1
	}
	return 0
}

// Status is one user's presence.
type Status struct {
	UserID          string
	Presence        string
	StatusMsg       string // "" when none
	LastActiveTS    int64  // ms since the epoch; 0 when unknown
	CurrentlyActive bool
}

// Content is the content of the user's m.presence event as of now (m.presence; also the
// answer of GET /presence/{userId}/status).
func (s Status) Content(now time.Time) map[string]any {
	c := map[string]any{"presence": s.Presence}
	if s.LastActiveTS > 0 {
		c["last_active_ago"] = max(now.UnixMilli()-s.LastActiveTS, 0)
	}
	if s.Presence == Online {
		c["currently_active"] = s.CurrentlyActive
	}
	if s.StatusMsg != "" {
		c["status_msg"] = s.StatusMsg
	}
	return c
}

// Update is one user's entry in the "push" list of an m.presence EDU (server-server API
// "Presence").
type Update struct {
	UserID          string  `json:"user_id"`
	Presence        string  `json:"presence"`
	LastActiveAgo   int64   `json:"last_active_ago"`
	CurrentlyActive bool    `json:"currently_active,omitempty"`
	StatusMsg       *string `json:"status_msg,omitempty"`
}

// Update is the status as an EDU entry as of now.
func (s Status) Update(now time.Time) Update {
	u := Update{UserID: s.UserID, Presence: s.Presence, CurrentlyActive: s.CurrentlyActive && s.Presence == Online}
	if s.LastActiveTS > 0 {
		u.LastActiveAgo = max(now.UnixMilli()-s.LastActiveTS, 0)
	}
	if s.StatusMsg != "" {
		msg := s.StatusMsg
		u.StatusMsg = &msg
	}
	return u
}

// shouldNotify reports whether the change from old to next is one the users sharing a room
// must hear about. NOTSPEC: the spec only says that while currently_active is true, updates
// of the last active time are not sent; this is Synapse's rule.
func shouldNotify(old, next Status) bool {
	if old.StatusMsg != next.StatusMsg || old.Presence != next.Presence {
		return true
	}
	if old.Presence == Online {
		if old.CurrentlyActive != next.CurrentlyActive {
			return true
		}
		if !next.CurrentlyActive && next.LastActiveTS-old.LastActiveTS > activeGranularity.Milliseconds() {
			return true
		}
	}
	return false
}

// Federator sends our users' presence to other servers (the federation API).
type Federator interface {
	// SendPresence sends update, of userID, to the other servers sharing a room with them.
	SendPresence(ctx context.Context, userID string, update Update) error
	// SendPresenceTo sends updates to the given servers.
	SendPresenceTo(ctx context.Context, destinations []string, updates []Update) error
}

// Config is what a Tracker needs.
type Config struct {
	DB         *storage.DB
	Stream     *streams.Tracker
	ServerName string
	Clock      func() time.Time
	Log        *slog.Logger
	// RoomMembers lists the users joined to a room.
	RoomMembers func(ctx context.Context, roomID string) ([]string, error)
	// Disabled turns presence off (EGGS_PRESENCE=off): nothing is tracked or stored, everyone
	// reads as offline, other servers' presence is ignored and ours is not sent.
	Disabled bool
}

// Tracker keeps the presence of every user.
type Tracker struct {
	cfg Config

	mu    sync.Mutex
	local map[string]*localUser
	fed   Federator
}

// localUser is what the tracker knows of one of our users.
type localUser struct {
	// writeMu orders the changes of this user: each is worked out and stored under it, so
	// stored rows follow one another in the order they were decided.
	writeMu sync.Mutex

	// The rest is guarded by Tracker.mu.
	loaded     bool
	devices    map[string]*device
	lastActive time.Time
	// rawOnline is whether some live device was online at the last look: becoming so is
	// "changing presence state to online", which counts as activity.
	rawOnline   bool
	statusMsg   string
	published   Status    // what the users sharing a room last heard
	federatedAt time.Time // when published was last sent to other servers
}

// device is the presence one device of the user asks for.
type device struct {
	presence string
	// explicit: set by PUT /presence, which a /sync without set_presence leaves alone.
	explicit bool
	syncing  int       // /sync requests of the device in progress
	lastSeen time.Time // end of its last /sync, or its last action
}

// New makes a tracker; Run must run for timeouts to happen.
func New(cfg Config) *Tracker {
	return &Tracker{cfg: cfg, local: map[string]*localUser{}}
}

// SetFederator connects the federation API. Call it before the server takes requests.
func (t *Tracker) SetFederator(f Federator) {
	t.mu.Lock()
	t.fed = f
	t.mu.Unlock()
}

// Enabled reports whether presence is on.
func (t *Tracker) Enabled() bool { return !t.cfg.Disabled }

// Now is the tracker's clock: the time relative to which last_active_ago is given.
func (t *Tracker) Now() time.Time { return t.cfg.Clock() }

// isLocal reports whether userID is one of our users.
func (t *Tracker) isLocal(userID string) bool {
	u, err := spec.ParseUserID(userID)
	return err == nil && u.Server() == t.cfg.ServerName
}

// Syncing marks a device of userID as syncing with the presence the request's set_presence
// asks for ("" when left out: online, unless the device set its presence explicitly;
// offline: the request does not affect presence). The returned function ends it.
func (t *Tracker) Syncing(ctx context.Context, userID, deviceID, setPresence string) (func(), error) {
	if setPresence == Offline || t.cfg.Disabled {
		return func() {}, nil
	}
	err := t.change(ctx, userID, func(u *localUser, now time.Time) {
		d := u.device(deviceID)
		d.syncing++
		d.lastSeen = now
		if setPresence != "" || !d.explicit {
			d.presence = Online
			if setPresence != "" {
				d.presence = setPresence
			}
			d.explicit = false
		}
	})
	if err != nil {
		return nil, err
	}
	return func() {
		t.mu.Lock()
		defer t.mu.Unlock()
		if u := t.local[userID]; u != nil {
			if d := u.devices[deviceID]; d != nil {
				d.syncing = max(d.syncing-1, 0)
				d.lastSeen = t.cfg.Clock()
			}
		}
	}, nil
}

// Active records a pro-active event of a device of userID (a message sent, a receipt, …):
// the user is online and their last active time is now.
func (t *Tracker) Active(ctx context.Context, userID, deviceID string) error {
	if t.cfg.Disabled {
		return nil
	}
	return t.change(ctx, userID, func(u *localUser, now time.Time) {
		d := u.device(deviceID)
		d.presence, d.explicit, d.lastSeen = Online, false, now
		u.lastActive = now
	})
}

// Set is PUT /presence/{userId}/status: the device's presence, and the user's status
// message ("" clears it).
func (t *Tracker) Set(ctx context.Context, userID, deviceID, presence, statusMsg string) error {
	if !Valid(presence) {
		return ErrInvalid
	}
	if t.cfg.Disabled {
		return nil
	}
	return t.change(ctx, userID, func(u *localUser, now time.Time) {
		d := u.device(deviceID)
		d.presence, d.explicit, d.lastSeen = presence, true, now
		if presence == Online {
			u.lastActive = now // changing presence state to online is a pro-active event
		}
		u.statusMsg = statusMsg
	})
}

// device returns the user's record of a device, making it if needed. Call it under t.mu.
func (u *localUser) device(deviceID string) *device {
	d := u.devices[deviceID]
	if d == nil {
		d = &device{presence: Offline}
		u.devices[deviceID] = d
	}
	return d
}

// compute works out the user's presence from their devices as of now, and forgets devices
// that are long gone. Call it under t.mu.
func (u *localUser) compute(userID string, now time.Time) Status {
	best := Offline
	for id, d := range u.devices {
		if d.syncing == 0 && now.Sub(d.lastSeen) > syncOnlineTimeout {
			delete(u.devices, id)
			continue
		}
		if rank(d.presence) > rank(best) {
			best = d.presence
		}
	}
	if best == Online && !u.rawOnline {
		u.lastActive = now
	}
	u.rawOnline = best == Online
	if best == Online && now.Sub(u.lastActive) > idleTimeout {
		best = Unavailable
	}
	s := Status{UserID: userID, Presence: best, StatusMsg: u.statusMsg,
		CurrentlyActive: best == Online && now.Sub(u.lastActive) < activeGranularity}
	if !u.lastActive.IsZero() {
		s.LastActiveTS = u.lastActive.UnixMilli()
	}
	return s
}

// entry returns the record of a local user, read from the database if new.
func (t *Tracker) entry(ctx context.Context, userID string) (*localUser, error) {
	t.mu.Lock()
	u := t.local[userID]
	if u == nil {
		u = &localUser{devices: map[string]*device{}}
		t.local[userID] = u
	}
	loaded := u.loaded
	t.mu.Unlock()
	if loaded {
		return u, nil
	}
	u.writeMu.Lock()
	defer u.writeMu.Unlock()
	t.mu.Lock()
	loaded = u.loaded
	t.mu.Unlock()
	if loaded {
		return u, nil
	}
	row, err := storage.LoadPresence(ctx, t.cfg.DB, userID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	u.loaded = true
	u.published = Status{UserID: userID, Presence: Offline}
	if err == nil {
		u.published = statusOf(row)
		u.statusMsg = row.StatusMsg
		if row.LastActiveTS > 0 {
			u.lastActive = time.UnixMilli(row.LastActiveTS)
		}
	}
	return u, nil
}

// change applies edit to a local user's record and publishes the result if it is news.
func (t *Tracker) change(ctx context.Context, userID string, edit func(u *localUser, now time.Time)) error {
	for {
		u, err := t.entry(ctx, userID)
		if err != nil {
			return err
		}
		u.writeMu.Lock()
		t.mu.Lock()
		if t.local[userID] != u {
			// Forgotten by a sweep in the meantime: start again with the new record.
			t.mu.Unlock()
			u.writeMu.Unlock()
			continue
		}
		now := t.cfg.Clock()
		edit(u, now)
		err = t.publishLocked(ctx, u, u.compute(userID, now), now)
		u.writeMu.Unlock()
		return err
	}
}

// publishLocked stores next if the users sharing a room must hear of it, and sends it to
// other servers. Call it with u.writeMu and t.mu held; it releases t.mu.
func (t *Tracker) publishLocked(ctx context.Context, u *localUser, next Status, now time.Time) error {
	if !shouldNotify(u.published, next) {
		t.mu.Unlock()
		return nil
	}
	u.published = next
	u.federatedAt = now
	fed := t.fed
	t.mu.Unlock()
	err := t.store(ctx, next, now)
	if fed != nil {
		if ferr := fed.SendPresence(ctx, next.UserID, next.Update(now)); ferr != nil {
			t.cfg.Log.Warn("presence: tell other servers", "user", next.UserID, "err", ferr)
		}
	}
	return err
}

// store writes a user's presence at a new stream position and wakes the users sharing a
// room with them.
func (t *Tracker) store(ctx context.Context, s Status, now time.Time) error {
	users, err := storage.UsersSharingRooms(ctx, t.cfg.DB, s.UserID)
	if err != nil {
		return err
	}
	return t.storeFor(ctx, s, now, users)
}

// storeFor is store with the users sharing a room already known.
func (t *Tracker) storeFor(ctx context.Context, s Status, now time.Time, users []string) error {
	users = append(users, s.UserID)
	pos := t.cfg.Stream.Allocate()
	err := storage.PutPresence(ctx, t.cfg.DB, storage.PresenceRow{
		UserID: s.UserID, Presence: s.Presence, StatusMsg: s.StatusMsg, LastActiveTS: s.LastActiveTS,
		CurrentlyActive: s.CurrentlyActive, UpdatedTS: now.UnixMilli(), StreamPos: pos,
	})
	if err == nil {
		keys := make([]string, len(users))
		for i, user := range users {
			keys[i] = streams.PresenceKey(user)
		}
		t.cfg.Stream.MarkChanged(pos, keys...)
		t.cfg.Stream.Finish(pos, users...)
		return nil
	}
	t.cfg.Stream.Finish(pos)
	return err
}

func statusOf(row storage.PresenceRow) Status {
	return Status{UserID: row.UserID, Presence: row.Presence, StatusMsg: row.StatusMsg,
		LastActiveTS: row.LastActiveTS, CurrentlyActive: row.CurrentlyActive}
}

// Get returns a user's presence now: for our users as worked out from their devices, for
// others' as their server last told us; offline when nothing is known.
func (t *Tracker) Get(ctx context.Context, userID string) (Status, error) {
	if t.cfg.Disabled {
		return Status{UserID: userID, Presence: Offline}, nil
	}
	if t.isLocal(userID) {
		t.mu.Lock()
		u := t.local[userID]
		if u != nil && u.loaded {
			s := u.current(userID, t.cfg.Clock())
			t.mu.Unlock()
			return s, nil
		}
		t.mu.Unlock()
	}
	row, err := storage.LoadPresence(ctx, t.cfg.DB, userID)
	if errors.Is(err, storage.ErrNotFound) {
		return Status{UserID: userID, Presence: Offline}, nil
	}
	if err != nil {
		return Status{}, err
	}
	return statusOf(row), nil
}

// current is what users are told of a local user now: the published state with the last
// active time up to date ("The last active time must be up to date whenever the server gives
// a presence event to the client"). Call it under t.mu.
func (u *localUser) current(userID string, now time.Time) Status {
	s := u.published
	s.UserID = userID
	if !u.lastActive.IsZero() && s.Presence != Offline {
		s.LastActiveTS = max(s.LastActiveTS, u.lastActive.UnixMilli())
	}
	return s
}

// Fresh brings a stored row of a local user up to date the way Get does, for /sync.
func (t *Tracker) Fresh(row storage.PresenceRow) Status {
	s := statusOf(row)
	if !t.isLocal(row.UserID) {
		return s
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if u := t.local[row.UserID]; u != nil && u.loaded && u.published.Presence == s.Presence {
		if cur := u.current(row.UserID, t.cfg.Clock()); cur.LastActiveTS > s.LastActiveTS {
			s.LastActiveTS = cur.LastActiveTS
		}
	}
	return s
}

// ApplyRemote applies the entries of an m.presence EDU from origin. Entries about users of
// other servers than origin, with a bad state or an oversized status message, are skipped.
func (t *Tracker) ApplyRemote(ctx context.Context, origin string, updates []Update) error {
	if t.cfg.Disabled {
		return nil
	}
	now := t.cfg.Clock()
	var errs []error
	for _, up := range updates {
		user, err := spec.ParseUserID(up.UserID)
		if err != nil || user.Server() != origin || origin == t.cfg.ServerName || !Valid(up.Presence) ||
			up.LastActiveAgo < 0 || (up.StatusMsg != nil && len(*up.StatusMsg) > MaxStatusMsg) {
			continue
		}
		next := Status{UserID: up.UserID, Presence: up.Presence, CurrentlyActive: up.CurrentlyActive && up.Presence == Online}
		if up.StatusMsg != nil {
			next.StatusMsg = *up.StatusMsg
		}
		if up.LastActiveAgo > 0 || up.Presence != Offline {
			next.LastActiveTS = now.UnixMilli() - up.LastActiveAgo
		}
		if err := t.applyRemote(ctx, next, now); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (t *Tracker) applyRemote(ctx context.Context, next Status, now time.Time) error {
	// Kept even when the user shares no room with ours yet: a server sends its users'
	// presence as our server joins one of its rooms, which may be before our side of the
	// join has committed. Only those sharing a room are woken.
	users, err := storage.UsersSharingRooms(ctx, t.cfg.DB, next.UserID)
	if err != nil {
		return err
	}
	old := Status{UserID: next.UserID, Presence: Offline}
	row, err := storage.LoadPresence(ctx, t.cfg.DB, next.UserID)
	switch {
	case err == nil:
		old = statusOf(row)
	case !errors.Is(err, storage.ErrNotFound):
		return err
	}
	if err == nil && !shouldNotify(old, next) {
		return storage.TouchPresence(ctx, t.cfg.DB, next.UserID, now.UnixMilli())
	}
	return t.storeFor(ctx, next, now, users)
}

// Run turns users offline or unavailable as time passes and repeats our users' presence to
// other servers, until ctx ends. Our users who were not offline when the server stopped get
// syncOnlineTimeout to come back.
func (t *Tracker) Run(ctx context.Context) {
	if t.cfg.Disabled {
		return
	}
	t.adoptStored(ctx)
	tick := time.NewTicker(sweepInterval)
	defer tick.Stop()
	lastRemote := t.cfg.Clock()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		t.sweepLocal(ctx)
		if now := t.cfg.Clock(); now.Sub(lastRemote) >= remoteSweepInterval {
			lastRemote = now
			t.sweepRemote(ctx)
		}
	}
}

// Sweep applies every timeout as of now, at once (Run does it on its own schedule).
func (t *Tracker) Sweep(ctx context.Context) {
	t.sweepLocal(ctx)
	t.sweepRemote(ctx)
}

// adoptStored takes over our users who are stored as not offline, as if each had one device
// seen now in that state.
func (t *Tracker) adoptStored(ctx context.Context) {
	rows, err := storage.PresenceNotOffline(ctx, t.cfg.DB, t.cfg.Clock().UnixMilli()+1, 1<<30)
	if err != nil {
		t.cfg.Log.Warn("presence: read stored presence", "err", err)
		return
	}
	now := t.cfg.Clock()
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, row := range rows {
		if !t.isLocal(row.UserID) || t.local[row.UserID] != nil {
			continue
		}
		u := &localUser{loaded: true, devices: map[string]*device{}, published: statusOf(row), statusMsg: row.StatusMsg,
			federatedAt: time.UnixMilli(row.UpdatedTS)}
		if row.LastActiveTS > 0 {
			u.lastActive = time.UnixMilli(row.LastActiveTS)
		}
		u.rawOnline = row.Presence == Online
		u.devices[""] = &device{presence: row.Presence, lastSeen: now}
		t.local[row.UserID] = u
	}
}

// sweepLocal applies the timeouts of our users, repeats their presence to other servers when
// due, and forgets those who are offline with no live device.
func (t *Tracker) sweepLocal(ctx context.Context) {
	t.mu.Lock()
	ids := make([]string, 0, len(t.local))
	for id := range t.local {
		ids = append(ids, id)
	}
	t.mu.Unlock()
	for _, id := range ids {
		if ctx.Err() != nil {
			return
		}
		t.mu.Lock()
		u := t.local[id]
		t.mu.Unlock()
		if u == nil {
			continue
		}
		u.writeMu.Lock()
		t.mu.Lock()
		if t.local[id] != u || !u.loaded {
			t.mu.Unlock()
			u.writeMu.Unlock()
			continue
		}
		now := t.cfg.Clock()
		next := u.compute(id, now)
		if next.Presence == Offline && len(u.devices) == 0 && u.published.Presence == Offline {
			delete(t.local, id)
			t.mu.Unlock()
			u.writeMu.Unlock()
			continue
		}
		var ping *Update
		fed := t.fed
		if fed != nil && !shouldNotify(u.published, next) && u.published.Presence != Offline && now.Sub(u.federatedAt) >= federationPing {
			up := u.current(id, now).Update(now)
			ping = &up
			u.federatedAt = now
		}
		if err := t.publishLocked(ctx, u, next, now); err != nil && ctx.Err() == nil {
			t.cfg.Log.Warn("presence: store", "user", id, "err", err)
		}
		u.writeMu.Unlock()
		if ping != nil {
			if err := fed.SendPresence(ctx, id, *ping); err != nil && ctx.Err() == nil {
				t.cfg.Log.Warn("presence: tell other servers", "user", id, "err", err)
			}
		}
	}
}

// sweepRemote turns offline the users of other servers that have not been heard of for
// federationTimeout, and our users stored as present that nothing here tracks.
func (t *Tracker) sweepRemote(ctx context.Context) {
	now := t.cfg.Clock()
	rows, err := storage.PresenceNotOffline(ctx, t.cfg.DB, now.Add(-federationTimeout).UnixMilli(), maxRemoteBatch)
	if err != nil {
		if ctx.Err() == nil {
			t.cfg.Log.Warn("presence: read stale presence", "err", err)
		}
		return
	}
	for _, row := range rows {
		if t.isLocal(row.UserID) {
			t.mu.Lock()
			tracked := t.local[row.UserID] != nil
			t.mu.Unlock()
			if tracked {
				continue
			}
		}
		s := statusOf(row)
		s.Presence, s.CurrentlyActive = Offline, false
		if err := t.store(ctx, s, now); err != nil && ctx.Err() == nil {
			t.cfg.Log.Warn("presence: time out", "user", row.UserID, "err", err)
		}
	}
}

// Joined is told of the users who joined a room (rooms.Server.SetJoinObserver), so that a
// server new to the room hears at once of the presence of our users there, and the servers of
// a room that one of ours joins hear of theirs, rather than at the next change or repeat.
// NOTSPEC: the spec does not say when presence is first sent; this is what Synapse does.
func (t *Tracker) Joined(roomID string, joiners []string) {
	if t.cfg.Disabled {
		return
	}
	t.mu.Lock()
	fed := t.fed
	t.mu.Unlock()
	if fed == nil || t.cfg.RoomMembers == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	members, err := t.cfg.RoomMembers(ctx, roomID)
	if err != nil {
		t.cfg.Log.Warn("presence: members of a joined room", "room", roomID, "err", err)
		return
	}
	joining := make(map[string]bool, len(joiners))
	for _, u := range joiners {
		joining[u] = true
	}
	// The servers in the room now, and those that were in it before these joins.
	var local, localJoiners []string
	servers, before := map[string]bool{}, map[string]bool{}
	for _, m := range members {
		parsed, err := spec.ParseUserID(m)
		if err != nil {
			continue
		}
		server := parsed.Server()
		if server == t.cfg.ServerName {
			local = append(local, m)
			if joining[m] {
				localJoiners = append(localJoiners, m)
			}
			continue
		}
		servers[server] = true
		if !joining[m] {
			before[server] = true
		}
	}
	// Our joiners' presence goes to every other server of the room; our members' presence
	// goes to the servers that are new to it.
	var all, fresh []string
	for server := range servers {
		all = append(all, server)
		if !before[server] {
			fresh = append(fresh, server)
		}
	}
	t.sendPresenceOf(ctx, fed, roomID, all, localJoiners)
	t.sendPresenceOf(ctx, fed, roomID, fresh, local)
}

// sendPresenceOf sends the presence of users (ours) who are not offline to destinations.
func (t *Tracker) sendPresenceOf(ctx context.Context, fed Federator, roomID string, destinations, users []string) {
	if len(destinations) == 0 || len(users) == 0 {
		return
	}
	rows, err := storage.PresenceOfUsers(ctx, t.cfg.DB, users, 1<<62)
	if err != nil {
		t.cfg.Log.Warn("presence: read presence of room members", "room", roomID, "err", err)
		return
	}
	now := t.cfg.Clock()
	updates := make([]Update, 0, len(rows))
	for _, row := range rows {
		updates = append(updates, t.Fresh(row).Update(now))
	}
	for len(updates) > 0 {
		n := min(len(updates), maxPushPerEDU)
		if err := fed.SendPresenceTo(ctx, destinations, updates[:n]); err != nil {
			t.cfg.Log.Warn("presence: tell a room's servers", "room", roomID, "err", err)
			return
		}
		updates = updates[n:]
	}
}

// maxPushPerEDU bounds the entries of one m.presence EDU we send.
const maxPushPerEDU = 100

// MarshalUpdates is the content of an m.presence EDU carrying updates.
func MarshalUpdates(updates ...Update) (json.RawMessage, error) {
	return json.Marshal(map[string]any{"push": updates})
}
