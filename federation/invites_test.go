package federation

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// membershipFixture is our server "here.example" with the invite, leave and knock endpoints
// and a peer "peer.example" whose keys it knows.
type membershipFixture struct {
	api    *API
	rs     *rooms.Server
	router chi.Router
	peer   *peerServer
	keys   spec.KeyLookup
}

func newMembershipFixture(t *testing.T, db *storage.DB) *membershipFixture {
	t.Helper()
	ctx := context.Background()
	hp := newHereAndPeer(t, db)
	log, identity, rs := hp.log, hp.identity, hp.rs
	own, err := NewServerKeys(ctx, db, identity, time.Now)
	if err != nil {
		t.Fatal(err)
	}
	peerKey := hp.peer.key
	now := time.Now().UnixMilli()
	err = storage.PutServerKeys(ctx, db, []storage.ServerKey{{ServerName: "peer.example", KeyID: "ed25519:p",
		PublicKey: peerKey.Public().(ed25519.PublicKey), ValidUntilTS: now + 86_400_000, FetchedTS: now}})
	if err != nil {
		t.Fatal(err)
	}
	client, err := NewClient(ClientConfig{Identity: identity})
	if err != nil {
		t.Fatal(err)
	}
	ring := NewKeyRing(KeyRingConfig{DB: db, Client: client, Own: own, RefetchInterval: time.Hour})
	if err := storage.InsertUser(ctx, db, &storage.UserRow{UserID: "@bob:here.example"}, now); err != nil {
		t.Fatal(err)
	}
	a := &API{ServerName: "here.example", DB: db, Rooms: rs, Keys: ring, Client: client, Log: log, Clock: time.Now}
	router := chi.NewRouter()
	a.inviteRoutes(router)
	return &membershipFixture{api: a, rs: rs, router: router, keys: ring.KeyLookup(ctx),
		peer: hp.peer}
}

// do sends a request as origin; it returns the status, the errcode of an error and the body.
func (f *membershipFixture) do(t *testing.T, method, path, origin string, body any) (int, string, []byte) {
	t.Helper()
	var reader io.Reader
	if body != nil {
		raw, ok := body.([]byte)
		if !ok {
			raw, _ = json.Marshal(body)
		}
		reader = strings.NewReader(string(raw))
	}
	req := httptest.NewRequest(method, path, reader)
	req = req.WithContext(WithOrigin(req.Context(), origin))
	w := httptest.NewRecorder()
	f.router.ServeHTTP(w, req)
	var errBody struct {
		ErrCode string `json:"errcode"`
	}
	_ = json.Unmarshal(w.Body.Bytes(), &errBody)
	return w.Code, errBody.ErrCode, w.Body.Bytes()
}

