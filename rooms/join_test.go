package rooms

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// TestJoinOverFederation runs a join between two room servers as the federation API does
// it: the resident server makes a template, the joining server signs it, the resident
// server accepts it (send_join) and answers with the state and auth chain, from which the
// joining server stores the room. Messages then flow both ways.
func TestJoinOverFederation(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, version := range []string{"10", "12"} {
			for _, stream := range []bool{true, false} {
				name := "v" + version + "/state"
				if stream {
					name = "v" + version + "/stream"
				}
				t.Run(name, func(t *testing.T) { testJoinOverFederation(t, db, version, stream) })
			}
		}
	})
}

// testJoinOverFederation joins through JoinFromStream, from the send_join response body,
// or (stream false) through JoinFromState, from the parsed state and auth chain.
func testJoinOverFederation(t *testing.T, db *storage.DB, version string, stream bool) {
	ctx := context.Background()
	resident := newTestServer(t, db)
	joiningDB := storagetest.NewDB(t, db.Engine())
	_, key, _ := ed25519.GenerateKey(nil)
	joining := New(joiningDB, Identity{ServerName: "joining.example", KeyID: "ed25519:j", Key: key},
		streams.NewTracker(0), resident.now, resident.log)
	keys := func(server, keyID string, _ int64) (ed25519.PublicKey, error) {
		switch server {
		case resident.identity.ServerName:
			return resident.identity.Key.Public().(ed25519.PublicKey), nil
		case joining.identity.ServerName:
			return joining.identity.Key.Public().(ed25519.PublicKey), nil
		}
		return nil, fmt.Errorf("no key for %s", server)
	}
	alice, jo := "@alice:test.example", "@jo:joining.example"
	roomID := createTestRoom(t, resident, version, alice)
	if _, err := resident.Send(ctx, roomID, EventRequest{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"before jo"}`)}); err != nil {
		t.Fatal(err)
	}

	// make_join, signed by the joining server.
	content := json.RawMessage(`{"membership":"join"}`)
	template, rv, err := resident.Template(ctx, roomID, jo, "m.room.member", &jo, content)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(template)
	var fields struct {
		PrevEvents     []string `json:"prev_events"`
		AuthEvents     []string `json:"auth_events"`
		Depth          int64    `json:"depth"`
		OriginServerTS int64    `json:"origin_server_ts"`
	}
	_ = json.Unmarshal(raw, &fields)
	proto := spec.ProtoEvent{Type: "m.room.member", StateKey: &jo, Sender: jo, RoomID: roomID, Content: content,
		PrevEvents: fields.PrevEvents, AuthEvents: fields.AuthEvents, Depth: fields.Depth, OriginServerTS: fields.OriginServerTS}
	join, err := proto.Build(rv, joining.identity.ServerName, joining.identity.KeyID, joining.identity.Key)
	if err != nil {
		t.Fatal(err)
	}

	// send_join on the resident server: accept, then answer state and auth chain.
	accepted, err := resident.ReceiveEvent(ctx, join, keys)
	if err != nil || accepted.Status != storage.EventAccepted {
		t.Fatalf("send_join: %+v, %v", accepted, err)
	}
	stateEvents, err := resident.StateBefore(ctx, accepted)
	if err != nil {
		t.Fatal(err)
	}
	chainEvents, err := resident.AuthChain(ctx, append(stateEvents, accepted))
	if err != nil {
		t.Fatal(err)
	}
	toSpec := func(events []*Event) []*spec.Event {
		out := make([]*spec.Event, len(events))
		for i, e := range events {
			// What crosses the wire is the JSON: parse it again as the other side would.
			parsed, err := spec.ParseEvent(e.JSON(), rv)
			if err != nil {
				t.Fatal(err)
			}
			out[i] = parsed
		}
		return out
	}

	// The joining server stores the room.
	var ours *Event
	if stream {
		body, _ := json.Marshal(map[string]any{"origin": resident.identity.ServerName, "event": json.RawMessage(accepted.JSON()),
			"state": wireEvents(stateEvents), "auth_chain": wireEvents(chainEvents)})
		ours, err = joining.JoinFromStream(ctx, join, bytes.NewReader(body), keys)
	} else {
		ours, err = joining.JoinFromState(ctx, join, toSpec(stateEvents), toSpec(chainEvents), keys)
	}
	if err != nil || ours.Status != storage.EventAccepted {
		t.Fatalf("join: %+v, %v", ours, err)
	}
	assertNoJoinStage(t, joiningDB)
	for _, user := range []string{alice, jo} {
		if m, _, err := joining.Membership(ctx, roomID, user); err != nil || m != "join" {
			t.Fatalf("on the joining server, %s is %q (%v)", user, m, err)
		}
	}

	// Jo writes on the joining server; the resident server takes the message.
	sent, err := joining.Send(ctx, roomID, EventRequest{Sender: jo, Type: "m.room.message", Content: json.RawMessage(`{"body":"hi from jo"}`)})
	if err != nil {
		t.Fatalf("send on the joining server: %v", err)
	}
	got, err := resident.ReceiveEvent(ctx, sent[0].Event, keys)
	if err != nil || got.Status != storage.EventAccepted {
		t.Fatalf("resident server receiving jo's message: %+v, %v", got, err)
	}
	// And the other way: alice answers, the joining server takes it.
	reply, err := resident.Send(ctx, roomID, EventRequest{Sender: alice, Type: "m.room.message", Content: json.RawMessage(`{"body":"welcome"}`)})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := joining.ReceiveEvent(ctx, reply[0].Event, keys); err != nil || got.Status != storage.EventAccepted {
		t.Fatalf("joining server receiving alice's reply: %+v, %v", got, err)
	}
	// A fresh joining server reads the room back from its database.
	fresh := New(joiningDB, joining.identity, streams.NewTracker(0), resident.now, resident.log)
	state, _, err := fresh.CurrentState(ctx, roomID)
	if err != nil || len(state) != 5 {
		t.Fatalf("joining server's state after reload: %d events, %v", len(state), err)
	}
}

// assertNoJoinStage fails unless the join staging tables are empty.
func assertNoJoinStage(t *testing.T, db *storage.DB) {
	t.Helper()
	for _, table := range []string{"join_stages", "join_staged_events", "join_staged_auth"} {
		var n int
		if err := db.QueryRow(context.Background(), `SELECT COUNT(*) FROM `+table).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%s has %d rows after the join", table, n)
		}
	}
}
