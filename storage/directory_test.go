package storage_test

import (
	"context"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestSnapshotStateEventNIDs reads single tuples through a chain of deltas: the deepest
// delta that mentions a tuple decides, and 0 there removes it.
func TestSnapshotStateEventNIDs(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		name, err := storage.InternTuple(ctx, db, "m.room.name", "")
		if err != nil {
			t.Fatal(err)
		}
		topic, err := storage.InternTuple(ctx, db, "m.room.topic", "")
		if err != nil {
			t.Fatal(err)
		}
		root, err := storage.InsertSnapshot(ctx, db, 1, 0, 0, map[int64]int64{name: 10, topic: 11})
		if err != nil {
			t.Fatal(err)
		}
		renamed, err := storage.InsertSnapshot(ctx, db, 1, root, 1, map[int64]int64{name: 12})
		if err != nil {
			t.Fatal(err)
		}
		untopiced, err := storage.InsertSnapshot(ctx, db, 1, renamed, 2, map[int64]int64{topic: 0})
		if err != nil {
			t.Fatal(err)
		}
		tuples := [][2]string{{"m.room.name", ""}, {"m.room.topic", ""}, {"m.room.member", "@nobody:x"}}
		for _, tc := range []struct {
			snapshot    int64
			name, topic int64
		}{
			{root, 10, 11},
			{renamed, 12, 11},
			{untopiced, 12, 0},
			{0, 0, 0},
		} {
			got, err := storage.SnapshotStateEventNIDs(ctx, db, tc.snapshot, tuples)
			if err != nil {
				t.Fatal(err)
			}
			if got[tuples[0]] != tc.name || got[tuples[1]] != tc.topic || len(got) != countNonZero(tc.name, tc.topic) {
				t.Fatalf("snapshot %d: %v", tc.snapshot, got)
			}
		}
	})
}

func countNonZero(v ...int64) int {
	n := 0
	for _, x := range v {
		if x != 0 {
			n++
		}
	}
	return n
}

func TestEscapeLike(t *testing.T) {
	if got := storage.EscapeLike(`50%_off\`); got != `50\%\_off\\` {
		t.Fatalf("EscapeLike: %s", got)
	}
}
