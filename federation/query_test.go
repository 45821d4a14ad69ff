package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// fakeLocal is the client API's side of the queries, for handler tests.
type fakeLocal struct{}

func (fakeLocal) LocalProfile(_ context.Context, userID string) (map[string]json.RawMessage, error) {
	if userID != "@alice:here.example" {
		return nil, httpapi.NotFound("Profile not found")
	}
	return map[string]json.RawMessage{"displayname": json.RawMessage(`"Alice"`)}, nil
}

func (fakeLocal) LocalPublicRooms(context.Context, json.RawMessage) (json.RawMessage, error) {
	return json.RawMessage(`{"chunk":[]}`), nil
}

func (fakeLocal) LocalSpaceHierarchy(context.Context, string, bool, string) (json.RawMessage, error) {
	return json.RawMessage(`{"room":{},"children":[],"inaccessible_children":[]}`), nil
}

// fakeSink records what EDUs would show our users.
type fakeSink struct{ got []string }

func (s *fakeSink) RemoteTyping(roomID, userID string, typing bool) {
	s.got = append(s.got, fmt.Sprintf("typing %s %v", userID, typing))
}

func (s *fakeSink) RemoteReceipt(_ context.Context, roomID, userID, threadID, eventID string, ts int64) error {
	s.got = append(s.got, "receipt "+userID+" "+eventID)
	return nil
}

// queryFixture is a room of here.example with a member of peer.example, and the query API.
type queryFixture struct {
	api    *QueryAPI
	rs     *rooms.Server
	roomID string
	peer   *peerServer
	router chi.Router
}