// peerEvent builds an event of a room that lives on the peer, signed by the peer.
func (f *membershipFixture) peerEvent(t *testing.T, rv *spec.RoomVersion, roomID, sender, evType string, stateKey *string, content string, prev, auth []string, depth int64) *spec.Event {
	t.Helper()
	f.peer.ts++
	proto := spec.ProtoEvent{Type: evType, StateKey: stateKey, Sender: sender, RoomID: roomID, Content: json.RawMessage(content),
		PrevEvents: prev, AuthEvents: auth, Depth: depth, OriginServerTS: f.peer.ts}
	ev, err := proto.Build(rv, f.peer.name, "ed25519:p", f.peer.key)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

func invitePath(version int, roomID, eventID string) string {
	return fmt.Sprintf("/_matrix/federation/v%d/invite/%s/%s", version, url.PathEscape(roomID), url.PathEscape(eventID))
}

// TestInviteEndpoint: an invite from the peer to one of our users, for a room we do not
// have, is checked, co-signed and kept so that the user sees it with the room's stripped
// state; each check of invites-v2.yaml refuses what it must.
func TestInviteEndpoint(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newMembershipFixture(t, db)
		rv, _ := spec.LookupRoomVersion("12")
		rita, bob, empty := "@rita:peer.example", "@bob:here.example", ""
		create := f.peerEvent(t, rv, "", rita, "m.room.create", &empty, `{"room_version":"12"}`, []string{}, []string{}, 1)
		roomID := create.RoomID()
		join := f.peerEvent(t, rv, roomID, rita, "m.room.member", &rita, `{"membership":"join"}`, []string{create.EventID()}, []string{}, 2)
		name := f.peerEvent(t, rv, roomID, rita, "m.room.name", &empty, `{"name":"Elsewhere"}`, []string{join.EventID()}, []string{join.EventID()}, 3)
		invite := f.peerEvent(t, rv, roomID, rita, "m.room.member", &bob, `{"membership":"invite"}`, []string{name.EventID()}, []string{join.EventID()}, 4)
		body := func(ev *spec.Event, version string, state ...*spec.Event) map[string]any {
			raws := []json.RawMessage{}
			for _, e := range state {
				raws = append(raws, e.JSON())
			}
			return map[string]any{"room_version": version, "event": json.RawMessage(ev.JSON()), "invite_room_state": raws}
		}

		// Refusals first: none may leave a trace.
		forger := &peerServer{name: "peer.example", key: testKey("forger"), ts: f.peer.ts}
		forged, err := (&spec.ProtoEvent{Type: "m.room.member", StateKey: &bob, Sender: rita, RoomID: roomID,
			Content: json.RawMessage(`{"membership":"invite"}`), PrevEvents: []string{name.EventID()}, AuthEvents: []string{join.EventID()},
			Depth: 4, OriginServerTS: forger.ts}).Build(rv, forger.name, "ed25519:p", forger.key)
		if err != nil {
			t.Fatal(err)
		}
		nobody := "@nobody:here.example"
		toNobody := f.peerEvent(t, rv, roomID, rita, "m.room.member", &nobody, `{"membership":"invite"}`, []string{name.EventID()}, []string{join.EventID()}, 4)
		elsewhere := "@bob:elsewhere.example"
		toElsewhere := f.peerEvent(t, rv, roomID, rita, "m.room.member", &elsewhere, `{"membership":"invite"}`, []string{name.EventID()}, []string{join.EventID()}, 4)
		notInvite := f.peerEvent(t, rv, roomID, rita, "m.room.member", &bob, `{"membership":"join"}`, []string{name.EventID()}, []string{join.EventID()}, 4)
		for _, c := range []struct {
			name    string
			origin  string
			ev      *spec.Event
			body    map[string]any
			status  int
			errcode string
		}{
			{"unknown room version", "peer.example", invite, body(invite, "99", create), 400, "M_INCOMPATIBLE_ROOM_VERSION"},
			{"sender not of the origin", "other.example", invite, body(invite, "12", create), 400, "M_INVALID_PARAM"},
			{"invitee of another server", "peer.example", toElsewhere, body(toElsewhere, "12", create), 400, "M_INVALID_PARAM"},
			{"unknown invitee", "peer.example", toNobody, body(toNobody, "12", create), 404, "M_NOT_FOUND"},
			{"not an invite", "peer.example", notInvite, body(notInvite, "12", create), 400, "M_INVALID_PARAM"},
			{"forged signature", "peer.example", forged, body(forged, "12", create), 400, "M_INVALID_PARAM"},
			{"no create event in the stripped state", "peer.example", invite, body(invite, "12", name), 400, "M_INVALID_PARAM"},
			{"stripped state of another room", "peer.example", invite, body(invite, "12", create, forgedState(t, f, rv)), 400, "M_INVALID_PARAM"},
		} {
			status, errcode, raw := f.do(t, http.MethodPut, invitePath(2, roomID, c.ev.EventID()), c.origin, c.body)
			if status != c.status || errcode != c.errcode {
				t.Errorf("%s: %d %s, want %d %s (%s)", c.name, status, errcode, c.status, c.errcode, raw)
			}
		}
		if status, errcode, _ := f.do(t, http.MethodPut, invitePath(2, roomID, name.EventID()), "peer.example", body(invite, "12", create)); status != 400 || errcode != "M_INVALID_PARAM" {
			t.Errorf("event ID not the path's: %d %s", status, errcode)
		}
		if list, _ := storage.UserMemberships(ctx, db, bob, "invite"); len(list) != 0 {
			t.Fatalf("a refused invite left %+v", list)
		}

		status, _, raw := f.do(t, http.MethodPut, invitePath(2, roomID, invite.EventID()), "peer.example", body(invite, "12", create, join, name))
		if status != http.StatusOK {
			t.Fatalf("invite: %d %s", status, raw)
		}
		var resp struct {
			Event json.RawMessage `json:"event"`
		}
		if err := json.Unmarshal(raw, &resp); err != nil {
			t.Fatal(err)
		}
		signed, err := spec.ParseEvent(resp.Event, rv)
		if err != nil {
			t.Fatal(err)
		}
		if err := checkCosigned(invite, signed, "here.example", f.keys); err != nil {
			t.Fatalf("the returned invite: %v", err)
		}
		memberships, err := storage.UserMemberships(ctx, db, bob, "invite")
		if err != nil || len(memberships) != 1 || memberships[0].RoomID != roomID {
			t.Fatalf("bob's invites: %+v, %v", memberships, err)
		}
		kept, err := f.rs.OutsideMembership(ctx, roomID, bob)
		if err != nil || kept == nil {
			t.Fatalf("kept invite: %v, %v", kept, err)
		}
		var unsigned struct {
			InviteRoomState []map[string]json.RawMessage `json:"invite_room_state"`
		}
		if err := json.Unmarshal(kept.Unsigned(), &unsigned); err != nil || len(unsigned.InviteRoomState) != 3 {
			t.Fatalf("kept stripped state %s (%v)", kept.Unsigned(), err)
		}
		for _, e := range unsigned.InviteRoomState {
			if len(e) != 4 || e["sender"] == nil || e["type"] == nil || e["state_key"] == nil || e["content"] == nil {
				t.Fatalf("a stripped state event with keys %v", e)
			}
		}
		// The same invite again (a retry) is answered the same way.
		if status, _, _ := f.do(t, http.MethodPut, invitePath(2, roomID, invite.EventID()), "peer.example", body(invite, "12", create)); status != http.StatusOK {
			t.Fatalf("repeated invite: %d", status)
		}
	})
}

