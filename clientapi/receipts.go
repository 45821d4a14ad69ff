package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Receipts, read markers and typing notifications (client-server API "Receipts", "Read and
// unread markers", "Typing Notifications"; receipts.yaml, read_markers.yaml, typing.yaml).
//
// Receipts are stored, one row per user, room, receipt type and thread, and take a stream
// position when they change, so that /sync delivers them as m.receipt ephemeral events.

func (a *API) receiptRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/rooms/{roomId}/receipt/{receiptType}/{eventId}", authed(a.postReceipt))
	r.Method(http.MethodPost, "/rooms/{roomId}/read_markers", authed(a.postReadMarkers))
	r.Method(http.MethodPut, "/rooms/{roomId}/typing/{userId}", authed(a.putTyping))
}

// maxReceiptBody bounds the body of a receipt or read-markers request. NOTSPEC: the bodies
// hold at most three event IDs and a thread ID; this leaves room for unknown fields.
const maxReceiptBody = 16 * 1024

// maxEventIDLength bounds an event ID (appendices "Event IDs": at most 255 bytes).
const maxEventIDLength = 255

// receiptFullyRead is the receipt type that moves the fully read marker (room account data)
// instead of a receipt.
const receiptFullyRead = "m.fully_read"

// maxRelationHops bounds how far threadOf follows relations (client-server API "Threaded
// read receipts": "a maximum of 3 hops is recommended").
const maxRelationHops = 3

