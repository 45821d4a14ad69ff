package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Room aliases and the published room directory (client-server API "Room aliases",
// "Room discovery"; directory.yaml, list_public_rooms.yaml), plus the user directory
// (userdirectory.go).

func (a *API) directoryRoutes(r chi.Router, h func(httpapi.Handler) http.Handler, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPut, "/directory/room/{roomAlias}", authed(a.putRoomAlias))
	r.Method(http.MethodGet, "/directory/room/{roomAlias}", h(a.getRoomAlias))
	r.Method(http.MethodDelete, "/directory/room/{roomAlias}", authed(a.deleteRoomAlias))
	r.Method(http.MethodGet, "/rooms/{roomId}/aliases", authed(a.roomAliases))
	r.Method(http.MethodGet, "/directory/list/room/{roomId}", h(a.getDirectoryVisibility))
	r.Method(http.MethodPut, "/directory/list/room/{roomId}", authed(a.setDirectoryVisibility))
	r.Method(http.MethodGet, "/publicRooms", h(a.getPublicRooms))
	r.Method(http.MethodPost, "/publicRooms", authed(a.queryPublicRooms))
	a.userDirectoryRoutes(r, authed)
	a.openIDRoutes(r, authed)
}

// localAlias parses the {roomAlias} path parameter and requires it to be on this server:
// 400 M_INVALID_PARAM otherwise (directory.yaml).
func (a *API) localAlias(r *http.Request) (string, error) {
	alias := pathParam(r, "roomAlias")
	parsed, err := spec.ParseRoomAlias(alias)
	if err != nil {
		return "", httpapi.InvalidParam("Room alias invalid")
	}
	if parsed.Server() != a.cfg.ServerName {
		return "", httpapi.InvalidParam("Room alias must be on this server (%s)", a.cfg.ServerName)
	}
	return alias, nil
}

// isServerAdmin reports whether the device's user is a server administrator.
func (a *API) isServerAdmin(ctx context.Context, d *Device) (bool, error) {
	if d.IsAdmin {
		return true, nil
	}
	u, err := storage.LoadUser(ctx, a.db, d.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return u.IsAdmin, nil
}

// canEditDirectory reports whether the user may publish the room or remove others' aliases
// of it. NOTSPEC: the spec leaves this to the server ("Servers MAY implement additional
// access control checks"); as Synapse, server admins may, and joined members whose power
// level lets them send m.room.canonical_alias.
func (a *API) canEditDirectory(r *http.Request, d *Device, roomID string) (bool, error) {
	if admin, err := a.isServerAdmin(r.Context(), d); err != nil || admin {
		return admin, err
	}
	membership, _, err := a.rooms.Membership(r.Context(), roomID, d.UserID)
	if err != nil || membership != "join" {
		return false, err
	}
	levels, err := a.powerLevels(r, roomID)
	if err != nil {
		return false, err
	}
	return levels.UserLevel(d.UserID) >= levels.EventLevel("m.room.canonical_alias", true), nil
}

type putRoomAliasRequest struct {
	RoomID *string `json:"room_id"`
}

// PUT /directory/room/{roomAlias}
func (a *API) putRoomAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	alias, err := a.localAlias(r)
	if err != nil {
		return err
	}
	var req putRoomAliasRequest
	if err := httpapi.ReadJSON(r, httpapi.MaxBodySize, &req); err != nil {
		return err
	}
	if req.RoomID == nil {
		return httpapi.MissingParam("Missing room_id")
	}
	if _, err := spec.ParseRoomID(*req.RoomID); err != nil {
		return httpapi.InvalidParam("Invalid room_id")
	}
	// NOTSPEC: as Synapse (require_membership_for_aliases), only members may point an alias
	// at a room; this also refuses rooms the server does not know.
	membership, _, err := a.rooms.Membership(r.Context(), *req.RoomID, d.UserID)
	if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
		return err
	}
	if membership != "join" {
		admin, err := a.isServerAdmin(r.Context(), d)
		if err != nil {
			return err
		}
		if !admin {
			return httpapi.Forbidden("You must be in the room to create an alias for it")
		}
		if _, err := a.rooms.RoomNID(r.Context(), *req.RoomID); errors.Is(err, rooms.ErrRoomNotFound) {
			return httpapi.NotFound("Unknown room %s", *req.RoomID)
		} else if err != nil {
			return err
		}
	}
	if err := storage.InsertAlias(r.Context(), a.db, alias, *req.RoomID, d.UserID); errors.Is(err, storage.ErrExists) {
		return httpapi.NewError(http.StatusConflict, "M_UNKNOWN", "Room alias %s already exists", alias)
	} else if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /directory/room/{roomAlias} (no authentication)
