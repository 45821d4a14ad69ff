package rooms

// Recent events.
//
// Each loaded room keeps its newest timeline events in memory, so that the incremental
// /sync of a busy room — the hottest read of a homeserver — needs no database query. The
// ring is exact above its floor: every event of the room with a stream position above the
// floor is in it (a room's writes all go through its lock, which the ring is updated under).

// recentEventsPerRoom is how many events each room keeps.
const recentEventsPerRoom = 64

// recentRing is a room's newest events, oldest first.
type recentRing struct {
	events []*Event
	// floor: every event of the room with a stream position above it is in events.
	floor int64
}

// add appends an accepted event (positions only grow: they are allocated under the room's
// lock, and the room's events are appended in the order they were given them).
func (g *recentRing) add(e *Event) {
	if len(g.events) == recentEventsPerRoom {
		g.floor = g.events[0].StreamPos
		copy(g.events, g.events[1:])
		g.events = g.events[:len(g.events)-1]
	}
	g.events = append(g.events, e)
}

// between returns the events with from < position <= to, oldest first, if the ring holds
// all of them.
func (g *recentRing) between(from, to int64) ([]*Event, bool) {
	if from < g.floor {
		return nil, false
	}
	var out []*Event
	for _, e := range g.events {
		if e.StreamPos > from && e.StreamPos <= to {
			out = append(out, e)
		}
	}
	return out, true
}

// replace swaps in a new copy of an event (after its redaction).
func (g *recentRing) replace(e *Event) {
	for i, old := range g.events {
		if old.NID == e.NID {
			g.events[i] = e
		}
	}
}