// POST /rooms/{roomId}/receipt/{receiptType}/{eventId} (receipts.yaml postReceipt).
func (a *API) postReceipt(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	receiptType := pathParam(r, "receiptType")
	switch receiptType {
	case storage.ReceiptRead, storage.ReceiptReadPrivate, receiptFullyRead:
	default:
		return httpapi.InvalidParam("Receipt type must be m.read, m.read.private or m.fully_read")
	}
	body, err := httpapi.ReadBody(r, maxReceiptBody)
	if err != nil {
		return err
	}
	var req map[string]json.RawMessage
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	threadID := ""
	if raw, ok := req["thread_id"]; ok {
		if err := json.Unmarshal(raw, &threadID); err != nil || threadID == "" {
			return httpapi.InvalidParam("thread_id field must be a non-empty string")
		}
		if receiptType == receiptFullyRead {
			return httpapi.InvalidParam("thread_id is not allowed for m.fully_read")
		}
		if threadID != "main" && !validEventID(threadID) {
			return httpapi.InvalidParam("thread_id must be \"main\" or an event ID")
		}
	}
	ctx := r.Context()
	target, err := a.receiptTarget(ctx, d, roomID, pathParam(r, "eventId"))
	if err != nil {
		return err
	}
	if threadID != "" {
		if thread, known := a.threadOf(ctx, target); known && thread != threadID && target.EventID() != threadID {
			return httpapi.InvalidParam("Event %s is not in thread %s", target.EventID(), threadID)
		}
	}
	if receiptType == receiptFullyRead {
		err = a.setFullyRead(ctx, d, roomID, target)
	} else {
		err = a.setReceipt(ctx, d, roomID, receiptType, threadID, target)
	}
	if err != nil {
		return err
	}
	a.active(r.Context(), d)
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// readMarkersRequest is the body of /read_markers; every field is optional.
type readMarkersRequest struct {
	FullyRead   *string `json:"m.fully_read"`
	Read        *string `json:"m.read"`
	ReadPrivate *string `json:"m.read.private"`
}

// POST /rooms/{roomId}/read_markers (read_markers.yaml setReadMarker): moves the fully read
// marker and, like /receipt, the read receipts. Every event is checked before anything is
// written, so a bad request changes nothing.
func (a *API) postReadMarkers(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	var req readMarkersRequest
	if err := httpapi.ReadJSON(r, maxReceiptBody, &req); err != nil {
		return err
	}
	ctx := r.Context()
	type marker struct {
		kind   string
		target *rooms.Event
	}
	var markers []marker
	for _, m := range []struct {
		kind    string
		eventID *string
	}{{receiptFullyRead, req.FullyRead}, {storage.ReceiptRead, req.Read}, {storage.ReceiptReadPrivate, req.ReadPrivate}} {
		if m.eventID == nil {
			continue
		}
		target, err := a.receiptTarget(ctx, d, roomID, *m.eventID)
		if err != nil {
			return err
		}
		markers = append(markers, marker{m.kind, target})
	}
	if len(markers) == 0 {
		// Still answer 403 to someone who is not in the room.
		if err := a.requireJoined(ctx, d, roomID); err != nil {
			return err
		}
	}
	for _, m := range markers {
		var err error
		if m.kind == receiptFullyRead {
			err = a.setFullyRead(ctx, d, roomID, m.target)
		} else {
			err = a.setReceipt(ctx, d, roomID, m.kind, "", m.target)
		}
		if err != nil {
			return err
		}
	}
	a.active(r.Context(), d)
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// validEventID checks the grammar every event ID shares (appendices "Event IDs"): a "$"
// sigil and at most 255 bytes.
func validEventID(eventID string) bool {
	return len(eventID) > 1 && len(eventID) <= maxEventIDLength && eventID[0] == '$'
}

// requireJoined answers 403 unless the user is joined to the room.
func (a *API) requireJoined(ctx context.Context, d *Device, roomID string) error {
	membership, _, err := a.rooms.Membership(ctx, roomID, d.UserID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return httpapi.Forbidden("You are not joined to this room")
	}
	if err != nil {
		return err
	}
	if membership != "join" {
		return httpapi.Forbidden("You are not joined to this room")
	}
	return nil
}

// receiptTarget checks that the user is joined to the room (403 otherwise) and that eventID
// is an event of the room's timeline (404 otherwise), and returns the event.
func (a *API) receiptTarget(ctx context.Context, d *Device, roomID, eventID string) (*rooms.Event, error) {
	if err := a.requireJoined(ctx, d, roomID); err != nil {
		return nil, err
	}
	if !validEventID(eventID) {
		return nil, httpapi.InvalidParam("Invalid event ID")
	}
	e, err := a.rooms.EventByID(ctx, eventID)
	if errors.Is(err, rooms.ErrEventNotFound) {
		return nil, httpapi.NotFound("Event not found")
	}
	if err != nil {
		return nil, err
	}
	// Outliers (stream position 0) are not in the timeline, so nobody can have read up to them.
	if e.RoomID() != roomID || e.StreamPos <= 0 {
		return nil, httpapi.NotFound("Event not found")
	}
	return e, nil
}

// threadOf is the thread an event is in (client-server API "Threaded read receipts"): the
// root of the m.thread relation reached through at most maxRelationHops relations, or "main".
// known is false when a related event is missing, so the thread cannot be told.
func (a *API) threadOf(ctx context.Context, e *rooms.Event) (thread string, known bool) {
	for hop := 0; hop < maxRelationHops; hop++ {
		var content struct {
			RelatesTo struct {
				RelType string `json:"rel_type"`
				EventID string `json:"event_id"`
			} `json:"m.relates_to"`
		}
		if json.Unmarshal(e.Content(), &content) != nil || content.RelatesTo.EventID == "" {
			return "main", true
		}
		if content.RelatesTo.RelType == "m.thread" {
			return content.RelatesTo.EventID, true
		}
		parent, err := a.rooms.EventByID(ctx, content.RelatesTo.EventID)
		if err != nil || parent.RoomID() != e.RoomID() {
			return "", false
		}
		e = parent
	}
	return "", false
}

// setFullyRead moves the fully read marker (client-server API "Fully read markers"): the
// m.fully_read room account data, which /sync then delivers.
func (a *API) setFullyRead(ctx context.Context, d *Device, roomID string, target *rooms.Event) error {
	content, err := json.Marshal(map[string]string{"event_id": target.EventID()})
	if err != nil {
		return err
	}
	return a.putAccountDataContent(ctx, d.UserID, roomID, receiptFullyRead, content)
}

// setReceipt stores a receipt and wakes those whose /sync shows it: the user for a private
// receipt, every joined member for a public one.
func (a *API) setReceipt(ctx context.Context, d *Device, roomID, receiptType, threadID string, target *rooms.Event) error {
	ts := a.nowMS()
	stored, err := a.storeReceipt(ctx, d.UserID, roomID, receiptType, threadID, target, ts)
	if err != nil || !stored || receiptType != storage.ReceiptRead || a.remote == nil {
		return err
	}
	// Public receipts go to the other servers of the room (server-server API "Receipts").
	if err := a.remote.SendReceipt(ctx, roomID, d.UserID, threadID, target.EventID(), ts); err != nil {
		a.log.Warn("receipts: notify other servers", "room", roomID, "err", err)
	}
	return nil
}

// RemoteReceipt stores the public read receipt of another server's user that the
// federation API checked (federation.EphemeralSink). A receipt of an event this server does
// not have in the room's timeline is dropped.
func (a *API) RemoteReceipt(ctx context.Context, roomID, userID, threadID, eventID string, ts int64) error {
	if threadID != "" && threadID != "main" && !validEventID(threadID) {
		return httpapi.InvalidParam("Invalid thread_id")
	}
	if !validEventID(eventID) {
		return httpapi.InvalidParam("Invalid event ID")
	}
	target, err := a.rooms.TimelineEventByID(ctx, eventID)
	if errors.Is(err, rooms.ErrEventNotFound) || (err == nil && target.RoomID() != roomID) {
		return httpapi.NotFound("Event %s not found in %s", eventID, roomID)
	}
	if err != nil {
		return err
	}
	_, err = a.storeReceipt(ctx, userID, roomID, storage.ReceiptRead, threadID, target, ts)
	return err
}

// storeReceipt stores a receipt of userID and wakes those whose /sync shows it, reporting
// whether it moved the stored receipt.
func (a *API) storeReceipt(ctx context.Context, userID, roomID, receiptType, threadID string, target *rooms.Event, ts int64) (bool, error) {
	roomNID, err := a.rooms.RoomNID(ctx, roomID)
	if err != nil {
		return false, err
	}
	wake := []string{userID}
	if receiptType == storage.ReceiptRead {
		if wake, err = a.rooms.JoinedMembers(ctx, roomID); err != nil {
			return false, err
		}
	}
	stream := a.rooms.Stream()
	pos := stream.Allocate()
	stored, err := storage.PutReceipt(ctx, a.db, &storage.ReceiptRow{
		RoomNID: roomNID, UserID: userID, Type: receiptType, ThreadID: threadID,
		EventID: target.EventID(), EventPos: target.StreamPos, TS: ts, StreamPos: pos,
	})
	if err != nil || !stored {
		stream.Finish(pos)
		return false, err
	}
	stream.MarkChanged(pos, streams.ReceiptKey(roomNID), streams.ReadKey(userID))
	stream.Finish(pos, wake...)
	return true, nil
}

// maxSyncReceipts bounds the receipts of one incremental /sync, over all rooms.
// NOTSPEC: a client that was away long enough to exceed it gets the newest ones.
const maxSyncReceipts = 5000

// maxRoomReceipts bounds the receipts of one room in an initial /sync (the user's own come
// first). NOTSPEC: the spec sets no limit; a large room holds one per member and type.
const maxRoomReceipts = 100

// receiptsBetween reads the receipts of (since, to] in the user's joined rooms, by room NID,
// oldest first.
func (a *API) receiptsBetween(ctx context.Context, userID string, since, to int64) (map[int64][]storage.ReceiptRow, error) {
	rows, err := storage.ReceiptsBetween(ctx, a.db, userID, since, to, maxSyncReceipts)
	if err != nil {
		return nil, err
	}
	out := map[int64][]storage.ReceiptRow{}
	for i := len(rows) - 1; i >= 0; i-- {
		out[rows[i].RoomNID] = append(out[rows[i].RoomNID], rows[i])
	}
	return out, nil
}

// receiptEvent is the m.receipt ephemeral event of rows (client-server API "m.receipt"):
// event ID → receipt type → user ID → {ts, thread_id}. Later rows win.
func receiptEvent(rows []storage.ReceiptRow) map[string]any {
	content := map[string]map[string]map[string]map[string]any{}
	for _, row := range rows {
		byType, ok := content[row.EventID]
		if !ok {
			byType = map[string]map[string]map[string]any{}
			content[row.EventID] = byType
		}
		byUser, ok := byType[row.Type]
		if !ok {
			byUser = map[string]map[string]any{}
			byType[row.Type] = byUser
		}
		receipt := map[string]any{"ts": row.TS}
		if row.ThreadID != "" {
			receipt["thread_id"] = row.ThreadID
		}
		byUser[row.UserID] = receipt
	}
	return map[string]any{"type": "m.receipt", "content": content}
}

// allowsEphemeral reports whether the ephemeral filter lets an ephemeral event type through
// in a room. Ephemeral events have no sender, so only rooms and types apply.
func allowsEphemeral(f *RoomEventFilter, roomID, evType string) bool {
	if !allowsRoom(f.Rooms, f.NotRooms, roomID) || matchAny(f.NotTypes, evType) {
		return false
	}
	return f.Types == nil || matchAny(f.Types, evType)
}

// ephemeralChanged reports whether a joined room has new ephemeral events in (since, to]
// that the filter lets through, so that an incremental /sync must list the room.
func (a *API) ephemeralChanged(filter *Filter, roomID string, newReceipts []storage.ReceiptRow, since, to int64) bool {
	f := &filter.Room.Ephemeral
	if len(newReceipts) > 0 && allowsEphemeral(f, roomID, "m.receipt") {
		return true
	}
	if !allowsEphemeral(f, roomID, "m.typing") {
		return false
	}
	_, changed := a.typing.changed(roomID, since, to)
	return changed
}

// addEphemeral fills a joined room's ephemeral events: receipts and typing. full (an initial
// sync, or a room joined in the window) gives the latest receipts and who is typing now;
// otherwise what changed in (since, to].
func (a *API) addEphemeral(ctx context.Context, jr *joinedRoom, filter *Filter, userID string, m storage.RoomMembership, newReceipts []storage.ReceiptRow, since, to int64, full bool) error {
	f := &filter.Room.Ephemeral
	// The filter's limit counts ephemeral events; there are at most two per room.
	limit := f.limit(2)
	if limit == 0 {
		return nil
	}
	if allowsEphemeral(f, m.RoomID, "m.receipt") {
		receipts := newReceipts
		if full {
			latest, err := storage.LatestReceipts(ctx, a.db, m.RoomNID, userID, to, maxRoomReceipts)
			if err != nil {
				return err
			}
			// Oldest first, so that the user's own (listed first) are not overwritten.
			receipts = make([]storage.ReceiptRow, 0, len(latest))
			for i := len(latest) - 1; i >= 0; i-- {
				receipts = append(receipts, latest[i])
			}
		}
		if len(receipts) > 0 {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, receiptEvent(receipts))
		}
	}
	if len(jr.Ephemeral.Events) < limit && allowsEphemeral(f, m.RoomID, "m.typing") {
		users, changed := a.typing.changed(m.RoomID, since, to)
		if full {
			users = a.typing.current(m.RoomID)
			changed = len(users) > 0
		}
		if changed {
			jr.Ephemeral.Events = append(jr.Ephemeral.Events, typingEvent(users))
		}
	}
	return nil
}

// typingEvent is the m.typing ephemeral event (client-server API "m.typing").
func typingEvent(users []string) map[string]any {
	if users == nil {
		users = []string{}
	}
	return map[string]any{"type": "m.typing", "content": map[string]any{"user_ids": users}}
}
