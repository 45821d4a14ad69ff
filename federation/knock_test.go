package federation

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"testing"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// completeTemplate signs a make_leave or make_knock template as the peer.
func (f *membershipFixture) completeTemplate(t *testing.T, raw []byte) *spec.Event {
	t.Helper()
	var made struct {
		RoomVersion string `json:"room_version"`
		Event       struct {
			Type       string          `json:"type"`
			Sender     string          `json:"sender"`
			StateKey   string          `json:"state_key"`
			RoomID     string          `json:"room_id"`
			Content    json.RawMessage `json:"content"`
			PrevEvents []string        `json:"prev_events"`
			AuthEvents []string        `json:"auth_events"`
			Depth      int64           `json:"depth"`
		} `json:"event"`
	}
	if err := json.Unmarshal(raw, &made); err != nil {
		t.Fatalf("template %s: %v", raw, err)
	}
	rv, ok := spec.LookupRoomVersion(made.RoomVersion)
	if !ok {
		t.Fatalf("template of room version %q", made.RoomVersion)
	}
	e := made.Event
	return f.peerEvent(t, rv, e.RoomID, e.Sender, e.Type, &e.StateKey, string(e.Content), e.PrevEvents, e.AuthEvents, e.Depth)
}

// TestKnockAndLeaveEndpoints: the peer's user knocks on a knockable room of ours
// (make_knock, send_knock with the room's stripped state in the answer), retracts the knock
// (make_leave, send_leave v2), knocks again and leaves through send_leave v1.
func TestKnockAndLeaveEndpoints(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		ctx := context.Background()
		f := newMembershipFixture(t, db)
		rv, _ := spec.LookupRoomVersion("12")
		alice, rita, empty := "@alice:here.example", "@rita:peer.example", ""
		roomID, _, err := f.rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
			{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
			{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"knock"}`)},
			{Sender: alice, Type: "m.room.name", StateKey: &empty, Content: json.RawMessage(`{"name":"Knock here"}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		publicID, _, err := f.rs.CreateRoom(ctx, rv, alice, json.RawMessage(`{"room_version":"12"}`), []rooms.EventRequest{
			{Sender: alice, Type: "m.room.member", StateKey: &alice, Content: json.RawMessage(`{"membership":"join"}`)},
			{Sender: alice, Type: "m.room.join_rules", StateKey: &empty, Content: json.RawMessage(`{"join_rule":"public"}`)},
		})
		if err != nil {
			t.Fatal(err)
		}
		room, user := url.PathEscape(roomID), url.PathEscape(rita)
		makeKnock := "/_matrix/federation/v1/make_knock/" + room + "/" + user

		if status, errcode, _ := f.do(t, http.MethodGet, makeKnock, "peer.example", nil); status != 400 || errcode != "M_INCOMPATIBLE_ROOM_VERSION" {
			t.Errorf("make_knock without ver: %d %s", status, errcode)
		}
		if status, errcode, _ := f.do(t, http.MethodGet, makeKnock+"?ver=12", "other.example", nil); status != 403 || errcode != "M_FORBIDDEN" {
			t.Errorf("make_knock for another server's user: %d %s", status, errcode)
		}
		if status, errcode, _ := f.do(t, http.MethodGet, "/_matrix/federation/v1/make_knock/"+url.PathEscape(publicID)+"/"+user+"?ver=12", "peer.example", nil); status != 403 || errcode != "M_FORBIDDEN" {
			t.Errorf("make_knock on a public room: %d %s", status, errcode)
		}
		if status, errcode, _ := f.do(t, http.MethodGet, "/_matrix/federation/v1/make_knock/"+url.PathEscape("!nowhere:here.example")+"/"+user+"?ver=12", "peer.example", nil); status != 404 || errcode != "M_NOT_FOUND" {
			t.Errorf("make_knock on an unknown room: %d %s", status, errcode)
		}

		knockOnce := func() {
			t.Helper()
			status, _, raw := f.do(t, http.MethodGet, makeKnock+"?ver=11&ver=12", "peer.example", nil)
			if status != http.StatusOK {
				t.Fatalf("make_knock: %d %s", status, raw)
			}
			knock := f.completeTemplate(t, raw)
			status, _, raw = f.do(t, http.MethodPut, "/_matrix/federation/v1/send_knock/"+room+"/"+url.PathEscape(knock.EventID()), "peer.example", knock.JSON())
			if status != http.StatusOK {
				t.Fatalf("send_knock: %d %s", status, raw)
			}
			var resp struct {
				KnockRoomState []json.RawMessage `json:"knock_room_state"`
			}
			if err := json.Unmarshal(raw, &resp); err != nil {
				t.Fatal(err)
			}
			stripped, err := checkStrippedState(resp.KnockRoomState, rv, roomID, f.keys, true)
			if err != nil || len(stripped) != 3 {
				t.Fatalf("knock_room_state %s: %v", raw, err)
			}
			if m, _, _ := f.rs.Membership(ctx, roomID, rita); m != "knock" {
				t.Fatalf("rita is %q after her knock", m)
			}
		}
		knockOnce()

		// send_leave takes only a leave of its sender.
		status, _, raw := f.do(t, http.MethodGet, "/_matrix/federation/v1/make_leave/"+room+"/"+user, "peer.example", nil)
		if status != http.StatusOK {
			t.Fatalf("make_leave: %d %s", status, raw)
		}
		leave := f.completeTemplate(t, raw)
		wrong := f.peerEvent(t, rv, roomID, rita, "m.room.member", &rita, `{"membership":"join"}`, leave.PrevEventIDs(), leave.AuthEventIDs(), leave.Depth())
		if status, errcode, _ := f.do(t, http.MethodPut, "/_matrix/federation/v2/send_leave/"+room+"/"+url.PathEscape(wrong.EventID()), "peer.example", wrong.JSON()); status != 400 || errcode != "M_INVALID_PARAM" {
			t.Errorf("send_leave with a join: %d %s", status, errcode)
		}
		if status, errcode, _ := f.do(t, http.MethodPut, "/_matrix/federation/v2/send_leave/"+room+"/"+url.PathEscape(leave.EventID()), "other.example", leave.JSON()); status != 400 || errcode != "M_INVALID_PARAM" {
			t.Errorf("send_leave from another server: %d %s", status, errcode)
		}
		status, _, raw = f.do(t, http.MethodPut, "/_matrix/federation/v2/send_leave/"+room+"/"+url.PathEscape(leave.EventID()), "peer.example", leave.JSON())
		if status != http.StatusOK || string(raw) != "{}" {
			t.Fatalf("send_leave v2: %d %s", status, raw)
		}
		if m, _, _ := f.rs.Membership(ctx, roomID, rita); m != "leave" {
			t.Fatalf("rita is %q after leaving", m)
		}

		knockOnce()
		_, _, raw = f.do(t, http.MethodGet, "/_matrix/federation/v1/make_leave/"+room+"/"+user, "peer.example", nil)
		leave = f.completeTemplate(t, raw)
		status, _, raw = f.do(t, http.MethodPut, "/_matrix/federation/v1/send_leave/"+room+"/"+url.PathEscape(leave.EventID()), "peer.example", leave.JSON())
		if status != http.StatusOK || string(raw) != "[200,{}]" {
			t.Fatalf("send_leave v1: %d %s", status, raw)
		}
		if m, _, _ := f.rs.Membership(ctx, roomID, rita); m != "leave" {
			t.Fatalf("rita is %q after leaving again", m)
		}
	})
}
