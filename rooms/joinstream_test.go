package rooms

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// joinFixture is a room on a resident server and a joining server that has yet to join it.
type joinFixture struct {
	resident, joining *Server
	joiningDB         *storage.DB
	roomID            string
	rv                *spec.RoomVersion
	keys              spec.KeyLookup
	alice             string
}

func newJoinFixture(t *testing.T, db *storage.DB) *joinFixture {
	t.Helper()
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
	alice := "@alice:test.example"
	roomID := createTestRoom(t, resident, spec.DefaultRoomVersion, alice)
	rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
	return &joinFixture{resident: resident, joining: joining, joiningDB: joiningDB, roomID: roomID, rv: rv, keys: keys, alice: alice}
}

// sendJoin has the resident server accept a join of user (of the joining server) and
// returns the join and the state and auth chain that send_join answers with.
func (f *joinFixture) sendJoin(t *testing.T, user string) (*spec.Event, []json.RawMessage, []json.RawMessage) {
	t.Helper()
	ctx := context.Background()
	content := json.RawMessage(`{"membership":"join"}`)
	template, _, err := f.resident.Template(ctx, f.roomID, user, "m.room.member", &user, content)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := json.Marshal(template)
	var fields struct {
		PrevEvents []string `json:"prev_events"`
		AuthEvents []string `json:"auth_events"`
		Depth      int64    `json:"depth"`
	}
	_ = json.Unmarshal(raw, &fields)
	proto := spec.ProtoEvent{Type: "m.room.member", StateKey: &user, Sender: user, RoomID: f.roomID, Content: content,
		PrevEvents: fields.PrevEvents, AuthEvents: fields.AuthEvents, Depth: fields.Depth, OriginServerTS: 1_800_000_000_000}
	join, err := proto.Build(f.rv, f.joining.identity.ServerName, f.joining.identity.KeyID, f.joining.identity.Key)
	if err != nil {
		t.Fatal(err)
	}
	accepted, err := f.resident.ReceiveEvent(ctx, join, f.keys)
	if err != nil {
		t.Fatal(err)
	}
	state, err := f.resident.StateBefore(ctx, accepted)
	if err != nil {
		t.Fatal(err)
	}
	chain, err := f.resident.AuthChain(ctx, append(state, accepted))
	if err != nil {
		t.Fatal(err)
	}
	return join, wireEvents(state), wireEvents(chain)
}

// build makes an event of the room signed by the resident server's name with key, its auth
// events given.
func (f *joinFixture) build(t *testing.T, sender, evType string, stateKey *string, content string, key ed25519.PrivateKey, authEvents ...string) json.RawMessage {
	t.Helper()
	proto := spec.ProtoEvent{Type: evType, StateKey: stateKey, Sender: sender, RoomID: f.roomID, Content: json.RawMessage(content),
		PrevEvents: []string{f.stateID(t, "m.room.join_rules", "")}, AuthEvents: authEvents, Depth: 5, OriginServerTS: 1_700_000_000_500}
	ev, err := proto.Build(f.rv, f.resident.identity.ServerName, f.resident.identity.KeyID, key)
	if err != nil {
		t.Fatal(err)
	}
	return ev.JSON()
}

// stateID is the ID of a piece of the resident server's current state.
func (f *joinFixture) stateID(t *testing.T, evType, stateKey string) string {
	t.Helper()
	e, err := f.resident.CurrentStateEvent(context.Background(), f.roomID, evType, stateKey)
	if err != nil || e == nil {
		t.Fatalf("no %s %q in the room: %v", evType, stateKey, err)
	}
	return e.EventID()
}