func (a *API) getRoomAlias(w http.ResponseWriter, r *http.Request) error {
	alias := pathParam(r, "roomAlias")
	parsed, err := spec.ParseRoomAlias(alias)
	if err != nil {
		return httpapi.InvalidParam("Room alias invalid")
	}
	roomID, servers, err := a.resolveAlias(r.Context(), alias, parsed.Server())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
	return nil
}

// resolveAlias finds the room an alias points to and servers to join it through: ours from
// the database, other servers' by asking them (server-server API GET /query/directory).
// 404 M_NOT_FOUND when the alias does not exist.
func (a *API) resolveAlias(ctx context.Context, alias, aliasServer string) (string, []string, error) {
	if aliasServer != a.cfg.ServerName {
		if a.remote == nil {
			return "", nil, httpapi.NotFound("Room alias %s not found", alias)
		}
		roomID, servers, err := a.remote.QueryDirectory(ctx, alias)
		if err != nil {
			a.log.Info("remote alias lookup", "alias", alias, "err", err)
			return "", nil, federationFailure(err, "Cannot resolve %s", alias)
		}
		return roomID, servers, nil
	}
	roomID, err := storage.LookupAlias(ctx, a.db, alias)
	if err != nil {
		return "", nil, err
	}
	if roomID == "" {
		return "", nil, httpapi.NotFound("Room alias %s not found", alias)
	}
	servers, err := a.rooms.ResidentServers(ctx, roomID)
	if err != nil {
		return "", nil, err
	}
	return roomID, servers, nil
}

// DELETE /directory/room/{roomAlias}
func (a *API) deleteRoomAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	alias, err := a.localAlias(r)
	if err != nil {
		return err
	}
	ctx := r.Context()
	roomID, creator, err := storage.AliasCreator(ctx, a.db, alias)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Room alias %s not found", alias)
	}
	if err != nil {
		return err
	}
	// NOTSPEC: "Servers may choose to implement additional access control checks here, for
	// instance that room aliases can only be deleted by their creator or a server
	// administrator"; as Synapse, room admins who may change the canonical alias may too.
	if creator != d.UserID {
		allowed, err := a.canEditDirectory(r, d, roomID)
		if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
			return err
		}
		if !allowed {
			return httpapi.Forbidden("You don't have permission to delete the alias")
		}
	}
	if err := storage.DeleteAlias(ctx, a.db, alias); err != nil {
		return err
	}
	a.dropFromCanonicalAlias(r, d, roomID, alias)
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// dropFromCanonicalAlias removes a deleted alias from the room's m.room.canonical_alias.
// directory.yaml: servers that do this should still delete the alias and succeed "even if
// the user does not have permission to update the m.room.canonical_alias event", so a
// failure here is only logged.
func (a *API) dropFromCanonicalAlias(r *http.Request, d *Device, roomID, alias string) {
	e, err := a.rooms.CurrentStateEvent(r.Context(), roomID, "m.room.canonical_alias", "")
	if err != nil || e == nil {
		return
	}
	var content map[string]json.RawMessage
	if json.Unmarshal(e.Content(), &content) != nil {
		return
	}
	changed := false
	var main string
	if raw, ok := content["alias"]; ok && json.Unmarshal(raw, &main) == nil && main == alias {
		delete(content, "alias")
		changed = true
	}
	var alt []string
	if raw, ok := content["alt_aliases"]; ok && json.Unmarshal(raw, &alt) == nil {
		kept := make([]string, 0, len(alt))
		for _, x := range alt {
			if x != alias {
				kept = append(kept, x)
			}
		}
		if len(kept) != len(alt) {
			content["alt_aliases"] = mustJSON(kept)
			changed = true
		}
	}
	if !changed {
		return
	}
	stateKey := ""
	if _, err := a.sendEvent(r, d, roomID, rooms.EventRequest{
		Type: "m.room.canonical_alias", StateKey: &stateKey, Content: mustJSON(content),
	}); err != nil {
		a.log.Info("could not update canonical alias after deleting an alias", "room", roomID, "alias", alias, "err", err)
	}
}

