package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"net/http"
	"slices"
	"sync"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// POST /rooms/{roomId}/upgrade (client-server API "Room Upgrades"; room_upgrades.yaml, and
// modules/room_upgrades.md "Server behaviour").
//
// Everything that can refuse the request is checked, and every event of the replacement
// room built, before anything is written. The replacement room is then created in one
// transaction (rooms.Server.CreateRoom), the tombstone sent, the aliases and directory
// entry moved in one transaction; only the tidying of the old room afterwards (its
// canonical alias and power levels) may fail on its own, which is logged, as in Synapse.

type upgradeRoomRequest struct {
	NewVersion *string `json:"new_version"`
	// AdditionalCreators is read only when the new version has additional creators: for
	// the others the spec says the field "is ignored and has no effect".
	AdditionalCreators json.RawMessage `json:"additional_creators"`
}

// upgradeCopiedState are the state events, with the empty state key, that the replacement
// room gets a copy of: the spec's recommended list (step 3) less m.room.power_levels, which
// upgradePowerLevels adjusts. Synapse copies the same.
var upgradeCopiedState = []string{
	"m.room.join_rules", "m.room.history_visibility", "m.room.guest_access",
	"m.room.name", "m.room.topic", "m.room.avatar", "m.room.encryption", "m.room.server_acl",
}

// tombstoneBody is the body of the tombstone. NOTSPEC: "a server-defined message"; Synapse's.
const tombstoneBody = "This room has been replaced"

// upgrading holds the IDs of the rooms being upgraded by this process. NOTSPEC: as Synapse,
// a second upgrade of a room while one runs is refused, so that a double click does not
// give the room two replacements.
var upgrading sync.Map

// upgradePlan is what an upgrade writes, all of it worked out before the first write.
type upgradePlan struct {
	version       *spec.RoomVersion
	createContent json.RawMessage
	// events are the replacement room's events after its create event.
	events []rooms.EventRequest
	// oldCanonicalAlias is the old room's m.room.canonical_alias without the aliases that
	// move (nil: unchanged); oldPowerLevels its power levels restricted (nil: unchanged).
	oldCanonicalAlias json.RawMessage
	oldPowerLevels    json.RawMessage
}

func (a *API) upgradeRoom(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	var req upgradeRoomRequest
	if err := httpapi.ReadJSON(r, httpapi.MaxBodySize, &req); err != nil {
		return err
	}
	if req.NewVersion == nil {
		return httpapi.MissingParam("Missing new_version")
	}
	version, ok := spec.LookupRoomVersion(*req.NewVersion)
	if !ok {
		return httpapi.NewError(http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION", "Room version %q is not supported", *req.NewVersion)
	}
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	var additionalCreators []string
	if version.CreatorsHaveInfinitePower {
		var err error
		if additionalCreators, err = readAdditionalCreators(req.AdditionalCreators, d.UserID); err != nil {
			return err
		}
	}
	// NOTSPEC: one request counts once against the sender's rate limit, however many events
	// the upgrade sends; Synapse rate-limits the upgrade, not its events.
	if err := rateLimit(a.limiters.Send, d.UserID); err != nil {
		return err
	}
	if _, busy := upgrading.LoadOrStore(roomID, struct{}{}); busy {
		return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "An upgrade for this room is currently in progress")
	}
	defer upgrading.Delete(roomID)

	plan, err := a.planUpgrade(r, d, roomID, version, additionalCreators)
	if err != nil {
		return err
	}
	// Once the replacement room exists, the rest must happen even if the client goes away.
	ctx := context.WithoutCancel(r.Context())
	newRoomID, _, err := a.rooms.CreateRoom(ctx, plan.version, d.UserID, plan.createContent, plan.events)
	if err != nil {
		return submitError(err)
	}
	emptyKey := ""
	tombstone := rooms.EventRequest{
		Sender: d.UserID, Type: "m.room.tombstone", StateKey: &emptyKey,
		Content: mustJSON(map[string]string{"body": tombstoneBody, "replacement_room": newRoomID}),
	}
	if _, err := a.rooms.Send(ctx, roomID, tombstone); err != nil {
		// Only a change of the old room since planUpgrade checked gets here: the replacement
		// stays behind, unreferenced, with the upgrading user its only member.
		a.log.Warn("room upgrade: tombstone refused after the replacement room was created",
			"room", roomID, "replacement", newRoomID, "err", err)
		return submitError(err)
	}
	if _, err := storage.MoveRoomDirectory(ctx, a.db, roomID, newRoomID); err != nil {
		return err
	}
	if plan.oldCanonicalAlias != nil {
		a.sendToOldRoom(ctx, d, roomID, "m.room.canonical_alias", plan.oldCanonicalAlias)
	}
	if plan.oldPowerLevels != nil {
		a.sendToOldRoom(ctx, d, roomID, "m.room.power_levels", plan.oldPowerLevels)
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"replacement_room": newRoomID})
	return nil
}

