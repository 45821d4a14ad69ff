package integration

import (
	"context"
	"testing"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"

	"github.com/scrambledeggs/eggs/testserver"
)

// TestTransactionIDsSurviveRestart: a client that retries a send with the same transaction
// ID after the server restarted gets the original event back, not a second event; another
// device of the same user with the same transaction ID sends a new event (transaction IDs
// are scoped to the device, client-server API "Transaction identifiers").
func TestTransactionIDsSurviveRestart(t *testing.T) {
	testserver.Each(t, func(t *testing.T, srv *testserver.Server) {
		ctx := context.Background()
		alice := srv.Register(t, "alice")
		room, err := alice.CreateRoom(ctx, &mautrix.ReqCreateRoom{Preset: "private_chat"})
		if err != nil {
			t.Fatal(err)
		}
		content := map[string]string{"msgtype": "m.text", "body": "only once"}
		first, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn-1"})
		if err != nil {
			t.Fatal(err)
		}
		srv.Restart()
		retry, err := alice.SendMessageEvent(ctx, room.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn-1"})
		if err != nil || retry.EventID != first.EventID {
			t.Fatalf("retry after restart gave %v, %v; want %s", retry, err, first.EventID)
		}
		other := srv.Login(t, "alice")
		fresh, err := other.SendMessageEvent(ctx, room.RoomID, event.EventMessage, content, mautrix.ReqSendEvent{TransactionID: "txn-1"})
		if err != nil || fresh.EventID == first.EventID {
			t.Fatalf("another device's send with the same transaction ID gave %v, %v; want a new event", fresh, err)
		}
		messages, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		count := 0
		for _, e := range messages.Chunk {
			if e.Type == event.EventMessage {
				count++
			}
		}
		if count != 2 {
			t.Fatalf("%d messages in the room, want 2", count)
		}
	})
}
