package server

import (
	"context"
	"time"

	"github.com/scrambledeggs/eggs/storage"
)

// Housekeeping the server does while it runs.

const (
	// maintenanceInterval is how often housekeeping runs.
	maintenanceInterval = time.Hour
	// txnIDRetention is how long client transaction IDs are kept: a client retrying a send
	// after a crash or a restart gets its first event back for this long. NOTSPEC: the spec
	// sets no duration; Synapse keeps them for a day, we keep them a week.
	txnIDRetention = 7 * 24 * time.Hour
	// inboundTxnRetention is how long the answers to other servers' transactions are kept
	// for their retries. NOTSPEC: as Synapse, a day.
	inboundTxnRetention = 24 * time.Hour
)

// maintain is the housekeeping component: it prunes old transaction IDs every hour, so that
// those tables stay bounded.
func maintain(_ context.Context, s *Server) error {
	s.Background(func(ctx context.Context) {
		ticker := time.NewTicker(maintenanceInterval)
		defer ticker.Stop()
		for {
			now := time.Now()
			n, err := storage.PruneTransactionIDs(ctx, s.db, now.Add(-txnIDRetention).UnixMilli(), now.Add(-inboundTxnRetention).UnixMilli())
			if err != nil && ctx.Err() == nil {
				s.log.Warn("prune transaction IDs", "err", err)
			} else if n > 0 {
				s.log.Debug("pruned transaction IDs", "rows", n)
			}
			select {
			case <-ctx.Done():
				return
			case <-ticker.C:
			}
		}
	})
	return nil
}
