package rooms

import (
	"context"
	"errors"
	"slices"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Timeline returns up to limit of a room's newest events with from < stream_pos <= to,
// oldest first, and whether older events in that range were left out.
func (s *Server) Timeline(ctx context.Context, roomNID, from, to int64, limit int) ([]*Event, bool, error) {
	if events, ok := s.RecentEvents(roomNID, from, to); ok {
		if len(events) > limit {
			return events[len(events)-limit:], true, nil
		}
		return events, false, nil
	}
	rows, err := storage.RoomEventsBetween(ctx, s.db, roomNID, from, to, limit+1)
	if err != nil {
		return nil, false, err
	}
	limited := len(rows) > limit
	if limited {
		rows = rows[:limit]
	}
	events, err := s.EventsFromRows(rows)
	if err != nil {
		return nil, false, err
	}
	slices.Reverse(events)
	return events, limited, nil
}

// Page returns up to limit of a room's events from a stream position: backwards (events
// with stream_pos <= from, newest first) or forwards (stream_pos > from, oldest first),
// never past to.
func (s *Server) Page(ctx context.Context, roomNID, from, to int64, backwards bool, limit int) ([]*Event, error) {
	var rows []*storage.EventRow
	var err error
	if backwards {
		rows, err = storage.RoomEventsBetween(ctx, s.db, roomNID, to, from, limit)
	} else {
		rows, err = storage.RoomEventsAfter(ctx, s.db, roomNID, from, to, limit)
	}
	if err != nil {
		return nil, err
	}
	return s.EventsFromRows(rows)
}

// StateAtPosition is the room's state after its last event at or before stream position
// pos (empty if the room had no events then).
func (s *Server) StateAtPosition(ctx context.Context, roomNID, pos int64) (map[spec.StateTuple]*Event, error) {
	row, err := storage.LastEventAtOrBefore(ctx, s.db, roomNID, pos)
	if errors.Is(err, storage.ErrNotFound) {
		return map[spec.StateTuple]*Event{}, nil
	}
	if err != nil {
		return nil, err
	}
	e, err := s.fromRow(row)
	if err != nil {
		return nil, err
	}
	return s.StateAfter(ctx, e)
}

// RoomIDOfNID is the room ID of a room numeric ID.
func (s *Server) RoomIDOfNID(ctx context.Context, roomNID int64) (string, error) {
	return storage.RoomIDByNID(ctx, s.db, roomNID)
}

// RecentEvents returns a room's events with from < stream_pos <= to, oldest first, from
// memory, if the room is loaded and still holds all of them.
func (s *Server) RecentEvents(roomNID, from, to int64) ([]*Event, bool) {
	s.mu.Lock()
	r, ok := s.byNID[roomNID]
	s.mu.Unlock()
	if !ok {
		return nil, false
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.recent.between(from, to)
}