// TestJoinFromStreamHostile joins from a send_join response that a hostile or broken
// resident server could send: events with bad signatures are dropped, an event with a bad
// content hash is taken redacted, events failing auth or resting on an unknown auth event
// are left out, junk elements, events of other rooms and unknown keys are ignored, and the
// keys come in any order. The join succeeds with the rest of the state.
func TestJoinFromStreamHostile(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newJoinFixture(t, db)
		bob, mallory, empty := "@bob:test.example", "@mallory:test.example", ""
		if _, err := f.resident.Send(ctx, f.roomID, stateReq(bob, "m.room.member", bob, map[string]string{"membership": "join", "displayname": "Bob"})); err != nil {
			t.Fatal(err)
		}
		bobID := f.stateID(t, "m.room.member", bob)
		join, state, chain := f.sendJoin(t, "@jo:joining.example")

		// Bob's member event with its content changed on the way: the content hash fails.
		for i, raw := range state {
			if bytes.Contains(raw, []byte(`"displayname":"Bob"`)) {
				state[i] = bytes.Replace(raw, []byte(`"displayname":"Bob"`), []byte(`"displayname":"Mallory"`), 1)
			}
		}
		pl, aliceMember := f.stateID(t, "m.room.power_levels", ""), f.stateID(t, "m.room.member", f.alice)
		_, wrongKey, _ := ed25519.GenerateKey(nil)
		forged := f.build(t, f.alice, "m.room.topic", &empty, `{"topic":"forged"}`, wrongKey, pl, aliceMember)
		unauthorised := f.build(t, mallory, "m.room.name", &empty, `{"name":"mallory's"}`, f.resident.identity.Key, pl)
		orphan := f.build(t, f.alice, "m.room.history_visibility", &empty, `{"history_visibility":"joined"}`,
			f.resident.identity.Key, pl, aliceMember, "$"+strings.Repeat("A", 43))
		otherRoom := f.build(t, f.alice, "m.room.topic", &empty, `{"topic":"elsewhere"}`, f.resident.identity.Key, pl, aliceMember)
		otherRoom = bytes.Replace(otherRoom, []byte(f.roomID), []byte("!other:test.example"), 1)
		state = append(state, forged, unauthorised, orphan, otherRoom, json.RawMessage(`{"type":5}`), json.RawMessage(`"junk"`))

		body, _ := json.Marshal(map[string]any{"servers_in_room": []string{"test.example"}, "members_omitted": false,
			"extra": map[string]any{"nested": []any{1, "two", nil}}})
		var sb strings.Builder
		sb.WriteString(`{"state":`)
		stateJSON, _ := json.Marshal(state)
		sb.Write(stateJSON)
		sb.WriteString(`,"origin":"test.example","auth_chain":`)
		chainJSON, _ := json.Marshal(chain)
		sb.Write(chainJSON)
		sb.WriteString(",")
		sb.Write(body[1:])

		ours, err := f.joining.JoinFromStream(ctx, join, strings.NewReader(sb.String()), f.keys)
		if err != nil || ours.Status != storage.EventAccepted {
			t.Fatalf("join: %+v, %v", ours, err)
		}
		assertNoJoinStage(t, f.joiningDB)
		got, _, err := f.joining.CurrentState(ctx, f.roomID)
		if err != nil {
			t.Fatal(err)
		}
		for _, tuple := range []spec.StateTuple{{Type: "m.room.topic"}, {Type: "m.room.name"}, {Type: "m.room.history_visibility"}} {
			if e, ok := got[tuple]; ok {
				t.Errorf("%s is in the state: %s", tuple, e.JSON())
			}
		}
		bobMember := got[spec.StateTuple{Type: "m.room.member", StateKey: bob}]
		if bobMember == nil || bobMember.EventID() != bobID || bytes.Contains(bobMember.Content(), []byte("displayname")) {
			t.Errorf("bob's member event should be there, redacted: %v", bobMember)
		}
		for _, user := range []string{f.alice, bob, "@jo:joining.example"} {
			if m, _, err := f.joining.Membership(ctx, f.roomID, user); err != nil || m != "join" {
				t.Errorf("%s is %q (%v)", user, m, err)
			}
		}
		if len(got) != 6 {
			t.Errorf("state of %d events, want 6 (create, power levels, join rules, three members)", len(got))
		}
	})
}

