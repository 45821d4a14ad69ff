package integration

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"maunium.net/go/mautrix"
	"maunium.net/go/mautrix/event"
	"maunium.net/go/mautrix/id"

	"github.com/scrambledeggs/eggs/federation"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/testserver"
	"github.com/scrambledeggs/eggs/tlsutil"
)

// eventually polls cond until it holds, failing the test after a generous bound.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// membershipSeen is user's membership in room as cli's server sees it ("" if unknown).
func membershipSeen(cli *mautrix.Client, roomID id.RoomID, user id.UserID) string {
	var content struct {
		Membership string `json:"membership"`
	}
	if err := cli.StateEvent(context.Background(), roomID, event.StateMember, user.String(), &content); err != nil {
		return ""
	}
	return content.Membership
}

// stateSeen reads a state event's content as cli's server sees it (nil if absent).
func stateSeen(cli *mautrix.Client, roomID id.RoomID, evType event.Type, stateKey string) map[string]any {
	var content map[string]any
	if err := cli.StateEvent(context.Background(), roomID, evType, stateKey, &content); err != nil {
		return nil
	}
	return content
}

// hasBody reports whether cli's server has a message with body in the room's recent history.
func hasBody(t *testing.T, cli *mautrix.Client, roomID id.RoomID, body string) bool {
	t.Helper()
	resp, err := cli.Messages(context.Background(), roomID, "", "", mautrix.DirectionBackward, nil, 50)
	if err != nil {
		return false
	}
	for _, e := range resp.Chunk {
		if e.Type == event.EventMessage && e.Content.Raw["body"] == body {
			return true
		}
	}
	return false
}

