package clientapi

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// Bundled aggregations (client-server API "Aggregations of child events"): the formatter
// adds unsigned["m.relations"] to the message events it serves that have children, for
// m.thread ("Server-side aggregation of m.thread relationships"), m.replace (v1.7 rules:
// the most recent valid edit, "formatted as normal") and m.reference. m.annotation is not
// aggregated ("Server-side aggregation of m.annotation relationships"), nor are state
// events ("State events do not currently receive bundled aggregations").
//
// One formatAll costs one query of the relation index per room (storage.Aggregations),
// which finds no rows for events without children; only events with children cost more.
//
// Children count up to what the user may read of the room: up to their departure once they
// left. The children served whole (a thread's latest event, an edit) must be visible to
// the user under history visibility; NOTSPEC: an aggregation whose event is hidden from
// the user is left out, rather than falling back to an earlier child, as the warning of
// "Aggregations of child events" allows ("aggregations which would normally include those
// events will be lacking them").

// threadAggregation is the m.thread aggregation of a thread root.
type threadAggregation struct {
	LatestEvent             ClientEvent `json:"latest_event"`
	Count                   int64       `json:"count"`
	CurrentUserParticipated bool        `json:"current_user_participated"`
}

// referenceAggregation is the m.reference aggregation: the referencing events' IDs.
type referenceAggregation struct {
	Chunk []eventIDOnly `json:"chunk"`
}

type eventIDOnly struct {
	EventID string `json:"event_id"`
}

// bundleRoom is what the formatter knows of one room while bundling: how far the user may
// read it and, once a child event is to be served whole, the room reader that decides its
// visibility.
type bundleRoom struct {
	roomNID int64
	upper   int64
	// readable is false when the user may read nothing of the room.
	readable bool
	reader   *roomReader
}

// bundleRoomOf returns the bundling view of roomID, computed once per formatter.
func (f *formatter) bundleRoomOf(ctx context.Context, roomID string) (*bundleRoom, error) {
	if br, ok := f.bundleRooms[roomID]; ok {
		return br, nil
	}
	br := &bundleRoom{}
	if f.bundleRooms == nil {
		f.bundleRooms = map[string]*bundleRoom{}
	}
	f.bundleRooms[roomID] = br
	membership, memberEvent, err := f.api.rooms.Membership(ctx, roomID, f.userID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return br, nil
	}
	if err != nil {
		return nil, err
	}
	if br.roomNID, err = f.api.rooms.RoomNID(ctx, roomID); err != nil {
		return nil, err
	}
	br.readable, br.upper = true, f.api.rooms.Stream().Current()
	if (membership == "leave" || membership == "ban") && memberEvent != nil {
		// "After a user has left a room, they may see any events which they were allowed
		// to see before they left the room, but no events received after they left."
		br.upper = min(br.upper, memberEvent.StreamPos)
	}
	return br, nil
}

// visible reports whether the user may see child, an event served whole in a bundle.
func (f *formatter) visible(ctx context.Context, br *bundleRoom, roomID string, child *rooms.Event) (bool, error) {
	if child == nil || child.StreamPos == 0 || child.StreamPos > br.upper || child.RoomID() != roomID {
		return false, nil
	}
	if br.reader == nil {
		rr, err := f.api.roomReader(ctx, roomID, f.userID)
		if err == errNoAccess {
			br.readable = false
			return false, nil
		}
		if err != nil {
			return false, err
		}
		br.reader = rr
	}
	return br.reader.visibility.allows(ctx, child)
}

// relTypeOf is the rel_type of an event's m.relates_to ("" if none).
func relTypeOf(content json.RawMessage) string {
	var c struct {
		RelatesTo struct {
			RelType string `json:"rel_type"`
		} `json:"m.relates_to"`
	}
	_ = json.Unmarshal(content, &c)
	return c.RelatesTo.RelType
}

