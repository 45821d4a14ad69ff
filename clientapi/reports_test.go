package clientapi

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestReports: events, rooms and users are reported as report_content.yaml says and the
// reports stored; events the reporter is not joined to, cannot see, or that were redacted
// are 404 like unknown ones; bad bodies are refused before anything is looked up.
func TestReports(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		roomID := s.createRoom(alice, map[string]any{"preset": "public_chat"})
		eventID := s.sendText(alice, roomID, "offensive")
		eventPath := "/_matrix/client/v3/rooms/" + roomID + "/report/" + eventID

		// Event reports need the reporter joined.
		s.expectErr("POST", eventPath, bob, map[string]any{"reason": "rude"}, http.StatusNotFound, "M_NOT_FOUND")
		s.joinRoom(bob, roomID)
		s.do("POST", eventPath, bob, map[string]any{"reason": "rude", "score": -100}, http.StatusOK)
		s.do("POST", eventPath, bob, map[string]any{}, http.StatusOK) // the reason is optional
		for _, path := range []string{
			"/_matrix/client/v3/rooms/" + roomID + "/report/$unknown",
			"/_matrix/client/v3/rooms/!other:test.example/report/" + eventID,
		} {
			s.expectErr("POST", path, bob, map[string]any{"reason": "x"}, http.StatusNotFound, "M_NOT_FOUND")
		}
		s.expectErr("POST", eventPath, bob, map[string]any{"reason": 5}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("POST", eventPath, bob, map[string]any{"score": 1.5}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("POST", eventPath, bob, "{", http.StatusBadRequest, "M_NOT_JSON")
		s.expectErr("POST", eventPath, bob, map[string]any{"reason": strings.Repeat("é", maxReportReason+1)}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("POST", eventPath, "", map[string]any{}, http.StatusUnauthorized, "M_MISSING_TOKEN")

		// Events sent after the reporter left, or redacted, cannot be reported.
		secret := s.createRoom(alice, map[string]any{"preset": "private_chat", "initial_state": []any{
			map[string]any{"type": "m.room.history_visibility", "content": map[string]any{"history_visibility": "joined"}}}})
		hidden := s.sendText(alice, secret, "before bob")
		s.do("POST", "/_matrix/client/v3/rooms/"+secret+"/invite", alice, map[string]any{"user_id": bobID}, http.StatusOK)
		s.joinRoom(bob, secret)
		s.expectErr("POST", "/_matrix/client/v3/rooms/"+secret+"/report/"+hidden, bob, map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")
		redacted := s.sendText(alice, roomID, "soon gone")
		s.do("PUT", "/_matrix/client/v3/rooms/"+roomID+"/redact/"+redacted+"/r1", alice, map[string]any{}, http.StatusOK)
		s.expectErr("POST", "/_matrix/client/v3/rooms/"+roomID+"/report/"+redacted, bob, map[string]any{}, http.StatusNotFound, "M_NOT_FOUND")

		// Room reports: no membership needed, a reason is; unknown rooms are 404.
		_, carol, _ := s.register("carol", "password-carol")
		roomPath := "/_matrix/client/v3/rooms/" + roomID + "/report"
		s.do("POST", roomPath, carol, map[string]any{"reason": ""}, http.StatusOK)
		s.expectErr("POST", roomPath, carol, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", roomPath, carol, map[string]any{"reason": []string{"x"}}, http.StatusBadRequest, "M_BAD_JSON")
		s.expectErr("POST", "/_matrix/client/v3/rooms/!nowhere:test.example/report", carol, map[string]any{"reason": "x"}, http.StatusNotFound, "M_NOT_FOUND")
		s.expectErr("POST", "/_matrix/client/v3/rooms/nowhere/report", carol, map[string]any{"reason": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")

		// User reports: stored for our users; unknown and other servers' users get the same
		// answer, and nothing is stored.
		s.do("POST", "/_matrix/client/v3/users/"+aliceID+"/report", carol, map[string]any{"reason": "spammer"}, http.StatusOK)
		s.do("POST", "/_matrix/client/v3/users/@ghost:test.example/report", carol, map[string]any{"reason": "x"}, http.StatusOK)
		s.do("POST", "/_matrix/client/v3/users/@someone:remote.example/report", carol, map[string]any{"reason": "x"}, http.StatusOK)
		s.expectErr("POST", "/_matrix/client/v3/users/"+aliceID+"/report", carol, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
		s.expectErr("POST", "/_matrix/client/v3/users/not-a-user/report", carol, map[string]any{"reason": "x"}, http.StatusBadRequest, "M_INVALID_PARAM")

		reports, err := storage.ListReports(context.Background(), db, storage.ReportQuery{})
		if err != nil {
			t.Fatal(err)
		}
		if len(reports) != 4 {
			t.Fatalf("stored reports: %+v", reports)
		}
		user, room, withoutReason, withScore := reports[0], reports[1], reports[2], reports[3]
		if user.Kind != storage.ReportUser || user.UserID != aliceID || *user.Reason != "spammer" {
			t.Fatalf("user report %+v", user)
		}
		if room.Kind != storage.ReportRoom || room.RoomID != roomID || room.Reason == nil || *room.Reason != "" {
			t.Fatalf("room report %+v", room)
		}
		if withoutReason.Kind != storage.ReportEvent || withoutReason.Reason != nil || withoutReason.Score != nil {
			t.Fatalf("event report without reason %+v", withoutReason)
		}
		if withScore.EventID != eventID || withScore.RoomID != roomID || withScore.Reporter != bobID ||
			*withScore.Reason != "rude" || *withScore.Score != -100 || withScore.ReceivedTS == 0 {
			t.Fatalf("event report %+v", withScore)
		}
	})
}

// TestReportsRateLimited: reports are charged to the reporter's report limit.
func TestReportsRateLimited(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		s.api.limiters.Report = auth.NewLimiter(0.001, 2, time.Now)
		_, alice, _ := s.register("alice", "password-alice")
		bobID, _, _ := s.register("bob", "password-bob")
		path := "/_matrix/client/v3/users/" + bobID + "/report"
		s.do("POST", path, alice, map[string]any{"reason": "spam"}, http.StatusOK)
		s.do("POST", path, alice, map[string]any{"reason": "spam"}, http.StatusOK)
		s.expectErr("POST", path, alice, map[string]any{"reason": "spam"}, http.StatusTooManyRequests, "M_LIMIT_EXCEEDED")
	})
}
