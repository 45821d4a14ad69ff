package storage_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// relEvent is an event row for the relation tests: content is the event's content, pos its
// stream position.
func relEvent(id, sender string, pos int64, status storage.EventStatus, ts int64, content map[string]any) *storage.EventRow {
	js, _ := json.Marshal(map[string]any{"type": "m.room.message", "sender": sender, "content": content,
		"origin_server_ts": ts, "room_id": "!r:x"})
	return &storage.EventRow{EventID: id, RoomNID: 1, StreamPos: pos, Status: status, Type: "m.room.message",
		Sender: sender, OriginTS: ts, JSON: js}
}

// relatesTo is message content with an m.relates_to.
func relatesTo(relType, parent string, extra map[string]any) map[string]any {
	c := map[string]any{"body": "x", "m.relates_to": map[string]any{"rel_type": relType, "event_id": parent}}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

func insertRel(t *testing.T, db *storage.DB, e *storage.EventRow) {
	t.Helper()
	if _, err := storage.InsertEvent(context.Background(), db, e); err != nil {
		t.Fatalf("insert %s: %v", e.EventID, err)
	}
}

// relatedIDs pages through RelatedEvents and returns the event NIDs in order.
func relatedNIDs(t *testing.T, db *storage.DB, rq storage.RelationQuery) []int64 {
	t.Helper()
	got, err := storage.RelatedEvents(context.Background(), db, rq)
	if err != nil {
		t.Fatalf("RelatedEvents(%+v): %v", rq, err)
	}
	var out []int64
	for _, r := range got {
		out = append(out, r.EventNID)
	}
	return out
}

// TestRelationIndex: only timeline events with a valid m.relates_to are indexed — soft-failed,
// rejected and position-less outliers are not, until StoreReceivedEvent accepts them or
// backfill gives them a position — and a redaction removes the row. Pages come in both
// directions with type filters and recursion.
func TestRelationIndex(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		newContent := map[string]any{"m.new_content": map[string]any{"body": "y"}}
		nids := map[string]int64{}
		for _, e := range []*storage.EventRow{
			relEvent("$root", "@a:x", 1, storage.EventAccepted, 10, map[string]any{"body": "root"}),
			relEvent("$t1", "@a:x", 2, storage.EventAccepted, 20, relatesTo("m.thread", "$root", nil)),
			relEvent("$t2", "@b:x", 3, storage.EventAccepted, 30, relatesTo("m.thread", "$root", nil)),
			relEvent("$edit1", "@a:x", 4, storage.EventAccepted, 100, relatesTo("m.replace", "$root", newContent)),
			relEvent("$edit2", "@a:x", 5, storage.EventAccepted, 100, relatesTo("m.replace", "$root", newContent)),
			relEvent("$edit3", "@b:x", 6, storage.EventAccepted, 200, relatesTo("m.replace", "$root", newContent)),
			relEvent("$edit4", "@a:x", 7, storage.EventAccepted, 300, relatesTo("m.replace", "$root", nil)),
			relEvent("$ref1", "@b:x", 8, storage.EventAccepted, 40, relatesTo("m.reference", "$root", nil)),
			relEvent("$badtype", "@b:x", 9, storage.EventAccepted, 40, relatesTo("M.Bad", "$root", nil)),
			relEvent("$self", "@b:x", 10, storage.EventAccepted, 40, relatesTo("m.thread", "$self", nil)),
			relEvent("$softfailed", "@c:x", 0, storage.EventSoftFailed, 40, relatesTo("m.thread", "$root", nil)),
			relEvent("$outlier", "@c:x", 0, storage.EventOutlier, 50, relatesTo("m.thread", "$root", nil)),
			relEvent("$held", "@c:x", 0, storage.EventOutlier, 5, relatesTo("m.reference", "$root", nil)),
			relEvent("$a1", "@b:x", 11, storage.EventAccepted, 60, relatesTo("m.annotation", "$t1", nil)),
			relEvent("$a2", "@b:x", 12, storage.EventAccepted, 70, relatesTo("m.annotation", "$a1", nil)),
			relEvent("$a3", "@b:x", 13, storage.EventAccepted, 80, relatesTo("m.annotation", "$a2", nil)),
		} {
			insertRel(t, db, e)
			nids[e.EventID] = e.NID
		}
		// Accepting the outlier and backfilling the held event put them in the index.
		accepted := relEvent("$outlier", "@c:x", 14, storage.EventAccepted, 50, relatesTo("m.thread", "$root", nil))
		if _, err := storage.StoreReceivedEvent(ctx, db, accepted); err != nil {
			t.Fatal(err)
		}
		rejected := relEvent("$rejected", "@c:x", 0, storage.EventRejected, 50, relatesTo("m.thread", "$root", nil))
		if _, err := storage.StoreReceivedEvent(ctx, db, rejected); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.InsertEventsIfAbsent(ctx, db, []*storage.EventRow{
			relEvent("$joinchain", "@c:x", 0, storage.EventOutlier, 50, relatesTo("m.thread", "$root", nil)),
		}); err != nil {
			t.Fatal(err)
		}
		if err := storage.SetBackfillPosition(ctx, db, nids["$held"], -5); err != nil {
			t.Fatal(err)
		}

		all := storage.RelationQuery{RoomNID: 1, ParentID: "$root", Depth: 1, From: 1 << 40, Bound: -1 << 40, Backwards: true, Limit: 100}
		got := relatedNIDs(t, db, all)
		want := []int64{nids["$outlier"], nids["$ref1"], nids["$edit3"], nids["$edit2"], nids["$edit1"], nids["$t2"], nids["$t1"], nids["$held"]}
		if !slices.Equal(got, want) {
			t.Fatalf("children of $root = %v, want %v (nids %v)", got, want, nids)
		}
		forwards := all
		forwards.Backwards, forwards.From, forwards.Bound = false, 2, 6
		if got := relatedNIDs(t, db, forwards); !slices.Equal(got, []int64{nids["$t2"], nids["$edit1"], nids["$edit2"], nids["$edit3"]}) {
			t.Errorf("forwards (2, 6] = %v", got)
		}
		threads := all
		threads.RelType, threads.Limit = "m.thread", 2
		if got := relatedNIDs(t, db, threads); !slices.Equal(got, []int64{nids["$outlier"], nids["$t2"]}) {
			t.Errorf("first two threaded = %v", got)
		}
		threads.EventType = "m.sticker"
		if got := relatedNIDs(t, db, threads); len(got) != 0 {
			t.Errorf("threaded stickers = %v", got)
		}

		// Recursion follows children of children, filters applying at every level.
		tree := storage.RelationQuery{RoomNID: 1, ParentID: "$root", From: -1 << 40, Bound: 1 << 40, Backwards: false, Limit: 100, RelType: "m.annotation"}
		for depth, want := range map[int][]int64{
			1: nil,
			3: nil, // $t1 is an m.thread child: the annotations below it are cut off
		} {
			tree.Depth = depth
			if got := relatedNIDs(t, db, tree); !slices.Equal(got, want) {
				t.Errorf("annotations of $root at depth %d = %v, want %v", depth, got, want)
			}
		}
		tree.RelType = ""
		for depth, want := range map[int][]int64{
			2: {nids["$held"], nids["$t1"], nids["$t2"], nids["$edit1"], nids["$edit2"], nids["$edit3"], nids["$ref1"], nids["$a1"], nids["$outlier"]},
			3: {nids["$held"], nids["$t1"], nids["$t2"], nids["$edit1"], nids["$edit2"], nids["$edit3"], nids["$ref1"], nids["$a1"], nids["$a2"], nids["$outlier"]},
		} {
			tree.Depth = depth
			if got := relatedNIDs(t, db, tree); !slices.Equal(got, want) {
				t.Errorf("related to $root at depth %d = %v, want %v", depth, got, want)
			}
		}

		// Aggregations: the thread, the latest valid edit (same sender and type, m.new_content;
		// the larger event ID on a timestamp tie), references oldest first.
		parents := []storage.AggregationParent{
			{EventID: "$root", Sender: "@a:x", Type: "m.room.message", Replaceable: true},
			{EventID: "$t2", Sender: "@b:x", Type: "m.room.message", Replaceable: true},
		}
		aggs, err := storage.Aggregations(ctx, db, 1, parents, 1<<40, "@b:x")
		if err != nil {
			t.Fatal(err)
		}
		root := aggs["$root"]
		if len(aggs) != 1 || root == nil || root.ThreadCount != 3 || root.ThreadLatestNID != nids["$outlier"] ||
			!root.ThreadParticipated || root.ReplaceNID != nids["$edit2"] || !slices.Equal(root.References, []string{"$held", "$ref1"}) {
			t.Fatalf("aggregations = %v, root %+v", aggs, root)
		}
		// Up to position 4 (a user who left then) and for another user.
		aggs, err = storage.Aggregations(ctx, db, 1, parents[:1], 4, "@c:x")
		if err != nil {
			t.Fatal(err)
		}
		if root := aggs["$root"]; root == nil || root.ThreadCount != 2 || root.ThreadLatestNID != nids["$t2"] ||
			root.ThreadParticipated || root.ReplaceNID != nids["$edit1"] || !slices.Equal(root.References, []string{"$held"}) {
			t.Fatalf("aggregations up to 4 = %+v", root)
		}

		// Threads, most recently active first; participation by a child or by the root.
		roots, err := storage.Threads(ctx, db, 1, 1<<40, "", 10)
		if err != nil || len(roots) != 1 || roots[0] != (storage.ThreadRoot{RootID: "$root", LatestPos: 14}) {
			t.Fatalf("threads = %+v, %v", roots, err)
		}
		for user, want := range map[string]int{"@a:x": 1, "@c:x": 1, "@d:x": 0} {
			if roots, err := storage.Threads(ctx, db, 1, 1<<40, user, 10); err != nil || len(roots) != want {
				t.Errorf("threads %s took part in = %+v, %v", user, roots, err)
			}
		}
		if roots, err := storage.Threads(ctx, db, 1, 13, "", 10); err != nil || len(roots) != 0 {
			t.Errorf("threads active at or below 13 = %+v, %v", roots, err)
		}

		// Redacting the latest thread child moves the thread back to the one before; redacting
		// the rest ends it.
		if err := storage.SetRedactedBy(ctx, db, "$outlier", "$redaction"); err != nil {
			t.Fatal(err)
		}
		roots, err = storage.Threads(ctx, db, 1, 1<<40, "", 10)
		if err != nil || len(roots) != 1 || roots[0].LatestPos != 3 {
			t.Fatalf("threads after redacting the latest = %+v, %v", roots, err)
		}
		for _, id := range []string{"$t1", "$t2"} {
			if err := storage.SetRedactedBy(ctx, db, id, "$redaction"); err != nil {
				t.Fatal(err)
			}
		}
		if roots, err := storage.Threads(ctx, db, 1, 1<<40, "", 10); err != nil || len(roots) != 0 {
			t.Fatalf("threads after redacting all = %+v, %v", roots, err)
		}
		threads.EventType, threads.Limit = "", 100
		if got := relatedNIDs(t, db, threads); len(got) != 0 {
			t.Errorf("threaded after redactions = %v", got)
		}
		// A redacted event stored again (an outlier accepted later) stays out of the index.
		again := relEvent("$t1", "@a:x", 2, storage.EventAccepted, 20, relatesTo("m.thread", "$root", nil))
		if _, err := storage.InsertEventsIfAbsent(ctx, db, []*storage.EventRow{again}); err != nil {
			t.Fatal(err)
		}
		if got := relatedNIDs(t, db, threads); len(got) != 0 {
			t.Errorf("threaded after storing a redacted event again = %v", got)
		}
	})
}
