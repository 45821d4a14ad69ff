package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"sync"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// The notary (server-server API §"Querying Keys Through Another Server"): other servers ask
// us for a third server's keys, and we answer with that server's self-signed key response,
// from our cache or freshly fetched, with our own signature added.

const (
	// maxNotaryServers bounds the servers of one POST /_matrix/key/v2/query.
	// NOTSPEC: Synapse has no limit, but one request must not make us fetch without end.
	maxNotaryServers = 100
	// notaryConcurrency bounds the fetches one query runs at once.
	notaryConcurrency = 8
)

// notaryResponse returns serverName's key response for a notary answer, or nil if there is
// none. A cached response is used while it is valid until minValidUntil and younger than
// half its lifetime ("Intermediate notary servers should cache a response for half of its
// lifetime"); otherwise the server is asked directly. If it cannot be reached, the last
// response received is returned even if stale: "notary servers should continue to return
// the last response they received from the server so that the signatures of old events can
// still be checked."
func (k *KeyRing) notaryResponse(ctx context.Context, serverName string, minValidUntil int64) ([]byte, error) {
	if own := k.cfg.Own; own != nil && serverName == own.identity.ServerName {
		return own.Response()
	}
	cached, found, err := storage.GetServerKeyResponse(ctx, k.cfg.DB, serverName)
	if err != nil {
		return nil, err
	}
	now := k.cfg.Now().UnixMilli()
	halfLife := cached.FetchedTS + (cached.ValidUntilTS-cached.FetchedTS)/2
	if found && cached.ValidUntilTS >= minValidUntil && now < halfLife {
		return cached.Response, nil
	}
	known, err := k.known(ctx, serverName)
	if err != nil {
		return nil, err
	}
	if !k.mayFetch(known) {
		if !found {
			return nil, nil
		}
		return cached.Response, nil
	}
	// A failed fetch falls back on the cache below; its error says nothing to the asker.
	if k.fetch(ctx, serverName, "", minValidUntil, true) == nil || found {
		cached, found, err = storage.GetServerKeyResponse(ctx, k.cfg.DB, serverName)
		if err != nil {
			return nil, err
		}
	}
	if !found {
		return nil, nil
	}
	return cached.Response, nil
}

// notaryAnswerFor builds a notary answer for servers (server name → minimum_valid_until_ts),
// each response signed by us. Servers with no response are left out.
func notaryAnswerFor(ctx context.Context, keys *ServerKeys, ring *KeyRing, servers map[string]int64) ([]json.RawMessage, error) {
	var (
		mu        sync.Mutex
		responses = []json.RawMessage{}
		firstErr  error
		wg        sync.WaitGroup
		slots     = make(chan struct{}, notaryConcurrency)
	)
	for serverName, minValidUntil := range servers {
		wg.Add(1)
		slots <- struct{}{}
		go func() {
			defer func() { <-slots; wg.Done() }()
			response, err := ring.notaryResponse(ctx, serverName, minValidUntil)
			if err == nil && response != nil {
				response, err = keys.Sign(response)
			}
			mu.Lock()
			defer mu.Unlock()
			if err != nil && firstErr == nil {
				firstErr = err
			}
			if err == nil && response != nil {
				responses = append(responses, response)
			}
		}()
	}
	wg.Wait()
	return responses, firstErr
}

// queryOne answers GET /_matrix/key/v2/query/{serverName}?minimum_valid_until_ts=… (keys_query.yaml):
// "If not supplied, the notary server MUST use the current time." A server name that is not
// valid cannot be reached, so it gets an empty array like any unreachable server.
func (n *notary) queryOne(w http.ResponseWriter, r *http.Request) error {
	serverName := chi.URLParam(r, "serverName")
	minValidUntil := n.ring.cfg.Now().UnixMilli()
	if raw := r.URL.Query().Get("minimum_valid_until_ts"); raw != "" {
		ts, err := strconv.ParseInt(raw, 10, 64)
		if err != nil {
			return httpapi.InvalidParam("minimum_valid_until_ts must be an integer")
		}
		minValidUntil = ts
	}
	servers := map[string]int64{}
	if validServerName(serverName) {
		servers[serverName] = minValidUntil
	}
	responses, err := notaryAnswerFor(r.Context(), n.keys, n.ring, servers)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, notaryAnswer{ServerKeys: responses})
	return nil
}

// queryMany answers POST /_matrix/key/v2/query (keys_query.yaml). Key IDs only carry
// minimum_valid_until_ts; the whole response of each server is returned ("The notary server
// may return multiple keys regardless of the Key IDs given"), and the largest minimum asked
// of a server is used for it.
func (n *notary) queryMany(w http.ResponseWriter, r *http.Request) error {
	var query struct {
		ServerKeys map[string]map[string]struct {
			MinimumValidUntilTS *int64 `json:"minimum_valid_until_ts"`
		} `json:"server_keys"`
	}
	if err := httpapi.ReadJSON(r, httpapi.MaxBodySize, &query); err != nil {
		return err
	}
	if query.ServerKeys == nil {
		return httpapi.MissingParam("server_keys is required")
	}
	if len(query.ServerKeys) > maxNotaryServers {
		return httpapi.InvalidParam("At most %d servers per query", maxNotaryServers)
	}
	now := n.ring.cfg.Now().UnixMilli()
	servers := map[string]int64{}
	for serverName, criteria := range query.ServerKeys {
		if !validServerName(serverName) {
			continue
		}
		minValidUntil := int64(0)
		for _, c := range criteria {
			if c.MinimumValidUntilTS != nil {
				minValidUntil = max(minValidUntil, *c.MinimumValidUntilTS)
			} else {
				minValidUntil = max(minValidUntil, now)
			}
		}
		if len(criteria) == 0 {
			minValidUntil = now
		}
		servers[serverName] = minValidUntil
	}
	responses, err := notaryAnswerFor(r.Context(), n.keys, n.ring, servers)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, notaryAnswer{ServerKeys: responses})
	return nil
}

// notary serves the query endpoints.
type notary struct {
	keys *ServerKeys
	ring *KeyRing
}
