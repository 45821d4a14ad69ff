package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Inbound transactions (server-server API "Transactions", PUT /_matrix/federation/v1/send/
// {txnId}): every PDU goes through the room server's single path for received events, EDUs
// go to the handler of their type, and the response — a result per PDU — is kept so that a
// retried transaction is answered the same without being processed twice.

// EDUHandler processes one EDU of a type from origin.
type EDUHandler func(ctx context.Context, origin string, content json.RawMessage) error

// Inbound processes the transactions other servers send.
type Inbound struct {
	db    *storage.DB
	rooms *rooms.Server
	keys  spec.KeyLookup
	clock func() time.Time
	log   *slog.Logger

	mu sync.Mutex
	// byOrigin serialises the transactions of one origin: the spec wants a server to send
	// one at a time, and processing them in order keeps their PDUs in order.
	byOrigin map[string]*sync.Mutex
	edus     map[string]EDUHandler
	// gapFiller fetches the events a received event refers to and we lack (missing.go);
	// set when the API's routes are mounted, before any request.
	gapFiller *API
}

// NewInbound makes the processor; keys looks up the signing keys of other servers.
func NewInbound(db *storage.DB, roomServer *rooms.Server, keys spec.KeyLookup, clock func() time.Time, log *slog.Logger) *Inbound {
	return &Inbound{db: db, rooms: roomServer, keys: keys, clock: clock, log: log,
		byOrigin: map[string]*sync.Mutex{}, edus: map[string]EDUHandler{}}
}

// HandleEDU registers the handler of an EDU type (m.typing, m.receipt, …). EDUs of types
// without a handler are ignored, as the spec allows.
func (in *Inbound) HandleEDU(eduType string, h EDUHandler) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.edus[eduType] = h
}

// maxTransactionSize bounds the body of a transaction: 50 PDUs and 100 EDUs of at most
// 64 KiB each would be 9.6 MB; NOTSPEC: like Synapse, we refuse more than that.
const maxTransactionSize = 10 << 20

// transactionBody is the JSON of a transaction.
type transactionBody struct {
	Origin         string            `json:"origin"`
	OriginServerTS int64             `json:"origin_server_ts"`
	PDUs           []json.RawMessage `json:"pdus"`
	EDUs           []json.RawMessage `json:"edus"`
}

// pduResult is the outcome of one PDU in the response: empty when it was processed, an
// error message otherwise.
type pduResult struct {
	Error string `json:"error,omitempty"`
}

// Process handles transaction txnID from origin (authenticated by the caller) and returns
// the response body.
func (in *Inbound) Process(ctx context.Context, origin, txnID string, body []byte) ([]byte, error) {
	var txn transactionBody
	if err := httpapi.DecodeJSON(body, &txn); err != nil {
		return nil, err
	}
	if len(txn.PDUs) > maxPDUsPerTransaction || len(txn.EDUs) > maxEDUsPerTransaction {
		return nil, httpapi.BadJSON("A transaction carries at most %d PDUs and %d EDUs", maxPDUsPerTransaction, maxEDUsPerTransaction)
	}
	if txn.Origin != "" && txn.Origin != origin {
		return nil, httpapi.Forbidden("Transaction origin %q does not match the authenticated server %q", txn.Origin, origin)
	}

	lock := in.originLock(origin)
	lock.Lock()
	defer lock.Unlock()
	if previous, err := storage.InboundTxnResponse(ctx, in.db, origin, txnID); err != nil {
		return nil, err
	} else if previous != nil {
		return previous, nil
	}

	results := map[string]pduResult{}
	for _, raw := range txn.PDUs {
		eventID, err := in.processPDU(ctx, raw)
		if eventID == "" {
			// Without a room version the event has no ID to answer for: the spec's response
			// is keyed by event ID, so it can only be logged.
			in.log.Info("federation: dropped PDU", "origin", origin, "txn_id", txnID, "reason", err)
			continue
		}
		if err != nil {
			results[eventID] = pduResult{Error: err.Error()}
			in.log.Info("federation: PDU not accepted", "origin", origin, "event_id", eventID, "reason", err)
			continue
		}
		results[eventID] = pduResult{}
	}
	for _, raw := range txn.EDUs {
		in.processEDU(ctx, origin, raw)
	}

	response, err := json.Marshal(map[string]any{"pdus": results})
	if err != nil {
		return nil, err
	}
	if err := storage.SaveInboundTxn(ctx, in.db, origin, txnID, response, in.clock().UnixMilli()); err != nil {
		return nil, fmt.Errorf("record transaction: %w", err)
	}
	return response, nil
}

// originLock is the lock that serialises origin's transactions.
func (in *Inbound) originLock(origin string) *sync.Mutex {
	in.mu.Lock()
	defer in.mu.Unlock()
	l, ok := in.byOrigin[origin]
	if !ok {
		l = &sync.Mutex{}
		in.byOrigin[origin] = l
	}
	return l
}

// processPDU parses a PDU in its room's version and takes it through the room server. It
// returns the event ID ("" when the PDU could not be parsed) and why it was not accepted.
func (in *Inbound) processPDU(ctx context.Context, raw json.RawMessage) (string, error) {
	var head struct {
		RoomID string `json:"room_id"`
	}
	if err := json.Unmarshal(raw, &head); err != nil || head.RoomID == "" {
		return "", errors.New("PDU without a room_id")
	}
	rv, err := in.rooms.RoomVersion(ctx, head.RoomID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return "", fmt.Errorf("unknown room %s", head.RoomID)
	}
	if err != nil {
		return "", err
	}
	ev, err := spec.ParseEvent(raw, rv)
	if err != nil {
		return "", fmt.Errorf("bad PDU: %w", err)
	}
	if ev.RoomID() != head.RoomID {
		return ev.EventID(), errors.New("room ID mismatch")
	}
	// A soft-failed event counts as processed for the sender (server-server API "Soft
	// failure"): only errors are reported.
	_, err = in.rooms.ReceiveEvent(ctx, ev, in.keys)
	// Prev or auth events unknown here are fetched from the origin (missing.go).
	var missing *rooms.MissingEventsError
	if errors.As(err, &missing) {
		err = in.fillGaps(ctx, ev, missing)
	}
	return ev.EventID(), err
}

// processEDU hands an EDU to the handler of its type.
func (in *Inbound) processEDU(ctx context.Context, origin string, raw json.RawMessage) {
	var edu struct {
		Type    string          `json:"edu_type"`
		Content json.RawMessage `json:"content"`
	}
	if err := json.Unmarshal(raw, &edu); err != nil || edu.Type == "" {
		in.log.Info("federation: malformed EDU", "origin", origin)
		return
	}
	in.mu.Lock()
	h, ok := in.edus[edu.Type]
	in.mu.Unlock()
	if !ok {
		return
	}
	if err := h(ctx, origin, edu.Content); err != nil {
		in.log.Info("federation: EDU not processed", "origin", origin, "edu_type", edu.Type, "err", err)
	}
}
