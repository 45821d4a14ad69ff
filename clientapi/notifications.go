package clientapi

import (
	"net/http"
	"strconv"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/push"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// GET /notifications (client-server API "Listing Notifications", notifications.yaml): "the
// list of events that the user has been, or would have been notified about". Nothing is
// stored per notification: the events of the user's joined rooms since they joined are
// read newest first, and those that the user's push rules make notify are listed, as
// /sync's unread counts are made (unread.go). Only events the user may see ("Room History
// Visibility", as /messages) are listed. NOTSPEC: the rules are the user's rules now, not
// those when the event arrived, and rooms the user has left are not listed (Synapse keeps
// the notifications it stored for them); profile_tag, of the device-specific rules the
// spec no longer has, is left out.
//
// The pagination token is a stream position: the page holds events below it. NOTSPEC: as
// in Synapse, it is a number, and next_token is the position of the last event returned.

// Limits of /notifications. NOTSPEC: the spec gives no default; Synapse's is 50. The
// maximum and the bound on the events examined per request are ours: a request may end
// with fewer notifications than asked and a next_token, as /messages may.
const (
	defaultNotificationsLimit = 50
	maxNotificationsLimit     = 100
	maxNotificationScan       = 10_000
	notificationScanBatch     = 200
)

// notificationJSON is one notification of the answer.
type notificationJSON struct {
	Actions []push.Action `json:"actions"`
	Event   ClientEvent   `json:"event"`
	Read    bool          `json:"read"`
	RoomID  string        `json:"room_id"`
	// TS is when the notification was sent: the event's origin_server_ts.
	TS int64 `json:"ts"`
}

type notificationsResponse struct {
	NextToken     string             `json:"next_token,omitempty"`
	Notifications []notificationJSON `json:"notifications"`
}

// notificationRoom is what one request knows of one of the user's joined rooms.
type notificationRoom struct {
	id          string
	joinedAt    int64 // stream position of the user's join
	displayName string
	facts       *pushRoomFacts
	reader      *roomReader // nil until an event of the room needs it
}

// GET /notifications: from (a token of an earlier answer), limit, and only=highlight for
// the notifications with the highlight tweak.
func (a *API) notifications(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	limit, err := parseLimit(q.Get("limit"), defaultNotificationsLimit, maxNotificationsLimit)
	if err != nil {
		return err
	}
	onlyHighlight := q.Get("only") == "highlight"
	ctx := r.Context()
	before := a.rooms.Stream().Current() + 1
	if s := q.Get("from"); s != "" {
		from, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			return httpapi.InvalidParam("Invalid from token")
		}
		before = min(before, from)
	}
	memberships, err := storage.UserMemberships(ctx, a.db, d.UserID, "join")
	if err != nil {
		return err
	}
	joins := make([]int64, len(memberships))
	for i, m := range memberships {
		joins[i] = m.EventNID
	}
	joinEvents, err := a.rooms.EventsByNID(ctx, joins)
	if err != nil {
		return err
	}
	joinByNID := make(map[int64]*rooms.Event, len(joinEvents))
	for _, e := range joinEvents {
		joinByNID[e.NID] = e
	}
	byNID := map[int64]*notificationRoom{}
	var roomNIDs []int64
	after := before
	for _, m := range memberships {
		join := joinByNID[m.EventNID]
		if join == nil || join.StreamPos <= 0 {
			continue
		}
		room := &notificationRoom{id: m.RoomID, joinedAt: join.StreamPos}
		if name, _ := memberProfile(join); name != nil {
			room.displayName = *name
		}
		byNID[m.RoomNID] = room
		roomNIDs = append(roomNIDs, m.RoomNID)
		after = min(after, join.StreamPos)
	}
	rules, err := a.pushRuleset(ctx, d.UserID)
	if err != nil {
		return err
	}
	reads, err := a.readPositions(ctx, d.UserID)
	if err != nil {
		return err
	}

	resp := notificationsResponse{Notifications: []notificationJSON{}}
	var found []*rooms.Event
	var results []push.Result
	var foundRooms []int64
	cursor, examined := before, 0
	for len(roomNIDs) > 0 && len(found) < limit && cursor > after {
		if examined >= maxNotificationScan {
			resp.NextToken = strconv.FormatInt(cursor, 10)
			break
		}
		batch := min(notificationScanBatch, maxNotificationScan-examined)
		rows, err := storage.EventsInRoomsBefore(ctx, a.db, roomNIDs, after, cursor, d.UserID, batch)
		if err != nil {
			return err
		}
		events, err := a.rooms.EventsFromRows(rows)
		if err != nil {
			return err
		}
		for i, e := range events {
			examined++
			cursor = e.StreamPos
			room := byNID[rows[i].RoomNID]
			if e.StreamPos <= room.joinedAt || e.RedactedBy != "" {
				continue
			}
			if room.facts == nil {
				room.facts = a.pushRoom(ctx, room.id)
			}
			result := push.Evaluate(rules.rules, *a.evalEvent(e), room.facts.context(d.UserID, room.displayName, e.Sender()))
			if !result.Notify || (onlyHighlight && !result.Highlight) {
				continue
			}
			if room.reader == nil {
				if room.reader, err = a.roomReader(ctx, room.id, d.UserID); err != nil {
					return err
				}
			}
			visible, err := room.reader.visibility.allows(ctx, e)
			if err != nil {
				return err
			}
			if !visible {
				continue
			}
			found, results, foundRooms = append(found, e), append(results, result), append(foundRooms, rows[i].RoomNID)
			if len(found) == limit {
				resp.NextToken = strconv.FormatInt(cursor, 10)
				break
			}
		}
		if len(rows) < batch {
			break
		}
	}

	formatted, err := a.formatter(d, false).formatAll(ctx, found)
	if err != nil {
		return err
	}
	for i, e := range found {
		actions := results[i].Actions
		if actions == nil {
			actions = []push.Action{}
		}
		resp.Notifications = append(resp.Notifications, notificationJSON{
			Actions: actions, Event: formatted[i], RoomID: e.RoomID(), TS: e.OriginServerTS(),
			// "Indicates whether the user has sent a read receipt indicating that they have
			// read this message": a receipt for it or a later event.
			Read: e.StreamPos <= reads[foundRooms[i]],
		})
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}
