package rooms

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"runtime"
	"runtime/metrics"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
	"github.com/scrambledeggs/eggs/streams"
)

// BenchmarkJoinLargeRoom measures the joining side of a federated join of a room with
// 10,000 members (SQLite): the send_join response body, as the resident server sends it,
// goes through JoinFromStream. Besides time and allocations it reports, in MB above the live
// heap before the join without the response body:
//
//   - peak-live-MB: the highest live heap seen at the end of a garbage collection during the
//     join, the body included (sampled from /gc/heap/live:bytes, so at most as fine as the
//     collections: run with a low GOGC, say 10, for a finer picture);
//   - retained-MB: the live heap after the join: the room's in-memory head (its current
//     state) and the caches;
//
// and body-MB, the size of the response body.
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

	var peak, retained, bodySize uint64
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
		join, body := sendJoinBody(b, resident, roomID, "@jo:"+joinerName, joinerName, key, keys)
		bodySize = uint64(len(body))
		runtime.GC()
		// The body counts as part of the join: it is what the federation client hands over.
		before := liveHeap() - min(uint64(cap(body)), liveHeap())
		sampler := sampleLiveHeap()
		b.StartTimer()

		if _, err := joiner.JoinFromStream(ctx, join, bytes.NewReader(body), keys); err != nil {
			b.Fatal(err)
		}

		b.StopTimer()
		if during := sampler(); during > before {
			peak = max(peak, during-before)
		}
		runtime.GC()
		if after := liveHeap(); after > before {
			retained = max(retained, after-before)
		}
		runtime.KeepAlive(joiner)
		b.StartTimer()
	}
	b.ReportMetric(float64(peak)/1e6, "peak-live-MB")
	b.ReportMetric(float64(retained)/1e6, "retained-MB")
	b.ReportMetric(float64(bodySize)/1e6, "body-MB")
}

// sendJoinBody runs make_join and send_join on the resident server for user of server
// joinerName (signing with key) and returns the signed join and the send_join (v2) response
// body that the resident server would send.
func sendJoinBody(b *testing.B, resident *Server, roomID, user, joinerName string, key ed25519.PrivateKey, keys spec.KeyLookup) (*spec.Event, []byte) {
	b.Helper()
	ctx := context.Background()
	content := json.RawMessage(`{"membership":"join"}`)
	template, rv, err := resident.Template(ctx, roomID, user, "m.room.member", &user, content)
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
	state, err := resident.StateBefore(ctx, accepted)
	if err != nil {
		b.Fatal(err)
	}
	chain, err := resident.AuthChain(ctx, append(state, accepted))
	if err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(map[string]any{
		"origin": resident.identity.ServerName, "members_omitted": false,
		"servers_in_room": []string{resident.identity.ServerName},
		"event":           json.RawMessage(accepted.JSON()),
		"state":           wireEvents(state), "auth_chain": wireEvents(chain),
	})
	if err != nil {
		b.Fatal(err)
	}
	return join, body
}

// wireEvents is events as they travel in a federation response.
func wireEvents(events []*Event) []json.RawMessage {
	out := make([]json.RawMessage, len(events))
	for i, e := range events {
		out[i] = e.JSON()
	}
	return out
}

// liveHeap is the live heap as of the last garbage collection.
func liveHeap() uint64 {
	sample := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(sample)
	return sample[0].Value.Uint64()
}

// sampleLiveHeap watches the live heap until the returned function is called, which returns
// the highest value seen.
func sampleLiveHeap() func() uint64 {
	stop := make(chan struct{})
	result := make(chan uint64, 1)
	go func() {
		ticker := time.NewTicker(time.Millisecond)
		defer ticker.Stop()
		peak := liveHeap()
		for {
			select {
			case <-stop:
				result <- max(peak, liveHeap())
				return
			case <-ticker.C:
				peak = max(peak, liveHeap())
			}
		}
	}()
	var peak uint64
	var stopped bool
	return func() uint64 {
		if !stopped {
			close(stop)
			peak, stopped = <-result, true
		}
		return peak
	}
}