// TestFederatedModeration: moderation across three servers. Alice on hs1 administers a
// public room that bob (hs2) and carol (hs3) join.
//   - Power levels: bob may not rename the room until alice makes him a moderator on hs1;
//     then his rename on hs2 is accepted everywhere, and after alice demotes him again it
//     is refused.
//   - Redaction: alice redacts carol's message; its content disappears on all three servers.
//   - Kick and rejoin: alice kicks carol; every server sees it; carol joins again.
//   - Leave and rejoin: bob leaves and joins again; his messages flow again.
//   - Ban: alice bans carol; carol can neither write (hs3 refuses: the ban is in its
//     state) nor rejoin, and loses access to what is said afterwards; bob on hs2 sees
//     the ban.
func TestFederatedModeration(t *testing.T) {
	testserver.EachEngine(t, func(t *testing.T, engine storage.Engine) {
		ctx := context.Background()
		ca, hs := federatedServers(t, engine, 3)
		hs1, hs2, hs3 := hs[0], hs[1], hs[2]
		alice, bob, carol := hs1.Register(t, "alice"), hs2.Register(t, "bob"), hs3.Register(t, "carol")

		room := createRoom(t, alice, &mautrix.ReqCreateRoom{Preset: "public_chat", Name: "Moderated"})
		joinVia(t, room.RoomID, hs1, bob, carol)
		for _, c := range []*mautrix.Client{alice, bob, carol} {
			for _, u := range []id.UserID{bob.UserID, carol.UserID} {
				eventually(t, c.UserID.String()+" sees "+u.String()+" joined", func() bool {
					return membershipSeen(c, room.RoomID, u) == "join"
				})
			}
		}

		// Power levels set on hs1 hold on hs2.
		rename := func(name string) error {
			_, err := bob.SendStateEvent(ctx, room.RoomID, event.StateRoomName, "", map[string]any{"name": name})
			return err
		}
		if err := rename("bob's room"); !testserver.IsMatrixError(err, "M_FORBIDDEN") {
			t.Fatalf("bob renames the room without power: %v", err)
		}
		setLevel := func(level int) {
			t.Helper()
			pl := stateSeen(alice, room.RoomID, event.StatePowerLevels, "")
			users, _ := pl["users"].(map[string]any)
			if users == nil {
				users = map[string]any{}
			}
			users[bob.UserID.String()] = level
			pl["users"] = users
			if _, err := alice.SendStateEvent(ctx, room.RoomID, event.StatePowerLevels, "", pl); err != nil {
				t.Fatalf("alice sets bob's level to %d: %v", level, err)
			}
			// Every server must have the new levels before bob acts on them: a server still
			// without them would rightly soft-fail his next event against its current state.
			for _, c := range []*mautrix.Client{bob, carol} {
				eventually(t, c.UserID.String()+"'s server applies bob's level", func() bool {
					pl := stateSeen(c, room.RoomID, event.StatePowerLevels, "")
					users, _ := pl["users"].(map[string]any)
					got, _ := users[bob.UserID.String()].(float64)
					return int(got) == level
				})
			}
		}
		setLevel(50)
		if err := rename("Moderated by bob"); err != nil {
			t.Fatalf("bob renames the room as a moderator: %v", err)
		}
		for _, c := range []*mautrix.Client{alice, carol} {
			eventually(t, c.UserID.String()+" sees bob's rename", func() bool {
				return stateSeen(c, room.RoomID, event.StateRoomName, "")["name"] == "Moderated by bob"
			})
		}
		setLevel(0)
		if err := rename("bob again"); !testserver.IsMatrixError(err, "M_FORBIDDEN") {
			t.Fatalf("bob renames the room after his demotion: %v", err)
		}

		// Redaction of a remote user's message by the room admin.
		sent, err := carol.SendText(ctx, room.RoomID, "something regrettable")
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []*mautrix.Client{alice, bob} {
			eventually(t, c.UserID.String()+" gets carol's message", func() bool {
				e, err := c.GetEvent(ctx, room.RoomID, sent.EventID)
				return err == nil && e.Content.Raw["body"] == "something regrettable"
			})
		}
		if _, err := alice.RedactEvent(ctx, room.RoomID, sent.EventID, mautrix.ReqRedact{Reason: "off topic"}); err != nil {
			t.Fatalf("alice redacts carol's message: %v", err)
		}
		for _, c := range []*mautrix.Client{alice, bob, carol} {
			eventually(t, c.UserID.String()+" sees the message redacted", func() bool {
				e, err := c.GetEvent(ctx, room.RoomID, sent.EventID)
				return err == nil && len(e.Content.Raw) == 0 && e.Unsigned.RedactedBecause != nil
			})
		}

		// Kick, then rejoin across servers.
		if _, err := alice.KickUser(ctx, room.RoomID, &mautrix.ReqKickUser{UserID: carol.UserID, Reason: "cool down"}); err != nil {
			t.Fatalf("alice kicks carol: %v", err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			eventually(t, c.UserID.String()+" sees carol kicked", func() bool {
				return membershipSeen(c, room.RoomID, carol.UserID) == "leave"
			})
		}
		if _, err := carol.SendText(ctx, room.RoomID, "still here?"); err == nil {
			t.Fatal("carol wrote after being kicked")
		}
		if _, err := carol.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.ServerName}}); err != nil {
			t.Fatalf("carol rejoins after the kick: %v", err)
		}
		for _, c := range []*mautrix.Client{alice, bob} {
			eventually(t, c.UserID.String()+" sees carol back", func() bool {
				return membershipSeen(c, room.RoomID, carol.UserID) == "join"
			})
		}

		// Leave and rejoin.
		if _, err := bob.LeaveRoom(ctx, room.RoomID); err != nil {
			t.Fatalf("bob leaves: %v", err)
		}
		eventually(t, "alice sees bob leave", func() bool {
			return membershipSeen(alice, room.RoomID, bob.UserID) == "leave"
		})
		if _, err := bob.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.ServerName}}); err != nil {
			t.Fatalf("bob rejoins: %v", err)
		}
		eventually(t, "carol sees bob back", func() bool {
			return membershipSeen(carol, room.RoomID, bob.UserID) == "join"
		})
		if _, err := bob.SendText(ctx, room.RoomID, "back again"); err != nil {
			t.Fatalf("bob writes after rejoining: %v", err)
		}
		for _, c := range []*mautrix.Client{alice, carol} {
			eventually(t, c.UserID.String()+" gets bob's message after his rejoin", func() bool {
				return hasBody(t, c, room.RoomID, "back again")
			})
		}

		// Ban of a remote user.
		carolJoin := ""
		if members, err := alice.Members(ctx, room.RoomID); err == nil {
			for _, e := range members.Chunk {
				if e.GetStateKey() == carol.UserID.String() {
					carolJoin = e.ID.String()
				}
			}
		}
		if carolJoin == "" {
			t.Fatal("no member event of carol on hs1")
		}
		if _, err := alice.BanUser(ctx, room.RoomID, &mautrix.ReqBanUser{UserID: carol.UserID, Reason: "enough"}); err != nil {
			t.Fatalf("alice bans carol: %v", err)
		}
		for _, c := range []*mautrix.Client{bob, carol} {
			eventually(t, c.UserID.String()+" sees carol banned", func() bool {
				return membershipSeen(c, room.RoomID, carol.UserID) == "ban"
			})
		}
		if _, err := carol.SendText(ctx, room.RoomID, "let me speak"); err == nil {
			t.Fatal("carol wrote after being banned")
		}
		if _, err := carol.JoinRoom(ctx, room.RoomID.String(), &mautrix.ReqJoinRoom{Via: []string{hs1.ServerName}}); err == nil {
			t.Fatal("carol rejoined after being banned")
		}
		if _, err := alice.SendText(ctx, room.RoomID, "after the ban"); err != nil {
			t.Fatal(err)
		}
		eventually(t, "bob gets the message after the ban", func() bool {
			return hasBody(t, bob, room.RoomID, "after the ban")
		})
		// hs3 sends messages of carol all the same: one built on the room as hs3 has it
		// (the ban among its auth events), one that cites her join from before the ban.
		// hs1 and hs2 reject both.
		forgedBan := bannedMessage(t, hs3, room.RoomID.String(), carol.UserID.String(), "", "banned but talking")
		forgedStale := bannedMessage(t, hs3, room.RoomID.String(), carol.UserID.String(), carolJoin, "pretending not to be banned")
		for _, target := range []*testserver.Server{hs1, hs2} {
			results := sendAs(t, ca, hs3, target, "after-ban", forgedBan, forgedStale)
			for _, ev := range []*spec.Event{forgedBan, forgedStale} {
				if results[ev.EventID()] == "" {
					t.Errorf("%s accepted carol's message %s after her ban", target.ServerName, ev.EventID())
				}
			}
		}
		for _, c := range []*mautrix.Client{alice, bob} {
			for _, body := range []string{"banned but talking", "pretending not to be banned"} {
				if hasBody(t, c, room.RoomID, body) {
					t.Fatalf("%s reads %q from banned carol", c.UserID, body)
				}
			}
		}

		// hs3 has no server left in the room: nothing reaches it, and carol may read
		// nothing past her ban there.
		time.Sleep(200 * time.Millisecond)
		if hasBody(t, carol, room.RoomID, "after the ban") {
			t.Fatal("carol reads what was said after her ban")
		}
		if membershipSeen(alice, room.RoomID, carol.UserID) != "ban" {
			t.Fatal("hs1 lost carol's ban")
		}
	})
}

