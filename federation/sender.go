package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/storage"
)

// The outbound queue (server-server API "Transactions"): everything a destination must
// receive is written to the federation_queue table in the same transaction that stores it,
// and one worker per destination sends it in transactions of at most 50 PDUs and 100 EDUs,
// deleting what the destination acknowledged. A destination that fails is retried with
// exponential backoff, persisted with its health, so that neither a peer that is down nor a
// restart of ours loses anything, and a peer back from an outage receives all it missed.

// Limits of one transaction (server-server API "Transactions").
const (
	maxPDUsPerTransaction = 50
	maxEDUsPerTransaction = 100
)

// Backoff between attempts at a failing destination: it doubles from minBackoff up to
// maxBackoff. NOTSPEC: the spec leaves the schedule open; these are Synapse's bounds.
const (
	minBackoff = 5 * time.Second
	maxBackoff = 24 * time.Hour
)

// sendTimeout bounds one attempt at delivering a transaction.
const sendTimeout = 2 * time.Minute

// Transaction is the body of PUT /_matrix/federation/v1/send/{txnId}.
type Transaction struct {
	ID             string            `json:"-"`
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus,omitempty"`
}

// Transmitter delivers one transaction to a destination; an error means it was not
// acknowledged and will be sent again.
type Transmitter interface {
	SendTransaction(ctx context.Context, destination string, txn *Transaction) error
}

// Sender runs the per-destination workers of the outbound queue.
type Sender struct {
	db       *storage.DB
	origin   string
	transmit Transmitter
	clock    func() time.Time
	log      *slog.Logger

	mu      sync.Mutex
	ctx     context.Context
	workers map[string]*worker
	wg      sync.WaitGroup
}

// worker is the goroutine of one destination; wake is signalled when something new is
// queued for it or the peer showed it is back.
type worker struct {
	wake       chan struct{}
	peerIsBack bool
}

// NewSender makes the sender; Start resumes the queues stored before a restart.
func NewSender(db *storage.DB, origin string, transmit Transmitter, clock func() time.Time, log *slog.Logger) *Sender {
	return &Sender{db: db, origin: origin, transmit: transmit, clock: clock, log: log, workers: map[string]*worker{}}
}

// Start resumes every destination with something queued. Workers stop when ctx ends; Wait
// waits for them.
func (s *Sender) Start(ctx context.Context) error {
	s.mu.Lock()
	s.ctx = ctx
	s.mu.Unlock()
	destinations, err := storage.QueuedDestinations(ctx, s.db)
	if err != nil {
		return fmt.Errorf("resume federation queue: %w", err)
	}
	s.Notify(destinations...)
	return nil
}

// Wait waits for every worker to stop after the Start context ended.
func (s *Sender) Wait() { s.wg.Wait() }

// Notify tells the sender that something new was queued for destinations (after the
// transaction that queued it committed).
func (s *Sender) Notify(destinations ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ctx == nil || s.ctx.Err() != nil {
		return // not started, or stopping: Start will resume from the table
	}
	for _, d := range destinations {
		if w, ok := s.workers[d]; ok {
			select {
			case w.wake <- struct{}{}:
			default:
			}
			continue
		}
		w := &worker{wake: make(chan struct{}, 1)}
		s.workers[d] = w
		s.wg.Add(1)
		go s.run(d, w)
	}
}

