package clientapi

import (
	"context"

	"github.com/scrambledeggs/eggs/push"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Unread notification counts of /sync (sync.yaml "unread_notifications"; client-server API
// "Receiving notifications"): the events of a joined room after the user's read receipt
// (m.read or m.read.private, unthreaded or for the main timeline; or after their join
// without one) that the user's push rules make notify, and of those the ones they make
// highlight ("Push Rules"). Each event's JSON is flattened for the rules once and shared by
// every member who counts it.

// maxUnreadCount caps notification_count and highlight_count: at most that many of the
// newest unread events are looked at. NOTSPEC: bounds the cost of a room with a long unread
// history; clients show such counts as "999+" anyway.
const maxUnreadCount = 1000

// unreadCounts is a joined room's unread_notifications.
type unreadCounts struct {
	HighlightCount    int `json:"highlight_count"`
	NotificationCount int `json:"notification_count"`
}

// unreadCounter computes the counts of one /sync response for one user.
type unreadCounter struct {
	userID string
	reads  map[int64]int64 // room NID → stream position read up to; nil until loaded
	rules  *pushRulesEntry // nil until loaded
}

func newUnreadCounter(userID string) *unreadCounter {
	return &unreadCounter{userID: userID}
}

// unreadNotifications counts a joined room's unread notifications at stream position to; m
// is the user's membership there.
func (a *API) unreadNotifications(ctx context.Context, u *unreadCounter, m storage.RoomMembership, to int64) (*unreadCounts, error) {
	if u.reads == nil {
		reads, err := a.readPositions(ctx, u.userID)
		if err != nil {
			return nil, err
		}
		u.reads = reads
	}
	if u.rules == nil {
		rules, err := a.pushRuleset(ctx, u.userID)
		if err != nil {
			return nil, err
		}
		u.rules = rules
	}
	after := u.reads[m.RoomNID]
	displayName := ""
	member, err := a.rooms.EventsByNID(ctx, []int64{m.EventNID})
	if err != nil {
		return nil, err
	}
	if len(member) > 0 {
		// Events from before the user joined were not theirs to read.
		after = max(after, member[0].StreamPos)
		if name, _ := memberProfile(member[0]); name != nil {
			displayName = *name
		}
	}
	// Counts are kept per user and room with the position they were counted up to, so that
	// a sync only counts the events that arrived since the last one; a moved read position
	// (a new receipt) or changed push rules count afresh.
	key := unreadKey{user: u.userID, room: m.RoomNID}
	from, counts := after, unreadCounts{}
	if cached, ok := a.unread.get(key); ok && cached.after == after && cached.rulesAsOf == u.rules.asOf && cached.upTo <= to {
		from, counts = cached.upTo, cached.counts
	}
	if from < to && counts.NotificationCount < maxUnreadCount {
		events, _, err := a.rooms.Timeline(ctx, m.RoomNID, from, to, maxUnreadCount-counts.NotificationCount)
		if err != nil {
			return nil, err
		}
		room := a.pushRoom(ctx, m.RoomID)
		for _, e := range events {
			if e.Sender() == u.userID || e.RedactedBy != "" {
				continue
			}
			result := push.Evaluate(u.rules.rules, *a.evalEvent(e), room.context(u.userID, displayName, e.Sender()))
			if !result.Notify {
				continue
			}
			counts.NotificationCount++
			if result.Highlight {
				counts.HighlightCount++
			}
		}
	}
	a.unread.put(key, unreadEntry{after: after, upTo: to, rulesAsOf: u.rules.asOf, counts: counts})
	return &counts, nil
}

// unreadKey identifies one user's counts in one room.
type unreadKey struct {
	user string
	room int64
}

// unreadEntry is a user's counts in a room, counted from read position after up to upTo
// with the push rules read at rulesAsOf.
type unreadEntry struct {
	after, upTo int64
	rulesAsOf   int64
	counts      unreadCounts
}

// maxUnreadEntries bounds the cache of counts. NOTSPEC: counts of events redacted after
// they were counted stay until the user's read position moves.
const maxUnreadEntries = 100_000

// pushRulesEntry is a user's push rules as read at stream position asOf.
type pushRulesEntry struct {
	asOf  int64
	rules push.Ruleset
}

// maxPushRulesEntries bounds the cache of users' push rules.
const maxPushRulesEntries = 10_000

// pushRuleset returns the user's push rules, from a cache that holds until their account
// data changes.
func (a *API) pushRuleset(ctx context.Context, userID string) (*pushRulesEntry, error) {
	stream := a.rooms.Stream()
	if cached, ok := a.pushRulesCache.get(userID); ok && !stream.ChangedSince(streams.AccountDataKey(userID), cached.asOf) {
		return cached, nil
	}
	asOf := stream.Current()
	rules, err := a.loadPushRules(ctx, userID)
	if err != nil {
		return nil, err
	}
	entry := &pushRulesEntry{asOf: asOf, rules: rules}
	a.pushRulesCache.put(userID, entry)
	return entry, nil
}

// pushRoomFacts is what push rules ask of a room: its joined member count
// (room_member_count) and, when a rule asks, its power levels now
// (sender_notification_permission; NOTSPEC: those of the room now, not at each event).
type pushRoomFacts struct {
	memberCount int
	levels      func() *spec.PowerLevels
}

// pushRoom gathers the room's facts for push rules; the power levels are read on first use.
func (a *API) pushRoom(ctx context.Context, roomID string) *pushRoomFacts {
	count, err := a.rooms.JoinedCount(ctx, roomID)
	if err != nil {
		a.log.Warn("push rules: joined member count", "room", roomID, "err", err)
	}
	var levels *spec.PowerLevels
	loaded := false
	return &pushRoomFacts{memberCount: count, levels: func() *spec.PowerLevels {
		if !loaded {
			loaded = true
			levels = a.currentPowerLevels(ctx, roomID)
		}
		return levels
	}}
}

// context is the evaluation context of an event from sender for userID.
func (r *pushRoomFacts) context(userID, displayName, sender string) push.EvalContext {
	return push.EvalContext{UserID: userID, DisplayName: displayName, MemberCount: r.memberCount,
		PowerLevels: func() *push.PowerLevels {
			levels := r.levels()
			if levels == nil {
				return nil
			}
			return &push.PowerLevels{Sender: levels.UserLevel(sender), Notifications: levels.Notifications}
		}}
}

// currentPowerLevels is the room's power levels now; nil if they cannot be read.
func (a *API) currentPowerLevels(ctx context.Context, roomID string) *spec.PowerLevels {
	create, err := a.rooms.CurrentStateEvent(ctx, roomID, "m.room.create", "")
	if err != nil || create == nil {
		return nil
	}
	var plEvent *spec.Event
	if pl, err := a.rooms.CurrentStateEvent(ctx, roomID, "m.room.power_levels", ""); err == nil && pl != nil {
		plEvent = pl.Event
	}
	levels, err := spec.RoomPowerLevels(create.Event, plEvent)
	if err != nil {
		return nil
	}
	return levels
}

// evalEvent returns an event flattened for push rules, cached by event: the same event is
// evaluated for every member of its room.
func (a *API) evalEvent(e *rooms.Event) *push.EvalEvent {
	if ev, ok := a.evalEvents.get(e.NID); ok {
		return ev
	}
	ev, err := push.NewEvalEvent(e.JSON())
	if err != nil {
		ev = push.EvalEvent{} // matches only rules without conditions
	}
	a.evalEvents.put(e.NID, &ev)
	return &ev
}

// maxEvalEvents bounds the cache of flattened events (recent events are what count).
const maxEvalEvents = 10_000

// readPositions is how far the user has read in each room (room NID → stream position),
// from a cache that holds until the user's receipts change.
func (a *API) readPositions(ctx context.Context, userID string) (map[int64]int64, error) {
	stream := a.rooms.Stream()
	if cached, ok := a.reads.get(userID); ok && !stream.ChangedSince(streams.ReadKey(userID), cached.asOf) {
		return cached.reads, nil
	}
	asOf := stream.Current()
	reads, err := storage.ReadPositions(ctx, a.db, userID)
	if err != nil {
		return nil, err
	}
	a.reads.put(userID, readEntry{asOf: asOf, reads: reads})
	return reads, nil
}

// readEntry is a user's read positions as read at stream position asOf.
type readEntry struct {
	asOf  int64
	reads map[int64]int64
}
