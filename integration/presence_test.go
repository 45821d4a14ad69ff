package integration

import (
	"context"
	"encoding/json"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// presenceOf finds userID's m.presence content in a sync response.
func presenceOf(t *testing.T, resp *mautrix.RespSync, userID id.UserID) *event.PresenceEventContent {
	t.Helper()
	for _, e := range resp.Presence.Events {
		if e.Sender != userID {
			continue
		}
		var content event.PresenceEventContent
		if err := json.Unmarshal(e.Content.VeryRaw, &content); err != nil {
			t.Fatalf("m.presence content %s: %v", e.Content.VeryRaw, err)
		}
		return &content
	}
	return nil
}

// TestFederatedPresence: Alice on the first server is online and has set a status when Bob on
// the second joins her room: his server hears of her presence as it joins (not only at her
// next change), so his client sees it, and GET /presence on his server answers it. Bob's
// own changes reach Alice's client in return.
func TestFederatedPresence(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob := hs2.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		aliceSince := initialSync(t, alice) // with set_presence=online
		if err := alice.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceUnavailable, StatusMsg: "in a meeting"}); err != nil {
			t.Fatalf("alice sets her presence: %v", err)
		}

		bobSince := initialSync(t, bob)
		joinVia(t, room.RoomID, hs1, bob)
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			p := presenceOf(t, resp, alice.UserID)
			return p != nil && p.Presence == event.PresenceUnavailable && p.StatusMessage == "in a meeting"
		})
		got, err := bob.GetPresence(ctx, alice.UserID)
		if err != nil || got.Presence != event.PresenceUnavailable || got.StatusMsg != "in a meeting" {
			t.Fatalf("bob reads alice's presence on his server: %+v, %v", got, err)
		}

		if err := bob.SetPresence(ctx, mautrix.ReqPresence{Presence: event.PresenceOnline, StatusMsg: "around"}); err != nil {
			t.Fatalf("bob sets his presence: %v", err)
		}
		syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			p := presenceOf(t, resp, bob.UserID)
			return p != nil && p.Presence == event.PresenceOnline && p.StatusMessage == "around"
		})
	})
}