// TestJoinFromStreamBadResponses refuses responses that are not a send_join answer, or
// lack the room's create event, and leaves no staged rows behind.
func TestJoinFromStreamBadResponses(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newJoinFixture(t, db)
		join, state, chain := f.sendJoin(t, "@jo:joining.example")
		createID := f.stateID(t, "m.room.create", "")
		var withoutCreate []json.RawMessage
		for _, raw := range state {
			if e, err := spec.ParseEvent(raw, f.rv); err == nil && e.EventID() != createID {
				withoutCreate = append(withoutCreate, raw)
			}
		}
		full, _ := json.Marshal(map[string]any{"state": state, "auth_chain": chain})
		noCreate, _ := json.Marshal(map[string]any{"state": withoutCreate, "auth_chain": chain})
		for name, body := range map[string]string{
			"truncated":      string(full[:len(full)/2]),
			"array":          `[200, {}]`,
			"state object":   `{"state": {"a": 1}, "auth_chain": []}`,
			"empty":          `{}`,
			"null state":     `{"state": null, "auth_chain": null}`,
			"without create": string(noCreate),
		} {
			if _, err := f.joining.JoinFromStream(ctx, join, strings.NewReader(body), f.keys); err == nil {
				t.Errorf("%s: join accepted", name)
			}
			assertNoJoinStage(t, f.joiningDB)
		}
		// After all that, the real answer still joins.
		if ours, err := f.joining.JoinFromStream(ctx, join, bytes.NewReader(full), f.keys); err != nil || ours.Status != storage.EventAccepted {
			t.Fatalf("join: %+v, %v", ours, err)
		}
	})
}

// TestJoinStagedInAuthOrder stages a response whose events arrive in reverse auth order and
// in several batches: each is still checked after its auth events.
func TestJoinStagedInAuthOrder(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newJoinFixture(t, db)
		const members = joinBatchSize + 20
		for i := range members {
			user := fmt.Sprintf("@user%04d:test.example", i)
			if _, err := f.resident.Send(ctx, f.roomID, stateReq(user, "m.room.member", user, map[string]string{"membership": "join"})); err != nil {
				t.Fatal(err)
			}
		}
		// Alice raises her users' power level in steps: a chain of power levels, each the
		// auth event of the next.
		users := map[string]int{}
		for level := range 3 {
			users["@user0000:test.example"] = 10 + level
			if _, err := f.resident.Send(ctx, f.roomID, stateReq(f.alice, "m.room.power_levels", "", map[string]any{"users": users})); err != nil {
				t.Fatal(err)
			}
		}
		join, state, chain := f.sendJoin(t, "@jo:joining.example")
		reversed := append(append([]json.RawMessage(nil), chain...), state...)
		for i, k := 0, len(reversed)-1; i < k; i, k = i+1, k-1 {
			reversed[i], reversed[k] = reversed[k], reversed[i]
		}
		body, _ := json.Marshal(map[string]any{"auth_chain": reversed, "state": state})
		ours, err := f.joining.JoinFromStream(ctx, join, bytes.NewReader(body), f.keys)
		if err != nil || ours.Status != storage.EventAccepted {
			t.Fatalf("join: %+v, %v", ours, err)
		}
		got, _, err := f.joining.CurrentState(ctx, f.roomID)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != members+5 {
			t.Errorf("state of %d events, want %d", len(got), members+5)
		}
		want := f.stateID(t, "m.room.power_levels", "")
		if pl := got[spec.StateTuple{Type: "m.room.power_levels"}]; pl == nil || pl.EventID() != want {
			t.Errorf("power levels %v, want %s", pl, want)
		}
		assertNoJoinStage(t, f.joiningDB)
	})
}
