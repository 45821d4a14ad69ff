package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"slices"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Unread notification counts of /sync (sync.yaml "unread_notifications"; client-server API
// "Receiving notifications").
//
// NOTSPEC: until the push module evaluates each user's push rules, the counts follow what
// the default push rules (client-server API "Predefined Rules") do for a user who has not
// changed them, as Synapse applies them:
//   - an event notifies when someone else sent it after the user's read receipt (m.read or
//     m.read.private, unthreaded or for the main timeline; or after their join without one)
//     and it is an m.room.message (not a notice, .m.rule.suppress_notices), m.room.encrypted,
//     m.sticker, m.call.invite or room tombstone, and not an edit (.m.rule.suppress_edits);
//   - it highlights when it mentions the user (.m.rule.is_user_mention), mentions the room
//     and its sender may (.m.rule.is_room_mention), or is a tombstone (.m.rule.tombstone);
//     for events without m.mentions, when the body names the user's localpart or display
//     name, or "@room" from a sender who may, as whole words (Synapse's legacy
//     .m.rule.contains_user_name, .m.rule.contains_display_name and .m.rule.roomnotif).
//
// Power levels are those of the room now, not at each event.

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
	userID    string
	localpart string
	reads     map[int64]int64 // room NID → stream position read up to; nil until loaded
}

func newUnreadCounter(userID string) *unreadCounter {
	u := &unreadCounter{userID: userID}
	if parsed, err := spec.ParseUserID(userID); err == nil {
		u.localpart = parsed.Localpart()
	}
	return u
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
	after := u.reads[m.RoomNID]
	displayName := ""
	member, err := a.rooms.EventsByNID(ctx, []int64{m.EventNID})
	if err != nil {
		return nil, err
	}
	if len(member) > 0 {
		// Events from before the user joined were not theirs to read.
		after = max(after, member[0].StreamPos)
		var content struct {
			DisplayName string `json:"displayname"`
		}
		if json.Unmarshal(member[0].Content(), &content) == nil {
			displayName = content.DisplayName
		}
	}
	// Counts are kept per user and room with the position they were counted up to, so that
	// a sync only counts the events that arrived since the last one; a moved read position
	// (a new receipt) counts afresh.
	key := unreadKey{user: u.userID, room: m.RoomNID}
	from, counts := after, unreadCounts{}
	if cached, ok := a.unread.get(key); ok && cached.after == after && cached.upTo <= to {
		from, counts = cached.upTo, cached.counts
	}
	if recent, ok := a.rooms.RecentEvents(m.RoomNID, from, to); ok && from < to {
		// The new events are in memory: count them without a query.
		mayNotifyRoom := a.roomNotifyPermission(ctx, m.RoomID)
		for _, e := range recent {
			if counts.NotificationCount >= maxUnreadCount || e.Sender() == u.userID || e.RedactedBy != "" {
				continue
			}
			facts := a.pushFacts(e)
			if !facts.notifies() {
				continue
			}
			counts.NotificationCount++
			if facts.highlights(u.userID, u.localpart, displayName, mayNotifyRoom) {
				counts.HighlightCount++
			}
		}
	} else if from < to && counts.NotificationCount < maxUnreadCount {
		count, candidates, err := storage.UnreadEvents(ctx, a.db, m.RoomNID, u.userID, from, to, maxUnreadCount-counts.NotificationCount,
			[]string{u.localpart, displayName, `"room":true`, "@room"})
		if err != nil {
			return nil, err
		}
		counts.NotificationCount += count
		mayNotifyRoom := a.roomNotifyPermission(ctx, m.RoomID)
		for _, js := range candidates {
			if highlights(js, u.userID, u.localpart, displayName, mayNotifyRoom) {
				counts.HighlightCount++
			}
		}
	}
	a.unread.put(key, unreadEntry{after: after, upTo: to, counts: counts})
	return &counts, nil
}

// unreadKey identifies one user's counts in one room.
type unreadKey struct {
	user string
	room int64
}

// unreadEntry is a user's counts in a room, counted from read position after up to upTo.
type unreadEntry struct {
	after, upTo int64
	counts      unreadCounts
}

// maxUnreadEntries bounds the cache of counts. NOTSPEC: counts of events redacted after
// they were counted stay until the user's read position moves.
const maxUnreadEntries = 100_000

