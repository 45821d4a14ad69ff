package clientapi

import (
	"context"
	"math"
	"net/http"
	"strconv"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// The threads of a room (client-server API "Querying threads in a room", threads_list.yaml):
// its thread roots, the most recently active thread first ("ordered by the latest_event in
// each event's aggregated children"), each with its bundled aggregations. Only roots the
// user may see are listed, under the rules of "Room History Visibility".
//
// The token "s<pos>" continues with the threads whose latest event is at or below stream
// position pos. A thread that gains an event between two pages moves up the list, as in
// Synapse, so a client paging back does not see it again.

// Bounds of /threads. NOTSPEC: the spec asks for a default and a maximum without naming
// them; the default is Synapse's.
const (
	defaultThreadsLimit = 5
	maxThreadsLimit     = 100
	// maxScannedThreads bounds the threads one request examines while skipping the roots
	// that history visibility hides; the client gets a next_batch to carry on with.
	maxScannedThreads = 500
)

type threadsResponse struct {
	Chunk     []ClientEvent `json:"chunk"`
	NextBatch string        `json:"next_batch,omitempty"`
}

// GET /v1/rooms/{roomId}/threads (threads_list.yaml)
func (a *API) threads(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	participant := ""
	switch q.Get("include") {
	case "", "all":
	case "participated":
		participant = d.UserID
	default:
		return httpapi.InvalidParam("include must be all or participated")
	}
	limit := defaultThreadsLimit
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			// "Must be an integer greater than zero."
			return httpapi.InvalidParam("limit must be an integer greater than zero")
		}
		limit = min(n, maxThreadsLimit)
	}
	before := int64(math.MaxInt64)
	if s := q.Get("from"); s != "" {
		pos, ok := parsePaginationToken(s)
		if !ok {
			return httpapi.InvalidParam("Unknown pagination token")
		}
		before = pos
	}
	ctx := r.Context()
	rr, err := a.roomReader(ctx, pathParam(r, "roomId"), d.UserID)
	if err != nil {
		return err
	}
	roots, cursor, more, err := a.scanThreads(ctx, rr, before, participant, limit)
	if err != nil {
		return err
	}
	resp := threadsResponse{}
	if more {
		resp.NextBatch = streamToken(cursor)
	}
	if resp.Chunk, err = a.formatter(d, true).formatAll(ctx, roots); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// scanThreads collects up to limit thread roots the user may see, of the threads whose
// latest event is at or below before, the most recently active first. cursor is where the
// next page starts and more whether threads remain beyond it.
func (a *API) scanThreads(ctx context.Context, rr *roomReader, before int64, participant string, limit int) (roots []*rooms.Event, cursor int64, more bool, err error) {
	cursor = before
	examined := 0
	for {
		want := min(max(limit-len(roots)+1, 20), limit+1)
		batch, err := storage.Threads(ctx, a.db, rr.roomNID, cursor, participant, want)
		if err != nil {
			return nil, 0, false, err
		}
		visible, err := a.visibleRoots(ctx, rr, batch)
		if err != nil {
			return nil, 0, false, err
		}
		for _, t := range batch {
			if len(roots) == limit {
				return roots, cursor, true, nil
			}
			examined++
			cursor = t.LatestPos - 1
			if e, ok := visible[t.RootID]; ok {
				roots = append(roots, e)
			}
		}
		if len(batch) < want {
			return roots, cursor, false, nil
		}
		if examined >= maxScannedThreads {
			return roots, cursor, true, nil
		}
	}
}

// visibleRoots loads the roots of threads, in one query, and keeps those the user may see
// (as visibleEvent decides for one event): in the room's timeline, within what the user may
// read, and allowed by history visibility. Roots not held here are left out.
func (a *API) visibleRoots(ctx context.Context, rr *roomReader, threads []storage.ThreadRoot) (map[string]*rooms.Event, error) {
	ids := make([]string, len(threads))
	for i, t := range threads {
		ids[i] = t.RootID
	}
	events, err := a.rooms.EventsByID(ctx, ids)
	if err != nil {
		return nil, err
	}
	out := make(map[string]*rooms.Event, len(events))
	for _, e := range events {
		if e.RoomID() != rr.roomID || e.StreamPos == 0 || e.StreamPos > rr.upper {
			continue
		}
		ok, err := rr.visibility.allows(ctx, e)
		if err != nil {
			return nil, err
		}
		if ok {
			out[e.EventID()] = e
		}
	}
	return out, nil
}
