package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// fakePeer records the transactions it accepts and fails while down.
type fakePeer struct {
	mu   sync.Mutex
	down bool
	txns []*Transaction
	seen map[string]bool
}

func (p *fakePeer) SendTransaction(_ context.Context, destination string, txn *Transaction) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.down {
		return errors.New("connection refused")
	}
	if p.seen == nil {
		p.seen = map[string]bool{}
	}
	if !p.seen[txn.ID] { // a receiver ignores a transaction ID it has processed
		p.seen[txn.ID] = true
		p.txns = append(p.txns, txn)
	}
	return nil
}

func (p *fakePeer) setDown(down bool) {
	p.mu.Lock()
	p.down = down
	p.mu.Unlock()
}

// delivered lists the PDUs' bodies and the EDUs received, in order.
func (p *fakePeer) delivered() (pdus, edus []string, maxPDUs int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, txn := range p.txns {
		maxPDUs = max(maxPDUs, len(txn.PDUs))
		for _, pdu := range txn.PDUs {
			var e struct {
				Content struct {
					Body string `json:"body"`
				} `json:"content"`
			}
			_ = json.Unmarshal(pdu, &e)
			pdus = append(pdus, e.Content.Body)
		}
		for _, edu := range txn.EDUs {
			edus = append(edus, string(edu))
		}
	}
	return pdus, edus, maxPDUs
}

// queueEvents stores n events of a room and queues them for destination.
func queueEvents(t *testing.T, db *storage.DB, destination string, n int) {
	t.Helper()
	ctx := context.Background()
	err := db.WithTx(ctx, func(tx *storage.Tx) error {
		roomNID, err := storage.InsertRoom(ctx, tx, fmt.Sprintf("!room%d:here.example", n), "12")
		if err != nil {
			return err
		}
		for i := 0; i < n; i++ {
			body := fmt.Sprintf(`{"type":"m.room.message","content":{"body":"%d"}}`, i)
			nid, err := storage.InsertEvent(ctx, tx, &storage.EventRow{EventID: fmt.Sprintf("$e%d", i), RoomNID: roomNID,
				StreamPos: int64(i + 1), Type: "m.room.message", Sender: "@a:here.example", JSON: []byte(body)})
			if err != nil {
				return err
			}
			if err := storage.EnqueuePDU(ctx, tx, []string{destination}, nid, 0); err != nil {
				return err
			}
		}
		return storage.EnqueueEDU(ctx, tx, []string{destination}, []byte(`{"edu_type":"m.typing"}`), 0)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for i := 0; i < 2000; i++ {
		if cond() {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("gave up waiting for %s", what)
}

// TestQueueSurvivesOutageAndRestart queues 120 events while the peer is down, restarts the
// sender, brings the peer back and checks that it receives every event once, in order, in
// transactions of at most 50 PDUs, and that the destination's health tells the story.
func TestQueueSurvivesOutageAndRestart(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		log := slog.New(slog.NewTextHandler(io.Discard, nil))
		peer := &fakePeer{down: true}
		queueEvents(t, db, "peer.example", 120)

		ctx1, stop1 := context.WithCancel(context.Background())
		first := NewSender(db, "here.example", peer, time.Now, log)
		if err := first.Start(ctx1); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "a failed attempt", func() bool {
			h, err := storage.LoadDestinationHealth(context.Background(), db, "peer.example")
			return err == nil && h.Failures >= 1
		})
		stop1()
		first.Wait()
		health, _ := storage.LoadDestinationHealth(context.Background(), db, "peer.example")
		if health.RetryAtTS <= health.LastFailureTS || health.LastError == "" {
			t.Fatalf("health after a failure: %+v", health)
		}

		// A restarted sender resumes the stored queue; the peer is back and says so.
		peer.setDown(false)
		ctx2, stop2 := context.WithCancel(context.Background())
		defer stop2()
		second := NewSender(db, "here.example", peer, time.Now, log)
		if err := second.Start(ctx2); err != nil {
			t.Fatal(err)
		}
		second.PeerIsBack("peer.example")
		waitFor(t, "delivery of the queue", func() bool {
			pdus, edus, _ := peer.delivered()
			return len(pdus) == 120 && len(edus) == 1
		})
		pdus, _, maxPDUs := peer.delivered()
		for i, body := range pdus {
			if body != fmt.Sprint(i) {
				t.Fatalf("PDU %d is %q: out of order or repeated", i, body)
			}
		}
		if maxPDUs > maxPDUsPerTransaction {
			t.Fatalf("a transaction carried %d PDUs", maxPDUs)
		}
		waitFor(t, "the queue to empty", func() bool {
			left, _ := storage.QueuedDestinations(context.Background(), db)
			return len(left) == 0
		})
		health, _ = storage.LoadDestinationHealth(context.Background(), db, "peer.example")
		if health.Failures != 0 || health.LastSuccessTS == 0 {
			t.Fatalf("health after delivery: %+v", health)
		}
		stop2()
		second.Wait()
	})
}

func TestBackoffDoublesAndIsCapped(t *testing.T) {
	for _, tc := range []struct {
		failures int64
		want     time.Duration
	}{{1, 5 * time.Second}, {2, 10 * time.Second}, {5, 80 * time.Second}, {40, 24 * time.Hour}} {
		got := backoff(tc.failures)
		if got < tc.want*9/10 || got > tc.want*11/10 {
			t.Errorf("backoff(%d) = %v, want %v ± 10%%", tc.failures, got, tc.want)
		}
	}
}