// GET /rooms/{roomId}/aliases: "This endpoint can be called by users who are in the room
// … If the room's m.room.history_visibility maps to world_readable, any user can call this
// endpoint."
func (a *API) roomAliases(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	membership, _, err := a.rooms.Membership(ctx, roomID, d.UserID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return httpapi.Forbidden("You are not in the room")
	}
	if err != nil {
		return err
	}
	if membership != "join" {
		worldReadable, err := a.worldReadable(ctx, roomID)
		if err != nil {
			return err
		}
		admin, err := a.isServerAdmin(ctx, d)
		if err != nil {
			return err
		}
		if !worldReadable && !admin {
			return httpapi.Forbidden("You are not in the room")
		}
	}
	aliases, err := storage.AliasesOfRoom(ctx, a.db, roomID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string][]string{"aliases": aliases})
	return nil
}

// GET /directory/list/room/{roomId} (no authentication)
func (a *API) getDirectoryVisibility(w http.ResponseWriter, r *http.Request) error {
	public, err := storage.RoomIsPublic(r.Context(), a.db, pathParam(r, "roomId"))
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Room not found")
	}
	if err != nil {
		return err
	}
	visibility := "private"
	if public {
		visibility = "public"
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"visibility": visibility})
	return nil
}

// PUT /directory/list/room/{roomId}
func (a *API) setDirectoryVisibility(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Visibility *string `json:"visibility"`
	}
	if err := httpapi.ReadJSON(r, httpapi.MaxBodySize, &req); err != nil {
		return err
	}
	visibility := "public" // "Defaults to public."
	if req.Visibility != nil {
		visibility = *req.Visibility
	}
	if visibility != "public" && visibility != "private" {
		return httpapi.InvalidParam("visibility must be public or private")
	}
	roomID := pathParam(r, "roomId")
	if _, err := storage.RoomIsPublic(r.Context(), a.db, roomID); errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Room not found")
	} else if err != nil {
		return err
	}
	allowed, err := a.canEditDirectory(r, d, roomID)
	if err != nil {
		return err
	}
	if !allowed {
		return httpapi.Forbidden("You don't have permission to change the room's visibility in the directory")
	}
	if err := storage.SetRoomPublic(r.Context(), a.db, roomID, visibility == "public"); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// publicRoomsRequest is the body of POST /publicRooms (GET takes limit and since as query
// parameters).
type publicRoomsRequest struct {
	Limit  *int   `json:"limit,omitempty"`
	Since  string `json:"since,omitempty"`
	Filter *struct {
		GenericSearchTerm string    `json:"generic_search_term,omitempty"`
		RoomTypes         []*string `json:"room_types,omitempty"`
	} `json:"filter,omitempty"`
	IncludeAllNetworks   bool   `json:"include_all_networks,omitempty"`
	ThirdPartyInstanceID string `json:"third_party_instance_id,omitempty"`
}

// publicRoomsChunk is one room of the published directory (definitions/public_rooms_chunk.yaml).
type publicRoomsChunk struct {
	AvatarURL        string `json:"avatar_url,omitempty"`
	CanonicalAlias   string `json:"canonical_alias,omitempty"`
	GuestCanJoin     bool   `json:"guest_can_join"`
	JoinRule         string `json:"join_rule,omitempty"`
	Name             string `json:"name,omitempty"`
	NumJoinedMembers int64  `json:"num_joined_members"`
	RoomID           string `json:"room_id"`
	RoomType         string `json:"room_type,omitempty"`
	Topic            string `json:"topic,omitempty"`
	WorldReadable    bool   `json:"world_readable"`
}

type publicRoomsResponse struct {
	Chunk                  []publicRoomsChunk `json:"chunk"`
	NextBatch              string             `json:"next_batch,omitempty"`
	PrevBatch              string             `json:"prev_batch,omitempty"`
	TotalRoomCountEstimate int                `json:"total_room_count_estimate"`
}

