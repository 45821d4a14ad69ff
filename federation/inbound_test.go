package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// peerServer signs events as another homeserver.
type peerServer struct {
	name string
	key  ed25519.PrivateKey
	ts   int64
}

func (p *peerServer) build(t *testing.T, rs *rooms.Server, roomID, sender, evType string, stateKey *string, content string) *spec.Event {
	t.Helper()
	ctx := context.Background()
	state, rv, err := rs.CurrentState(ctx, roomID)
	if err != nil {
		t.Fatal(err)
	}
	var prev *rooms.Event
	for _, e := range state {
		if prev == nil || e.StreamPos > prev.StreamPos {
			prev = e
		}
	}
	nid, _ := rs.RoomNID(ctx, roomID)
	if events, _, err := rs.Timeline(ctx, nid, 0, rs.Stream().Current(), 1); err == nil && len(events) == 1 {
		prev = events[0]
	}
	p.ts++
	proto := spec.ProtoEvent{Type: evType, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: json.RawMessage(content),
		PrevEvents: []string{prev.EventID()}, AuthEvents: []string{}, Depth: prev.Depth() + 1, OriginServerTS: p.ts}
	for _, tuple := range spec.AuthEventSelection(rv, evType, stateKey, sender, proto.Content) {
		if e, ok := state[tuple]; ok {
			proto.AuthEvents = append(proto.AuthEvents, e.EventID())
		}
	}
	ev, err := proto.Build(rv, p.name, "ed25519:p", p.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// TestInboundTransaction sends a transaction with a remote join and message, checks the
// per-PDU results, that a repeat of the transaction is answered the same without new
// events, and that a forged PDU gets an error while the others are accepted.
func TestInboundTransaction(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		hp := newHereAndPeer(t, db)
		log, rs, peer, keys := hp.log, hp.rs, hp.peer, hp.keys
		rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
		alice, rita := "@alice:here.example", "@rita:peer.example"
		empty := ""
		roomID, _, err := rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
			{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
			{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"public"}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		in := NewInbound(db, rs, keys, time.Now, log)
		var typing []string
		in.HandleEDU("m.typing", func(_ context.Context, origin string, content json.RawMessage) error {
			typing = append(typing, origin+" "+string(content))
			return nil
		})

		join := peer.build(t, rs, roomID, rita, "m.room.member", &rita, `{"membership":"join"}`)
		txn := func(pdus ...*spec.Event) []byte {
			body := transactionBody{Origin: "peer.example", OriginServerTS: peer.ts, EDUs: []json.RawMessage{
				json.RawMessage(`{"edu_type":"m.typing","content":{"room_id":"` + roomID + `","user_id":"` + rita + `","typing":true}}`),
			}}
			for _, p := range pdus {
				body.PDUs = append(body.PDUs, p.JSON())
			}
			raw, _ := json.Marshal(body)
			return raw
		}
		resp, err := in.Process(ctx, "peer.example", "t1", txn(join))
		if err != nil {
			t.Fatal(err)
		}
		if string(resp) != `{"pdus":{"`+join.EventID()+`":{}}}` {
			t.Fatalf("response %s", resp)
		}
		if m, _, _ := rs.Membership(ctx, roomID, rita); m != "join" {
			t.Fatalf("rita's membership %q after her join arrived", m)
		}
		if len(typing) != 1 || !strings.HasPrefix(typing[0], "peer.example ") {
			t.Fatalf("typing EDUs handled: %v", typing)
		}

		// The same transaction again: the same answer, nothing processed twice.
		again, err := in.Process(ctx, "peer.example", "t1", txn(join))
		if err != nil || string(again) != string(resp) || len(typing) != 1 {
			t.Fatalf("repeated transaction: %s, %v (typing handled %d times)", again, err, len(typing))
		}

		message := peer.build(t, rs, roomID, rita, "m.room.message", nil, `{"body":"hello"}`)
		forger := &peerServer{name: "peer.example", ts: peer.ts + 10}
		_, forger.key, _ = ed25519.GenerateKey(nil)
		forged := forger.build(t, rs, roomID, rita, "m.room.message", nil, `{"body":"forged"}`)
		resp, err = in.Process(ctx, "peer.example", "t2", txn(message, forged))
		if err != nil {
			t.Fatal(err)
		}
		var results struct {
			PDUs map[string]pduResult `json:"pdus"`
		}
		if err := json.Unmarshal(resp, &results); err != nil {
			t.Fatal(err)
		}
		if results.PDUs[message.EventID()].Error != "" || results.PDUs[forged.EventID()].Error == "" {
			t.Fatalf("results %s: want the message accepted and the forgery refused", resp)
		}

		// The transaction's origin must be the server that signed the request.
		if _, err := in.Process(ctx, "mallory.example", "t3", txn(message)); err == nil {
			t.Fatal("a transaction claiming another origin was processed")
		}
		tooMany := transactionBody{Origin: "peer.example", PDUs: make([]json.RawMessage, 51)}
		for i := range tooMany.PDUs {
			tooMany.PDUs[i] = message.JSON()
		}
		raw, _ := json.Marshal(tooMany)
		if _, err := in.Process(ctx, "peer.example", "t4", raw); err == nil {
			t.Fatal("a transaction of 51 PDUs was processed")
		}
	})
}
