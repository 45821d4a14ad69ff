package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"

	"github.com/scrambledeggs/eggs/presence"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Typing notifications and receipts across servers (server-server API "Typing
// Notifications", "Receipts", "EDUs"): what our users do is queued as EDUs for the other
// servers of the room, and what other servers' users do is applied to our users' syncs once
// checked: the user must belong to the sending server, be joined to the room, and the
// room's server ACL must let the sending server in.
//
// Presence (m.presence) is not about a room: our users' presence goes to every server sharing
// a room with them, and what another server says of its own users is handed to package
// presence, which keeps it for the users here who share a room with them.

// EphemeralSink applies other servers' typing notifications and receipts to our users'
// syncs (the client API implements it).
type EphemeralSink interface {
	// RemoteTyping marks userID (of another server) as typing in roomID or not.
	RemoteTyping(roomID, userID string, typing bool)
	// RemoteReceipt stores userID's (of another server) public read receipt.
	RemoteReceipt(ctx context.Context, roomID, userID, threadID, eventID string, ts int64) error
}

// EDU types handled here.
const (
	eduTyping   = "m.typing"
	eduReceipt  = "m.receipt"
	eduPresence = "m.presence"
)

// maxPresencePush bounds the entries of one m.presence EDU. NOTSPEC: an EDU is at most 64 KiB
// anyway; Synapse sends at most a few hundred per EDU.
const maxPresencePush = 1000

// PresenceSink keeps other servers' users' presence (package presence implements it).
type PresenceSink interface {
	ApplyRemote(ctx context.Context, origin string, updates []presence.Update) error
}

// HandlePresence registers the handler of m.presence EDUs with the Inbound processor.
func (a *API) HandlePresence(sink PresenceSink) {
	a.Inbound.HandleEDU(eduPresence, func(ctx context.Context, origin string, raw json.RawMessage) error {
		var content struct {
			Push []presence.Update `json:"push"`
		}
		if err := json.Unmarshal(raw, &content); err != nil {
			return fmt.Errorf("malformed m.presence: %w", err)
		}
		if len(content.Push) > maxPresencePush {
			return fmt.Errorf("m.presence with %d entries", len(content.Push))
		}
		return sink.ApplyRemote(ctx, origin, content.Push)
	})
}

// SendPresence queues an m.presence EDU with the presence of userID (one of ours) for every
// other server sharing a room with them (presence.Federator).
func (a *API) SendPresence(ctx context.Context, userID string, update presence.Update) error {
	destinations, err := serversSharingRooms(ctx, a.DB, a.ServerName, userID)
	if err != nil {
		return err
	}
	return a.SendPresenceTo(ctx, destinations, []presence.Update{update})
}

// SendPresenceTo queues an m.presence EDU with updates (of our users) for destinations
// (presence.Federator).
func (a *API) SendPresenceTo(ctx context.Context, destinations []string, updates []presence.Update) error {
	if len(destinations) == 0 || len(updates) == 0 {
		return nil
	}
	content, err := presence.MarshalUpdates(updates...)
	if err != nil {
		return err
	}
	edu, err := json.Marshal(map[string]any{"edu_type": eduPresence, "content": content})
	if err != nil {
		return err
	}
	if err := storage.EnqueueEDU(ctx, a.DB, destinations, edu, a.Clock().UnixMilli()); err != nil {
		return fmt.Errorf("queue m.presence: %w", err)
	}
	a.Sender.Notify(destinations...)
	return nil
}

// serversSharingRooms lists, sorted, the servers other than self with users joined to a room
// userID is joined to.
func serversSharingRooms(ctx context.Context, q storage.Querier, self, userID string) ([]string, error) {
	users, err := storage.UsersSharingRooms(ctx, q, userID)
	if err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	var servers []string
	for _, u := range users {
		parsed, err := spec.ParseUserID(u)
		if err != nil {
			continue
		}
		server := string(parsed.Server())
		if server == self || seen[server] {
			continue
		}
		seen[server] = true
		servers = append(servers, server)
	}
	sort.Strings(servers)
	return servers, nil
}

// maxReceiptRooms and maxReceiptUsers bound the work one m.receipt EDU can cause. NOTSPEC:
// the spec sets no limit; an EDU is at most 64 KiB anyway.
const (
	maxReceiptRooms = 100
	maxReceiptUsers = 1000
)

// HandleEDUs registers the handlers of typing and receipt EDUs with the Inbound processor.
func (a *API) HandleEDUs(sink EphemeralSink) {
	a.Inbound.HandleEDU(eduTyping, func(ctx context.Context, origin string, content json.RawMessage) error {
		return a.receiveTyping(ctx, sink, origin, content)
	})
	a.Inbound.HandleEDU(eduReceipt, func(ctx context.Context, origin string, content json.RawMessage) error {
		return a.receiveReceipts(ctx, sink, origin, content)
	})
}

// typingContent is the content of an m.typing EDU.
type typingContent struct {
	RoomID string `json:"room_id"`
	UserID string `json:"user_id"`
	Typing bool   `json:"typing"`
}

// receiptData is the "data" of one user's receipt in an m.receipt EDU.
type receiptData struct {
	TS       int64  `json:"ts"`
	ThreadID string `json:"thread_id,omitempty"`
}

// userReceipt is one user's receipt in an m.receipt EDU.
type userReceipt struct {
	EventIDs []string    `json:"event_ids"`
	Data     receiptData `json:"data"`
}

// receiveTyping applies an m.typing EDU from origin.
func (a *API) receiveTyping(ctx context.Context, sink EphemeralSink, origin string, raw json.RawMessage) error {
	var content typingContent
	if err := json.Unmarshal(raw, &content); err != nil {
		return fmt.Errorf("malformed m.typing: %w", err)
	}
	if err := a.remoteMemberCheck(ctx, origin, content.RoomID, content.UserID); err != nil {
		return err
	}
	sink.RemoteTyping(content.RoomID, content.UserID, content.Typing)
	return nil
}

// receiveReceipts applies an m.receipt EDU from origin: room ID → receipt type → user ID →
// receipt. Only public read receipts (m.read) are shared between servers; a room or user
// that fails its checks is skipped without affecting the others.
func (a *API) receiveReceipts(ctx context.Context, sink EphemeralSink, origin string, raw json.RawMessage) error {
	var content map[string]map[string]map[string]userReceipt
	if err := json.Unmarshal(raw, &content); err != nil {
		return fmt.Errorf("malformed m.receipt: %w", err)
	}
	if len(content) > maxReceiptRooms {
		return fmt.Errorf("m.receipt for %d rooms", len(content))
	}
	var errs []error
	users := 0
	for roomID, byType := range content {
		// "All receipts for a particular room ID MUST be ignored if the sending server is
		// denied access to the room."
		if err := a.CheckServerACL(ctx, roomID, origin); err != nil {
			errs = append(errs, fmt.Errorf("receipts of %s: %w", roomID, err))
			continue
		}
		for userID, receipt := range byType["m.read"] {
			if users++; users > maxReceiptUsers {
				return errors.Join(append(errs, errors.New("too many receipts"))...)
			}
			if err := a.remoteMemberCheck(ctx, origin, roomID, userID); err != nil {
				errs = append(errs, err)
				continue
			}
			// event_ids lists one event in practice; the last one counts.
			if len(receipt.EventIDs) == 0 {
				continue
			}
			eventID := receipt.EventIDs[len(receipt.EventIDs)-1]
			if err := sink.RemoteReceipt(ctx, roomID, userID, receipt.Data.ThreadID, eventID, receipt.Data.TS); err != nil {
				errs = append(errs, fmt.Errorf("receipt of %s in %s: %w", userID, roomID, err))
			}
		}
	}
	return errors.Join(errs...)
}

// remoteMemberCheck is the check of a room-scoped EDU about userID sent by origin: the
// user belongs to origin ("Receiving servers should verify that the user is in the room,
// and is a user belonging to the sending server"), is joined to the room, and the room's
// server ACL allows origin.
func (a *API) remoteMemberCheck(ctx context.Context, origin, roomID, userID string) error {
	user, err := spec.ParseUserID(userID)
	if err != nil || user.Server() != origin {
		return fmt.Errorf("%s cannot speak for %q", origin, userID)
	}
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return fmt.Errorf("bad room ID %q", roomID)
	}
	if err := a.CheckServerACL(ctx, roomID, origin); err != nil {
		return err
	}
	membership, _, err := a.Rooms.Membership(ctx, roomID, userID)
	if err != nil {
		return fmt.Errorf("membership of %s in %s: %w", userID, roomID, err)
	}
	if membership != "join" {
		return fmt.Errorf("%s is not joined to %s", userID, roomID)
	}
	return nil
}

