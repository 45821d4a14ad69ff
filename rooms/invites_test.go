package rooms

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestInviteOfRemoteUser: an invite of another server's user is built without being stored,
// co-signed by that server, then stored through the path of local events; an invite that no
// longer passes against the state once it comes back is refused.
func TestInviteOfRemoteUser(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, version := range []string{"10", "12"} {
			ctx := context.Background()
			s := newTestServer(t, db)
			remote := newRemote("remote.example")
			alice, bob, carol := "@alice:test.example", "@bob:remote.example", "@carol:remote.example"
			roomID := createTestRoom(t, s, version, alice)

			invite, err := s.PrepareEvent(ctx, roomID, stateReq(alice, "m.room.member", bob, map[string]string{"membership": "invite"}))
			if err != nil {
				t.Fatalf("v%s: prepare: %v", version, err)
			}
			if _, err := s.EventByID(ctx, invite.EventID()); !errors.Is(err, ErrEventNotFound) {
				t.Fatalf("v%s: the prepared invite is stored already (%v)", version, err)
			}
			if m, _, _ := s.Membership(ctx, roomID, bob); m != "" {
				t.Fatalf("v%s: bob is %q before the invite came back", version, m)
			}
			cosigned := coSign(t, invite, remote)
			stored, err := s.SendPrepared(ctx, cosigned)
			if err != nil {
				t.Fatalf("v%s: send prepared: %v", version, err)
			}
			if stored.StreamPos == 0 || !strings.Contains(string(stored.JSON()), `"remote.example"`) {
				t.Fatalf("v%s: stored invite %s at position %d", version, stored.JSON(), stored.StreamPos)
			}
			if m, _, _ := s.Membership(ctx, roomID, bob); m != "invite" {
				t.Fatalf("v%s: bob is %q after the invite", version, m)
			}
			if again, err := s.SendPrepared(ctx, cosigned); err != nil || again.NID != stored.NID {
				t.Fatalf("v%s: storing the invite again: %v", version, err)
			}

			// Carol's invite comes back after she was banned: refused.
			late, err := s.PrepareEvent(ctx, roomID, stateReq(alice, "m.room.member", carol, map[string]string{"membership": "invite"}))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := s.Send(ctx, roomID, stateReq(alice, "m.room.member", carol, map[string]string{"membership": "ban"})); err != nil {
				t.Fatal(err)
			}
			var authErr *spec.AuthError
			if _, err := s.SendPrepared(ctx, coSign(t, late, remote)); !errors.As(err, &authErr) {
				t.Fatalf("v%s: an invite of a banned user was stored (%v)", version, err)
			}
		}
	})
}