// PeerIsBack is called when a destination reached us (it sent a transaction, say): it is
// up again, so its backoff ends and its queue is sent now.
func (s *Sender) PeerIsBack(destination string) {
	s.mu.Lock()
	w, ok := s.workers[destination]
	if ok {
		w.peerIsBack = true
	}
	s.mu.Unlock()
	if ok {
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

// run sends a destination's queue until it is empty (or the sender stops).
func (s *Sender) run(destination string, w *worker) {
	defer s.wg.Done()
	ctx := s.ctx
	for ctx.Err() == nil {
		health, err := storage.LoadDestinationHealth(ctx, s.db, destination)
		if err != nil {
			s.log.Error("federation queue: read destination health", "destination", destination, "err", err)
			s.sleep(ctx, w, minBackoff)
			continue
		}
		s.mu.Lock()
		if w.peerIsBack {
			health.RetryAtTS, w.peerIsBack = 0, false
		}
		s.mu.Unlock()
		if wait := time.UnixMilli(health.RetryAtTS).Sub(s.clock()); health.RetryAtTS > 0 && wait > 0 {
			s.sleep(ctx, w, wait)
			continue
		}
		pdus, edus, err := storage.PeekQueue(ctx, s.db, destination, maxPDUsPerTransaction, maxEDUsPerTransaction)
		if err != nil {
			s.log.Error("federation queue: read queue", "destination", destination, "err", err)
			s.sleep(ctx, w, minBackoff)
			continue
		}
		if len(pdus) == 0 && len(edus) == 0 {
			// Done; leave unless something was queued in between.
			s.mu.Lock()
			select {
			case <-w.wake:
				s.mu.Unlock()
				continue
			default:
			}
			delete(s.workers, destination)
			s.mu.Unlock()
			return
		}
		s.attempt(ctx, destination, health, pdus, edus)
	}
}

// attempt sends one transaction and records the outcome.
func (s *Sender) attempt(ctx context.Context, destination string, health *storage.DestinationHealth, pdus, edus []storage.QueuedItem) {
	txn := &Transaction{Origin: s.origin, OriginServerTS: s.clock().UnixMilli()}
	ids := make([]int64, 0, len(pdus)+len(edus))
	for _, p := range pdus {
		txn.PDUs = append(txn.PDUs, p.JSON)
		ids = append(ids, p.QueueID)
	}
	for _, e := range edus {
		txn.EDUs = append(txn.EDUs, e.JSON)
		ids = append(ids, e.QueueID)
	}
	if txn.PDUs == nil {
		txn.PDUs = []json.RawMessage{}
	}
	// The ID is derived from what the transaction carries, so that a retry — after a
	// timeout or a restart — repeats the same transaction and the peer can tell.
	txn.ID = fmt.Sprintf("eggs%d_%d_%d", ids[0], ids[len(ids)-1], len(ids))

	sendCtx, cancel := context.WithTimeout(ctx, sendTimeout)
	err := s.transmit.SendTransaction(sendCtx, destination, txn)
	cancel()
	now := s.clock()
	if err == nil {
		if err := storage.DequeueItems(ctx, s.db, ids); err != nil {
			s.log.Error("federation queue: remove delivered items", "destination", destination, "err", err)
		}
		health.LastSuccessTS, health.Failures, health.RetryAtTS, health.LastError = now.UnixMilli(), 0, 0, ""
	} else {
		if ctx.Err() != nil {
			return // stopping: not the destination's fault
		}
		health.Failures++
		health.LastFailureTS = now.UnixMilli()
		health.RetryAtTS = now.Add(backoff(health.Failures)).UnixMilli()
		health.LastError = err.Error()
		s.log.Warn("federation: transaction failed", "destination", destination, "txn_id", txn.ID,
			"failures", health.Failures, "retry_at", time.UnixMilli(health.RetryAtTS), "err", err)
	}
	if err := storage.SaveDestinationHealth(ctx, s.db, health); err != nil {
		s.log.Error("federation queue: save destination health", "destination", destination, "err", err)
	}
}

// backoff is the pause after the n-th consecutive failure: doubling from minBackoff, capped
// at maxBackoff, with ±20% jitter so that destinations that failed together drift apart.
func backoff(failures int64) time.Duration {
	d := minBackoff
	for i := int64(1); i < failures && d < maxBackoff; i++ {
		d *= 2
	}
	d = min(d, maxBackoff)
	jitter := time.Duration(rand.Int64N(int64(d)/5+1)) - d/10
	return d + jitter
}

// sleep waits for d, a wake-up of the worker, or the end of ctx.
func (s *Sender) sleep(ctx context.Context, w *worker, d time.Duration) {
	timer := time.NewTimer(d)
	defer timer.Stop()
	select {
	case <-ctx.Done():
	case <-timer.C:
	case <-w.wake:
	}
}

// QueuePDU queues a local event for destinations inside the transaction that stores it
// (rooms.Outbound); Notify must follow once the transaction committed.
func (s *Sender) QueuePDU(ctx context.Context, tx *storage.Tx, destinations []string, eventNID int64) error {
	return storage.EnqueuePDU(ctx, tx, destinations, eventNID, s.clock().UnixMilli())
}

// Health lists the health of every destination ever sent to.
func (s *Sender) Health(ctx context.Context) ([]storage.DestinationHealth, error) {
	return storage.ListDestinationHealth(ctx, s.db)
}
