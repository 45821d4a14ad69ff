package integration

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestFederatedInvitesAndKnocks: memberships that need the other server's handshake, between
// two eggs servers driven by mautrix clients. Alice on hs1 invites Bob on hs2 to a private
// room (invite endpoint): Bob sees the invite with the room's stripped state, joins through
// Alice's server and they talk. Carol on hs2 is invited and rejects (make_leave/send_leave).
// Dave on hs2 knocks on a knockable room (make_knock/send_knock), sees it under "knock",
// Alice accepts by inviting him, and he joins.
func TestFederatedInvitesAndKnocks(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob, carol, dave := hs2.Register(t, "bob"), hs2.Register(t, "carol"), hs2.Register(t, "dave")

		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Invite only"})
		aliceSince := initialSync(t, alice)
		bobSince := initialSync(t, bob)
		carolSince := initialSync(t, carol)

		// Invite → reject, while no one of hs2 is in the room: make_leave/send_leave through hs1.
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatalf("alice invites carol: %v", err)
		}
		carolSince = syncUntil(t, carol, carolSince, func(resp *mautrix.RespSync) bool {
			_, ok := resp.Rooms.Invite[room.RoomID]
			return ok
		})
		if _, err := carol.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatalf("carol rejects the invite: %v", err)
		}
		syncUntil(t, carol, carolSince, func(resp *mautrix.RespSync) bool {
			_, ok := resp.Rooms.Leave[room.RoomID]
			return ok
		})
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			joined, ok := resp.Rooms.Join[room.RoomID]
			return ok && memberIs(joined.Timeline.Events, carol.UserID, "leave")
		})
		if _, err := carol.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.ServerName}}); err == nil {
			t.Fatal("carol joined an invite-only room after rejecting her invite")
		}

		// Invite → join (through the inviter's server: no via) → talk.
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("alice invites bob: %v", err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			invited, ok := resp.Rooms.Invite[room.RoomID]
			return ok && hasStripped(invited.State.Events, "m.room.create", "") &&
				hasStripped(invited.State.Events, "m.room.name", "") && memberIs(invited.State.Events, bob.UserID, "invite")
		})
		if _, err := bob.JoinRoom(ctx, room.RoomID.String(), nil); err != nil {
			t.Fatalf("bob accepts the invite: %v", err)
		}
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			return memberJoined(resp, room.RoomID, bob.UserID)
		})
		if _, err := alice.SendText(ctx, room.RoomID, "welcome, bob"); err != nil {
			t.Fatal(err)
		}
		var got []string
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			got = append(got, timelineBodies(resp, room.RoomID)...)
			return len(got) > 0 && got[len(got)-1] == "welcome, bob"
		})
		if _, err := bob.SendText(ctx, room.RoomID, "thanks, alice"); err != nil {
			t.Fatal(err)
		}
		got = nil
		aliceSince = syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			got = append(got, timelineBodies(resp, room.RoomID)...)
			return len(got) > 0 && got[len(got)-1] == "thanks, alice"
		})

		// Knock → invite → join.
		knockable, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Knock first",
			InitialState: []*event.Event{{Type: event.StateJoinRules, StateKey: new(string),
				Content: event.Content{Parsed: &event.JoinRulesEventContent{JoinRule: event.JoinRuleKnock}}}}})
		if err != nil {
			t.Fatal(err)
		}
		daveSince := initialSync(t, dave)
		if _, err := dave.KnockRoom(ctx, knockable.RoomID.String(), &mautrix.ReqKnockRoom{Via: []string{hs1.ServerName}, Reason: "let me in"}); err != nil {
			t.Fatalf("dave knocks: %v", err)
		}
		daveSince = syncUntil(t, dave, daveSince, func(resp *mautrix.RespSync) bool {
			knocked, ok := resp.Rooms.Knock[knockable.RoomID]
			return ok && hasStripped(knocked.State.Events, "m.room.create", "") && memberIs(knocked.State.Events, dave.UserID, "knock")
		})
		syncUntil(t, alice, aliceSince, func(resp *mautrix.RespSync) bool {
			joined, ok := resp.Rooms.Join[knockable.RoomID]
			return ok && memberIs(joined.Timeline.Events, dave.UserID, "knock")
		})
		if _, err := alice.InviteUser(ctx, knockable.RoomID, &mautrix.ReqInviteUser{UserID: dave.UserID}); err != nil {
			t.Fatalf("alice accepts dave's knock: %v", err)
		}
		daveSince = syncUntil(t, dave, daveSince, func(resp *mautrix.RespSync) bool {
			_, ok := resp.Rooms.Invite[knockable.RoomID]
			return ok
		})
		if _, err := dave.JoinRoom(ctx, knockable.RoomID.String(), nil); err != nil {
			t.Fatalf("dave joins after his knock was accepted: %v", err)
		}
		syncUntil(t, dave, daveSince, func(resp *mautrix.RespSync) bool {
			return memberJoined(resp, knockable.RoomID, dave.UserID)
		})
	})
}

// hasStripped reports whether events hold a state event of this type and state key.
func hasStripped(events []*event.Event, evType, stateKey string) bool {
	for _, e := range events {
		if e.Type.Type == evType && e.GetStateKey() == stateKey {
			return true
		}
	}
	return false
}

// memberIs reports whether events hold a member event giving user this membership.
func memberIs(events []*event.Event, user id.UserID, membership string) bool {
	for _, e := range events {
		if e.Type.Type == "m.room.member" && e.GetStateKey() == user.String() && e.Content.Raw["membership"] == membership {
			return true
		}
	}
	return false
}