// SendTyping queues an m.typing EDU telling the other servers of the room that userID
// (one of ours) is typing or stopped.
func (a *API) SendTyping(ctx context.Context, roomID, userID string, typing bool) error {
	return a.queueRoomEDU(ctx, roomID, eduTyping, typingContent{RoomID: roomID, UserID: userID, Typing: typing})
}

// SendReceipt queues an m.receipt EDU with userID's (one of ours) public read receipt of
// eventID (in threadID, "" when unthreaded) for the other servers of the room.
func (a *API) SendReceipt(ctx context.Context, roomID, userID, threadID, eventID string, ts int64) error {
	content := map[string]map[string]map[string]userReceipt{
		roomID: {"m.read": {userID: {EventIDs: []string{eventID}, Data: receiptData{TS: ts, ThreadID: threadID}}}},
	}
	return a.queueRoomEDU(ctx, roomID, eduReceipt, content)
}

// queueRoomEDU queues an EDU about a room for every other server with joined members in it,
// and wakes their queues.
func (a *API) queueRoomEDU(ctx context.Context, roomID, eduType string, content any) error {
	servers, err := a.Rooms.ResidentServers(ctx, roomID)
	if err != nil {
		return err
	}
	destinations := servers[1:] // the first is this server
	if len(destinations) == 0 {
		return nil
	}
	edu, err := json.Marshal(map[string]any{"edu_type": eduType, "content": content})
	if err != nil {
		return err
	}
	if err := storage.EnqueueEDU(ctx, a.DB, destinations, edu, a.Clock().UnixMilli()); err != nil {
		return fmt.Errorf("queue %s: %w", eduType, err)
	}
	a.Sender.Notify(destinations...)
	return nil
}