// readAdditionalCreators reads additional_creators for a room version that has them: user
// IDs (room v12 auth rules §1.4), without duplicates or the sender, who is a creator anyway.
func readAdditionalCreators(raw json.RawMessage, sender string) ([]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	var ids []string
	if err := json.Unmarshal(raw, &ids); err != nil {
		return nil, httpapi.BadJSON("additional_creators must be an array of user IDs")
	}
	var creators []string
	for _, id := range ids {
		if _, err := spec.ParseUserID(id); err != nil || len(id) > 255 {
			return nil, httpapi.InvalidParam("Invalid user ID in additional_creators: %q", id)
		}
		if id != sender && !slices.Contains(creators, id) {
			creators = append(creators, id)
		}
	}
	return creators, nil
}

// planUpgrade checks that the user may upgrade roomID (step 1) and builds what the upgrade
// writes: the replacement room's create event (step 2), its copied state, bans and moved
// canonical alias (steps 3, 4), and the old room's restricted power levels (step 6).
func (a *API) planUpgrade(r *http.Request, d *Device, roomID string, version *spec.RoomVersion, additionalCreators []string) (*upgradePlan, error) {
	ctx := r.Context()
	state, oldVersion, err := a.rooms.CurrentState(ctx, roomID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		// NOTSPEC: the spec lists 400 and 403 only; Synapse answers 404 for a room it does
		// not know before checking anything else.
		return nil, httpapi.NotFound("Unknown room %s", roomID)
	}
	if err != nil {
		return nil, err
	}
	get := func(evType, stateKey string) *rooms.Event {
		return state[spec.StateTuple{Type: evType, StateKey: stateKey}]
	}
	if m := get("m.room.member", d.UserID); m == nil {
		return nil, httpapi.Forbidden("You are not in the room")
	} else if membership, _ := m.Membership(); membership != "join" {
		return nil, httpapi.Forbidden("You are not in the room")
	}
	create := get("m.room.create", "")
	if create == nil {
		return nil, httpapi.Forbidden("You cannot upgrade this room")
	}
	// Step 1: the auth rules decide, exactly as for the tombstone itself.
	emptyKey := ""
	if err := a.rooms.CheckWouldPass(ctx, roomID, d.UserID, "m.room.tombstone", &emptyKey,
		mustJSON(map[string]string{"body": tombstoneBody, "replacement_room": roomID})); err != nil {
		return nil, submitError(err)
	}

	plan := &upgradePlan{version: version}
	if plan.createContent, err = a.upgradeCreateContent(ctx, roomID, create, version, d.UserID, additionalCreators); err != nil {
		return nil, err
	}
	stateEvent := func(evType, stateKey string, content json.RawMessage) rooms.EventRequest {
		key := stateKey
		return rooms.EventRequest{Sender: d.UserID, Type: evType, StateKey: &key, Content: content}
	}

	profile, err := a.profileContent(r, d.UserID)
	if err != nil {
		return nil, err
	}
	profile["membership"] = "join"
	plan.events = append(plan.events, stateEvent("m.room.member", d.UserID, mustJSON(profile)))

	creators := append([]string{d.UserID}, additionalCreators...)
	levels, err := upgradePowerLevels(get("m.room.power_levels", ""), create, oldVersion, version, d.UserID, creators)
	if err != nil {
		return nil, err
	}
	if levels != nil {
		plan.events = append(plan.events, stateEvent("m.room.power_levels", "", levels.initial))
		plan.oldPowerLevels = levels.oldRestricted
	}

	if canonical := get("m.room.canonical_alias", ""); canonical != nil {
		movable, err := storage.AliasesOfRoom(ctx, a.db, roomID)
		if err != nil {
			return nil, err
		}
		newContent, oldContent := splitCanonicalAlias(canonical.Content(), movable)
		if newContent != nil {
			plan.events = append(plan.events, stateEvent("m.room.canonical_alias", "", newContent))
			plan.oldCanonicalAlias = oldContent
		}
	}

	for _, evType := range upgradeCopiedState {
		if e := get(evType, ""); e != nil {
			plan.events = append(plan.events, stateEvent(evType, "", e.Content()))
		}
	}
	var createFields struct {
		Type string `json:"type"`
	}
	_ = json.Unmarshal(create.Content(), &createFields)
	var children, bans []*rooms.Event
	for tuple, e := range state {
		switch {
		case tuple.Type == "m.space.child" && createFields.Type == "m.space":
			// NOTSPEC: Synapse copies a space's children too, but not the removed ones
			// (empty content).
			if !isEmptyObject(e.Content()) {
				children = append(children, e)
			}
		case tuple.Type == "m.room.member":
			if membership, _ := e.Membership(); membership == "ban" {
				bans = append(bans, e)
			}
		}
	}
	sortByStream(children)
	for _, e := range children {
		plan.events = append(plan.events, stateEvent("m.space.child", *e.StateKey(), e.Content()))
	}
	// The bans follow (Synapse), with the old bans' content. NOTSPEC: a user the upgrading
	// user could not ban in the replacement room (a creator there, or someone of at least
	// their power) is left out rather than failing the upgrade.
	sortByStream(bans)
	for _, e := range bans {
		target := *e.StateKey()
		if levels == nil && slices.Contains(creators, target) || levels != nil && !levels.canBan(target) {
			continue
		}
		plan.events = append(plan.events, stateEvent("m.room.member", target, e.Content()))
	}
	if levels != nil && levels.final != nil {
		plan.events = append(plan.events, stateEvent("m.room.power_levels", "", levels.final))
	}
	return plan, nil
}

