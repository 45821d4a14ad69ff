package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
)

// Knocking upon a room across servers (server-server API "Knocking upon a room";
// knocks.yaml, room versions 7 and later): the same handshake as a join — make_knock for a
// template, send_knock with the signed knock — answered with the stripped state that
// describes the room to the knocker. A knock is accepted by inviting the knocker, retracted
// by leaving (leave.go).

func (a *API) knockRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_matrix/federation/v1/make_knock/{roomId}/{userId}", a.handler(a.makeKnock))
	r.Method(http.MethodPut, "/_matrix/federation/v1/send_knock/{roomId}/{eventId}", a.handler(a.sendKnock))
}

// GET /_matrix/federation/v1/make_knock/{roomId}/{userId}?ver=…
func (a *API) makeKnock(w http.ResponseWriter, r *http.Request, origin string) error {
	return a.makeMembership(w, r, origin, "knock")
}

// PUT /_matrix/federation/v1/send_knock/{roomId}/{eventId}: the answer is
// {"knock_room_state": [events]}.
func (a *API) sendKnock(w http.ResponseWriter, r *http.Request, origin string) error {
	knock, err := a.receiveMembership(r, origin, "knock")
	if err != nil {
		return err
	}
	state, err := a.Rooms.StrippedState(r.Context(), knock.RoomID())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"knock_room_state": pduList(state)})
	return nil
}

// KnockRemote knocks on roomID, a room this server is not part of, for userID (one of ours)
// through one of servers in turn: make_knock, sign, send_knock. The knock is recorded here
// with the room's stripped state from the answer, so that the room shows under "knock" in
// the user's /sync. content is the knock's content (membership is set here).
func (a *API) KnockRemote(ctx context.Context, roomID, userID string, servers []string, content map[string]any) error {
	return a.throughEach(roomID, servers, "knock", func(server string) error {
		return a.knockThrough(ctx, server, roomID, userID, content)
	})
}

func (a *API) knockThrough(ctx context.Context, server, roomID, userID string, content map[string]any) error {
	knock, err := a.makeThrough(ctx, server, "make_knock", supportedVersionsQuery(), roomID, userID, "knock", content)
	if err != nil {
		return err
	}
	if !knock.Version().AllowKnocking {
		return fmt.Errorf("room version %s does not support knocking", knock.Version().ID)
	}
	var resp struct {
		KnockRoomState []json.RawMessage `json:"knock_room_state"`
	}
	err = a.Client.DoJSON(ctx, Request{Method: http.MethodPut, Destination: server,
		URI:  "/_matrix/federation/v1/send_knock/" + url.PathEscape(roomID) + "/" + url.PathEscape(knock.EventID()),
		Body: json.RawMessage(knock.JSON()), MaxResponseSize: maxInviteBody}, &resp)
	if err != nil {
		return fmt.Errorf("send_knock: %w", err)
	}
	// knocks.yaml: entries "improperly signed or formatted SHOULD be removed by the server
	// prior to supplying them over the Client-Server API".
	// The knock is in the room now: a long answer is cut rather than refused.
	roomState := resp.KnockRoomState[:min(len(resp.KnockRoomState), maxStrippedState)]
	stripped, err := checkStrippedState(roomState, knock.Version(), roomID, a.Keys.KeyLookup(ctx), false)
	if err != nil {
		return err
	}
	kept, err := withUnsigned(knock, map[string]any{"knock_room_state": stripped})
	if err != nil {
		return err
	}
	_, err = a.Rooms.RecordOutsideMembership(ctx, kept)
	return err
}
