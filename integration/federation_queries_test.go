package integration

import (
	"context"
	"slices"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestFederationQueries: Bob on the second server reads Alice's profile from the first
// (query/profile), resolves and joins her room by its alias (query/directory, then
// make_join/send_join through the servers the alias names), lists the first server's
// public rooms (publicRooms), and the two see each other type and read (m.typing and
// m.receipt EDUs in both directions).
func TestFederationQueries(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob := hs2.Register(t, "bob")
		if err := alice.SetDisplayName(ctx, "Alice of hs1"); err != nil {
			t.Fatal(err)
		}
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "public_chat", Visibility: "public",
			Name: "Lobby", RoomAliasName: "lobby"})
		if err != nil {
			t.Fatal(err)
		}
		alias := id.NewRoomAlias("lobby", hs1.ServerName)

		profile, err := bob.GetProfile(ctx, alice.UserID)
		if err != nil || profile.DisplayName != "Alice of hs1" {
			t.Fatalf("bob reads alice's profile: %+v, %v", profile, err)
		}
		if _, err := bob.GetProfile(ctx, id.NewUserID("nobody", hs1.ServerName)); !testserver.IsMatrixError(err, "M_NOT_FOUND") {
			t.Fatalf("profile of an unknown remote user: %v, want M_NOT_FOUND", err)
		}
		resolved, err := bob.ResolveAlias(ctx, alias)
		if err != nil || resolved.RoomID != room.RoomID || !slices.Contains(resolved.Servers, hs1.ServerName) {
			t.Fatalf("bob resolves %s: %+v, %v", alias, resolved, err)
		}
		if _, err := bob.ResolveAlias(ctx, id.NewRoomAlias("nope", hs1.ServerName)); !testserver.IsMatrixError(err, "M_NOT_FOUND") {
			t.Fatalf("unknown remote alias: %v, want M_NOT_FOUND", err)
		}
		directory, err := bob.PublicRooms(ctx, &mautrix.ReqPublicRooms{Server: hs1.ServerName})
		if err != nil || len(directory.Chunk) != 1 || directory.Chunk[0].RoomID != room.RoomID {
			t.Fatalf("bob lists hs1's public rooms: %+v, %v", directory, err)
		}

		bobSince := initialSync(t, bob)
		if _, err := bob.JoinRoom(ctx, alias.String(), nil); err != nil {
			t.Fatalf("bob joins %s: %v", alias, err)
		}
		aliceSince := syncUntil(t, alice, "", func(resp *mautrix.RespSync) bool {
			return memberJoined(resp, room.RoomID, bob.UserID)
		})

		// Typing crosses in both directions.
		if _, err := bob.UserTyping(ctx, room.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			return slices.Contains(typingIn(resp, room.RoomID), bob.UserID)
		})
		if _, err := alice.UserTyping(ctx, room.RoomID, true, 20*time.Second); err != nil {
			t.Fatal(err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			return slices.Contains(typingIn(resp, room.RoomID), alice.UserID)
		})

		// Alice's message, read by Bob: his receipt reaches her.
		sent, err := alice.SendText(ctx, room.RoomID, "read me")
		if err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			return slices.Contains(timelineBodies(resp, room.RoomID), "read me")
		})
		if err := bob.SendReceipt(ctx, room.RoomID, sent.EventID, event.ReceiptTypeRead, nil); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			return hasReceipt(resp, room.RoomID, sent.EventID, bob.UserID)
		})
	})
}

// typingIn lists the users typing in a room according to a sync response.
func typingIn(resp *mautrix.RespSync, roomID id.RoomID) []id.UserID {
	room, ok := resp.Rooms.Join[roomID]
	if !ok {
		return nil
	}
	for _, e := range room.Ephemeral.Events {
		if e.Type != event.EphemeralEventTyping {
			continue
		}
		_ = e.Content.ParseRaw(e.Type)
		if typing := e.Content.AsTyping(); typing != nil {
			return typing.UserIDs
		}
	}
	return nil
}

// hasReceipt reports whether a sync response carries user's read receipt of eventID.
func hasReceipt(resp *mautrix.RespSync, roomID id.RoomID, eventID id.EventID, user id.UserID) bool {
	room, ok := resp.Rooms.Join[roomID]
	if !ok {
		return false
	}
	for _, e := range room.Ephemeral.Events {
		if e.Type != event.EphemeralEventReceipt {
			continue
		}
		_ = e.Content.ParseRaw(e.Type)
		receipts := e.Content.AsReceipt()
		if receipts == nil {
			continue
		}
		if _, ok := (*receipts)[eventID][event.ReceiptTypeRead][user]; ok {
			return true
		}
	}
	return false
}