func newQueryFixture(t *testing.T, db *storage.DB) *queryFixture {
	ctx := context.Background()
	hp := newHereAndPeer(t, db)
	log, rs, peer, keys := hp.log, hp.rs, hp.peer, hp.keys
	rv, _ := spec.LookupRoomVersion(spec.DefaultRoomVersion)
	alice, rita, empty := "@alice:here.example", "@rita:peer.example", ""
	roomID, _, err := rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
		{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
		{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"public"}`)},
	})
	if err != nil {
		t.Fatal(err)
	}
	api := &API{ServerName: "here.example", DB: db, Rooms: rs, Log: log, Clock: time.Now,
		Inbound: NewInbound(db, rs, keys, time.Now, log)}
	rs.SetReceiveCheck(api.ReceiveCheck)
	join := peer.build(t, rs, roomID, rita, "m.room.member", &rita, `{"membership":"join"}`)
	if _, err := rs.ReceiveEvent(ctx, join, keys); err != nil {
		t.Fatal(err)
	}
	if err := storage.InsertAlias(ctx, db, "#room:here.example", roomID, alice); err != nil {
		t.Fatal(err)
	}
	q := &QueryAPI{API: api, Local: fakeLocal{}}
	// The handlers without X-Matrix: the origin is put in the context as Authenticator would.
	router := chi.NewRouter()
	router.Use(func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if origin := r.Header.Get("Test-Origin"); origin != "" {
				r = r.WithContext(WithOrigin(r.Context(), origin))
			}
			next.ServeHTTP(w, r)
		})
	})
	router.Method(http.MethodGet, "/_matrix/federation/v1/query/directory", q.handler(q.queryDirectory))
	router.Method(http.MethodGet, "/_matrix/federation/v1/query/profile", q.handler(q.queryProfile))
	router.Method(http.MethodGet, "/_matrix/federation/v1/query/{queryType}", q.handler(q.unknownQuery))
	router.Method(http.MethodGet, "/_matrix/federation/v1/timestamp_to_event/{roomId}", q.handler(q.timestampToEvent))
	router.Method(http.MethodGet, "/_matrix/federation/v1/openid/userinfo", httpapi.Handler(q.openIDUserInfo))
	q.directoryRoutes(router)
	router.Group(func(r chi.Router) {
		r.Use(api.aclGuard)
		api.membershipRoutes(r)
		api.eventRoutes(r)
	})
	return &queryFixture{api: q, rs: rs, roomID: roomID, peer: peer, router: router}
}

// get requests uri as origin and returns the status and body.
func (f *queryFixture) get(t *testing.T, origin, uri string) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, uri, nil)
	if origin != "" {
		req.Header.Set("Test-Origin", origin)
	}
	rec := httptest.NewRecorder()
	f.router.ServeHTTP(rec, req)
	return rec.Code, strings.TrimSpace(rec.Body.String())
}

// TestQueryEndpoints covers the query handlers: directory and profile queries with their
// 404s, unknown query types, timestamp_to_event, OpenID userinfo and the server ACL's 403.
func TestQueryEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newQueryFixture(t, db)
		cases := []struct {
			name   string
			uri    string
			status int
			want   string
		}{
			{"alias", "/_matrix/federation/v1/query/directory?room_alias=%23room:here.example", 200,
				`{"room_id":"` + f.roomID + `","servers":["here.example","peer.example"]}`},
			{"unknown alias", "/_matrix/federation/v1/query/directory?room_alias=%23nope:here.example", 404, `"M_NOT_FOUND"`},
			{"bad alias", "/_matrix/federation/v1/query/directory?room_alias=nope", 400, `"M_INVALID_PARAM"`},
			{"profile", "/_matrix/federation/v1/query/profile?user_id=@alice:here.example", 200, `{"displayname":"Alice"}`},
			{"profile field", "/_matrix/federation/v1/query/profile?user_id=@alice:here.example&field=displayname", 200, `{"displayname":"Alice"}`},
			{"profile field unset", "/_matrix/federation/v1/query/profile?user_id=@alice:here.example&field=avatar_url", 404, `"M_NOT_FOUND"`},
			{"unknown user", "/_matrix/federation/v1/query/profile?user_id=@bob:here.example", 404, `"M_NOT_FOUND"`},
			{"unknown query", "/_matrix/federation/v1/query/weather", 404, `"M_UNRECOGNIZED"`},
			{"timestamp backward", "/_matrix/federation/v1/timestamp_to_event/" + f.roomID + "?ts=99999999999999&dir=b", 200, `"event_id":"$`},
			{"timestamp none forward", "/_matrix/federation/v1/timestamp_to_event/" + f.roomID + "?ts=99999999999999&dir=f", 404, `"M_NOT_FOUND"`},
			{"timestamp bad dir", "/_matrix/federation/v1/timestamp_to_event/" + f.roomID + "?ts=1&dir=x", 400, `"M_INVALID_PARAM"`},
			{"public rooms", "/_matrix/federation/v1/publicRooms?limit=5", 200, `{"chunk":[]}`},
		}
		for _, c := range cases {
			status, body := f.get(t, "peer.example", c.uri)
			if status != c.status || !strings.Contains(body, c.want) {
				t.Errorf("%s: %d %s, want %d with %s", c.name, status, body, c.status, c.want)
			}
		}

		// OpenID: a stored token names its user until it expires.
		token, hash := auth.NewToken("oid_")
		now := time.Now().UnixMilli()
		if err := storage.InsertOpenIDToken(ctx, db, hash, "@alice:here.example", now+60_000, now); err != nil {
			t.Fatal(err)
		}
		if status, body := f.get(t, "", "/_matrix/federation/v1/openid/userinfo?access_token="+token); status != 200 || body != `{"sub":"@alice:here.example"}` {
			t.Errorf("userinfo: %d %s", status, body)
		}
		if status, body := f.get(t, "", "/_matrix/federation/v1/openid/userinfo?access_token=nope"); status != 401 || !strings.Contains(body, "M_UNKNOWN_TOKEN") {
			t.Errorf("userinfo with an unknown token: %d %s", status, body)
		}
		_, expired := auth.NewToken("oid_")
		if err := storage.InsertOpenIDToken(ctx, db, expired, "@alice:here.example", now-1, now-2); err != nil {
			t.Fatal(err)
		}
		if _, err := storage.OpenIDTokenUser(ctx, db, expired, now); err == nil {
			t.Error("an expired OpenID token was accepted")
		}

		// A server ACL denying peer.example: room-scoped endpoints answer 403.
		alice, empty := "@alice:here.example", ""
		if _, err := f.rs.Send(ctx, f.roomID, rooms.EventRequest{Sender: alice, Type: "m.room.server_acl", StateKey: &empty,
			Content: json.RawMessage(`{"allow":["*"],"deny":["peer.example"]}`)}); err != nil {
			t.Fatal(err)
		}
		if status, body := f.get(t, "peer.example", "/_matrix/federation/v1/timestamp_to_event/"+f.roomID+"?ts=1&dir=f"); status != 403 || !strings.Contains(body, "M_FORBIDDEN") {
			t.Errorf("timestamp_to_event from a denied server: %d %s", status, body)
		}
		if status, _ := f.get(t, "other.example", "/_matrix/federation/v1/timestamp_to_event/"+f.roomID+"?ts=1&dir=f"); status != 200 {
			t.Errorf("timestamp_to_event from an allowed server: %d", status)
		}
		// The endpoints the spec lists are guarded as a whole.
		for _, uri := range []string{
			"/_matrix/federation/v1/make_join/" + f.roomID + "/@eve:peer.example?ver=12",
			"/_matrix/federation/v1/state_ids/" + f.roomID + "?event_id=$x",
		} {
			if status, body := f.get(t, "peer.example", uri); status != 403 || !strings.Contains(body, "M_FORBIDDEN") {
				t.Errorf("%s from a denied server: %d %s", uri, status, body)
			}
		}
		if status, body := f.get(t, "other.example", "/_matrix/federation/v1/make_join/"+f.roomID+"/@eve:other.example?ver=12"); status != 200 {
			t.Errorf("make_join from an allowed server: %d %s", status, body)
		}
	})
}

