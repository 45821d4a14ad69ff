package clientapi

import (
	"context"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// Child events of a parent (client-server API "Relationships API", relations.yaml), read from
// the relation index of storage/relations.go under the rules of "Room History Visibility",
// as /messages reads the timeline: the user must be able to see the parent (else 404), and
// sees only the children they may see.
//
// Pagination tokens are those of /messages (events.go): "s<pos>" sits right after stream
// position pos; backwards from s<P> returns the children at or below P, newest first,
// forwards the children above P, oldest first. So a next_batch or start token of /messages
// and a next_batch of /sync serve as from and to, as relations.yaml wants.

// defaultRelationsLimit is the limit without a limit parameter. NOTSPEC: Synapse's default.
const defaultRelationsLimit = 5

// maxRelationDepth is how many levels of relationships recurse=true follows. NOTSPEC: the
// spec asks for at least 3 ("Homeservers SHOULD traverse at least 3 levels"); Synapse
// follows 3.
const maxRelationDepth = 3

// maxRelationFilterLength bounds the relType and eventType path parameters.
const maxRelationFilterLength = 255

type relationsResponse struct {
	Chunk          []ClientEvent `json:"chunk"`
	NextBatch      string        `json:"next_batch,omitempty"`
	PrevBatch      string        `json:"prev_batch,omitempty"`
	RecursionDepth *int          `json:"recursion_depth,omitempty"`
}

// GET /v1/rooms/{roomId}/relations/{eventId}[/{relType}[/{eventType}]] (relations.yaml)
func (a *API) relations(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	backwards := true
	switch q.Get("dir") {
	case "", "b":
	case "f":
		backwards = false
	default:
		return httpapi.InvalidParam("dir must be b or f")
	}
	limit, err := parseLimit(q.Get("limit"), defaultRelationsLimit, maxTimelineLimit)
	if err != nil {
		return err
	}
	depth := 1
	var resp relationsResponse
	switch q.Get("recurse") {
	case "":
	case "true":
		depth = maxRelationDepth
		resp.RecursionDepth = &depth
	case "false":
		resp.RecursionDepth = &depth
	default:
		return httpapi.InvalidParam("recurse must be true or false")
	}
	var from, to int64
	var hasFrom, hasTo bool
	if s := q.Get("from"); s != "" {
		if from, hasFrom = parsePaginationToken(s); !hasFrom {
			return httpapi.InvalidParam("Invalid from token")
		}
		resp.PrevBatch = s
	}
	if s := q.Get("to"); s != "" {
		if to, hasTo = parsePaginationToken(s); !hasTo {
			return httpapi.InvalidParam("Invalid to token")
		}
	}
	relType, eventType := pathParam(r, "relType"), pathParam(r, "eventType")
	if len(relType) > maxRelationFilterLength || len(eventType) > maxRelationFilterLength {
		return httpapi.InvalidParam("relType and eventType are at most 255 bytes")
	}

	ctx := r.Context()
	// "The parent event was not found or the user does not have permission to read this
	// event" (404).
	rr, parent, err := a.readableEvent(ctx, pathParam(r, "roomId"), d.UserID, pathParam(r, "eventId"))
	if err != nil {
		return err
	}

	rq := storage.RelationQuery{RoomNID: rr.roomNID, ParentID: parent.EventID(), RelType: relType,
		EventType: eventType, Depth: depth, Backwards: backwards}
	if backwards {
		rq.From, rq.Bound = rr.upper, minStreamPos
		if hasFrom {
			rq.From = min(from, rr.upper)
		}
		if hasTo {
			rq.Bound = to
		}
	} else {
		// From the first child, backfilled history included.
		rq.From, rq.Bound = minStreamPos, rr.upper
		if hasFrom {
			rq.From = from
		}
		if hasTo {
			rq.Bound = min(to, rr.upper)
		}
	}
	p, err := a.scanRelations(ctx, rr, rq, limit)
	if err != nil {
		return err
	}
	if p.more {
		resp.NextBatch = streamToken(p.cursor)
	}
	if resp.Chunk, err = a.formatter(d, true).formatAll(ctx, p.events); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// scanRelations collects up to limit children that rq selects and the user may see, as scan
// does for the timeline: it reads the index in batches, skips what history visibility hides,
// and stops with an end token after maxScannedEvents children.
func (a *API) scanRelations(ctx context.Context, rr *roomReader, rq storage.RelationQuery, limit int) (*page, error) {
	return a.scanVisible(ctx, rr, rq.From, rq.Bound, rq.Backwards, limit, func(cursor int64, want int) ([]scanned, error) {
		rq.From, rq.Limit = cursor, want
		batch, err := storage.RelatedEvents(ctx, a.db, rq)
		if err != nil {
			return nil, err
		}
		events, err := a.relatedEvents(ctx, batch)
		if err != nil {
			return nil, err
		}
		items := make([]scanned, len(batch))
		for i, rel := range batch {
			items[i] = scanned{pos: rel.StreamPos}
			if e, ok := events[rel.EventNID]; ok && e.RoomID() == rr.roomID && e.StreamPos != 0 {
				items[i].event = e
			}
		}
		return items, nil
	})
}

// relatedEvents loads the events of a page of the index by numeric ID. An event the index
// names but that cannot be read is left out.
func (a *API) relatedEvents(ctx context.Context, batch []storage.RelatedEvent) (map[int64]*rooms.Event, error) {
	nids := make([]int64, len(batch))
	for i, rel := range batch {
		nids[i] = rel.EventNID
	}
	loaded, err := a.rooms.EventsByNID(ctx, nids)
	if err != nil {
		return nil, err
	}
	out := make(map[int64]*rooms.Event, len(loaded))
	for _, e := range loaded {
		out[e.NID] = e
	}
	return out, nil
}