// Bounds of the published directory. NOTSPEC: the spec sets none. maxPublicRoomsPage caps
// one page (and is the page size when the client gives no limit); maxPublicRoomsScan caps
// the rooms considered, largest first; maxSearchTermLength caps generic_search_term.
const (
	maxPublicRoomsPage  = 500
	maxPublicRoomsScan  = 10000
	maxSearchTermLength = 1000
)

// GET /publicRooms (no authentication)
func (a *API) getPublicRooms(w http.ResponseWriter, r *http.Request) error {
	q := r.URL.Query()
	req := publicRoomsRequest{Since: q.Get("since")}
	if s := q.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return httpapi.InvalidParam("limit must be an integer")
		}
		req.Limit = &n
	}
	return a.publicRooms(w, r, q.Get("server"), &req)
}

// POST /publicRooms
func (a *API) queryPublicRooms(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req publicRoomsRequest
	if err := httpapi.ReadJSON(r, 64*1024, &req); err != nil {
		return err
	}
	return a.publicRooms(w, r, r.URL.Query().Get("server"), &req)
}

// publicRooms answers both forms of /publicRooms: from our directory, or from another
// server's through the federation (server-server API "Published Room Directory").
func (a *API) publicRooms(w http.ResponseWriter, r *http.Request, server string, req *publicRoomsRequest) error {
	if server != "" && server != a.cfg.ServerName {
		if err := spec.ValidateServerName(server); err != nil {
			return httpapi.InvalidParam("Invalid server name")
		}
		if a.remote == nil {
			// As Synapse when the server cannot be reached.
			return httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN", "Cannot fetch the room directory of %s", server)
		}
		body, err := json.Marshal(req)
		if err != nil {
			return err
		}
		resp, err := a.remote.PublicRooms(r.Context(), server, body)
		if err != nil {
			a.log.Info("remote room directory", "server", server, "err", err)
			return federationFailure(err, "Cannot fetch the room directory of %s", server)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(resp)
		return nil
	}
	resp, err := a.publicRoomsPage(r.Context(), req)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// LocalPublicRooms answers another server's /publicRooms from our directory
// (federation.LocalData); request is the JSON body of the POST form.
func (a *API) LocalPublicRooms(ctx context.Context, request json.RawMessage) (json.RawMessage, error) {
	var req publicRoomsRequest
	if err := httpapi.DecodeJSON(request, &req); err != nil {
		return nil, err
	}
	resp, err := a.publicRoomsPage(ctx, &req)
	if err != nil {
		return nil, err
	}
	return json.Marshal(resp)
}

// publicRoomsPage is one page of our published directory. Rooms are ordered by joined
// members, most first, then by room ID (the order list_public_rooms.yaml recommends); tokens
// are offsets into that order ("o<offset>").
func (a *API) publicRoomsPage(ctx context.Context, req *publicRoomsRequest) (*publicRoomsResponse, error) {
	limit := maxPublicRoomsPage
	if req.Limit != nil {
		if *req.Limit < 0 {
			return nil, httpapi.InvalidParam("limit must not be negative")
		}
		if *req.Limit > 0 {
			limit = min(*req.Limit, maxPublicRoomsPage)
		}
	}
	offset := 0
	if req.Since != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(req.Since, "o"))
		if !strings.HasPrefix(req.Since, "o") || err != nil || n < 0 {
			return nil, httpapi.InvalidParam("Invalid since token")
		}
		offset = n
	}
	var term string
	var roomTypes []*string
	if req.Filter != nil {
		term = strings.ToLower(strings.TrimSpace(req.Filter.GenericSearchTerm))
		roomTypes = req.Filter.RoomTypes
	}
	if len(term) > maxSearchTermLength {
		return nil, httpapi.InvalidParam("generic_search_term too long")
	}
	if req.IncludeAllNetworks && req.ThirdPartyInstanceID != "" {
		return nil, httpapi.InvalidParam("third_party_instance_id can only be used if include_all_networks is false")
	}
	resp := publicRoomsResponse{Chunk: []publicRoomsChunk{}}
	if req.ThirdPartyInstanceID != "" {
		// No application service provides third-party networks, so none has rooms.
		return &resp, nil
	}
	listed, err := a.listedRooms(ctx)
	if err != nil {
		return nil, err
	}
	var matching []publicRoomsChunk
	for _, room := range listed {
		if room.matches(term, roomTypes) {
			matching = append(matching, room)
		}
	}
	resp.TotalRoomCountEstimate = len(matching)
	if offset < len(matching) {
		end := min(offset+limit, len(matching))
		resp.Chunk = matching[offset:end]
		if end < len(matching) {
			resp.NextBatch = "o" + strconv.Itoa(end)
		}
	}
	if offset > 0 {
		resp.PrevBatch = "o" + strconv.Itoa(max(min(offset, len(matching))-limit, 0))
	}
	return &resp, nil
}

