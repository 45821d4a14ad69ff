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

// TestRedactionThroughSend: PUT /send/m.room.redaction (v1.18) redacts content.redacts with
// the checks of /redact, in room versions that carry the target in content (v11+) and at
// the top level (before v11, where it is moved out of content).
func TestRedactionThroughSend(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		_, bob, _ := s.register("bob", "password-bob")
		for _, version := range []string{"10", "12"} {
			roomID := s.createRoom(alice, map[string]any{"preset": "public_chat", "room_version": version})
			s.joinRoom(bob, roomID)
			theirs := s.sendText(alice, roomID, "alice's")
			own := s.sendText(bob, roomID, "bob's")
			room := "/_matrix/client/v3/rooms/" + url.PathEscape(roomID)
			send := room + "/send/m.room.redaction/"

			s.expectErr("PUT", send+"r-"+version+"-theirs", bob, map[string]any{"redacts": theirs}, http.StatusForbidden, "M_FORBIDDEN")
			s.expectErr("PUT", send+"r-"+version+"-none", bob, map[string]any{"reason": "no target"}, http.StatusBadRequest, "M_MISSING_PARAM")
			s.expectErr("PUT", send+"r-"+version+"-bad", bob, map[string]any{"redacts": 5}, http.StatusBadRequest, "M_BAD_JSON")

			body := map[string]any{"redacts": own, "reason": "oops"}
			redactionID := s.do("PUT", send+"r-"+version, bob, body, http.StatusOK)["event_id"].(string)
			if again := s.do("PUT", send+"r-"+version, bob, body, http.StatusOK)["event_id"]; again != redactionID {
				t.Fatalf("v%s: repeated transaction gave %v, want %s", version, again, redactionID)
			}
			redaction := s.do("GET", room+"/event/"+url.PathEscape(redactionID), bob, nil, http.StatusOK)
			content := redaction["content"].(map[string]any)
			_, inContent := content["redacts"]
			if redaction["redacts"] != own || content["reason"] != "oops" || inContent != (version == "12") {
				t.Fatalf("v%s: redaction %v", version, redaction)
			}
			redacted := s.do("GET", room+"/event/"+url.PathEscape(own), bob, nil, http.StatusOK)
			if len(redacted["content"].(map[string]any)) != 0 {
				t.Fatalf("v%s: redacted event still has content %v", version, redacted["content"])
			}
		}
	})
}
