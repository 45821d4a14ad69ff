package federation

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Fetching what a received event lacks (server-server API "Backfilling and retrieving
// missing events", "Retrieving events"), and history for clients:
//
//   - unknown auth events: the event's auth chain from its origin (/event_auth, else /event
//     for each), stored as outliers;
//   - unknown prev events: /get_missing_events from the origin, between our forward
//     extremities and the event, received oldest first; where a gap remains, the state
//     before the event from the origin (/state_ids, then /event for what we lack, or /state
//     when that is much), with which the event is accepted (rooms.ReceiveWithState);
//   - history older than the room's earliest event here: Backfill.
//
// Everything is bounded: events per answer, state fetches per gap, and time.

const (
	// missingEventsLimit is the limit of our /get_missing_events requests.
	missingEventsLimit = 10
	// gapFillTimeout bounds the time spent completing one received event.
	gapFillTimeout = 90 * time.Second
	// maxStateFetches bounds the events of one gap accepted with state fetched for them.
	maxStateFetches = 3
	// maxEventFetches is how many unknown events of a state we fetch one by one with
	// /event; beyond it the whole state comes with /state.
	maxEventFetches = 50
	// maxStateIDs bounds the state and auth chain IDs taken from /state_ids. NOTSPEC: as
	// rooms bounds a send_join response.
	maxStateIDs = 200_000
	// maxAuthRounds bounds the rounds of fetching auth events for one event.
	maxAuthRounds = 4
	// stateResponseSize bounds /state answers (the state and auth chain of a large room).
	stateResponseSize = 256 << 20
)

// fillGaps completes a received event that could not be processed because events it
// refers to are unknown here, fetching them from the server that sent it (the origin of
// the request in ctx). It returns why the event was not accepted, nil if it was.
func (in *Inbound) fillGaps(ctx context.Context, ev *spec.Event, missing *rooms.MissingEventsError) error {
	api := in.gapFiller
	origin, hasOrigin := Origin(ctx)
	if api == nil || !hasOrigin {
		return missing
	}
	ctx, cancel := context.WithTimeout(ctx, gapFillTimeout)
	defer cancel()
	g := &gapFiller{a: api, origin: origin, roomID: ev.RoomID(), rv: ev.Version(), keys: in.keys}
	_, err := g.complete(ctx, ev, missing, true)
	return err
}

// gapFiller fetches the missing events of one room from one server.
type gapFiller struct {
	a            *API
	origin       string
	roomID       string
	rv           *spec.RoomVersion
	keys         spec.KeyLookup
	stateFetches int
}

// complete receives ev, whose first attempt failed with err, fetching what it lacks: auth
// events, then (withMissingEvents) the events between our extremities and it, then the
// state before it.
func (g *gapFiller) complete(ctx context.Context, ev *spec.Event, err error, withMissingEvents bool) (*rooms.Event, error) {
	triedMissingEvents := !withMissingEvents
	for round := 0; round < maxAuthRounds; round++ {
		var missing *rooms.MissingEventsError
		if !errors.As(err, &missing) {
			return nil, err
		}
		switch {
		case !missing.Prev:
			if ferr := g.fetchAuthEvents(ctx, ev, missing.EventIDs); ferr != nil {
				return nil, fmt.Errorf("%w (fetching them: %v)", missing, ferr)
			}
		case !triedMissingEvents:
			triedMissingEvents = true
			if ferr := g.fetchMissingEvents(ctx, ev); ferr != nil {
				g.a.Log.Info("federation: get_missing_events failed", "origin", g.origin, "event_id", ev.EventID(), "err", ferr)
			}
		default:
			return g.receiveWithState(ctx, ev)
		}
		received, rerr := g.a.Rooms.ReceiveEvent(ctx, ev, g.keys)
		if rerr == nil {
			return received, nil
		}
		err = rerr
	}
	return nil, err
}

// fetchAuthEvents fetches the auth chain of ev from the origin and stores it as outliers;
// when /event_auth fails, the missing events one by one.
func (g *gapFiller) fetchAuthEvents(ctx context.Context, ev *spec.Event, missing []string) error {
	var resp struct {
		AuthChain []json.RawMessage `json:"auth_chain"`
	}
	err := g.a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: g.origin,
		URI:             "/_matrix/federation/v1/event_auth/" + url.PathEscape(g.roomID) + "/" + url.PathEscape(ev.EventID()),
		MaxResponseSize: stateResponseSize}, &resp)
	var chain []*spec.Event
	if err == nil {
		if chain, err = parsePDUs(resp.AuthChain, g.rv); err != nil {
			return err
		}
	} else {
		if len(missing) > maxEventFetches {
			return fmt.Errorf("event_auth: %w", err)
		}
		chain, err = g.fetchEvents(ctx, missing)
		if err != nil {
			return err
		}
	}
	_, err = g.a.Rooms.StoreOutliers(ctx, g.roomID, chain, g.keys)
	return err
}

