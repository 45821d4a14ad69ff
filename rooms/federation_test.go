package rooms

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestTemplateJoinAndAuthChain is make_join/send_join from the room server's side: a remote
// server completes and signs the join template, the join is accepted, and its auth chain
// holds the create event, power levels, join rules.
func TestTemplateJoinAndAuthChain(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		for _, version := range []string{"1", "10", "12"} {
			ctx := context.Background()
			s := newTestServer(t, db)
			remote := newRemote("remote.example")
			alice, rita := "@alice:test.example", "@rita:remote.example"
			roomID := createTestRoom(t, s, version, alice)

			content := json.RawMessage(`{"membership":"join"}`)
			template, rv, err := s.Template(ctx, roomID, rita, "m.room.member", &rita, content)
			if err != nil {
				t.Fatalf("v%s: template: %v", version, err)
			}
			raw, _ := json.Marshal(template)
			var fields struct {
				PrevEvents json.RawMessage `json:"prev_events"`
				AuthEvents json.RawMessage `json:"auth_events"`
				Depth      int64           `json:"depth"`
			}
			_ = json.Unmarshal(raw, &fields)
			proto := spec.ProtoEvent{Type: "m.room.member", StateKey: &rita, Sender: rita, RoomID: roomID, Content: content,
				Depth: fields.Depth, OriginServerTS: 1_900_000_000_000}
			proto.PrevEvents, proto.AuthEvents = eventIDsOf(t, fields.PrevEvents), eventIDsOf(t, fields.AuthEvents)
			join, err := proto.Build(rv, remote.name, remote.keyID, remote.key)
			if err != nil {
				t.Fatalf("v%s: build join from template: %v", version, err)
			}
			got, err := s.ReceiveEvent(ctx, join, remote.keys(s))
			if err != nil || got.Status != storage.EventAccepted {
				t.Fatalf("v%s: join from template: %+v, %v", version, got, err)
			}
			chain, err := s.AuthChain(ctx, []*Event{got})
			if err != nil {
				t.Fatal(err)
			}
			types := map[string]bool{}
			for _, e := range chain {
				types[e.Type()] = true
			}
			if !types["m.room.create"] || !types["m.room.power_levels"] || !types["m.room.join_rules"] {
				t.Fatalf("v%s: auth chain has %v", version, types)
			}
			before, err := s.StateBefore(ctx, got)
			if err != nil || len(before) != 4 {
				t.Fatalf("v%s: state before the join: %d events, %v", version, len(before), err)
			}
		}
	})
}

// eventIDsOf reads prev_events/auth_events as IDs, from plain IDs or v1/v2 hash pairs.
func eventIDsOf(t *testing.T, raw json.RawMessage) []string {
	var ids []string
	if json.Unmarshal(raw, &ids) == nil {
		return ids
	}
	ids = nil // a failed decode above may have filled it partly
	var pairs [][]json.RawMessage
	if err := json.Unmarshal(raw, &pairs); err != nil {
		t.Fatalf("event list %s: %v", raw, err)
	}
	for _, p := range pairs {
		var id string
		_ = json.Unmarshal(p[0], &id)
		ids = append(ids, id)
	}
	return ids
}
