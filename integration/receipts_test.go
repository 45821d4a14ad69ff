package integration

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/testserver"
)

// ephemeral finds the content of a room's ephemeral event of type evType in a sync response.
func ephemeral(t *testing.T, resp *mautrix.RespSync, roomID id.RoomID, evType event.Type, content any) bool {
	t.Helper()
	room, ok := resp.Rooms.Join[roomID]
	if !ok {
		return false
	}
	for _, e := range room.Ephemeral.Events {
		if e.Type.Type != evType.Type {
			continue
		}
		if err := json.Unmarshal(e.Content.VeryRaw, content); err != nil {
			t.Fatalf("%s content %s: %v", evType.Type, e.Content.VeryRaw, err)
		}
		return true
	}
	return false
}

// unreadCounts is a room's unread_notifications in a sync response, if it is there.
func unreadCounts(resp *mautrix.RespSync, roomID id.RoomID) *mautrix.UnreadNotificationCounts {
	if room, ok := resp.Rooms.Join[roomID]; ok {
		return room.UnreadNotifications
	}
	return nil
}

// TestReceiptsTypingAndUnreadCounts runs read receipts, read markers, typing notifications
// and unread notification counts through real clients: alice writes, bob's counts rise, bob
// reads (privately, then publicly), alice sees only the public receipt, bob's counts fall;
// bob types and stops, alice sees both; everything stored survives a restart.
func TestReceiptsTypingAndUnreadCounts(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		carol := srv.Register(t, "carol")

		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		roomID := created.RoomID
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		joined := func(resp *mautrix.RespSync) bool { _, ok := resp.Rooms.Join[roomID]; return ok }
		aliceSince := syncUntil(t, alice, "", joined)
		bobSince := syncUntil(t, bob, "", func(resp *mautrix.RespSync) bool {
			counts := unreadCounts(resp, roomID)
			return counts != nil && counts.NotificationCount == 0
		})

		// A message that mentions bob, then one that does not.
		mention, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "hello bob", Mentions: &event.Mentions{UserIDs: []id.UserID{bob.UserID}},
		})
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			counts := unreadCounts(resp, roomID)
			return counts != nil && counts.NotificationCount == 1 && counts.HighlightCount == 1
		})
		plain, err := alice.SendMessageEvent(ctx, roomID, event.EventMessage, &event.MessageEventContent{
			MsgType: event.MsgText, Body: "breakfast?", Mentions: &event.Mentions{},
		})
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			counts := unreadCounts(resp, roomID)
			return counts != nil && counts.NotificationCount == 2 && counts.HighlightCount == 1
		})

		// A private receipt clears bob's counts up to the mention, and only bob sees it.
		if err := bob.SendReceipt(ctx, roomID, mention.EventID, event.ReceiptTypeReadPrivate, nil); err != nil {
			t.Fatalf("private receipt: %v", err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			var receipts event.ReceiptEventContent
			if !ephemeral(t, resp, roomID, event.EphemeralEventReceipt, &receipts) {
				return false
			}
			_, mine := receipts[mention.EventID][event.ReceiptTypeReadPrivate][bob.UserID]
			counts := unreadCounts(resp, roomID)
			return mine && counts != nil && counts.NotificationCount == 1 && counts.HighlightCount == 0
		})

		// A public receipt on the last message: alice sees it, never the private one.
		if err := bob.SendReceipt(ctx, roomID, plain.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatalf("receipt: %v", err)
		}
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			var receipts event.ReceiptEventContent
			if !ephemeral(t, resp, roomID, event.EphemeralEventReceipt, &receipts) {
				return false
			}
			for _, byType := range receipts {
				if _, leaked := byType[event.ReceiptTypeReadPrivate]; leaked {
					t.Fatalf("alice received a private receipt: %+v", receipts)
				}
			}
			receipt, ok := receipts[plain.EventID][event.ReceiptTypeRead][bob.UserID]
			if ok && (receipt.Timestamp.IsZero() || time.Since(receipt.Timestamp) > time.Minute) {
				t.Fatalf("receipt timestamp %v", receipt.Timestamp)
			}
			return ok
		})
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			counts := unreadCounts(resp, roomID)
			return counts != nil && counts.NotificationCount == 0 && counts.HighlightCount == 0
		})

		// The fully read marker through /read_markers lands in bob's room account data.
		if err := bob.SetReadMarkers(ctx, roomID, &mautrix.ReqSetReadMarkers{FullyRead: plain.EventID}); err != nil {
			t.Fatalf("read markers: %v", err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			room, ok := resp.Rooms.Join[roomID]
			if !ok {
				return false
			}
			for _, e := range room.AccountData.Events {
				if e.Type.Type == "m.fully_read" && e.Content.Raw["event_id"] == string(plain.EventID) {
					return true
				}
			}
			return false
		})

		// Errors.
		expectError := func(what string, err error, want mautrix.RespError) {
			t.Helper()
			if !errors.Is(err, want) {
				t.Fatalf("%s: got %v, want %s", what, err, want.ErrCode)
			}
		}
		_, err = bob.MakeRequest(ctx, "PUT", bob.BuildClientURL("v3", "rooms", roomID, "typing", alice.UserID), map[string]any{"typing": true, "timeout": 1000}, nil)
		expectError("typing as someone else", err, mautrix.MForbidden)
		_, err = carol.UserTyping(ctx, roomID, true, time.Second)
		expectError("typing outside the room", err, mautrix.MForbidden)
		expectError("receipt outside the room", carol.SendReceipt(ctx, roomID, plain.EventID, event.ReceiptTypeRead, nil), mautrix.MForbidden)
		expectError("receipt for an unknown event", bob.SendReceipt(ctx, roomID, "$nope", event.ReceiptTypeRead, nil), mautrix.MNotFound)
		expectError("unknown receipt type", bob.SendReceipt(ctx, roomID, plain.EventID, "m.unknown", nil), mautrix.MInvalidParam)
		expectError("thread_id on m.fully_read", bob.SendReceipt(ctx, roomID, plain.EventID, "m.fully_read", map[string]any{"thread_id": "main"}), mautrix.MInvalidParam)
		expectError("empty thread_id", bob.SendReceipt(ctx, roomID, plain.EventID, event.ReceiptTypeRead, map[string]any{"thread_id": ""}), mautrix.MInvalidParam)
		if err := bob.SendReceipt(ctx, roomID, plain.EventID, event.ReceiptTypeRead, &mautrix.ReqSendReceipt{ThreadID: "main"}); err != nil {
			t.Fatalf("main-timeline receipt: %v", err)
		}

		// Typing: bob starts, alice sees him; bob stops, alice sees nobody. Typing is the last
		// change before the restart below, so its positions are the highest handed out.
		if _, err := bob.UserTyping(ctx, roomID, true, 30*time.Second); err != nil {
			t.Fatalf("typing: %v", err)
		}
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			var typing event.TypingEventContent
			return ephemeral(t, resp, roomID, event.EphemeralEventTyping, &typing) && slices.Contains(typing.UserIDs, bob.UserID)
		})
		if _, err := bob.UserTyping(ctx, roomID, false, 0); err != nil {
			t.Fatalf("stop typing: %v", err)
		}
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			var typing event.TypingEventContent
			return ephemeral(t, resp, roomID, event.EphemeralEventTyping, &typing) && len(typing.UserIDs) == 0
		})

		// After a restart, receipts are still there, and a token from before (which counted
		// typing positions that were never stored) still sees everything new.
		srv.Restart()
		if _, err := alice.SendText(ctx, roomID, "after the restart"); err != nil {
			t.Fatalf("send after restart: %v", err)
		}
		syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			return slices.Contains(timelineBodies(resp, roomID), "after the restart")
		})
		syncUntil(t, bob, "", func(resp *mautrix.RespSync) bool {
			var receipts event.ReceiptEventContent
			if !ephemeral(t, resp, roomID, event.EphemeralEventReceipt, &receipts) {
				t.Fatalf("no receipts in bob's initial sync after the restart")
			}
			_, public := receipts[plain.EventID][event.ReceiptTypeRead][bob.UserID]
			_, private := receipts[mention.EventID][event.ReceiptTypeReadPrivate][bob.UserID]
			counts := unreadCounts(resp, roomID)
			if !public || !private || counts == nil || counts.NotificationCount != 1 {
				t.Fatalf("after restart: receipts %+v, counts %+v", receipts, counts)
			}
			return true
		})
	})
}