// fetchEvents fetches events by ID with /event, leaving out those the origin does not give.
func (g *gapFiller) fetchEvents(ctx context.Context, ids []string) ([]*spec.Event, error) {
	out := make([]*spec.Event, 0, len(ids))
	for _, id := range ids {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		e, err := fetchEvent(ctx, g.a.Client, g.origin, id, g.rv)
		if err != nil {
			g.a.Log.Info("federation: fetch event failed", "origin", g.origin, "event_id", id, "err", err)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// fetchEvent is GET /_matrix/federation/v1/event/{eventId} from server.
func fetchEvent(ctx context.Context, client *Client, server, eventID string, rv *spec.RoomVersion) (*spec.Event, error) {
	var resp struct {
		PDUs []json.RawMessage `json:"pdus"`
	}
	err := client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: server,
		URI: "/_matrix/federation/v1/event/" + url.PathEscape(eventID), MaxResponseSize: 1 << 20}, &resp)
	if err != nil {
		return nil, err
	}
	if len(resp.PDUs) != 1 {
		return nil, fmt.Errorf("event %s: %d PDUs in the answer", eventID, len(resp.PDUs))
	}
	e, err := spec.ParseEvent(resp.PDUs[0], rv)
	if err != nil {
		return nil, fmt.Errorf("event %s: %w", eventID, err)
	}
	if e.EventID() != eventID {
		return nil, fmt.Errorf("asked for event %s, got %s", eventID, e.EventID())
	}
	return e, nil
}

// fetchMissingEvents asks the origin for the events between our forward extremities and ev
// and receives them oldest first. Those that still lack prev events are accepted with the
// state before them (a bounded number of times).
func (g *gapFiller) fetchMissingEvents(ctx context.Context, ev *spec.Event) error {
	earliest, minDepth, err := g.a.Rooms.ForwardExtremities(ctx, g.roomID)
	if err != nil {
		return err
	}
	req := getMissingEventsRequest{Limit: new(missingEventsLimit), MinDepth: minDepth,
		EarliestEvents: earliest, LatestEvents: []string{ev.EventID()}}
	var resp struct {
		Events []json.RawMessage `json:"events"`
	}
	err = g.a.Client.DoJSON(ctx, Request{Method: http.MethodPost, Destination: g.origin,
		URI: "/_matrix/federation/v1/get_missing_events/" + url.PathEscape(g.roomID), Body: req, MaxResponseSize: 16 << 20}, &resp)
	if err != nil {
		return err
	}
	if len(resp.Events) > 2*maxMissingEventsLimit {
		resp.Events = resp.Events[:2*maxMissingEventsLimit]
	}
	events, err := parsePDUs(resp.Events, g.rv)
	if err != nil {
		return err
	}
	slices.SortFunc(events, func(x, y *spec.Event) int {
		return cmp.Or(cmp.Compare(x.Depth(), y.Depth()), cmp.Compare(x.EventID(), y.EventID()))
	})
	for _, e := range events {
		if e.RoomID() != g.roomID || e.EventID() == ev.EventID() {
			continue
		}
		if _, err := g.a.Rooms.EventByID(ctx, e.EventID()); err == nil {
			continue
		}
		_, err := g.a.Rooms.ReceiveEvent(ctx, e, g.keys)
		if err != nil {
			_, err = g.complete(ctx, e, err, false)
		}
		if err != nil {
			g.a.Log.Info("federation: missing event not accepted", "origin", g.origin, "event_id", e.EventID(), "err", err)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// receiveWithState fetches the state before ev from the origin and accepts ev with it.
func (g *gapFiller) receiveWithState(ctx context.Context, ev *spec.Event) (*rooms.Event, error) {
	if g.stateFetches >= maxStateFetches {
		return nil, fmt.Errorf("prev events of %s missing, and %d states fetched already", ev.EventID(), g.stateFetches)
	}
	g.stateFetches++
	state, chain, err := g.fetchState(ctx, ev.EventID())
	if err != nil {
		return nil, fmt.Errorf("state before %s: %w", ev.EventID(), err)
	}
	return g.a.Rooms.ReceiveWithState(ctx, ev, state, chain, g.keys)
}

// fetchState is the state before eventID and its auth chain, as the origin has them: the
// IDs with /state_ids, then the events we lack with /event, or everything with /state when
// we lack many.
func (g *gapFiller) fetchState(ctx context.Context, eventID string) ([]*spec.Event, []*spec.Event, error) {
	query := "?event_id=" + url.QueryEscape(eventID)
	var ids struct {
		PDUIDs       []string `json:"pdu_ids"`
		AuthChainIDs []string `json:"auth_chain_ids"`
	}
	err := g.a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: g.origin,
		URI: "/_matrix/federation/v1/state_ids/" + url.PathEscape(g.roomID) + query, MaxResponseSize: 64 << 20}, &ids)
	if err != nil {
		return nil, nil, fmt.Errorf("state_ids: %w", err)
	}
	if len(ids.PDUIDs)+len(ids.AuthChainIDs) > maxStateIDs {
		return nil, nil, fmt.Errorf("state_ids: %d events", len(ids.PDUIDs)+len(ids.AuthChainIDs))
	}
	known, err := g.heldEvents(ctx, append(slices.Clone(ids.PDUIDs), ids.AuthChainIDs...))
	if err != nil {
		return nil, nil, err
	}
	var unknown []string
	for _, id := range append(slices.Clone(ids.PDUIDs), ids.AuthChainIDs...) {
		if _, ok := known[id]; !ok && !slices.Contains(unknown, id) {
			unknown = append(unknown, id)
		}
		if len(unknown) > maxEventFetches {
			break
		}
	}
	if len(unknown) > maxEventFetches {
		var resp struct {
			PDUs      []json.RawMessage `json:"pdus"`
			AuthChain []json.RawMessage `json:"auth_chain"`
		}
		err := g.a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: g.origin,
			URI: "/_matrix/federation/v1/state/" + url.PathEscape(g.roomID) + query, MaxResponseSize: stateResponseSize}, &resp)
		if err != nil {
			return nil, nil, fmt.Errorf("state: %w", err)
		}
		state, err := parsePDUs(resp.PDUs, g.rv)
		if err != nil {
			return nil, nil, err
		}
		chain, err := parsePDUs(resp.AuthChain, g.rv)
		return state, chain, err
	}
	fetched, err := g.fetchEvents(ctx, unknown)
	if err != nil {
		return nil, nil, err
	}
	for _, e := range fetched {
		known[e.EventID()] = e
	}
	pick := func(list []string) []*spec.Event {
		out := make([]*spec.Event, 0, len(list))
		for _, id := range list {
			if e, ok := known[id]; ok {
				out = append(out, e)
			}
		}
		return out
	}
	return pick(ids.PDUIDs), pick(ids.AuthChainIDs), nil
}