// roomNotifyPermission returns a check of whether a sender may notify the whole room
// (push rule condition sender_notification_permission "room"), reading the power levels
// once, when first asked.
func (a *API) roomNotifyPermission(ctx context.Context, roomID string) func(sender string) bool {
	var levels *spec.PowerLevels
	loaded := false
	return func(sender string) bool {
		if !loaded {
			loaded = true
			levels = a.currentPowerLevels(ctx, roomID)
		}
		return levels != nil && levels.UserLevel(sender) >= levels.NotificationLevel("room")
	}
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

// highlights reports whether an unread event (its JSON) highlights for the user under the
// default push rules; see the comment at the top of the file.
func highlights(eventJSON []byte, userID, localpart, displayName string, mayNotifyRoom func(string) bool) bool {
	facts := parsePushFacts(eventJSON)
	return facts.highlights(userID, localpart, displayName, mayNotifyRoom)
}

// pushFacts is what the default push rules look at in an event, parsed once per event (the
// same event is counted for every member of its room).
type pushFacts struct {
	evType, sender  string
	tombstone       bool // an m.room.tombstone with an empty state key
	hasMentions     bool
	mentionsUserIDs []string
	mentionsRoom    bool
	body            string
	msgType         string
	relType         string
}

func parsePushFacts(eventJSON []byte) *pushFacts {
	var e struct {
		Type     string  `json:"type"`
		Sender   string  `json:"sender"`
		StateKey *string `json:"state_key"`
		Content  struct {
			Body      json.RawMessage `json:"body"`
			MsgType   json.RawMessage `json:"msgtype"`
			Mentions  json.RawMessage `json:"m.mentions"`
			RelatesTo struct {
				RelType string `json:"rel_type"`
			} `json:"m.relates_to"`
		} `json:"content"`
	}
	f := &pushFacts{}
	if json.Unmarshal(eventJSON, &e) != nil {
		return f
	}
	f.evType, f.sender = e.Type, e.Sender
	f.tombstone = e.Type == "m.room.tombstone" && e.StateKey != nil && *e.StateKey == ""
	_ = json.Unmarshal(e.Content.Body, &f.body)
	_ = json.Unmarshal(e.Content.MsgType, &f.msgType)
	f.relType = e.Content.RelatesTo.RelType
	if len(e.Content.Mentions) > 0 {
		f.hasMentions = true
		var mentions struct {
			UserIDs []json.RawMessage `json:"user_ids"`
			Room    json.RawMessage   `json:"room"`
		}
		if json.Unmarshal(e.Content.Mentions, &mentions) == nil {
			for _, raw := range mentions.UserIDs {
				var id string
				if json.Unmarshal(raw, &id) == nil {
					f.mentionsUserIDs = append(f.mentionsUserIDs, id)
				}
			}
			f.mentionsRoom = bytes.Equal(bytes.TrimSpace(mentions.Room), []byte("true"))
		}
	}
	return f
}

// highlights applies the highlighting default rules: tombstones, m.mentions (user, or room
// from a sender allowed to notify the room), and for events without m.mentions the legacy
// body match of the user's localpart, display name or "@room".
func (f *pushFacts) highlights(userID, localpart, displayName string, mayNotifyRoom func(string) bool) bool {
	if f.evType == "m.room.tombstone" {
		return f.tombstone
	}
	if f.hasMentions {
		return slices.Contains(f.mentionsUserIDs, userID) || (f.mentionsRoom && mayNotifyRoom(f.sender))
	}
	if containsWord(f.body, localpart) || containsWord(f.body, displayName) {
		return true
	}
	return containsWord(f.body, "@room") && mayNotifyRoom(f.sender)
}

// notifies is the Go form of the conditions storage.UnreadEvents puts in SQL: an event that
// the default push rules make notify userID (sender and redaction are checked by the caller).
func (f *pushFacts) notifies() bool {
	if f.evType == "m.room.tombstone" {
		return f.tombstone
	}
	return slices.Contains(storage.NotifyingEventTypes, f.evType) && f.msgType != "m.notice" && f.relType != "m.replace"
}

// containsWord reports whether word occurs in text, ignoring case, with no letter, digit or
// underscore right before or after it: the word-boundary match that push rule body patterns
// use (Synapse's glob "(^|\W)word(\W|$)").
func containsWord(text, word string) bool {
	if word == "" {
		return false
	}
	text, word = strings.ToLower(text), strings.ToLower(word)
	for start := 0; start < len(text); {
		i := strings.Index(text[start:], word)
		if i < 0 {
			return false
		}
		i += start
		end := i + len(word)
		before, _ := utf8.DecodeLastRuneInString(text[:i])
		after, _ := utf8.DecodeRuneInString(text[end:])
		if (i == 0 || !isWordRune(before)) && (end == len(text) || !isWordRune(after)) {
			return true
		}
		_, size := utf8.DecodeRuneInString(text[i:])
		start = i + size
	}
	return false
}

func isWordRune(r rune) bool {
	return r == '_' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

// pushFacts returns the parsed push facts of an event, cached by event.
func (a *API) pushFacts(e *rooms.Event) *pushFacts {
	if f, ok := a.pushFactsCache.get(e.NID); ok {
		return f
	}
	f := parsePushFacts(e.JSON())
	a.pushFactsCache.put(e.NID, f)
	return f
}

// maxPushFactsEntries bounds the cache of parsed push facts (recent events are what count).
const maxPushFactsEntries = 10_000

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
