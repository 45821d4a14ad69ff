package integration

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"

	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
)

// TestHostilePeer: a server in a room turns hostile and sends, in one signed transaction, a
// message with a forged signature, one whose content was changed after signing, one from a
// user who never joined, and one honest message. The receiving server drops the forgery,
// keeps the tampered message only in redacted form, rejects the intruder's, accepts the
// honest one — and the conversation goes on undisturbed.
func TestHostilePeer(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		ca, hs := federatedServers(t, engine, 2)
		hs1, hs2 := hs[0], hs[1]
		alice, bob := hs1.Register(t, "alice"), hs2.Register(t, "bob")
		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat"})
		joinVia(t, room.RoomID, hs1, bob)
		roomID := room.RoomID.String()

		// hs2's own identity, in a hostile hand.
		peer := hs2.Homeserver().Identity()
		peerRooms := hs2.Homeserver().Rooms()
		build := func(sender, body string, key ed25519.PrivateKey) *spec.Event {
			t.Helper()
			content := json.RawMessage(`{"msgtype":"m.text","body":"` + body + `"}`)
			template, rv, err := peerRooms.Template(ctx, roomID, sender, "m.room.message", nil, content)
			if err != nil {
				t.Fatal(err)
			}
			raw, _ := json.Marshal(template)
			var f struct {
				PrevEvents []string `json:"prev_events"`
				AuthEvents []string `json:"auth_events"`
				Depth      int64    `json:"depth"`
			}
			_ = json.Unmarshal(raw, &f)
			proto := spec.ProtoEvent{Type: "m.room.message", Sender: sender, RoomID: roomID, Content: content,
				PrevEvents: f.PrevEvents, AuthEvents: f.AuthEvents, Depth: f.Depth, OriginServerTS: time.Now().UnixMilli()}
			ev, err := proto.Build(rv, peer.ServerName, peer.KeyID, key)
			if err != nil {
				t.Fatal(err)
			}
			return ev
		}
		bobID := bob.UserID.String()
		_, wrongKey, _ := ed25519.GenerateKey(nil)
		forged := build(bobID, "forged", wrongKey)
		honest := build(bobID, "honest", peer.Key)
		original := build(bobID, "original", peer.Key)
		intruder := build("@mallory:"+hs2.ServerName, "let me in", peer.Key)

		var fields map[string]json.RawMessage
		_ = json.Unmarshal(original.JSON(), &fields)
		fields["content"] = json.RawMessage(`{"msgtype":"m.text","body":"tampered"}`)
		tamperedJSON, _ := json.Marshal(fields)

		client, err := federation.NewClient(federation.ClientConfig{Identity: rooms.Identity{
			ServerName: peer.ServerName, KeyID: peer.KeyID, Key: peer.Key}, RootCAs: ca.Pool()})
		if err != nil {
			t.Fatal(err)
		}
		txn := map[string]any{"origin": peer.ServerName, "origin_server_ts": time.Now().UnixMilli(),
			"pdus": []json.RawMessage{forged.JSON(), honest.JSON(), tamperedJSON, intruder.JSON()}}
		var resp struct {
			PDUs map[string]struct {
				Error string `json:"error"`
			} `json:"pdus"`
		}
		if err := client.DoJSON(ctx, federation.Request{Method: http.MethodPut, Destination: hs1.ServerName,
			URI: "/_matrix/federation/v1/send/hostile1", Body: txn}, &resp); err != nil {
			t.Fatalf("send the hostile transaction: %v", err)
		}
		if resp.PDUs[forged.EventID()].Error == "" || resp.PDUs[intruder.EventID()].Error == "" {
			t.Fatalf("forgery or intruder accepted: %+v", resp.PDUs)
		}
		if resp.PDUs[honest.EventID()].Error != "" || resp.PDUs[original.EventID()].Error != "" {
			t.Fatalf("honest or tampered (to be redacted) message refused: %+v", resp.PDUs)
		}

		// What alice sees: the honest message, the tampered one without content, nothing
		// of the forgery or the intruder.
		messages, err := alice.Messages(ctx, room.RoomID, "", "", mautrix.DirectionBackward, nil, 100)
		if err != nil {
			t.Fatal(err)
		}
		byID := map[string]map[string]any{}
		for _, e := range messages.Chunk {
			byID[e.ID.String()] = e.Content.Raw
		}
		if byID[honest.EventID()]["body"] != "honest" {
			t.Fatalf("honest message missing: %v", byID[honest.EventID()])
		}
		if content, ok := byID[original.EventID()]; !ok || len(content) != 0 {
			t.Fatalf("tampered message: present %v, content %v; want present and redacted", ok, content)
		}
		if _, ok := byID[forged.EventID()]; ok {
			t.Fatal("the forged message is in the timeline")
		}
		if _, ok := byID[intruder.EventID()]; ok {
			t.Fatal("the intruder's message is in the timeline")
		}

		// Undisturbed: alice writes, bob reads.
		bobSince := initialSync(t, bob)
		if _, err := alice.SendText(ctx, room.RoomID, "still here"); err != nil {
			t.Fatal(err)
		}
		syncUntil(t, bob, bobSince, func(resp *mautrix.RespSync) bool {
			for _, body := range timelineBodies(resp, room.RoomID) {
				if body == "still here" {
					return true
				}
			}
			return false
		})
	})
}