// forgedState is a create event of a different room, for a stripped state that must be
// refused.
func forgedState(t *testing.T, f *membershipFixture, rv *spec.RoomVersion) *spec.Event {
	empty := ""
	return f.peerEvent(t, rv, "", "@rita:peer.example", "m.room.create", &empty, `{"room_version":"12","other":true}`, []string{}, []string{}, 1)
}

// TestInviteEndpointV1: the deprecated endpoint for rooms of versions 1 and 2, with the
// stripped state in the event's unsigned (in the stripped form older servers send), and the
// [200, {...}] answer.
func TestInviteEndpointV1(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newMembershipFixture(t, db)
		rv, _ := spec.LookupRoomVersion("1")
		rita, bob := "@rita:peer.example", "@bob:here.example"
		roomID := "!old:peer.example"
		f.peer.ts++
		invite, err := (&spec.ProtoEvent{Type: "m.room.member", StateKey: &bob, Sender: rita, RoomID: roomID,
			Content: json.RawMessage(`{"membership":"invite"}`), PrevEvents: []string{"$prev:peer.example"}, AuthEvents: []string{"$auth:peer.example"},
			Depth: 4, OriginServerTS: f.peer.ts,
			Unsigned: json.RawMessage(`{"invite_room_state":[{"type":"m.room.name","state_key":"","sender":"@rita:peer.example","content":{"name":"Old"}}]}`),
		}).Build(rv, f.peer.name, "ed25519:p", f.peer.key)
		if err != nil {
			t.Fatal(err)
		}
		status, _, raw := f.do(t, http.MethodPut, invitePath(1, roomID, invite.EventID()), "peer.example", invite.JSON())
		if status != http.StatusOK {
			t.Fatalf("v1 invite: %d %s", status, raw)
		}
		var answer []json.RawMessage
		var inner struct {
			Event json.RawMessage `json:"event"`
		}
		if json.Unmarshal(raw, &answer) != nil || len(answer) != 2 || string(answer[0]) != "200" || json.Unmarshal(answer[1], &inner) != nil {
			t.Fatalf("v1 answer %s", raw)
		}
		signed, err := spec.ParseEvent(inner.Event, rv)
		if err != nil || checkCosigned(invite, signed, "here.example", f.keys) != nil {
			t.Fatalf("v1 returned invite: %v", err)
		}
		kept, err := f.rs.OutsideMembership(ctx, roomID, bob)
		if err != nil || kept == nil || !strings.Contains(string(kept.Unsigned()), `"Old"`) {
			t.Fatalf("kept v1 invite: %v, %v", kept, err)
		}
	})
}
