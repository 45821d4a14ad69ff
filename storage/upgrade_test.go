package storage_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestMoveRoomDirectory: the aliases of the old room, and its place in the published
// directory, go to the replacement room; other rooms' aliases stay.
func TestMoveRoomDirectory(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		for _, room := range []string{"!old:x", "!new:x", "!other:x", "!private:x", "!private2:x"} {
			if _, err := storage.InsertRoom(ctx, db, room, "12"); err != nil {
				t.Fatal(err)
			}
		}
		for alias, room := range map[string]string{"#a:x": "!old:x", "#b:x": "!old:x", "#c:x": "!other:x"} {
			if err := storage.InsertAlias(ctx, db, alias, room, "@u:x"); err != nil {
				t.Fatal(err)
			}
		}
		if err := storage.SetRoomPublic(ctx, db, "!old:x", true); err != nil {
			t.Fatal(err)
		}
		moved, err := storage.MoveRoomDirectory(ctx, db, "!old:x", "!new:x")
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(moved, []string{"#a:x", "#b:x"}) {
			t.Fatalf("moved %v", moved)
		}
		for room, want := range map[string][]string{"!old:x": nil, "!new:x": {"#a:x", "#b:x"}, "!other:x": {"#c:x"}} {
			got, err := storage.AliasesOfRoom(ctx, db, room)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("aliases of %s: %v, want %v", room, got, want)
			}
		}
		for room, want := range map[string]bool{"!old:x": false, "!new:x": true} {
			if public, err := storage.RoomIsPublic(ctx, db, room); err != nil || public != want {
				t.Fatalf("%s public: %v %v, want %v", room, public, err, want)
			}
		}

		// A private room's replacement stays private; an unknown old room is ErrNotFound and
		// changes nothing.
		if _, err := storage.MoveRoomDirectory(ctx, db, "!private:x", "!private2:x"); err != nil {
			t.Fatal(err)
		}
		if public, err := storage.RoomIsPublic(ctx, db, "!private2:x"); err != nil || public {
			t.Fatalf("replacement of a private room published: %v %v", public, err)
		}
		if _, err := storage.MoveRoomDirectory(ctx, db, "!nowhere:x", "!other:x"); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("unknown room: %v", err)
		}
	})
}
