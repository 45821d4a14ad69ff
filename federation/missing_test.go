package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"testing"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// gapServer is a homeserver with a room server and the authenticated federation API on a
// test TLS server.
type gapServer struct {
	*testServer
	rs  *rooms.Server
	api *API
}

func newGapServer(t *testing.T, db *storage.DB, clock *fakeClock) *gapServer {
	t.Helper()
	roots := testRoots(t)
	ts := newTestServer(t, db, clock, roots)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	rs := rooms.New(db, rooms.Identity{ServerName: ts.name, KeyID: "ed25519:a_1", Key: testKey(ts.name)},
		streams.NewTracker(0), func() int64 { return clock.Now().UnixMilli() }, log)
	api := &API{ServerName: ts.name, DB: db, Rooms: rs, Keys: ts.ring, Client: ts.client, Log: log, Clock: clock.Now,
		Inbound: NewInbound(db, rs, ts.ring.KeyLookup(context.Background()), clock.Now, log)}
	router := chi.NewRouter()
	Routes(router, ts.keys, ts.ring)
	api.Routes(router)
	ts.serve(router.ServeHTTP)
	return &gapServer{testServer: ts, rs: rs, api: api}
}

// say sends n messages of user into the room here, delivering them nowhere.
func (g *gapServer) say(t *testing.T, roomID, user string, n int) []string {
	t.Helper()
	var ids []string
	for i := range n {
		sent, err := g.rs.Send(context.Background(), roomID, rooms.EventRequest{Sender: user, Type: "m.room.message",
			Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"%d"}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, sent[0].EventID())
	}
	return ids
}

// deliver hands event IDs of from to g in one transaction, as from's sender would.
func (g *gapServer) deliver(t *testing.T, from *gapServer, txnID string, ids ...string) map[string]pduResult {
	t.Helper()
	ctx := context.Background()
	body := transactionBody{Origin: from.name}
	for _, id := range ids {
		e, err := from.rs.EventByID(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		body.PDUs = append(body.PDUs, e.JSON())
	}
	raw, _ := json.Marshal(body)
	resp, err := g.api.Inbound.Process(WithOrigin(ctx, from.name), from.name, txnID, raw)
	if err != nil {
		t.Fatal(err)
	}
	var results struct {
		PDUs map[string]pduResult `json:"pdus"`
	}
	if err := json.Unmarshal(resp, &results); err != nil {
		t.Fatal(err)
	}
	return results.PDUs
}

// timelinePos is the stream position of an event here (0 when not in the timeline).
func (g *gapServer) timelinePos(t *testing.T, id string) int64 {
	t.Helper()
	e, err := g.rs.EventByID(context.Background(), id)
	if err != nil {
		return 0
	}
	return e.StreamPos
}

// TestFillGaps has a second server miss events of a room: a short gap is filled with
// get_missing_events, a long one with get_missing_events and the state at its oldest
// event, and the history before the second server joined comes with /backfill.
func TestFillGaps(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		clock := newFakeClock()
		hs1 := newGapServer(t, db, clock)
		hs2 := newGapServer(t, storagetest.NewDB(t, db.Engine()), clock)
		alice, bob, empty := "@alice:"+hs1.name, "@bob:"+hs2.name, ""
		rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
		roomID, created, err := hs1.rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
			{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
			{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"public"}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		early := hs1.say(t, roomID, alice, 3)
		if err := hs2.api.JoinRemote(ctx, roomID, bob, []string{hs1.name}, nil); err != nil {
			t.Fatal(err)
		}

		// A short gap: three messages hs2 never got, then one it does.
		short := hs1.say(t, roomID, alice, 4)
		if res := hs2.deliver(t, hs1, "t1", short[3]); res[short[3]].Error != "" {
			t.Fatalf("the event after a short gap: %s", res[short[3]].Error)
		}
		for _, id := range short {
			if hs2.timelinePos(t, id) <= 0 {
				t.Fatalf("event %s of the short gap is not in hs2's timeline", id)
			}
		}

		// A long gap: more than one get_missing_events answer can carry.
		long := hs1.say(t, roomID, alice, missingEventsLimit+5)
		last := long[len(long)-1]
		if res := hs2.deliver(t, hs1, "t2", last); res[last].Error != "" {
			t.Fatalf("the event after a long gap: %s", res[last].Error)
		}
		for _, id := range long[len(long)-1-missingEventsLimit:] {
			if hs2.timelinePos(t, id) <= 0 {
				t.Fatalf("event %s at the end of the long gap is not in hs2's timeline", id)
			}
		}
		if hs2.timelinePos(t, long[0]) != 0 {
			t.Fatal("the start of the long gap reached hs2: the state path was not taken")
		}
		if m, _, _ := hs2.rs.Membership(ctx, roomID, alice); m != "join" {
			t.Fatalf("alice's membership on hs2 after the gap: %q", m)
		}
		// Both servers build on the merged DAG: hs2's next message reaches hs1.
		reply := hs2.say(t, roomID, bob, 1)
		if res := hs1.deliver(t, hs2, "t3", reply[0]); res[reply[0]].Error != "" {
			t.Fatalf("hs2's message after the gap: %s", res[reply[0]].Error)
		}

		// History from before hs2 joined, placed below every position of the room.
		added, err := hs2.api.Backfill(ctx, roomID, 50)
		if err != nil || added == 0 {
			t.Fatalf("backfill: %d events, %v", added, err)
		}
		prev := int64(0)
		for _, id := range append([]string{created[0].EventID()}, early...) {
			pos := hs2.timelinePos(t, id)
			if pos >= 0 || pos <= prev && prev != 0 {
				t.Fatalf("backfilled event %s at position %d (previous %d): want negative, increasing", id, pos, prev)
			}
			prev = pos
		}
		if again, err := hs2.api.Backfill(ctx, roomID, 50); err != nil || again != 0 {
			t.Fatalf("a second backfill of a complete history: %d events, %v", again, err)
		}
	})
}
