package storage

import (
	"context"
	"database/sql"
	"errors"
)

// Queries of the outbound federation queue.

// QueuedItem is one entry of a destination's queue: a PDU (EventNID and its JSON) or an EDU.
type QueuedItem struct {
	QueueID  int64
	EventNID int64
	// JSON is the PDU (from the events table) or the EDU.
	JSON []byte
}

// EnqueuePDU queues an event for destinations, in the transaction that stores the event.
func EnqueuePDU(ctx context.Context, q Querier, destinations []string, eventNID, nowMS int64) error {
	for _, d := range destinations {
		if _, err := q.Exec(ctx, `INSERT INTO federation_queue (destination, event_nid, created_ts) VALUES ($1, $2, $3)`,
			d, eventNID, nowMS); err != nil {
			return err
		}
	}
	return nil
}

// EnqueueEDU queues an EDU (its JSON) for destinations.
func EnqueueEDU(ctx context.Context, q Querier, destinations []string, edu []byte, nowMS int64) error {
	for _, d := range destinations {
		if _, err := q.Exec(ctx, `INSERT INTO federation_queue (destination, edu, created_ts) VALUES ($1, $2, $3)`,
			d, string(edu), nowMS); err != nil {
			return err
		}
	}
	return nil
}

// PeekQueue reads the oldest queued PDUs (at most maxPDUs) and EDUs (at most maxEDUs) of a
// destination, each list oldest first.
func PeekQueue(ctx context.Context, q Querier, destination string, maxPDUs, maxEDUs int) (pdus, edus []QueuedItem, err error) {
	rows, err := q.Query(ctx, `SELECT f.queue_id, f.event_nid, e.json FROM federation_queue f
		JOIN events e ON e.event_nid = f.event_nid
		WHERE f.destination = $1 AND f.event_nid <> 0 ORDER BY f.queue_id LIMIT $2`, destination, maxPDUs)
	if err != nil {
		return nil, nil, err
	}
	if pdus, err = scanQueued(rows); err != nil {
		return nil, nil, err
	}
	rows, err = q.Query(ctx, `SELECT queue_id, 0, edu FROM federation_queue
		WHERE destination = $1 AND event_nid = 0 ORDER BY queue_id LIMIT $2`, destination, maxEDUs)
	if err != nil {
		return nil, nil, err
	}
	edus, err = scanQueued(rows)
	return pdus, edus, err
}

func scanQueued(rows *sql.Rows) ([]QueuedItem, error) {
	var out []QueuedItem
	for rows.Next() {
		var item QueuedItem
		var js string
		if err := rows.Scan(&item.QueueID, &item.EventNID, &js); err != nil {
			rows.Close()
			return nil, err
		}
		item.JSON = []byte(js)
		out = append(out, item)
	}
	return out, closeRows(rows)
}

// DequeueItems removes delivered entries.
func DequeueItems(ctx context.Context, q Querier, queueIDs []int64) error {
	for _, chunk := range chunks(queueIDs, 500) {
		if _, err := q.Exec(ctx, `DELETE FROM federation_queue WHERE queue_id IN (`+placeholders(len(chunk), 1)+`)`, int64Args(chunk)...); err != nil {
			return err
		}
	}
	return nil
}

// QueuedDestinations lists the destinations with something queued.
func QueuedDestinations(ctx context.Context, q Querier) ([]string, error) {
	return queryColumn[string](ctx, q, `SELECT DISTINCT destination FROM federation_queue`)
}

// DestinationHealth is how sending to one destination has gone.
type DestinationHealth struct {
	Destination   string
	LastSuccessTS int64
	LastFailureTS int64
	Failures      int64 // consecutive failures since the last success
	RetryAtTS     int64 // no attempt before this time
	LastError     string
}

// LoadDestinationHealth reads a destination's health; a destination never tried is healthy.
func LoadDestinationHealth(ctx context.Context, q Querier, destination string) (*DestinationHealth, error) {
	h := &DestinationHealth{Destination: destination}
	err := q.QueryRow(ctx, `SELECT last_success_ts, last_failure_ts, failures, retry_at_ts, last_error
		FROM federation_destinations WHERE destination = $1`, destination).
		Scan(&h.LastSuccessTS, &h.LastFailureTS, &h.Failures, &h.RetryAtTS, &h.LastError)
	if errors.Is(err, sql.ErrNoRows) {
		return h, nil
	}
	return h, err
}

// SaveDestinationHealth records a destination's health.
func SaveDestinationHealth(ctx context.Context, q Querier, h *DestinationHealth) error {
	_, err := q.Exec(ctx, `INSERT INTO federation_destinations (destination, last_success_ts, last_failure_ts, failures, retry_at_ts, last_error)
		VALUES ($1, $2, $3, $4, $5, $6)
		ON CONFLICT (destination) DO UPDATE SET last_success_ts = excluded.last_success_ts,
			last_failure_ts = excluded.last_failure_ts, failures = excluded.failures,
			retry_at_ts = excluded.retry_at_ts, last_error = excluded.last_error`,
		h.Destination, h.LastSuccessTS, h.LastFailureTS, h.Failures, h.RetryAtTS, h.LastError)
	return err
}

// ListDestinationHealth lists every destination's health, for the admin dashboard.
func ListDestinationHealth(ctx context.Context, q Querier) ([]DestinationHealth, error) {
	rows, err := q.Query(ctx, `SELECT destination, last_success_ts, last_failure_ts, failures, retry_at_ts, last_error
		FROM federation_destinations ORDER BY destination`)
	if err != nil {
		return nil, err
	}
	var out []DestinationHealth
	for rows.Next() {
		var h DestinationHealth
		if err := rows.Scan(&h.Destination, &h.LastSuccessTS, &h.LastFailureTS, &h.Failures, &h.RetryAtTS, &h.LastError); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, h)
	}
	return out, closeRows(rows)
}

// InboundTxnResponse returns the response given earlier to a transaction, or nil.
func InboundTxnResponse(ctx context.Context, q Querier, origin, txnID string) ([]byte, error) {
	var response string
	err := q.QueryRow(ctx, `SELECT response FROM federation_inbound_txns WHERE origin = $1 AND txn_id = $2`, origin, txnID).Scan(&response)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, nil
	}
	return []byte(response), err
}

// SaveInboundTxn records the response given to a transaction.
func SaveInboundTxn(ctx context.Context, q Querier, origin, txnID string, response []byte, nowMS int64) error {
	_, err := q.Exec(ctx, `INSERT INTO federation_inbound_txns (origin, txn_id, response, received_ts) VALUES ($1, $2, $3, $4)
		ON CONFLICT (origin, txn_id) DO NOTHING`, origin, txnID, string(response), nowMS)
	return err
}