// heldEvents reads the events of ids stored here (rejected ones left out), by ID.
func (g *gapFiller) heldEvents(ctx context.Context, ids []string) (map[string]*spec.Event, error) {
	events, err := g.a.Rooms.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*spec.Event, len(events))
	for _, e := range events {
		if e.Status != storage.EventRejected && e.RoomID() == g.roomID {
			out[e.EventID()] = e.Event
		}
	}
	return out, nil
}

// maxBackfillServers is how many servers Backfill asks before giving up.
const maxBackfillServers = 5

// Backfill fetches up to limit events of a room's history older than its earliest events
// here, from the servers in the room (the room creator's first: it holds the whole
// history), and stores them for client pagination (rooms.StoreBackfilled). It returns how
// many events were added to the room's history.
func (a *API) Backfill(ctx context.Context, roomID string, limit int) (int, error) {
	limit = max(1, min(limit, maxBackfillLimit))
	from, err := a.Rooms.BackwardExtremities(ctx, roomID, 20)
	if err != nil || len(from) == 0 {
		return 0, err
	}
	rv, err := a.Rooms.RoomVersion(ctx, roomID)
	if err != nil {
		return 0, err
	}
	servers, err := a.backfillServers(ctx, roomID)
	if err != nil {
		return 0, err
	}
	q := url.Values{"v": from, "limit": {strconv.Itoa(limit)}}
	var errs []error
	for _, server := range servers {
		var txn transactionBody
		err := a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: server,
			URI: "/_matrix/federation/v1/backfill/" + url.PathEscape(roomID) + "?" + q.Encode(), MaxResponseSize: 16 << 20}, &txn)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", server, err))
			continue
		}
		if len(txn.PDUs) > 2*maxBackfillLimit {
			txn.PDUs = txn.PDUs[:2*maxBackfillLimit]
		}
		events, err := parsePDUs(txn.PDUs, rv)
		if err != nil || len(events) == 0 {
			continue
		}
		g := &gapFiller{a: a, origin: server, roomID: roomID, rv: rv, keys: a.Keys.KeyLookup(ctx)}
		if err := g.fetchMissingAuthEvents(ctx, events); err != nil {
			a.Log.Info("federation: auth events of backfilled history", "server", server, "err", err)
		}
		stored, err := a.Rooms.StoreBackfilled(ctx, roomID, events, g.keys)
		if err != nil {
			return 0, err
		}
		return len(stored), nil
	}
	return 0, errors.Join(errs...)
}

