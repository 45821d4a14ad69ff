package clientapi

import (
	"context"
	"time"

	"github.com/scrambledeggs/eggs/storage"
)

const (
	// searchIndexInterval is how often the search indexer looks for new events: how long
	// after it was sent a message may still be missing from /search.
	searchIndexInterval = 200 * time.Millisecond
	// searchIndexBatch bounds the events indexed in one transaction, which on SQLite holds
	// the one writer (a few milliseconds per hundred messages) while sends wait.
	searchIndexBatch = 200
)

// IndexSearch runs the search indexer until ctx ends (storage.IndexSearchBatch): every
// searchIndexInterval it indexes the events stored since, batch after batch while batches
// come back full (after a burst, or at the first start, when everything stored before
// search existed is indexed).
func (a *API) IndexSearch(ctx context.Context) {
	ticker := time.NewTicker(searchIndexInterval)
	defer ticker.Stop()
	for {
		n, err := storage.IndexSearchBatch(ctx, a.db, searchIndexBatch)
		if err != nil && ctx.Err() == nil {
			a.log.Warn("search indexing", "err", err)
		}
		if err == nil && n == searchIndexBatch && ctx.Err() == nil {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
		}
	}
}
