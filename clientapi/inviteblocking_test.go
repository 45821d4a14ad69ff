package clientapi

import (
	"context"
	"net/http"
	"net/url"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestBlocksInvites: only default_action "block" blocks; "a missing, invalid or unsupported
// value means that the user wants to receive invites as normal".
func TestBlocksInvites(t *testing.T) {
	for _, tc := range []struct {
		content string
		want    bool
	}{
		{`{"default_action":"block"}`, true},
		{`{"default_action":"block","other":1}`, true},
		{`{}`, false},
		{`{"default_action":"allow"}`, false},
		{`{"default_action":"BLOCK"}`, false},
		{`{"default_action":true}`, false},
		{`{"default_action":null}`, false},
		{`["block"]`, false},
		{`not json`, false},
	} {
		if got := blocksInvites([]byte(tc.content)); got != tc.want {
			t.Errorf("blocksInvites(%s) = %v, want %v", tc.content, got, tc.want)
		}
	}
}

// setInvitePermission sets the user's m.invite_permission_config.
func (s *testServer) setInvitePermission(token, userID string, content map[string]any) {
	s.t.Helper()
	s.do("PUT", "/_matrix/client/v3/user/"+url.PathEscape(userID)+"/account_data/"+invitePermissionType, token, content, http.StatusOK)
}

// TestInviteBlockingLocal: a user who blocks invites cannot be invited through POST /invite,
// PUT /state/m.room.member (membership invite) or /createRoom's invite list (which creates
// nothing then), all 403 M_INVITE_BLOCKED; other users still can, other memberships of the
// blocking user can still be set, unsupported values block nothing, and removing
// default_action lets invites through again.
func TestInviteBlockingLocal(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		carolID, _, _ := s.register("carol", "password-carol")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		invitePath := "/_matrix/client/v3/rooms/" + roomID + "/invite"
		memberPath := "/_matrix/client/v3/rooms/" + roomID + "/state/m.room.member/"

		s.setInvitePermission(bob, bobID, map[string]any{"default_action": "block"})
		s.expectErr("POST", invitePath, alice, map[string]any{"user_id": bobID}, http.StatusForbidden, "M_INVITE_BLOCKED")
		s.expectErr("PUT", memberPath+url.PathEscape(bobID), alice, map[string]any{"membership": "invite"}, http.StatusForbidden, "M_INVITE_BLOCKED")
		joinedBefore := s.do("GET", "/_matrix/client/v3/joined_rooms", alice, nil, http.StatusOK)["joined_rooms"].([]any)
		s.expectErr("POST", "/_matrix/client/v3/createRoom", alice, map[string]any{"invite": []string{carolID, bobID}},
			http.StatusForbidden, "M_INVITE_BLOCKED")
		joinedAfter := s.do("GET", "/_matrix/client/v3/joined_rooms", alice, nil, http.StatusOK)["joined_rooms"].([]any)
		if len(joinedAfter) != len(joinedBefore) {
			t.Fatalf("a refused /createRoom made a room: %v, then %v", joinedBefore, joinedAfter)
		}

		// Others are invited as usual, and bob's other memberships are not invites.
		s.do("POST", invitePath, alice, map[string]any{"user_id": carolID}, http.StatusOK)
		s.createRoom(alice, map[string]any{"invite": []string{carolID}})
		s.do("PUT", memberPath+url.PathEscape(bobID), alice, map[string]any{"membership": "ban"}, http.StatusOK)
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/unban", alice, map[string]any{"user_id": bobID}, http.StatusOK)

		for _, unsupported := range []map[string]any{{"default_action": "allow"}, {"default_action": 1}} {
			s.setInvitePermission(bob, bobID, unsupported)
			other := s.createRoom(alice, map[string]any{})
			s.do("POST", "/_matrix/client/v3/rooms/"+other+"/invite", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		}

		// "To stop rejecting all invites, the same event without the default_action property".
		s.setInvitePermission(bob, bobID, map[string]any{"default_action": "block"})
		s.expectErr("POST", invitePath, alice, map[string]any{"user_id": bobID}, http.StatusForbidden, "M_INVITE_BLOCKED")
		s.setInvitePermission(bob, bobID, map[string]any{})
		s.do("POST", invitePath, alice, map[string]any{"user_id": bobID}, http.StatusOK)
		s.createRoom(alice, map[string]any{"invite": []string{bobID}})

		// Other servers' users are their servers' to check.
		if blocked, err := s.api.InviteBlocked(context.Background(), "@bob:elsewhere.example"); err != nil || blocked {
			t.Fatalf("remote user: blocked %v, err %v", blocked, err)
		}
	})
}

// TestInviteBlockingSync: invites are not served over /sync while the user blocks invites,
// in initial and incremental syncs alike, neither those from before nor one that arrived in
// the window, though the room's state still lists them; once unblocked, the next incremental
// sync serves every pending invite again, and later ones only new invites.
func TestInviteBlockingSync(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		early := s.createRoom(alice, map[string]any{"invite": []string{bobID}})
		first := s.sync(bob, nil)
		if syncRoom(first, "invite", early) == nil {
			t.Fatal("the invite is not in bob's initial sync")
		}
		since := first["next_batch"].(string)
		late := s.createRoom(alice, map[string]any{})
		s.do("POST", "/_matrix/client/v3/rooms/"+late+"/invite", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		invites := func(resp map[string]any) int {
			rooms, _ := resp["rooms"].(map[string]any)
			invited, _ := rooms["invite"].(map[string]any)
			return len(invited)
		}
		incremental := func(since string) map[string]any {
			return s.sync(bob, url.Values{"since": {since}, "timeout": {"0"}})
		}

		s.setInvitePermission(bob, bobID, map[string]any{"default_action": "block"})
		blocked := incremental(since)
		if n := invites(blocked); n != 0 {
			t.Fatalf("incremental sync while blocking has %d invites: %v", n, blocked["rooms"])
		}
		if n := invites(s.sync(bob, nil)); n != 0 {
			t.Fatalf("initial sync while blocking has %d invites", n)
		}
		state := s.do("GET", "/_matrix/client/v3/rooms/"+late+"/state/m.room.member/"+url.PathEscape(bobID), alice, nil, http.StatusOK)
		if state["membership"] != "invite" {
			t.Fatalf("bob's member event in the room's state: %v", state)
		}

		s.setInvitePermission(bob, bobID, map[string]any{})
		unblocked := incremental(blocked["next_batch"].(string))
		if syncRoom(unblocked, "invite", early) == nil || syncRoom(unblocked, "invite", late) == nil {
			t.Fatalf("the first sync after unblocking lacks invites: %v", unblocked["rooms"])
		}
		s.sendText(alice, late, "not an invite")
		if n := invites(incremental(unblocked["next_batch"].(string))); n != 0 {
			t.Fatalf("a later incremental sync repeats %d invites", n)
		}
		if n := invites(s.sync(bob, nil)); n != 2 {
			t.Fatalf("initial sync after unblocking has %d invites, want 2", n)
		}
	})
}
