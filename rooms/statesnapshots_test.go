package rooms

import (
	"math/rand"
	"testing"
)

// TestSnapshotChainMatchesFullState applies random state changes and checks that every
// snapshot read through its chain equals the state computed naively, that chains stay short
// and that the rows written grow with the number of changes, not with the room's size.
func TestSnapshotChainMatchesFullState(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	chain := &snapshotChain{}
	want := stateDelta{}
	rows := 0
	nextNID := int64(1)
	const changes = 10000
	for i := 0; i < changes; i++ {
		change := stateDelta{}
		switch {
		case i < 5:
			change[int64(i)] = int64(i + 1) // create, power levels, …
		case rng.Intn(10) == 0:
			change[int64(rng.Intn(5))] = int64(i + 1) // a power-level or topic change
		default:
			change[int64(i)] = int64(i + 1) // a new member joins
		}
		depth, baseNID, delta, keep := chain.extend(change)
		if depth > 0 && baseNID == 0 {
			t.Fatalf("change %d: no base for depth %d", i, depth)
		}
		rows += len(delta)
		chain = chain.withLink(keep, chainLink{nid: nextNID, depth: depth, delta: delta})
		nextNID++
		for k, v := range change {
			want[k] = v
		}
		if len(chain.links) > 64 {
			t.Fatalf("change %d: chain of %d links", i, len(chain.links))
		}
		if i%997 == 0 || i == changes-1 {
			got := chain.full(nil)
			if len(got) != len(want) {
				t.Fatalf("change %d: %d tuples, want %d", i, len(got), len(want))
			}
			for k, v := range want {
				if got[k] != v {
					t.Fatalf("change %d: tuple %d = %d, want %d", i, k, got[k], v)
				}
			}
		}
	}
	// n·log2(n)/2 ≈ 66k for 10k changes; a full snapshot per change would be ~45M rows.
	if rows > 100000 {
		t.Fatalf("%d delta rows for %d changes", rows, changes)
	}
	t.Logf("%d changes stored as %d delta rows; final chain %d links", changes, rows, len(chain.links))
}

func TestBaseDepth(t *testing.T) {
	for _, tc := range []struct{ depth, base int64 }{
		{1, 0}, {2, 0}, {3, 2}, {4, 0}, {6, 4}, {7, 6}, {8, 0}, {12, 8},
		{4096, 0}, {8192, 4096}, {8193, 8192}, {12288, 8192},
	} {
		if got := baseDepth(tc.depth); got != tc.base {
			t.Errorf("baseDepth(%d) = %d, want %d", tc.depth, got, tc.base)
		}
	}
}

func TestRemovalTombstones(t *testing.T) {
	chain := &snapshotChain{}
	for i, change := range []stateDelta{{1: 10, 2: 20}, {2: 0}, {3: 30}} {
		depth, _, delta, keep := chain.extend(change)
		chain = chain.withLink(keep, chainLink{nid: int64(i + 1), depth: depth, delta: delta})
	}
	got := chain.full(nil)
	if len(got) != 2 || got[1] != 10 || got[3] != 30 {
		t.Fatalf("state = %v", got)
	}
}
