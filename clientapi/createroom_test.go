package clientapi

import (
	"net/http"
	"net/url"
	"reflect"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestCreateRoomTopic: the topic of /createRoom is an m.room.topic event with a text/plain
// m.topic content block beside the plain topic (v1.15).
func TestCreateRoomTopic(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"topic": "All about happy hour"})
		got := s.do("GET", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/state/m.room.topic", alice, nil, http.StatusOK)
		want := map[string]any{
			"topic":   "All about happy hour",
			"m.topic": map[string]any{"m.text": []any{map[string]any{"mimetype": "text/plain", "body": "All about happy hour"}}},
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("topic content %v, want %v", got, want)
		}
	})
}