// bannedMessage is a message of sender built and signed by srv on its view of the room,
// delivered nowhere. With memberEventID set, it cites that member event of the sender in
// place of the one in srv's current state.
func bannedMessage(t *testing.T, srv *testserver.Server, roomID, sender, memberEventID, body string) *spec.Event {
	t.Helper()
	ctx := context.Background()
	identity := srv.Homeserver().Identity()
	roomServer := srv.Homeserver().Rooms()
	content, _ := json.Marshal(map[string]string{"msgtype": "m.text", "body": body})
	template, rv, err := roomServer.Template(ctx, roomID, sender, "m.room.message", nil, content)
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
	if memberEventID != "" {
		current, err := roomServer.CurrentStateEvent(ctx, roomID, "m.room.member", sender)
		if err != nil || current == nil {
			t.Fatalf("no member event of %s on %s: %v", sender, srv.ServerName, err)
		}
		for i, id := range f.AuthEvents {
			if id == current.EventID() {
				f.AuthEvents[i] = memberEventID
			}
		}
	}
	proto := spec.ProtoEvent{Type: "m.room.message", Sender: sender, RoomID: roomID, Content: content,
		PrevEvents: f.PrevEvents, AuthEvents: f.AuthEvents, Depth: f.Depth, OriginServerTS: time.Now().UnixMilli()}
	ev, err := proto.Build(rv, identity.ServerName, identity.KeyID, identity.Key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

// sendAs delivers events to target in a transaction signed by from's identity and returns
// the per-PDU errors by event ID.
func sendAs(t *testing.T, ca *tlsutil.TestCA, from, target *testserver.Server, txnID string, events ...*spec.Event) map[string]string {
	t.Helper()
	identity := from.Homeserver().Identity()
	client, err := federation.NewClient(federation.ClientConfig{Identity: rooms.Identity{
		ServerName: identity.ServerName, KeyID: identity.KeyID, Key: identity.Key}, RootCAs: ca.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	pdus := make([]json.RawMessage, 0, len(events))
	for _, ev := range events {
		pdus = append(pdus, ev.JSON())
	}
	txn := map[string]any{"origin": identity.ServerName, "origin_server_ts": time.Now().UnixMilli(), "pdus": pdus}
	var resp struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	if err := client.DoJSON(context.Background(), federation.Request{Method: http.MethodPut, Destination: target.ServerName,
		URI: "/_matrix/federation/v1/send/" + txnID, Body: txn}, &resp); err != nil {
		t.Fatalf("send to %s: %v", target.ServerName, err)
	}
	out := map[string]string{}
	for id, r := range resp.PDUs {
		out[id] = r.Error
	}
	return out
}