// fetchMissingAuthEvents fetches, with /event, the auth events of events that are neither
// among them nor stored here, and stores them as outliers: a few rounds, as fetched events
// may rest on others still unknown.
func (g *gapFiller) fetchMissingAuthEvents(ctx context.Context, events []*spec.Event) error {
	have := map[string]bool{}
	for _, e := range events {
		have[e.EventID()] = true
	}
	batch := events
	fetches := 0
	for round := 0; round < maxAuthRounds && len(batch) > 0; round++ {
		var wanted []string
		for _, e := range batch {
			ids := e.AuthEventIDs()
			if e.Version().CreateEventNotInAuthEvents && e.Type() != "m.room.create" {
				ids = append(slices.Clone(ids), "$"+strings.TrimPrefix(e.RoomID(), "!"))
			}
			for _, id := range ids {
				if !have[id] {
					have[id] = true
					wanted = append(wanted, id)
				}
			}
		}
		held, err := g.heldEvents(ctx, wanted)
		if err != nil {
			return err
		}
		wanted = slices.DeleteFunc(wanted, func(id string) bool { _, ok := held[id]; return ok })
		if len(wanted) == 0 {
			return nil
		}
		if fetches += len(wanted); fetches > maxEventFetches {
			return fmt.Errorf("more than %d auth events missing", maxEventFetches)
		}
		if batch, err = g.fetchEvents(ctx, wanted); err != nil {
			return err
		}
		if _, err := g.a.Rooms.StoreOutliers(ctx, g.roomID, batch, g.keys); err != nil {
			return err
		}
	}
	return nil
}

// backfillServers is the servers with joined members in the room's current state, the
// room creator's first, then by name; never this one.
func (a *API) backfillServers(ctx context.Context, roomID string) ([]string, error) {
	state, _, err := a.Rooms.CurrentState(ctx, roomID)
	if err != nil {
		return nil, err
	}
	creator := ""
	if create, ok := state[spec.StateTuple{Type: "m.room.create"}]; ok {
		if _, server, ok := strings.Cut(create.Sender(), ":"); ok {
			creator = server
		}
	}
	seen := map[string]bool{a.ServerName: true}
	var servers []string
	for tuple, e := range state {
		if tuple.Type != "m.room.member" {
			continue
		}
		if m, _ := e.Membership(); m != "join" {
			continue
		}
		if _, server, ok := strings.Cut(tuple.StateKey, ":"); ok && !seen[server] {
			seen[server] = true
			servers = append(servers, server)
		}
	}
	sort.Slice(servers, func(i, j int) bool {
		if (servers[i] == creator) != (servers[j] == creator) {
			return servers[i] == creator
		}
		return servers[i] < servers[j]
	})
	if len(servers) > maxBackfillServers {
		servers = servers[:maxBackfillServers]
	}
	return servers, nil
}
