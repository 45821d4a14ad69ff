package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// eventsFixture is a room of here.example that peer.example has joined, with messages, and
// the event API over it.
type eventsFixture struct {
	rs       *rooms.Server
	router   chi.Router
	roomID   string
	create   string
	ritaJoin string
	messages []string
}

func newEventsFixture(t *testing.T, db *storage.DB, historyVisibility string) *eventsFixture {
	t.Helper()
	ctx := context.Background()
	hp := newHereAndPeer(t, db)
	log, rs, peer, keys := hp.log, hp.rs, hp.peer, hp.keys
	rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
	alice, rita, empty := "@alice:here.example", "@rita:peer.example", ""
	roomID, created, err := rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
		{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"public"}`)},
		{Sender: alice, Type: "m.room.history_visibility", StateKey: &empty, Content: json.RawMessage(`{"history_visibility":"` + historyVisibility + `"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &eventsFixture{rs: rs, roomID: roomID, create: created[0].EventID()}
	join := peer.build(t, rs, roomID, rita, "m.room.member", &rita, `{"membership":"join"}`)
	if _, err := rs.ReceiveEvent(ctx, join, keys); err != nil {
		t.Fatal(err)
	}
	f.ritaJoin = join.EventID()
	for i := range 5 {
		sent, err := rs.Send(ctx, roomID, rooms.EventRequest{Sender: alice, Type: "m.room.message",
			Content: json.RawMessage(fmt.Sprintf(`{"msgtype":"m.text","body":"message %d"}`, i))})
		if err != nil {
			t.Fatal(err)
		}
		f.messages = append(f.messages, sent[0].EventID())
	}
	a := &API{ServerName: "here.example", DB: db, Rooms: rs, Log: log, Clock: time.Now}
	router := chi.NewRouter()
	a.eventRoutes(router)
	f.router = router
	return f
}

// do sends a request as origin and decodes the answer into out (when 200).
func (f *eventsFixture) do(t *testing.T, method, path, origin, body string, out any) (int, string) {
	t.Helper()
	var reader io.Reader
	if body != "" {
		reader = strings.NewReader(body)
	}
	req := httptest.NewRequest(method, path, reader)
	req = req.WithContext(WithOrigin(req.Context(), origin))
	w := httptest.NewRecorder()
	f.router.ServeHTTP(w, req)
	var errBody struct {
		Errcode string `json:"errcode"`
	}
	if w.Code == http.StatusOK && out != nil {
		if err := json.Unmarshal(w.Body.Bytes(), out); err != nil {
			t.Fatalf("%s %s: %v", method, path, err)
		}
	}
	_ = json.Unmarshal(w.Body.Bytes(), &errBody)
	return w.Code, errBody.Errcode
}

// pduIDs reads the event IDs of PDUs.
func pduIDs(t *testing.T, pdus []json.RawMessage) []string {
	t.Helper()
	rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
	var ids []string
	for _, raw := range pdus {
		e, err := spec.ParseEvent(raw, rv)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.EventID())
	}
	return ids
}

func TestEventEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		f := newEventsFixture(t, db, "joined")
		room := url.PathEscape(f.roomID)
		last := f.messages[len(f.messages)-1]

		t.Run("state_ids and state before an event", func(t *testing.T) {
			var ids struct {
				PDUIDs       []string `json:"pdu_ids"`
				AuthChainIDs []string `json:"auth_chain_ids"`
			}
			if code, errcode := f.do(t, "GET", "/_matrix/federation/v1/state_ids/"+room+"?event_id="+url.QueryEscape(f.ritaJoin), "peer.example", "", &ids); code != 200 {
				t.Fatalf("state_ids: %d %s", code, errcode)
			}
			// The state before rita's join: create, alice, join rules, history visibility
			// (and the power levels CreateRoom adds), never the join itself.
			if !slices.Contains(ids.PDUIDs, f.create) || slices.Contains(ids.PDUIDs, f.ritaJoin) {
				t.Fatalf("state before the join: %v", ids.PDUIDs)
			}
			if !slices.Contains(ids.AuthChainIDs, f.create) {
				t.Fatalf("auth chain %v lacks the create event", ids.AuthChainIDs)
			}
			var full struct {
				PDUs      []json.RawMessage `json:"pdus"`
				AuthChain []json.RawMessage `json:"auth_chain"`
			}
			if code, _ := f.do(t, "GET", "/_matrix/federation/v1/state/"+room+"?event_id="+url.QueryEscape(last), "peer.example", "", &full); code != 200 {
				t.Fatalf("state: %d", code)
			}
			if got := pduIDs(t, full.PDUs); !slices.Contains(got, f.ritaJoin) || len(got) != len(ids.PDUIDs)+1 {
				t.Fatalf("state before the last message: %v", got)
			}
		})

		t.Run("event and event_auth", func(t *testing.T) {
			var txn transactionBody
			if code, _ := f.do(t, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(last), "peer.example", "", &txn); code != 200 {
				t.Fatalf("event: %d", code)
			}
			if got := pduIDs(t, txn.PDUs); len(got) != 1 || got[0] != last || txn.Origin != "here.example" || txn.OriginServerTS == 0 {
				t.Fatalf("event answer %+v", txn)
			}
			var auth struct {
				AuthChain []json.RawMessage `json:"auth_chain"`
			}
			if code, _ := f.do(t, "GET", "/_matrix/federation/v1/event_auth/"+room+"/"+url.PathEscape(f.ritaJoin), "peer.example", "", &auth); code != 200 {
				t.Fatalf("event_auth: %d", code)
			}
			if got := pduIDs(t, auth.AuthChain); !slices.Contains(got, f.create) || slices.Contains(got, f.ritaJoin) {
				t.Fatalf("auth chain of the join: %v", got)
			}
		})

		t.Run("backfill", func(t *testing.T) {
			var txn transactionBody
			if code, _ := f.do(t, "GET", "/_matrix/federation/v1/backfill/"+room+"?v="+url.QueryEscape(last)+"&limit=3", "peer.example", "", &txn); code != 200 {
				t.Fatalf("backfill: %d", code)
			}
			want := []string{f.messages[4], f.messages[3], f.messages[2]}
			if got := pduIDs(t, txn.PDUs); !slices.Equal(got, want) {
				t.Fatalf("backfill %v, want %v", got, want)
			}
			if code, _ := f.do(t, "GET", "/_matrix/federation/v1/backfill/"+room+"?v="+url.QueryEscape(last)+"&limit=1000", "peer.example", "", &txn); code != 200 || len(txn.PDUs) > maxBackfillLimit {
				t.Fatalf("backfill over the cap: %d, %d events", code, len(txn.PDUs))
			}
			if got := pduIDs(t, txn.PDUs); got[len(got)-1] != f.create {
				t.Fatalf("a whole backfill ends at %s, not the create event", got[len(got)-1])
			}
			if code, errcode := f.do(t, "GET", "/_matrix/federation/v1/backfill/"+room+"?v="+url.QueryEscape(last), "peer.example", "", nil); code != 400 || errcode != "M_MISSING_PARAM" {
				t.Fatalf("backfill without limit: %d %s", code, errcode)
			}
		})

		t.Run("get_missing_events", func(t *testing.T) {
			var resp struct {
				Events []json.RawMessage `json:"events"`
			}
			body := fmt.Sprintf(`{"limit":10,"min_depth":0,"earliest_events":[%q],"latest_events":[%q]}`, f.messages[0], last)
			if code, errcode := f.do(t, "POST", "/_matrix/federation/v1/get_missing_events/"+room, "peer.example", body, &resp); code != 200 {
				t.Fatalf("get_missing_events: %d %s", code, errcode)
			}
			if got, want := pduIDs(t, resp.Events), f.messages[1:4]; !slices.Equal(got, want) {
				t.Fatalf("missing events %v, want %v (oldest first)", got, want)
			}
			body = fmt.Sprintf(`{"limit":2,"earliest_events":[],"latest_events":[%q]}`, last)
			if code, _ := f.do(t, "POST", "/_matrix/federation/v1/get_missing_events/"+room, "peer.example", body, &resp); code != 200 {
				t.Fatalf("get_missing_events: %d", code)
			}
			if got, want := pduIDs(t, resp.Events), f.messages[2:4]; !slices.Equal(got, want) {
				t.Fatalf("limited missing events %v, want %v", got, want)
			}
			if code, errcode := f.do(t, "POST", "/_matrix/federation/v1/get_missing_events/"+room, "peer.example", `{"limit":10}`, nil); code != 400 || errcode != "M_BAD_JSON" {
				t.Fatalf("get_missing_events without latest_events: %d %s", code, errcode)
			}
		})

		t.Run("errors", func(t *testing.T) {
			for _, c := range []struct {
				method, path, body, errcode string
				code                        int
			}{
				{"GET", "/_matrix/federation/v1/state_ids/" + room + "?event_id=" + url.QueryEscape(last), "", "M_FORBIDDEN", 403},
				{"GET", "/_matrix/federation/v1/state/" + room + "?event_id=" + url.QueryEscape(last), "", "M_FORBIDDEN", 403},
				{"GET", "/_matrix/federation/v1/event/" + url.PathEscape(last), "", "M_FORBIDDEN", 403},
				{"GET", "/_matrix/federation/v1/event_auth/" + room + "/" + url.PathEscape(last), "", "M_FORBIDDEN", 403},
				{"GET", "/_matrix/federation/v1/backfill/" + room + "?v=" + url.QueryEscape(last) + "&limit=5", "", "M_FORBIDDEN", 403},
				{"POST", "/_matrix/federation/v1/get_missing_events/" + room, `{"earliest_events":[],"latest_events":["` + last + `"]}`, "M_FORBIDDEN", 403},
				{"GET", "/_matrix/federation/v1/event/" + url.PathEscape("$nope"), "", "M_NOT_FOUND", 404},
				{"GET", "/_matrix/federation/v1/state_ids/" + url.PathEscape("!nope:here.example") + "?event_id=" + url.QueryEscape(last), "", "M_NOT_FOUND", 404},
				{"GET", "/_matrix/federation/v1/state_ids/" + room, "", "M_MISSING_PARAM", 400},
			} {
				origin := "stranger.example"
				if c.code != 403 {
					origin = "peer.example"
				}
				if code, errcode := f.do(t, c.method, c.path, origin, c.body, nil); code != c.code || errcode != c.errcode {
					t.Errorf("%s %s as %s: %d %s, want %d %s", c.method, c.path, origin, code, errcode, c.code, c.errcode)
				}
			}
		})
	})
}

// TestEventEndpointsWorldReadable checks that a world-readable room's events are served to
// a server that was never in it.
func TestEventEndpointsWorldReadable(t *testing.T) {
	f := newEventsFixture(t, storagetest.NewDB(t, storage.SQLite), "world_readable")
	last := f.messages[len(f.messages)-1]
	var txn transactionBody
	if code, errcode := f.do(t, "GET", "/_matrix/federation/v1/event/"+url.PathEscape(last), "stranger.example", "", &txn); code != 200 {
		t.Fatalf("event of a world-readable room: %d %s", code, errcode)
	}
	if code, errcode := f.do(t, "GET", "/_matrix/federation/v1/backfill/"+url.PathEscape(f.roomID)+"?v="+url.QueryEscape(last)+"&limit=2", "stranger.example", "", &txn); code != 200 || len(txn.PDUs) != 2 {
		t.Fatalf("backfill of a world-readable room: %d %s, %d events", code, errcode, len(txn.PDUs))
	}
}