// upgradeCreateContent is the replacement room's m.room.create content (step 2): the new
// room_version, the predecessor, the old room's type and m.federate: false (Synapse), the
// creator before room v11, and the additional creators asked for where the version has them.
// Additional creators of the old room are not carried over (step 2, note of v1.16).
func (a *API) upgradeCreateContent(ctx context.Context, roomID string, create *rooms.Event, version *spec.RoomVersion, sender string, additionalCreators []string) (json.RawMessage, error) {
	predecessor := map[string]string{"room_id": roomID}
	if !version.RoomIDIsCreateEventHash {
		// "The event ID of the last known event in the old room". Synapse names the
		// tombstone, which it builds before the replacement room; the replacement's ID is
		// chosen by CreateRoom here, so the tombstone comes after and the event before it
		// is named. Upgrading to room v12 or later, event_id "MAY be omitted" and is, as
		// Synapse does.
		last, err := a.latestEventID(ctx, roomID)
		if err != nil {
			return nil, err
		}
		if last != "" {
			predecessor["event_id"] = last
		}
	}
	content := map[string]any{"room_version": version.ID, "predecessor": predecessor}
	var old map[string]json.RawMessage
	_ = json.Unmarshal(create.Content(), &old)
	if raw, ok := old["type"]; ok {
		content["type"] = raw
	}
	var federate bool
	if raw, ok := old["m.federate"]; ok && json.Unmarshal(raw, &federate) == nil && !federate {
		content["m.federate"] = false
	}
	if !version.CreatorInSender {
		content["creator"] = sender
	}
	if version.CreatorsHaveInfinitePower && len(additionalCreators) > 0 {
		content["additional_creators"] = additionalCreators
	}
	return mustJSON(content), nil
}

