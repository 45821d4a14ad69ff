package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/testserver"
)

// pushGateway is a fake push gateway: it hands every notification it gets to the test.
func pushGateway(t *testing.T) (url string, notifications <-chan map[string]any) {
	t.Helper()
	received := make(chan map[string]any, 100)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		raw, _ := io.ReadAll(r.Body)
		var body struct {
			Notification map[string]any `json:"notification"`
		}
		if r.URL.Path != "/_matrix/push/v1/notify" || json.Unmarshal(raw, &body) != nil {
			t.Errorf("gateway got %s %s", r.URL.Path, raw)
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		received <- body.Notification
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, `{"rejected":[]}`)
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/_matrix/push/v1/notify", received
}

// nextPush waits for the gateway's next notification.
func nextPush(t *testing.T, notifications <-chan map[string]any) map[string]any {
	t.Helper()
	select {
	case n := <-notifications:
		return n
	case <-time.After(20 * time.Second):
		t.Fatal("no notification reached the push gateway")
		return nil
	}
}

// TestPushNotifications: bob, with a mautrix client, sets a pusher; alice's message in
// their room reaches his push gateway, once, with the push gateway API's fields; after a
// restart of the server the next message is pushed and the earlier one is not again.
func TestPushNotifications(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		bob := srv.Register(t, "bob")
		gatewayURL, notifications := pushGateway(t)

		created, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat", Invite: []id.UserID{bob.UserID}})
		if err != nil {
			t.Fatalf("create room: %v", err)
		}
		if _, err := bob.JoinRoomByID(ctx, created.RoomID); err != nil {
			t.Fatalf("bob joins: %v", err)
		}
		kind := mautrix.PusherKindHTTP
		if err := bob.SetPusher(ctx, &mautrix.Pusher{
			Kind: &kind, AppID: "org.example.test", PushKey: "bob-pushkey", AppDisplayName: "Test",
			DeviceDisplayName: "bob's test device", Language: "en", Data: mautrix.PusherData{"url": gatewayURL},
		}); err != nil {
			t.Fatalf("set pusher: %v", err)
		}
		pushers, err := bob.GetPushers(ctx)
		if err != nil || len(pushers.Pushers) != 1 || pushers.Pushers[0].PushKey != "bob-pushkey" {
			t.Fatalf("pushers = %+v, %v", pushers, err)
		}

		sent, err := alice.SendText(ctx, created.RoomID, "ring ring")
		if err != nil {
			t.Fatalf("send: %v", err)
		}
		n := nextPush(t, notifications)
		devices, _ := n["devices"].([]any)
		if n["event_id"] != sent.EventID.String() || n["room_id"] != created.RoomID.String() || n["sender"] != alice.UserID.String() ||
			n["type"] != event.EventMessage.Type || len(devices) != 1 || devices[0].(map[string]any)["pushkey"] != "bob-pushkey" {
			t.Fatalf("notification = %v", n)
		}

		// The gateway has answered once nothing is left queued; then restart.
		db := srv.Homeserver().DB()
		deadline := time.Now().Add(20 * time.Second)
		for {
			var queued int
			if err := db.QueryRow(ctx, `SELECT COUNT(*) FROM push_queue`).Scan(&queued); err != nil {
				t.Fatal(err)
			}
			if queued == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("the notification stays queued")
			}
			time.Sleep(10 * time.Millisecond)
		}
		srv.Restart()
		again, err := alice.SendText(ctx, created.RoomID, "ring again")
		if err != nil {
			t.Fatalf("send after the restart: %v", err)
		}
		if n := nextPush(t, notifications); n["event_id"] != again.EventID.String() {
			t.Fatalf("after the restart the gateway got %v, want %s", n["event_id"], again.EventID)
		}
	})
}
