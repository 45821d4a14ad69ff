package integration

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestFederatedInviteBlocking: Bob on hs2 blocks invites (m.invite_permission_config,
// default_action "block"); hs2 refuses Alice's invite from hs1 on PUT /federation/v2/invite
// with 403 M_INVITE_BLOCKED, which hs1 passes on to Alice. Carol on hs2, who does not block,
// is invited as usual. Once Bob removes default_action, Alice's invite reaches him.
func TestFederatedInviteBlocking(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		hs1, hs2 := federatedPair(t, engine)
		alice := hs1.Register(t, "alice")
		bob, carol := hs2.Register(t, "bob"), hs2.Register(t, "carol")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "private_chat", Name: "Blocked?"})
		bobSince := initialSync(t, bob)

		if err := bob.SetAccountData(ctx, "m.invite_permission_config", map[string]any{"default_action": "block"}); err != nil {
			t.Fatal(err)
		}
		_, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID})
		var httpErr mautrix.HTTPError
		if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != http.StatusForbidden ||
			!testserver.IsMatrixError(err, "M_INVITE_BLOCKED") {
			t.Fatalf("alice invites bob, who blocks invites: %v, want 403 M_INVITE_BLOCKED", err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: carol.UserID}); err != nil {
			t.Fatalf("alice invites carol, who does not block invites: %v", err)
		}

		if err := bob.SetAccountData(ctx, "m.invite_permission_config", map[string]any{}); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.InviteUser(ctx, room.RoomID, &mautrix.ReqInviteUser{UserID: bob.UserID}); err != nil {
			t.Fatalf("alice invites bob after he unblocked: %v", err)
		}
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			_, ok := resp.Rooms.Invite[room.RoomID]
			return ok
		})
	})
}