// directoryStateTypes are the room-level state events a directory entry is made from.
var directoryStateTypes = []string{
	"m.room.create", "m.room.name", "m.room.topic", "m.room.canonical_alias", "m.room.avatar",
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
}

// listedRooms is the published rooms as directory entries, largest first. NOTSPEC: as
// Synapse, a published room is only listed while it can be joined (or knocked on) by anyone,
// or read by anyone.
func (a *API) listedRooms(ctx context.Context) ([]publicRoomsChunk, error) {
	public, err := storage.PublicRooms(ctx, a.db, maxPublicRoomsScan)
	if err != nil {
		return nil, err
	}
	nids := make([]int64, len(public))
	for i, p := range public {
		nids[i] = p.RoomNID
	}
	rows, err := storage.RoomLevelStateEvents(ctx, a.db, nids, directoryStateTypes)
	if err != nil {
		return nil, err
	}
	events, err := a.rooms.EventsFromRows(rows)
	if err != nil {
		return nil, err
	}
	byRoom := map[string][]*rooms.Event{}
	for _, e := range events {
		byRoom[e.RoomID()] = append(byRoom[e.RoomID()], e)
	}
	out := make([]publicRoomsChunk, 0, len(public))
	for _, p := range public {
		entry := publicRoomsChunk{RoomID: p.RoomID, NumJoinedMembers: p.JoinedMembers}
		for _, e := range byRoom[p.RoomID] {
			entry.apply(e)
		}
		switch {
		case entry.WorldReadable:
		case entry.JoinRule == "public", entry.JoinRule == "knock", entry.JoinRule == "knock_restricted":
		default:
			continue
		}
		out = append(out, entry)
	}
	return out, nil
}

// apply fills the entry from one room-level state event.
func (c *publicRoomsChunk) apply(e *rooms.Event) {
	var content struct {
		Name              any `json:"name"`
		Topic             any `json:"topic"`
		Alias             any `json:"alias"`
		URL               any `json:"url"`
		JoinRule          any `json:"join_rule"`
		HistoryVisibility any `json:"history_visibility"`
		GuestAccess       any `json:"guest_access"`
		Type              any `json:"type"`
	}
	if json.Unmarshal(e.Content(), &content) != nil {
		return
	}
	str := func(v any) string {
		s, _ := v.(string)
		return s
	}
	switch e.Type() {
	case "m.room.create":
		c.RoomType = str(content.Type)
	case "m.room.name":
		c.Name = str(content.Name)
	case "m.room.topic":
		c.Topic = str(content.Topic)
	case "m.room.canonical_alias":
		c.CanonicalAlias = str(content.Alias)
	case "m.room.avatar":
		c.AvatarURL = str(content.URL)
	case "m.room.join_rules":
		c.JoinRule = str(content.JoinRule)
	case "m.room.history_visibility":
		c.WorldReadable = historyVisibilityOf(e.Content()) == "world_readable"
	case "m.room.guest_access":
		c.GuestCanJoin = str(content.GuestAccess) == "can_join"
	}
}

// matches applies the filter of POST /publicRooms: generic_search_term against the name,
// topic and canonical alias, case-insensitively; room_types, where null stands for rooms
// without a type.
func (c *publicRoomsChunk) matches(term string, roomTypes []*string) bool {
	if roomTypes != nil {
		ok := false
		for _, t := range roomTypes {
			if (t == nil && c.RoomType == "") || (t != nil && *t == c.RoomType && c.RoomType != "") {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	if term == "" {
		return true
	}
	for _, field := range []string{c.Name, c.Topic, c.CanonicalAlias} {
		if strings.Contains(strings.ToLower(field), term) {
			return true
		}
	}
	return false
}
