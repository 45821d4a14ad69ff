package rooms

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"runtime"
	"testing"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// BenchmarkJoinLargeRoom measures the joining side of a federated join of a room with
// 10,000 members (SQLite): the time, the bytes allocated, and the peak of the live heap
// while the send_join answer is checked and stored ("peak-heap-MB", sampled after each
// join, so an upper bound of what stayed live).
func BenchmarkJoinLargeRoom(b *testing.B) {
	const members = 10000
	ctx := context.Background()
	residentDB := storagetest.NewDB(b, storage.SQLite)
	resident := newTestServer(b, residentDB)
	alice := "@alice:test.example"
	roomID := createTestRoom(b, resident, spec.DefaultRoomVersion, alice)
	for i := 0; i < members; i++ {
		user := fmt.Sprintf("@user%05d:test.example", i)
		if _, err := resident.Send(ctx, roomID, stateReq(user, "m.room.member", user, map[string]string{"membership": "join"})); err != nil {
			b.Fatal(err)
		}
	}
	rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
	wire := func(events []*Event) [][]byte {
		out := make([][]byte, len(events))
		for i, e := range events {
			out[i] = e.JSON()
		}
		return out
	}
	parse := func(raws [][]byte) []*spec.Event {
		out := make([]*spec.Event, len(raws))
		for i, raw := range raws {
			e, err := spec.ParseEvent(raw, rv)
			if err != nil {
				b.Fatal(err)
			}
			out[i] = e
		}
		return out
	}

	var peak uint64
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		b.StopTimer()
		_, key, _ := ed25519.GenerateKey(nil)
		joinerName := fmt.Sprintf("joiner%d.example", i)
		joiner := New(storagetest.NewDB(b, storage.SQLite), Identity{ServerName: joinerName, KeyID: "ed25519:j", Key: key},
			streams.NewTracker(0), resident.now, resident.log)
		keys := func(server, _ string, _ int64) (ed25519.PublicKey, error) {
			if server == joinerName {
				return key.Public().(ed25519.PublicKey), nil
			}
			return resident.identity.Key.Public().(ed25519.PublicKey), nil
		}
		user := "@jo:" + joinerName
		content := json.RawMessage(`{"membership":"join"}`)
		template, _, err := resident.Template(ctx, roomID, user, "m.room.member", &user, content)
		if err != nil {
			b.Fatal(err)
		}
		raw, _ := json.Marshal(template)
		var f struct {
			PrevEvents []string `json:"prev_events"`
			AuthEvents []string `json:"auth_events"`
			Depth      int64    `json:"depth"`
		}
		_ = json.Unmarshal(raw, &f)
		proto := spec.ProtoEvent{Type: "m.room.member", StateKey: &user, Sender: user, RoomID: roomID, Content: content,
			PrevEvents: f.PrevEvents, AuthEvents: f.AuthEvents, Depth: f.Depth, OriginServerTS: 1_900_000_000_000}
		join, err := proto.Build(rv, joinerName, "ed25519:j", key)
		if err != nil {
			b.Fatal(err)
		}
		accepted, err := resident.ReceiveEvent(ctx, join, keys)
		if err != nil {
			b.Fatal(err)
		}
		state, _ := resident.StateBefore(ctx, accepted)
		chain, _ := resident.AuthChain(ctx, append(state, accepted))
		stateWire, chainWire := wire(state), wire(chain)
		runtime.GC()
		b.StartTimer()

		if _, err := joiner.JoinFromState(ctx, join, parse(stateWire), parse(chainWire), keys); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		peak = max(peak, m.HeapInuse)
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/1e6, "peak-heap-MB")
}