// latestEventID is the deepest of the room's forward extremities: the last event known in it.
func (a *API) latestEventID(ctx context.Context, roomID string) (string, error) {
	ids, _, err := a.rooms.ForwardExtremities(ctx, roomID)
	if err != nil {
		return "", err
	}
	var latest *rooms.Event
	for _, id := range ids {
		e, err := a.rooms.EventByID(ctx, id)
		if err != nil {
			return "", err
		}
		if latest == nil || e.Depth() > latest.Depth() || e.Depth() == latest.Depth() && e.StreamPos > latest.StreamPos {
			latest = e
		}
	}
	if latest == nil {
		return "", nil
	}
	return latest.EventID(), nil
}

// upgradeLevels are the power levels of an upgrade.
type upgradeLevels struct {
	// initial is the replacement room's first power levels; final, if not nil, replaces it
	// once the copied state and bans are in (the upgrading user's level raised for the copy
	// put back, as in Synapse).
	initial, final json.RawMessage
	// oldRestricted is the old room's power levels with events_default and invite raised
	// (step 6); nil when they are high enough already.
	oldRestricted json.RawMessage

	senderLevel  int64
	users        map[string]int64
	usersDefault int64
	// infiniteCreators is set where the replacement room's creators have infinite power.
	infiniteCreators bool
	creators         []string
}

// canBan reports whether the upgrading user may ban target in the replacement room, under
// its initial power levels (auth rules: the sender's level above the target's, and at
// least "ban", which the initial levels give them).
func (l *upgradeLevels) canBan(target string) bool {
	if l.infiniteCreators {
		// The sender is a creator, with infinite power; so is any other creator.
		return !slices.Contains(l.creators, target)
	}
	level, ok := l.users[target]
	if !ok {
		level = l.usersDefault
	}
	return level < l.senderLevel
}

// upgradePowerLevels works out the power levels of an upgrade from the old room's
// m.room.power_levels (nil when it has none: then the replacement has none either, and the
// old room is not restricted, as in Synapse).
//
// The replacement room gets the old levels, re-encoded as integers (Synapse's
// copy_and_fixup_power_levels_contents), with these changes:
//   - where creators have infinite power (room v12 auth rules §9.3), the creators of the
//     replacement room are removed from "users": they may not appear there;
//   - otherwise the upgrading user is raised, for the copy only, to the highest level that
//     sending the copied state and bans may need (Synapse);
//   - NOTSPEC: a creator with infinite power in the old room who upgrades to a version
//     without it keeps that highest level, and at least 100 (the level createRoom gives a
//     creator), instead of falling to users_default, which Synapse leaves them at.
func upgradePowerLevels(plEvent, create *rooms.Event, oldVersion, version *spec.RoomVersion, sender string, creators []string) (*upgradeLevels, error) {
	if plEvent == nil {
		return nil, nil
	}
	pl, err := spec.ParsePowerLevels(plEvent.Content(), oldVersion)
	if err != nil {
		return nil, err
	}
	content, err := integerPowerLevels(plEvent.Content(), pl)
	if err != nil {
		return nil, err
	}
	levels := &upgradeLevels{usersDefault: pl.UsersDefault, users: maps.Clone(pl.Users)}

	// Step 6: "setting events_default and invite to the greater of 50 and users_default + 1".
	restricted := max(50, pl.UsersDefault+1)
	old, raised := maps.Clone(content), false
	for key, current := range map[string]int64{"events_default": pl.EventsDefault, "invite": pl.Invite} {
		if current < restricted {
			old[key] = mustJSON(restricted)
			raised = true
		}
	}
	if raised {
		levels.oldRestricted = mustJSON(old)
	}

	if version.CreatorsHaveInfinitePower {
		levels.infiniteCreators, levels.creators = true, creators
		for _, c := range creators {
			delete(levels.users, c)
		}
		if _, ok := content["users"]; ok {
			content["users"] = mustJSON(levels.users)
		}
		levels.senderLevel = spec.InfinitePowerLevel
		levels.initial = mustJSON(content)
		return levels, nil
	}

	needed := max(pl.StateDefault, pl.Ban)
	for _, level := range pl.Events {
		needed = max(needed, level)
	}
	current, hasEntry := levels.users[sender]
	if !hasEntry {
		current = pl.UsersDefault
	}
	oldPL, err := spec.RoomPowerLevels(create.Event, plEvent.Event)
	if err != nil {
		return nil, err
	}
	if oldPL.IsInfiniteCreator(sender) && current < max(needed, 100) {
		levels.users[sender] = max(needed, 100)
		content["users"] = mustJSON(levels.users)
		levels.senderLevel = levels.users[sender]
		levels.initial = mustJSON(content)
		return levels, nil
	}
	levels.senderLevel = current
	if current >= needed {
		levels.initial = mustJSON(content)
		return levels, nil
	}
	levels.final = mustJSON(content)
	levels.users[sender] = needed
	levels.senderLevel = needed
	forCopy := maps.Clone(content)
	forCopy["users"] = mustJSON(levels.users)
	levels.initial = mustJSON(forCopy)
	return levels, nil
}

