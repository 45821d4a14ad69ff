package clientapi

import (
	"net/http"
	"net/url"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

const notificationsPath = "/_matrix/client/v3/notifications"

// notificationPage reads one page of /notifications: the notifications and next_token.
func (s *testServer) notificationPage(token string, params url.Values) ([]map[string]any, string) {
	s.t.Helper()
	out := s.do("GET", notificationsPath+"?"+params.Encode(), token, nil, http.StatusOK)
	var notifications []map[string]any
	for _, raw := range out["notifications"].([]any) {
		notifications = append(notifications, raw.(map[string]any))
	}
	next, _ := out["next_token"].(string)
	return notifications, next
}

// notificationIDs follows next_token from the first page to the last and lists the event
// IDs in the order received, failing on an event seen twice.
func (s *testServer) notificationIDs(token string, params url.Values) (ids []string, pages int) {
	s.t.Helper()
	seen := map[string]bool{}
	for {
		pages++
		if pages > 100 {
			s.t.Fatal("pagination does not end")
		}
		notifications, next := s.notificationPage(token, params)
		for _, n := range notifications {
			id := n["event"].(map[string]any)["event_id"].(string)
			if seen[id] {
				s.t.Fatalf("notification for %s listed twice", id)
			}
			seen[id] = true
			ids = append(ids, id)
		}
		if next == "" {
			return ids, pages
		}
		params.Set("from", next)
	}
}

// TestNotifications: GET /notifications lists the events of bob's joined rooms since he
// joined that his rules make notify, newest first, neither his own nor those of a room he
// muted; only=highlight keeps the highlights; pages follow next_token without repeats;
// read follows his receipt.
func TestNotifications(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{bobID}})
		s.sendText(alice, roomID, "before bob joined")
		s.joinRoom(bob, roomID)
		muted := s.createRoom(alice, map[string]any{"preset": "private_chat", "invite": []string{bobID}})
		s.joinRoom(bob, muted)
		s.do("PUT", "/_matrix/client/v3/pushrules/global/room/"+muted, bob, map[string]any{"actions": []any{}}, http.StatusOK)

		var want, highlights []string
		for i := range 7 {
			if i%3 == 1 {
				id := s.sendEvent(alice, roomID, "m.room.message", map[string]any{"msgtype": "m.text", "body": "hey you",
					"m.mentions": map[string]any{"user_ids": []string{bobID}}})
				want, highlights = append(want, id), append(highlights, id)
			} else {
				want = append(want, s.sendText(alice, roomID, "chatter"))
			}
			s.sendText(bob, roomID, "my own words")
			s.sendText(alice, muted, "muted")
		}
		slices.Reverse(want)
		slices.Reverse(highlights)

		all, next := s.notificationPage(bob, url.Values{})
		if next != "" || len(all) != len(want) {
			t.Fatalf("%d notifications and next_token %q, want %d and none", len(all), next, len(want))
		}
		for i, n := range all {
			event := n["event"].(map[string]any)
			if event["event_id"] != want[i] || event["room_id"] != nil || n["room_id"] != roomID || n["read"] != false ||
				n["ts"] != event["origin_server_ts"] || !slices.Contains(n["actions"].([]any), any("notify")) {
				t.Fatalf("notification %d = %v", i, n)
			}
		}

		ids, pages := s.notificationIDs(bob, url.Values{"limit": {"3"}})
		if !slices.Equal(ids, want) || pages != 3 {
			t.Fatalf("paginated by 3: %d pages of %v, want %v", pages, ids, want)
		}
		ids, _ = s.notificationIDs(bob, url.Values{"only": {"highlight"}, "limit": {"1"}})
		if !slices.Equal(ids, highlights) {
			t.Fatalf("only=highlight: %v, want %v", ids, highlights)
		}

		// Bob reads up to the fourth newest: it and the older ones are read.
		s.do("POST", "/_matrix/client/v3/rooms/"+roomID+"/receipt/m.read/"+want[3], bob, map[string]any{}, http.StatusOK)
		all, _ = s.notificationPage(bob, url.Values{})
		for i, n := range all {
			if read := n["read"].(bool); read != (i >= 3) {
				t.Fatalf("notification %d read = %v", i, read)
			}
		}

		s.expectErr("GET", notificationsPath+"?from=abc", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		s.expectErr("GET", notificationsPath+"?limit=-1", bob, nil, http.StatusBadRequest, "M_INVALID_PARAM")
		// Alice's are bob's messages, not hers.
		mine, _ := s.notificationPage(alice, url.Values{})
		for _, n := range mine {
			if n["event"].(map[string]any)["sender"] != bobID {
				t.Fatalf("alice is notified of %v", n)
			}
		}
		if len(mine) != 7 {
			t.Fatalf("alice has %d notifications, want bob's 7", len(mine))
		}
	})
}
