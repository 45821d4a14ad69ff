package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestNonCanonicalContentIsBadJSON: content the event format cannot carry (floats, integers
// beyond ±2^53) is the client's error, 400 M_BAD_JSON, never a 500.
func TestNonCanonicalContentIsBadJSON(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat"})
		for i, content := range []string{`{"body":"x","n":1.5}`, `{"n":1e30}`, `{"n":9007199254740993}`} {
			resp := s.do("PUT", "/_matrix/client/v3/rooms/"+url.PathEscape(roomID)+"/send/m.room.message/t"+string(rune('a'+i)),
				alice, json.RawMessage(content), http.StatusBadRequest)
			if resp["errcode"] != "M_BAD_JSON" {
				t.Errorf("content %s: %v, want M_BAD_JSON", content, resp)
			}
		}
	})
}
