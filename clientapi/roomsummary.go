package clientapi

import (
	"errors"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
)

// GET /_matrix/client/v1/room_summary/{roomIdOrAlias} (room_summary.yaml getRoomSummary,
// v1.15): what the hierarchy API tells of one room, to whoever may see it.
//
// A room this server is in is summarised from its current state; for any other, the servers
// of the alias or of "via" are asked for it through the federation hierarchy API. The room is
// shown to users who are joined, invited or knocking, or may join through a restricted join
// rule, and to anyone, without an access token too, when its join rule is public, knock or
// knock_restricted or its history is world-readable (the conditions under which the spec lets
// servers answer unauthenticated requests). Every other case is 404 M_NOT_FOUND, as for a room
// that does not exist, so that the answer does not tell private rooms apart.

// maxSummaryVia bounds the servers of "via" that are asked. NOTSPEC.
const maxSummaryVia = 5

// roomSummaryResponse is the answer: the room's summary and the user's membership.
type roomSummaryResponse struct {
	publicRoomsChunk
	RoomVersion    string   `json:"room_version,omitempty"`
	Encryption     string   `json:"encryption,omitempty"`
	AllowedRoomIDs []string `json:"allowed_room_ids,omitempty"`
	Membership     string   `json:"membership,omitempty"`
}

func (a *API) roomSummary(w http.ResponseWriter, r *http.Request) error {
	// The access token is optional: without one the request is anonymous; a bad one is
	// refused as anywhere else.
	d, err := a.Authenticate(r)
	if e := (*httpapi.Error)(nil); errors.As(err, &e) && e.ErrCode == "M_MISSING_TOKEN" {
		d, err = nil, nil
	}
	if err != nil {
		return err
	}
	ctx := r.Context()
	notFound := httpapi.NotFound("Room not found")
	target := pathParam(r, "roomIdOrAlias")
	via := r.URL.Query()["via"]
	var roomID string
	switch {
	case len(target) > 0 && target[0] == '#':
		alias, err := spec.ParseRoomAlias(target)
		if err != nil {
			return httpapi.InvalidParam("Invalid room alias")
		}
		id, servers, err := a.resolveAlias(ctx, target, alias.Server())
		if err != nil {
			return err
		}
		roomID, via = id, append(servers, via...)
	default:
		if _, err := spec.ParseRoomID(target); err != nil {
			return httpapi.InvalidParam("Invalid room ID or alias")
		}
		roomID = target
	}

	userID := ""
	if d != nil {
		userID = d.UserID
	}
	walk := &hierarchyWalk{a: a, userID: userID, maxDepth: 0, seen: map[string]bool{}, remote: map[string]*spaceRoom{}}
	s, _, err := a.localSummary(ctx, roomID)
	switch {
	case errors.Is(err, rooms.ErrRoomNotFound):
		s = walk.fetchRemote(ctx, roomID, via[:min(len(via), maxSummaryVia)])
		if s == nil || !s.openToAll() {
			// NOTSPEC: as in the hierarchy, a room of another server is shown only when
			// anyone may see it.
			return notFound
		}
	case err != nil:
		return err
	}
	resp := roomSummaryResponse{publicRoomsChunk: s.publicRoomsChunk, RoomVersion: s.RoomVersion,
		Encryption: s.Encryption, AllowedRoomIDs: s.AllowedRoomIDs}
	if d != nil {
		membership, _, err := a.rooms.Membership(ctx, roomID, d.UserID)
		if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
			return err
		}
		resp.Membership = membership
	}
	visible := s.openToAll() || resp.Membership == "join" || resp.Membership == "invite" || resp.Membership == "knock"
	if !visible && d != nil && err == nil {
		if visible, err = a.accessibleTo(ctx, s, d.UserID); err != nil {
			return err
		}
	}
	if !visible {
		return notFound
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}
