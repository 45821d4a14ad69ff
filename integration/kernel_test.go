package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/testserver"
)

// syncUntil long-polls /sync from since until done says the accumulated responses hold what
// the test waits for. It fails the test after a generous bound (a hang is a failure, not a
// measurement). It returns the next since token.
func syncUntil(t *testing.T, cli *mautrix.Client, since string, done func(*mautrix.RespSync) bool) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		resp, err := cli.SyncRequest(ctx, 5000, since, "", false, event.PresenceOnline)
		if err != nil {
			t.Fatalf("%s: sync since %q: %v", cli.UserID, since, err)
		}
		since = resp.NextBatch
		if done(resp) {
			return since
		}
	}
}

// timelineBodies lists the message bodies of a room's timeline in a sync response.
func timelineBodies(resp *mautrix.RespSync, roomID id.RoomID) []string {
	var bodies []string
	if room, ok := resp.Rooms.Join[roomID]; ok {
		for _, e := range room.Timeline.Events {
			if e.Type == event.EventMessage {
				if body, ok := e.Content.Raw["body"].(string); ok {
					bodies = append(bodies, body)
				}
			}
		}
	}
	return bodies
}

// TestTwoUsersChat is the kernel's path end to end through a real client: register, log in,
// create a room, invite, join, send, receive through /sync, paginate back, redact, change
// profile, delete a device.
func TestTwoUsersChat(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")

		// Bob logs in again on a second device.
		bob2 := srv.Login(t, "bob")
		if bob2.DeviceID == bob.DeviceID {
			t.Fatalf("second login reused device %s", bob.DeviceID)
		}
		who, err := bob2.Whoami(ctx)
		if err != nil || who.UserID != bob.UserID || who.DeviceID != bob2.DeviceID {
			t.Fatalf("whoami = %+v, %v", who, err)
		}

		bobSince := initialSync(t, bob)

		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{
			Name: "Breakfast", Topic: "eggs", Preset: "private_chat", Invite: []id.UserID{bob.UserID},
		})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		roomID := created.RoomID

		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			_, invited := resp.Rooms.Invite[roomID]
			return invited
		})
		if _, err := bob.JoinRoomByID(ctx, roomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}

		sent, err := alice.SendText(ctx, roomID, "hello bob")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		var got []string
		bobSince = syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			got = append(got, timelineBodies(resp, roomID)...)
			return len(got) > 0
		})
		if got[0] != "hello bob" {
			t.Fatalf("bob received %q, want hello bob", got)
		}

		// A hundred messages, then page back through all of them.
		for i := 0; i < 100; i++ {
			if _, err := bob.SendText(ctx, roomID, fmt.Sprintf("message %d", i)); err != nil {
				t.Fatalf("send %d: %v", i, err)
			}
		}
		seen := map[id.EventID]bool{}
		var bodies []string
		from := ""
		for page := 0; page < 50; page++ {
			resp, err := alice.Messages(ctx, roomID, from, "", mautrix.DirectionBackward, nil, 30)
			if err != nil {
				t.Fatalf("messages: %v", err)
			}
			for _, e := range resp.Chunk {
				if seen[e.ID] {
					t.Fatalf("event %s returned twice while paginating", e.ID)
				}
				seen[e.ID] = true
				if e.Type == event.EventMessage {
					bodies = append(bodies, e.Content.Raw["body"].(string))
				}
			}
			if resp.End == "" {
				break
			}
			from = resp.End
		}
		if len(bodies) != 101 || bodies[0] != "message 99" || bodies[100] != "hello bob" {
			t.Fatalf("paginated %d messages (first %q, last %q), want 101 newest first", len(bodies), bodies[0], bodies[len(bodies)-1])
		}
		if !seen[sent.EventID] {
			t.Fatalf("alice's message missing from pagination")
		}

		// Redaction: the content is gone for everyone.
		if _, err := alice.RedactEvent(ctx, roomID, sent.EventID, mautrix.ReqRedact{Reason: "typo"}); err != nil {
			t.Fatalf("redact: %v", err)
		}
		redacted, err := bob.GetEvent(ctx, roomID, sent.EventID)
		if err != nil {
			t.Fatalf("get redacted event: %v", err)
		}
		if _, has := redacted.Content.Raw["body"]; has || redacted.Unsigned.RedactedBecause == nil {
			t.Fatalf("redacted event still has content %v / no redacted_because", redacted.Content.Raw)
		}

		// Profile change reaches the room as a member event.
		if err := alice.SetDisplayName(ctx, "Alice Eggs"); err != nil {
			t.Fatalf("set display name: %v", err)
		}
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			room, ok := resp.Rooms.Join[roomID]
			if !ok {
				return false
			}
			for _, e := range room.Timeline.Events {
				if e.Type == event.StateMember && e.GetStateKey() == alice.UserID.String() &&
					e.Content.Raw["displayname"] == "Alice Eggs" {
					return true
				}
			}
			return false
		})

		// Deleting a device needs the password (user-interactive auth) and ends its token.
		session := deviceUIASession(t, bob, bob2.DeviceID)
		err = bob.DeleteDevice(ctx, bob2.DeviceID, &mautrix.ReqDeleteDevice[any]{Auth: map[string]any{
			"type": "m.login.password", "session": session, "password": "correct horse bob",
			"identifier": map[string]string{"type": "m.id.user", "user": "bob"},
		}})
		if err != nil {
			t.Fatalf("delete device with password: %v", err)
		}
		if _, err := bob2.Whoami(ctx); !testserver.IsMatrixError(err, "M_UNKNOWN_TOKEN") {
			t.Fatalf("deleted device's token: %v, want M_UNKNOWN_TOKEN", err)
		}
	})
}

// deviceUIASession tries to delete a device without auth, expects the 401 of user-interactive
// auth offering m.login.password, and returns its session ID.
func deviceUIASession(t *testing.T, cli *mautrix.Client, deviceID id.DeviceID) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodDelete, cli.BuildClientURL("v3", "devices", deviceID), strings.NewReader("{}"))
	req.Header.Set("Authorization", "Bearer "+cli.AccessToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("delete device without auth: HTTP %d, want 401", resp.StatusCode)
	}
	var uia mautrix.RespUserInteractive
	if err := json.NewDecoder(resp.Body).Decode(&uia); err != nil || uia.Session == "" {
		t.Fatalf("401 body without a session (%v)", err)
	}
	if !uia.HasSingleStageFlow(mautrix.AuthTypePassword) {
		t.Fatalf("flows %+v do not offer m.login.password", uia.Flows)
	}
	return uia.Session
}
