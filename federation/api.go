package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// API is the authenticated part of the server-server API: every request carries an X-Matrix
// signature that the Authenticator checks, and handlers read the origin from the context.
// One file per area: transactions (here), membership (membership.go), …
type API struct {
	ServerName string
	DB         *storage.DB
	Rooms      *rooms.Server
	Keys       *KeyRing
	Client     *Client
	Inbound    *Inbound
	Sender     *Sender
	Log        *slog.Logger
	Clock      func() time.Time
	// Invites says which of our users block invites (invites.go); nil: none do.
	Invites InvitePolicy
}

// Routes mounts the authenticated endpoints on r.
func (a *API) Routes(r chi.Router) {
	auth := &Authenticator{ServerName: a.ServerName, Keys: a.Keys, Now: a.Clock, MaxBodySize: maxTransactionSize}
	r.Group(func(r chi.Router) {
		r.Use(auth.Middleware, a.aclGuard)
		r.Method(http.MethodPut, "/_matrix/federation/v1/send/{txnId}", a.handler(a.send))
		a.membershipRoutes(r)
		a.inviteRoutes(r)
		a.eventRoutes(r)
		a.thirdPartyRoutes(r)
	})
	// Identity servers call /3pid/onbind without X-Matrix signatures.
	a.openThirdPartyRoutes(r)
}

// handler adapts a handler that gets the authenticated origin and returns an error.
func (a *API) handler(fn func(w http.ResponseWriter, r *http.Request, origin string) error) http.Handler {
	return httpapi.Handler(func(w http.ResponseWriter, r *http.Request) error {
		origin, ok := Origin(r.Context())
		if !ok {
			return httpapi.NewError(http.StatusUnauthorized, "M_UNAUTHORIZED", "Missing X-Matrix authentication")
		}
		// A peer that reaches us is up: whatever we queued for it goes now.
		if a.Sender != nil {
			a.Sender.PeerIsBack(origin)
		}
		return fn(w, r, origin)
	})
}

// pathParam is a path parameter, percent-decoded (chi hands back the escaped form when the
// request's escaping differs from Go's).
func pathParam(r *http.Request, name string) string {
	v := chi.URLParam(r, name)
	if r.URL.RawPath == "" {
		return v
	}
	if decoded, err := url.PathUnescape(v); err == nil {
		return decoded
	}
	return v
}

// PUT /_matrix/federation/v1/send/{txnId} (server-server API "Transactions").
func (a *API) send(w http.ResponseWriter, r *http.Request, origin string) error {
	body, err := httpapi.ReadBody(r, maxTransactionSize)
	if err != nil {
		return err
	}
	response, err := a.Inbound.Process(r.Context(), origin, pathParam(r, "txnId"), body)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(response)
	return nil
}

// SendTransaction delivers a transaction with PUT /_matrix/federation/v1/send/{txnId}: the
// Client is the Sender's Transmitter.
func (c *Client) SendTransaction(ctx context.Context, destination string, txn *Transaction) error {
	body, err := json.Marshal(txn)
	if err != nil {
		return err
	}
	var response struct {
		PDUs map[string]struct {
			Error string `json:"error"`
		} `json:"pdus"`
	}
	err = c.DoJSON(ctx, Request{Method: http.MethodPut, Destination: destination,
		URI: "/_matrix/federation/v1/send/" + url.PathEscape(txn.ID), Body: json.RawMessage(body)}, &response)
	if err != nil {
		return fmt.Errorf("transaction %s: %w", txn.ID, err)
	}
	// Per-PDU errors are the peer's verdict on those events; resending would not change it.
	return nil
}