// integerPowerLevels is m.room.power_levels content with every level the content sets
// written as the integer pl parsed from it (room versions before v10 accept strings, before
// v6 floats); other keys are kept as they are.
func integerPowerLevels(raw json.RawMessage, pl *spec.PowerLevels) (map[string]json.RawMessage, error) {
	var content map[string]json.RawMessage
	if err := json.Unmarshal(raw, &content); err != nil {
		return nil, err
	}
	for key, level := range map[string]int64{
		"users_default": pl.UsersDefault, "events_default": pl.EventsDefault, "state_default": pl.StateDefault,
		"ban": pl.Ban, "kick": pl.Kick, "invite": pl.Invite, "redact": pl.Redact,
	} {
		if _, ok := content[key]; ok {
			content[key] = mustJSON(level)
		}
	}
	for key, levels := range map[string]map[string]int64{"events": pl.Events, "notifications": pl.Notifications, "users": pl.Users} {
		if _, ok := content[key]; ok {
			content[key] = mustJSON(levels)
		}
	}
	return content, nil
}

// splitCanonicalAlias divides an m.room.canonical_alias between the rooms (step 4, as
// Synapse): the aliases that move (local aliases of the old room) go to the replacement
// room's event, the rest stay. It returns nil contents when nothing moves.
func splitCanonicalAlias(raw json.RawMessage, movable []string) (newContent, oldContent json.RawMessage) {
	var content map[string]json.RawMessage
	if json.Unmarshal(raw, &content) != nil {
		return nil, nil
	}
	old := maps.Clone(content)
	moved := map[string]any{}
	var alias string
	if json.Unmarshal(content["alias"], &alias) == nil && slices.Contains(movable, alias) {
		moved["alias"] = alias
		delete(old, "alias")
	}
	var alt []string
	if raw, ok := content["alt_aliases"]; ok && json.Unmarshal(raw, &alt) == nil {
		var stay, move []string
		for _, a := range alt {
			if slices.Contains(movable, a) {
				move = append(move, a)
			} else {
				stay = append(stay, a)
			}
		}
		if len(move) > 0 {
			moved["alt_aliases"] = move
			if len(stay) > 0 {
				old["alt_aliases"] = mustJSON(stay)
			} else {
				delete(old, "alt_aliases")
			}
		}
	}
	if len(moved) == 0 {
		return nil, nil
	}
	return mustJSON(moved), mustJSON(old)
}

// sendToOldRoom sends a state event of the upgrade's last steps to the old room. As in
// Synapse, a refusal does not undo the upgrade, which is done by now; it is logged.
func (a *API) sendToOldRoom(ctx context.Context, d *Device, roomID, evType string, content json.RawMessage) {
	emptyKey := ""
	if _, err := a.rooms.Send(ctx, roomID, rooms.EventRequest{
		Sender: d.UserID, Type: evType, StateKey: &emptyKey, Content: content,
	}); err != nil {
		a.log.Warn("room upgrade: could not update the old room", "room", roomID, "type", evType, "err", err)
	}
}

func isEmptyObject(raw json.RawMessage) bool {
	var m map[string]json.RawMessage
	return json.Unmarshal(raw, &m) == nil && len(m) == 0
}