// bundle adds the bundled aggregations of events to out, their client forms (same order).
// withThreads is false for the latest events of threads, which are bundled with their own
// edits and references but cannot be thread roots ("It is therefore also not possible to
// nest threads"), so that bundling stops there.
func (f *formatter) bundle(ctx context.Context, events []*rooms.Event, out []ClientEvent, withThreads bool) error {
	if f.userID == "" {
		return nil
	}
	byRoom := map[string][]int{}
	var roomOrder []string
	for i, e := range events {
		if e.StateKey() != nil || e.StreamPos == 0 {
			continue
		}
		if _, ok := byRoom[e.RoomID()]; !ok {
			roomOrder = append(roomOrder, e.RoomID())
		}
		byRoom[e.RoomID()] = append(byRoom[e.RoomID()], i)
	}
	for _, roomID := range roomOrder {
		if err := f.bundleRoomEvents(ctx, roomID, events, byRoom[roomID], out, withThreads); err != nil {
			return err
		}
	}
	return nil
}

// bundleRoomEvents bundles the aggregations of events[i] for i in indexes, all of roomID.
func (f *formatter) bundleRoomEvents(ctx context.Context, roomID string, events []*rooms.Event, indexes []int, out []ClientEvent, withThreads bool) error {
	br, err := f.bundleRoomOf(ctx, roomID)
	if err != nil || !br.readable {
		return err
	}
	if has, err := storage.RoomHasRelations(ctx, f.api.db, br.roomNID); err != nil || !has {
		return err
	}
	parents := make([]storage.AggregationParent, 0, len(indexes))
	for _, i := range indexes {
		e := events[i]
		parents = append(parents, storage.AggregationParent{
			EventID: e.EventID(), Sender: e.Sender(), Type: e.Type(),
			// "If the original event is redacted, any m.replace relationship should not be
			// bundled with it"; "The original event must not, itself, have a rel_type of
			// m.replace".
			Replaceable: e.RedactedBy == "" && relTypeOf(e.Content()) != storage.RelReplace,
		})
	}
	aggs, err := storage.Aggregations(ctx, f.api.db, br.roomNID, parents, br.upper, f.userID)
	if err != nil || len(aggs) == 0 {
		return err
	}
	var served []int64
	for _, agg := range aggs {
		if withThreads && agg.ThreadLatestNID != 0 {
			served = append(served, agg.ThreadLatestNID)
		}
		if agg.ReplaceNID != 0 {
			served = append(served, agg.ReplaceNID)
		}
	}
	children := map[int64]*rooms.Event{}
	if len(served) > 0 {
		loaded, err := f.api.rooms.EventsByNID(ctx, served)
		if err != nil {
			return err
		}
		for _, child := range loaded {
			ok, err := f.visible(ctx, br, roomID, child)
			if err != nil {
				return err
			}
			if ok {
				children[child.NID] = child
			}
		}
	}
	// The latest events of threads, formatted and bundled together.
	var latest []*rooms.Event
	for _, agg := range aggs {
		if child, ok := children[agg.ThreadLatestNID]; ok && withThreads {
			latest = append(latest, child)
		}
	}
	latestOut := map[int64]ClientEvent{}
	if len(latest) > 0 {
		formatted := make([]ClientEvent, len(latest))
		for i, child := range latest {
			formatted[i] = f.format(child, nil)
		}
		if err := f.bundle(ctx, latest, formatted, false); err != nil {
			return err
		}
		for i, child := range latest {
			latestOut[child.NID] = formatted[i]
		}
	}
	for _, i := range indexes {
		e := events[i]
		agg, ok := aggs[e.EventID()]
		if !ok {
			continue
		}
		relations := map[string]any{}
		if latestEvent, ok := latestOut[agg.ThreadLatestNID]; ok {
			relations[storage.RelThread] = threadAggregation{
				LatestEvent: latestEvent, Count: agg.ThreadCount,
				// "current_user_participated is true when the authenticated user is either
				// the sender of the thread root event [or] the sender of an event which
				// references the thread root with a rel_type of m.thread."
				CurrentUserParticipated: agg.ThreadParticipated || e.Sender() == f.userID,
			}
		}
		if edit, ok := children[agg.ReplaceNID]; ok {
			relations[storage.RelReplace] = f.format(edit, nil)
		}
		if len(agg.References) > 0 {
			refs := referenceAggregation{Chunk: make([]eventIDOnly, len(agg.References))}
			for j, id := range agg.References {
				refs.Chunk[j] = eventIDOnly{EventID: id}
			}
			relations[storage.RelReference] = refs
		}
		if len(relations) > 0 {
			out[i].Unsigned.Relations = relations
		}
	}
	return nil
}
