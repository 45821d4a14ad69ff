package clientapi

import (
	"encoding/json"
	"net/http"
	"sort"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// POST /createRoom (client-server API "Creation"; data/api/client-server/create_room.yaml).

type createRoomRequest struct {
	Visibility                string                     `json:"visibility"`
	RoomAliasName             string                     `json:"room_alias_name"`
	Name                      *string                    `json:"name"`
	Topic                     *string                    `json:"topic"`
	Invite                    []string                   `json:"invite"`
	RoomVersion               string                     `json:"room_version"`
	CreationContent           map[string]json.RawMessage `json:"creation_content"`
	InitialState              []initialStateEvent        `json:"initial_state"`
	Preset                    string                     `json:"preset"`
	IsDirect                  bool                       `json:"is_direct"`
	PowerLevelContentOverride map[string]json.RawMessage `json:"power_level_content_override"`
}

type initialStateEvent struct {
	Type     string          `json:"type"`
	StateKey string          `json:"state_key"`
	Content  json.RawMessage `json:"content"`
}

// maxCreateRoomBody bounds the request: initial_state can carry many events.
const maxCreateRoomBody = 1 << 20

// presets are the state a preset sets (create_room.yaml, "preset").
var presets = map[string]struct {
	joinRule, history, guestAccess string
	inviteesAreAdmins              bool
}{
	"private_chat":         {"invite", "shared", "can_join", false},
	"trusted_private_chat": {"invite", "shared", "can_join", true},
	"public_chat":          {"public", "shared", "forbidden", false},
}

func (a *API) createRoom(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	var req createRoomRequest
	if err := httpapi.ReadJSON(r, maxCreateRoomBody, &req); err != nil {
		return err
	}
	version := spec.DefaultRoomVersion
	if req.RoomVersion != "" {
		version = req.RoomVersion
	}
	rv, ok := spec.LookupRoomVersion(version)
	if !ok {
		return httpapi.NewError(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "Room version %q is not supported", version)
	}
	if req.Visibility != "" && req.Visibility != "public" && req.Visibility != "private" {
		return httpapi.BadJSON("visibility must be public or private")
	}
	if req.Preset == "" {
		req.Preset = "private_chat"
		if req.Visibility == "public" {
			req.Preset = "public_chat"
		}
	}
	preset, ok := presets[req.Preset]
	if !ok {
		return httpapi.BadJSON("Unknown preset %q", req.Preset)
	}
	for _, invitee := range req.Invite {
		if _, err := spec.ParseUserID(invitee); err != nil {
			return httpapi.InvalidParam("Invalid user ID to invite: %q", invitee)
		}
	}
	// Invite blocking: refused before anything is created, so that the client learns it
	// and no half-made room is left (the spec also allows creating the room without them).
	if err := a.checkInvites(r.Context(), req.Invite); err != nil {
		return err
	}
	var alias string
	if req.RoomAliasName != "" {
		alias = "#" + req.RoomAliasName + ":" + a.cfg.ServerName
		if _, err := spec.ParseRoomAlias(alias); err != nil {
			return httpapi.NewError(http.StatusBadRequest, "M_INVALID_PARAM", "Invalid room alias name")
		}
		if roomID, err := storage.LookupAlias(r.Context(), a.db, alias); err != nil {
			return err
		} else if roomID != "" {
			return httpapi.NewError(http.StatusBadRequest, "M_ROOM_IN_USE", "Room alias already taken")
		}
	}

	// m.room.create content: creation_content, plus the creator before room version 11.
	createContent := map[string]json.RawMessage{}
	for k, v := range req.CreationContent {
		createContent[k] = v
	}
	createContent["room_version"] = mustJSON(rv.ID)
	if !rv.CreatorInSender {
		createContent["creator"] = mustJSON(d.UserID)
	}
	if preset.inviteesAreAdmins && rv.CreatorsHaveInfinitePower && len(req.Invite) > 0 {
		// NOTSPEC: in v12 rooms Synapse makes the invitees of a trusted private chat
		// additional creators, the v12 equivalent of giving them power level 100.
		if _, set := createContent["additional_creators"]; !set {
			createContent["additional_creators"] = mustJSON(req.Invite)
		}
	}

	emptyKey := ""
	state := func(evType, stateKey string, content any) rooms.EventRequest {
		key := stateKey
		return rooms.EventRequest{Type: evType, StateKey: &key, Content: mustJSON(content)}
	}
	profile, err := a.profileContent(r, d.UserID)
	if err != nil {
		return err
	}
	profile["membership"] = "join"
	events := []rooms.EventRequest{state("m.room.member", d.UserID, profile)}

	// Power levels (NOTSPEC: Synapse's defaults), then the override on top.
	users := map[string]int64{}
	if !rv.CreatorsHaveInfinitePower {
		users[d.UserID] = 100
		if preset.inviteesAreAdmins {
			for _, invitee := range req.Invite {
				users[invitee] = 100
			}
		}
	}
	powerLevels := map[string]any{
		"users": users, "users_default": 0, "events_default": 0, "state_default": 50,
		"ban": 50, "kick": 50, "redact": 50, "invite": 50,
		"events": map[string]int64{
			"m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
			"m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
			"m.room.server_acl": 100, "m.room.encryption": 100,
		},
		"notifications": map[string]int64{"room": 50},
	}
	if rv.CreatorsHaveInfinitePower {
		// "If the room's version is 12 or higher, the power level for sending m.room.tombstone
		// events MUST explicitly be higher than state_default."
		powerLevels["events"].(map[string]int64)["m.room.tombstone"] = 150
	}
	for k, v := range req.PowerLevelContentOverride {
		powerLevels[k] = v
	}
	events = append(events, state("m.room.power_levels", "", powerLevels))
	if alias != "" {
		events = append(events, state("m.room.canonical_alias", "", map[string]string{"alias": alias}))
	}
	events = append(events,
		state("m.room.join_rules", "", map[string]string{"join_rule": preset.joinRule}),
		state("m.room.history_visibility", "", map[string]string{"history_visibility": preset.history}),
	)
	if preset.guestAccess == "can_join" {
		events = append(events, state("m.room.guest_access", "", map[string]string{"guest_access": "can_join"}))
	}
	for _, ev := range req.InitialState {
		if ev.Type == "" || ev.Content == nil {
			return httpapi.BadJSON("initial_state events need a type and content")
		}
		if ev.Type == "m.room.create" || ev.Type == "m.room.member" {
			return httpapi.BadJSON("initial_state may not set %s", ev.Type)
		}
		events = append(events, rooms.EventRequest{Type: ev.Type, StateKey: &ev.StateKey, Content: ev.Content})
	}
	if req.Name != nil {
		events = append(events, state("m.room.name", emptyKey, map[string]string{"name": *req.Name}))
	}
	if req.Topic != nil {
		// "An m.room.topic event with a text/plain mimetype" (v1.15): the m.topic content
		// block beside the plain topic, which it duplicates.
		events = append(events, state("m.room.topic", emptyKey, map[string]any{
			"topic":   *req.Topic,
			"m.topic": map[string]any{"m.text": []map[string]string{{"mimetype": "text/plain", "body": *req.Topic}}},
		}))
	}
	invitees := append([]string(nil), req.Invite...)
	sort.Strings(invitees)
	for _, invitee := range invitees {
		content := map[string]any{"membership": "invite"}
		if req.IsDirect {
			content["is_direct"] = true
		}
		events = append(events, state("m.room.member", invitee, content))
	}
	for i := range events {
		events[i].Sender = d.UserID
	}

	roomID, _, err := a.rooms.CreateRoom(r.Context(), rv, d.UserID, mustJSON(createContent), events)
	if err != nil {
		return submitError(err)
	}
	if alias != "" {
		if err := storage.InsertAlias(r.Context(), a.db, alias, roomID, d.UserID); err != nil {
			return err
		}
	}
	if req.Visibility == "public" {
		if err := storage.SetRoomPublic(r.Context(), a.db, roomID, true); err != nil {
			return err
		}
	}
	resp := map[string]string{"room_id": roomID}
	if alias != "" {
		resp["room_alias"] = alias
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// mustJSON encodes values that always encode (maps and slices of plain data).
func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic("encode " + err.Error())
	}
	return b
}

// sortByStream orders events by stream position.
func sortByStream(events []*rooms.Event) {
	sort.Slice(events, func(i, j int) bool { return events[i].StreamPos < events[j].StreamPos })
}