// TestEDUsAndACL sends typing and receipt EDUs: accepted from the user's own server while
// the user is joined, ignored otherwise, and ignored — with PDUs — once the room's server
// ACL denies the sending server.
func TestEDUsAndACL(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newQueryFixture(t, db)
		sink := &fakeSink{}
		f.api.HandleEDUs(sink)
		rita := "@rita:peer.example"
		message := f.peer.build(t, f.rs, f.roomID, rita, "m.room.message", nil, `{"body":"hi"}`)
		edus := func(user string) []json.RawMessage {
			return []json.RawMessage{
				json.RawMessage(`{"edu_type":"m.typing","content":{"room_id":"` + f.roomID + `","user_id":"` + user + `","typing":true}}`),
				json.RawMessage(`{"edu_type":"m.receipt","content":{"` + f.roomID + `":{"m.read":{"` + user + `":{"event_ids":["` + message.EventID() + `"],"data":{"ts":1}}}}}}`),
			}
		}
		send := func(txnID string, pdus []*spec.Event, eduList []json.RawMessage) string {
			body := transactionBody{Origin: "peer.example", EDUs: eduList, PDUs: []json.RawMessage{}}
			for _, p := range pdus {
				body.PDUs = append(body.PDUs, p.JSON())
			}
			raw, _ := json.Marshal(body)
			resp, err := f.api.Inbound.Process(WithOrigin(ctx, "peer.example"), "peer.example", txnID, raw)
			if err != nil {
				t.Fatal(err)
			}
			return string(resp)
		}

		send("t1", []*spec.Event{message}, edus(rita))
		if want := []string{"typing " + rita + " true", "receipt " + rita + " " + message.EventID()}; fmt.Sprint(sink.got) != fmt.Sprint(want) {
			t.Fatalf("EDUs applied: %v, want %v", sink.got, want)
		}
		// A user of another server, or one not in the room: ignored.
		sink.got = nil
		send("t2", nil, append(edus("@alice:here.example"), edus("@ghost:peer.example")...))
		if len(sink.got) != 0 {
			t.Fatalf("EDUs about users peer.example cannot speak for were applied: %v", sink.got)
		}

		alice, empty := "@alice:here.example", ""
		if _, err := f.rs.Send(ctx, f.roomID, rooms.EventRequest{Sender: alice, Type: "m.room.server_acl", StateKey: &empty,
			Content: json.RawMessage(`{"allow":["*"],"deny":["*.example"]}`)}); err != nil {
			t.Fatal(err)
		}
		// The ACL names *.example, which matches here.example too, but it only applies to
		// servers that make requests.
		denied := f.peer.build(t, f.rs, f.roomID, rita, "m.room.message", nil, `{"body":"denied"}`)
		resp := send("t3", []*spec.Event{denied}, edus(rita))
		if !strings.Contains(resp, denied.EventID()) || !strings.Contains(resp, "M_FORBIDDEN") {
			t.Fatalf("PDU from a denied server: %s", resp)
		}
		if _, err := f.rs.EventByID(ctx, denied.EventID()); err == nil {
			t.Fatal("a PDU from a denied server was stored")
		}
		if len(sink.got) != 0 {
			t.Fatalf("EDUs from a denied server were applied: %v", sink.got)
		}
		if err := f.api.CheckServerACL(ctx, f.roomID, "peer.example"); err == nil {
			t.Fatal("CheckServerACL allowed a denied server")
		}
	})
}
