package rooms

// State snapshots.
//
// Every event records the snapshot of the room state before it. A snapshot is stored as a
// delta against an older snapshot of the same lineage, its base, so that a room with 10,000
// members does not store 10,000 rows for each of its events — or for each of its joins.
//
// Snapshots of one lineage are numbered by depth (0 is the root, stored in full; each new
// snapshot is one deeper than the one it was derived from). The base of the snapshot at
// depth d sits at depth d − lowbit(d) (lowbit(d) is the lowest set bit of d), capped to at
// most maxDeltaSpan back, as in a Fenwick tree:
//
//   - a delta at depth d holds at most the changes of lowbit(d) consecutive snapshots, so the
//     rows written for n state changes grow as n·log(n) at most (and linearly beyond
//     maxDeltaSpan), never with the size of the room;
//   - reading a snapshot in full walks at most popcount(d) + d/maxDeltaSpan deltas.
//
// The base of depth d+1 is always on the chain of depth d (clearing the trailing ones of d
// is a prefix of clearing its low bits one at a time), so a new snapshot's delta is the
// union of the deltas it skips plus its own change: no full state is needed to write one.

// maxDeltaSpan caps how many consecutive changes one delta may cover.
const maxDeltaSpan = 4096

// baseDepth is the depth of the base of a snapshot at depth d (d > 0).
func baseDepth(d int64) int64 {
	low := d & -d
	if low > maxDeltaSpan {
		low = maxDeltaSpan
	}
	return d - low
}

// stateDelta maps a state tuple's numeric ID to an event's numeric ID; 0 removes the tuple.
type stateDelta map[int64]int64

// chainLink is one stored snapshot: its numeric ID, depth and delta against the link before.
type chainLink struct {
	nid   int64
	depth int64
	delta stateDelta
}

// snapshotChain is a snapshot with the chain of bases it is read through; links[0] is the
// root (a full state), and each link's base is the link before it.
type snapshotChain struct {
	links []chainLink
}

// nid is the snapshot's numeric ID (0 for the empty state before a room's create event).
func (c *snapshotChain) nid() int64 {
	if len(c.links) == 0 {
		return 0
	}
	return c.links[len(c.links)-1].nid
}

// extend computes the snapshot that applies change on top of c: its depth, the numeric ID of
// its base and the delta to store against that base. The caller stores it and then calls
// appendLink with the new numeric ID.
func (c *snapshotChain) extend(change stateDelta) (depth, baseNID int64, delta stateDelta, keep int) {
	if len(c.links) == 0 {
		return 0, 0, copyDelta(change), 0
	}
	depth = c.links[len(c.links)-1].depth + 1
	target := baseDepth(depth)
	keep = len(c.links)
	for keep > 0 && c.links[keep-1].depth > target {
		keep--
	}
	delta = stateDelta{}
	for _, link := range c.links[keep:] {
		for tuple, event := range link.delta {
			delta[tuple] = event
		}
	}
	for tuple, event := range change {
		delta[tuple] = event
	}
	if keep == 0 {
		// Only reachable if the chain was not built by extend; store a full state.
		return 0, 0, c.full(change), 0
	}
	return depth, c.links[keep-1].nid, delta, keep
}

// withLink is the chain of a new snapshot made by extend.
func (c *snapshotChain) withLink(keep int, link chainLink) *snapshotChain {
	links := make([]chainLink, keep, keep+1)
	copy(links, c.links[:keep])
	return &snapshotChain{links: append(links, link)}
}

// full is the whole state of the chain, with change applied on top.
func (c *snapshotChain) full(change stateDelta) stateDelta {
	state := stateDelta{}
	for _, link := range c.links {
		for tuple, event := range link.delta {
			state[tuple] = event
		}
	}
	for tuple, event := range change {
		state[tuple] = event
	}
	for tuple, event := range state {
		if event == 0 {
			delete(state, tuple)
		}
	}
	return state
}

func copyDelta(d stateDelta) stateDelta {
	out := make(stateDelta, len(d))
	for k, v := range d {
		out[k] = v
	}
	return out
}