// coSign adds the signature of remote to ev, as the invite endpoint does.
func coSign(t *testing.T, ev *spec.Event, remote *remoteServer) *spec.Event {
	t.Helper()
	raw, err := spec.SignEvent(ev.JSON(), ev.Version(), remote.name, remote.keyID, remote.key)
	if err != nil {
		t.Fatal(err)
	}
	signed, err := spec.ParseEvent(raw, ev.Version())
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// TestMembershipOutsideRoom: an invite to a room this server is not part of is recorded as
// the user's current membership (UserMemberships lists it for /sync) with a stream position,
// and the leave that rejects it replaces it.
func TestMembershipOutsideRoom(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		remote := newRemote("remote.example")
		rv, _ := spec.LookupRoomVersion("10")
		roomID, rita, bob := "!elsewhere:remote.example", "@rita:remote.example", "@bob:test.example"
		// The room's DAG is not here: its events are only named.
		fakeID := "$" + strings.Repeat("A", 43)
		remote.ts++
		invite, err := (&spec.ProtoEvent{Type: "m.room.member", StateKey: ptr(bob), Sender: rita, RoomID: roomID,
			Content: json.RawMessage(`{"membership":"invite"}`), PrevEvents: []string{fakeID}, AuthEvents: []string{fakeID},
			Depth: 5, OriginServerTS: remote.ts}).Build(rv, remote.name, remote.keyID, remote.key)
		if err != nil {
			t.Fatal(err)
		}
		before := s.Stream().Current()
		recorded, err := s.ReceiveInvite(ctx, invite, remote.keys(s))
		if err != nil {
			t.Fatal(err)
		}
		if recorded.Status != storage.EventOutlier || recorded.StreamPos <= before || s.Stream().Current() < recorded.StreamPos {
			t.Fatalf("recorded invite: status %d at %d (stream %d → %d)", recorded.Status, recorded.StreamPos, before, s.Stream().Current())
		}
		memberships, err := storage.UserMemberships(ctx, db, bob, "invite")
		if err != nil || len(memberships) != 1 || memberships[0].RoomID != roomID || memberships[0].EventNID != recorded.NID {
			t.Fatalf("bob's invites: %+v, %v", memberships, err)
		}
		outside, err := s.OutsideMembership(ctx, roomID, bob)
		if err != nil || outside == nil || outside.EventID() != invite.EventID() {
			t.Fatalf("outside membership: %v, %v", outside, err)
		}
		if again, err := s.RecordOutsideMembership(ctx, invite); err != nil || again.NID != recorded.NID {
			t.Fatalf("recording the invite again: %v", err)
		}
		if m, _, err := s.Membership(ctx, roomID, bob); err != nil || m != "" {
			t.Fatalf("the room's state here says %q (%v): it has no state", m, err)
		}

		leave, err := (&spec.ProtoEvent{Type: "m.room.member", StateKey: ptr(bob), Sender: bob, RoomID: roomID,
			Content: json.RawMessage(`{"membership":"leave"}`), PrevEvents: []string{fakeID}, AuthEvents: []string{fakeID},
			Depth: 6, OriginServerTS: remote.ts + 1}).Build(rv, "test.example", s.identity.KeyID, s.identity.Key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := s.RecordOutsideMembership(ctx, leave); err != nil {
			t.Fatal(err)
		}
		if outside, err := s.OutsideMembership(ctx, roomID, bob); err != nil || outside == nil || outside.EventID() != leave.EventID() {
			t.Fatalf("outside membership after the rejection: %v, %v", outside, err)
		}
		if list, _ := storage.UserMemberships(ctx, db, bob, "invite"); len(list) != 0 {
			t.Fatalf("bob is still invited: %+v", list)
		}
		roomNID, err := s.RoomNID(ctx, roomID)
		if err != nil {
			t.Fatal(err)
		}
		events, _, err := s.Timeline(ctx, roomNID, before, s.Stream().Current(), 10)
		if err != nil || len(events) != 2 {
			t.Fatalf("the room's timeline here holds %d events (%v), want the invite and the leave", len(events), err)
		}
	})
}

// TestInviteToRoomWeAreIn: when a local user is joined, an invite through the invite
// endpoint is a room event like any other.
func TestInviteToRoomWeAreIn(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		s := newTestServer(t, db)
		remote := newRemote("remote.example")
		alice, rita, bob := "@alice:test.example", "@rita:remote.example", "@bob:test.example"
		roomID := createTestRoom(t, s, "10", alice)
		state, prev := head(t, s, roomID)
		join := remote.event(t, s, roomID, state, prev, rita, "m.room.member", ptr(rita), map[string]string{"membership": "join"})
		if _, err := s.ReceiveEvent(ctx, join, remote.keys(s)); err != nil {
			t.Fatal(err)
		}
		state, prev = head(t, s, roomID)
		invite := remote.event(t, s, roomID, state, prev, rita, "m.room.member", ptr(bob), map[string]string{"membership": "invite"})
		stored, err := s.ReceiveInvite(ctx, invite, remote.keys(s))
		if err != nil || stored.Status != storage.EventAccepted {
			t.Fatalf("invite: %v, %v", stored, err)
		}
		if m, _, _ := s.Membership(ctx, roomID, bob); m != "invite" {
			t.Fatalf("bob is %q", m)
		}
		if outside, _ := s.OutsideMembership(ctx, roomID, bob); outside != nil {
			t.Fatal("an invite in the room's DAG is not outside the room")
		}
	})
}
