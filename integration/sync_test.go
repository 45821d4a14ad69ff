package integration

import (
	"context"
	"errors"
	"net/http"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/testserver"
)

// hasStateEvent reports whether events hold a state event of type evType and state key.
func hasStateEvent(events []*event.Event, evType event.Type, stateKey string) bool {
	for _, e := range events {
		if e.Type == evType && e.GetStateKey() == stateKey {
			return true
		}
	}
	return false
}

// expectSyncError checks that a sync request fails with HTTP 400 and errcode.
func expectSyncError(t *testing.T, cli *mautrix.Client, req mautrix.ReqSync, errcode string) {
	t.Helper()
	_, err := cli.FullSyncRequest(context.Background(), req)
	var httpErr mautrix.HTTPError
	if !errors.As(err, &httpErr) || httpErr.Response == nil || httpErr.Response.StatusCode != http.StatusBadRequest ||
		!testserver.IsMatrixError(err, errcode) {
		t.Fatalf("sync %+v: %v, want 400 %s", req, err, errcode)
	}
}

// TestSyncFiltersThroughClient drives the sync filter fields (event_fields, event_format,
// include_leave), full_state, left and forgotten rooms, invites and bad parameters through a
// real client.
func TestSyncFiltersThroughClient(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Filters", Preset: "public_chat"})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		roomID := created.RoomID
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("join: %v", err)
		}
		if _, err := bob.SendText(ctx, roomID, "hi"); err != nil {
			t.Fatalf("send: %v", err)
		}

		// event_fields: only the named fields come back.
		fields, err := bob.CreateFilter(ctx, &mautrix.Filter{EventFields: []string{"type", "content.body"},
			Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 5}}})
		if err != nil {
			t.Fatalf("create filter: %v", err)
		}
		resp, err := bob.SyncRequest(ctx, 0, "", fields.FilterID, false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("sync with event_fields: %v", err)
		}
		events := resp.Rooms.Join[roomID].Timeline.Events
		last := events[len(events)-1]
		if last.Type != event.EventMessage || last.Content.Raw["body"] != "hi" || last.ID != "" || last.Sender != "" || last.Timestamp != 0 {
			t.Fatalf("event_fields [type, content.body] gave %+v", last)
		}

		// event_format federation: the PDU, with its event ID and without client additions.
		federation, err := bob.CreateFilter(ctx, &mautrix.Filter{EventFormat: mautrix.EventFormatFederation,
			Room: &mautrix.RoomFilter{Timeline: &mautrix.FilterPart{Limit: 1}}})
		if err != nil {
			t.Fatalf("create filter: %v", err)
		}
		if resp, err = bob.SyncRequest(ctx, 0, "", federation.FilterID, false, event.PresenceOnline); err != nil {
			t.Fatalf("sync with event_format federation: %v", err)
		}
		pdu := resp.Rooms.Join[roomID].Timeline.Events[0]
		if pdu.ID == "" || pdu.Content.Raw["body"] != "hi" || pdu.Unsigned.TransactionID != "" {
			t.Fatalf("federation format event %+v", pdu)
		}

		// Bad parameters.
		expectSyncError(t, bob, mautrix.ReqSync{FilterID: "424242"}, "M_INVALID_PARAM")
		expectSyncError(t, bob, mautrix.ReqSync{Since: "abc"}, "M_INVALID_PARAM")
		expectSyncError(t, bob, mautrix.ReqSync{Since: "s-5"}, "M_INVALID_PARAM")

		// full_state with since: all state, timeline only since then.
		aliceSince := initialSync(t, alice)
		full, err := alice.SyncRequest(ctx, 30000, aliceSince, "", true, event.PresenceOnline)
		if err != nil {
			t.Fatalf("full_state sync: %v", err)
		}
		joined, ok := full.Rooms.Join[roomID]
		if !ok || !hasStateEvent(joined.State.Events, event.StateCreate, "") || len(joined.Timeline.Events) != 0 ||
			joined.UnreadNotifications == nil {
			t.Fatalf("full_state room %+v", joined)
		}

		// Leaving: the next incremental sync moves the room to leave, ending with the leave.
		bobSince := initialSync(t, bob)
		if _, err := bob.LeaveRoom(ctx, roomID); err != nil {
			t.Fatalf("leave: %v", err)
		}
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			left, ok := resp.Rooms.Leave[roomID]
			if !ok {
				return false
			}
			end := left.Timeline.Events[len(left.Timeline.Events)-1]
			if end.Type != event.StateMember || end.GetStateKey() != bob.UserID.String() {
				t.Fatalf("left room timeline ends with %s %s", end.Type.Type, end.GetStateKey())
			}
			return true
		})

		// include_leave in an initial sync, until the room is forgotten.
		includeLeave, err := bob.CreateFilter(ctx, &mautrix.Filter{Room: &mautrix.RoomFilter{IncludeLeave: true}})
		if err != nil {
			t.Fatalf("create filter: %v", err)
		}
		if resp, err = bob.SyncRequest(ctx, 0, "", includeLeave.FilterID, false, event.PresenceOnline); err != nil {
			t.Fatalf("include_leave sync: %v", err)
		}
		if _, ok := resp.Rooms.Leave[roomID]; !ok {
			t.Fatalf("include_leave: left room missing")
		}
		if _, err := bob.ForgetRoom(ctx, roomID); err != nil {
			t.Fatalf("forget: %v", err)
		}
		if resp, err = bob.SyncRequest(ctx, 0, "", includeLeave.FilterID, false, event.PresenceOnline); err != nil {
			t.Fatalf("include_leave sync: %v", err)
		}
		if _, ok := resp.Rooms.Leave[roomID]; ok {
			t.Fatalf("forgotten room still synced")
		}

		// An invite shows the inviter; a rescinded invite moves to leave.
		private, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Name: "Private", Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			invite, ok := resp.Rooms.Invite[private.RoomID]
			if ok && (!hasStateEvent(invite.State.Events, event.StateMember, alice.UserID.String()) ||
				!hasStateEvent(invite.State.Events, event.StateCreate, "")) {
				t.Fatalf("invite_state without the inviter's member or create event")
			}
			return ok
		})
		if _, err := alice.KickUser(ctx, private.RoomID, &mautrix.ReqKickUser{UserID: bob.UserID, Reason: "oops"}); err != nil {
			t.Fatalf("rescind invite: %v", err)
		}
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			if _, ok := resp.Rooms.Invite[private.RoomID]; ok {
				t.Fatalf("rescinded invite listed again")
			}
			_, ok := resp.Rooms.Leave[private.RoomID]
			return ok
		})
	})
}
