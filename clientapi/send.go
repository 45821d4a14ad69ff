package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
)

// Sending events, reading and writing state, redacting (client-server API "Sending events
// to a room", "Getting events for a room", "Redactions").

func (a *API) roomRoutes(r chi.Router, h func(httpapi.Handler) http.Handler, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/createRoom", authed(a.createRoom))
	r.Method(http.MethodPut, "/rooms/{roomId}/send/{eventType}/{txnId}", authed(a.sendMessage))
	// Clients address the empty state key both as .../{eventType} and .../{eventType}/.
	r.Method(http.MethodPut, "/rooms/{roomId}/state/{eventType}", authed(a.putState))
	r.Method(http.MethodPut, "/rooms/{roomId}/state/{eventType}/", authed(a.putState))
	r.Method(http.MethodPut, "/rooms/{roomId}/state/{eventType}/{stateKey}", authed(a.putState))
	r.Method(http.MethodGet, "/rooms/{roomId}/state/{eventType}", authed(a.getState))
	r.Method(http.MethodGet, "/rooms/{roomId}/state/{eventType}/", authed(a.getState))
	r.Method(http.MethodGet, "/rooms/{roomId}/state/{eventType}/{stateKey}", authed(a.getState))
	r.Method(http.MethodGet, "/rooms/{roomId}/state", authed(a.getAllState))
	r.Method(http.MethodPut, "/rooms/{roomId}/redact/{eventId}/{txnId}", authed(a.redact))
	r.Method(http.MethodPost, "/rooms/{roomId}/upgrade", authed(a.upgradeRoom))
	r.Method(http.MethodPost, "/search", authed(a.search))
	a.membershipRoutes(r, authed)
	a.eventRoutes(r, authed)
	a.directoryRoutes(r, h, authed)
	a.receiptRoutes(r, authed)
}

// readContent reads an event's content: a JSON object of at most one event's size.
func readContent(r *http.Request) (json.RawMessage, error) {
	body, err := httpapi.ReadBody(r, int64(spec.MaxEventSize))
	if err != nil {
		return nil, err
	}
	var obj map[string]json.RawMessage
	if err := httpapi.DecodeJSON(body, &obj); err != nil {
		return nil, err
	}
	if len(body) == 0 {
		return json.RawMessage("{}"), nil
	}
	return json.RawMessage(body), nil
}

// submitError turns room-server errors into Matrix errors.
func submitError(err error) error {
	var authErr *spec.AuthError
	switch {
	case errors.As(err, &authErr):
		return httpapi.Forbidden("%s", authErr.Reason)
	case errors.Is(err, rooms.ErrRoomNotFound):
		return httpapi.Forbidden("Unknown room or not a member")
	case errors.Is(err, spec.ErrTooLarge):
		return httpapi.TooLarge("Event too large")
	case errors.Is(err, spec.ErrBadEvent), errors.Is(err, spec.ErrNotJSON), errors.Is(err, spec.ErrNotCanonical):
		return httpapi.BadJSON("%v", err)
	}
	return err
}

// sendEvent submits one event of the requesting device.
func (a *API) sendEvent(r *http.Request, d *Device, roomID string, req rooms.EventRequest) (*rooms.Event, error) {
	if err := rateLimit(a.limiters.Send, d.UserID); err != nil {
		return nil, err
	}
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return nil, httpapi.InvalidParam("Invalid room ID")
	}
	req.Sender, req.DeviceID = d.UserID, d.DeviceID
	events, err := a.rooms.Send(r.Context(), roomID, req)
	if err != nil {
		return nil, submitError(err)
	}
	a.active(r.Context(), d)
	return events[0], nil
}

// PUT /rooms/{roomId}/send/{eventType}/{txnId}
func (a *API) sendMessage(w http.ResponseWriter, r *http.Request, d *Device) error {
	evType := pathParam(r, "eventType")
	if evType == "m.room.redaction" {
		return a.sendRedactionEvent(w, r, d)
	}
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	content, err := readContent(r)
	if err != nil {
		return err
	}
	if evType == "" || len(evType) > 255 {
		return httpapi.InvalidParam("Invalid event type")
	}
	e, err := a.sendEvent(r, d, pathParam(r, "roomId"), rooms.EventRequest{
		Type: evType, Content: content, TxnID: pathParam(r, "txnId"),
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": e.EventID()})
	return nil
}

// PUT /rooms/{roomId}/state/{eventType}/{stateKey}
func (a *API) putState(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	content, err := readContent(r)
	if err != nil {
		return err
	}
	evType, stateKey := pathParam(r, "eventType"), pathParam(r, "stateKey")
	if evType == "" || len(evType) > 255 || len(stateKey) > 255 {
		return httpapi.InvalidParam("Invalid event type or state key")
	}
	if evType == "m.room.member" {
		// NOTSPEC: Synapse sends membership changes through its membership handler too, so
		// that profile data and checks apply; here the auth rules do all the checking.
		if _, err := spec.ParseUserID(stateKey); err != nil {
			return httpapi.BadJSON("State key of m.room.member must be a user ID")
		}
		if err := a.checkMemberInvite(r.Context(), stateKey, content); err != nil {
			return err
		}
	}
	if evType == "m.room.canonical_alias" {
		if err := a.checkCanonicalAlias(r, pathParam(r, "roomId"), content); err != nil {
			return err
		}
	}
	e, err := a.sendEvent(r, d, pathParam(r, "roomId"), rooms.EventRequest{
		Type: evType, StateKey: &stateKey, Content: content,
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": e.EventID()})
	return nil
}

// visibleState is the state the user may read: the current state while joined, the state
// when they left otherwise (client-server API "GET /rooms/{roomId}/state").
func (a *API) visibleState(r *http.Request, d *Device, roomID string) (map[spec.StateTuple]*rooms.Event, error) {
	membership, memberEvent, err := a.rooms.Membership(r.Context(), roomID, d.UserID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return nil, httpapi.Forbidden("You are not a member of this room")
	}
	if err != nil {
		return nil, err
	}
	switch membership {
	case "join":
		state, _, err := a.rooms.CurrentState(r.Context(), roomID)
		return state, err
	case "leave", "ban":
		// NOTSPEC: like Synapse, a former member sees the state as of their departure.
		return a.rooms.StateAfter(r.Context(), memberEvent)
	}
	return nil, httpapi.Forbidden("You are not a member of this room")
}

// GET /rooms/{roomId}/state/{eventType}/{stateKey}
func (a *API) getState(w http.ResponseWriter, r *http.Request, d *Device) error {
	state, err := a.visibleState(r, d, pathParam(r, "roomId"))
	if err != nil {
		return err
	}
	e, ok := state[spec.StateTuple{Type: pathParam(r, "eventType"), StateKey: pathParam(r, "stateKey")}]
	if !ok {
		return httpapi.NotFound("Event not found")
	}
	if r.URL.Query().Get("format") == "event" {
		evs, err := a.formatter(d, true).formatAll(r.Context(), []*rooms.Event{e})
		if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, evs[0])
		return nil
	}
	httpapi.WriteJSON(w, http.StatusOK, e.Content())
	return nil
}

// GET /rooms/{roomId}/state
func (a *API) getAllState(w http.ResponseWriter, r *http.Request, d *Device) error {
	state, err := a.visibleState(r, d, pathParam(r, "roomId"))
	if err != nil {
		return err
	}
	events := make([]*rooms.Event, 0, len(state))
	for _, e := range state {
		events = append(events, e)
	}
	sortByStream(events)
	out, err := a.formatter(d, true).formatAll(r.Context(), events)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// PUT /rooms/{roomId}/redact/{eventId}/{txnId}
func (a *API) redact(w http.ResponseWriter, r *http.Request, d *Device) error {
	content, err := readContent(r)
	if err != nil {
		return err
	}
	return a.sendRedaction(w, r, d, pathParam(r, "eventId"), content, "redact:"+pathParam(r, "txnId"))
}

// PUT /rooms/{roomId}/send/m.room.redaction/{txnId} (room_send.yaml, v1.18): "Homeservers
// MUST allow clients to send m.room.redaction events with this endpoint for all room
// versions", the target in content.redacts, which rooms before v11 carry at the top level
// instead. It is a redaction as through /redact, with the same checks.
func (a *API) sendRedactionEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	content, err := readContent(r)
	if err != nil {
		return err
	}
	var c struct {
		Redacts *string `json:"redacts"`
	}
	if err := json.Unmarshal(content, &c); err != nil {
		return httpapi.BadJSON("redacts must be an event ID")
	}
	if c.Redacts == nil {
		return httpapi.MissingParam("Missing redacts")
	}
	return a.sendRedaction(w, r, d, *c.Redacts, content, pathParam(r, "txnId"))
}

// sendRedaction redacts target in the request's room with content, once per transaction ID
// txnID: the requester's own events, or others' with the "redact" power level.
func (a *API) sendRedaction(w http.ResponseWriter, r *http.Request, d *Device, target string, content json.RawMessage, txnID string) error {
	roomID := pathParam(r, "roomId")
	rv, err := a.rooms.RoomVersion(r.Context(), roomID)
	if err != nil {
		return submitError(err)
	}
	if err := spec.ValidateEventID(target, rv); err != nil {
		return httpapi.InvalidParam("Invalid event ID")
	}
	// The auth rules only check the redaction event itself; whether it may take effect on
	// its target is the server's check (client-server API "Redactions": own events, or the
	// "redact" power level).
	targetEvent, err := a.rooms.TimelineEventByID(r.Context(), target)
	// A suspended account may redact its own events only (client-server API "Account
	// suspension").
	if err != nil || targetEvent.RoomID() != roomID || targetEvent.Sender() != d.UserID {
		if err := d.requireNotSuspended(); err != nil {
			return err
		}
	}
	if err == nil && targetEvent.RoomID() == roomID && targetEvent.Sender() != d.UserID {
		if err := a.requirePower(r, roomID, d.UserID, "redact"); err != nil {
			return err
		}
	}
	var obj map[string]json.RawMessage
	_ = json.Unmarshal(content, &obj)
	if rv.RedactsInContent {
		targetJSON, _ := json.Marshal(target)
		obj["redacts"] = targetJSON
		content, _ = json.Marshal(obj)
	} else if _, ok := obj["redacts"]; ok {
		// Before v11 the target is at the top level only: "they MUST move the redacts
		// property inside the content to the top level of the event" (room_send.yaml).
		delete(obj, "redacts")
		content, _ = json.Marshal(obj)
	}
	e, err := a.sendEvent(r, d, roomID, rooms.EventRequest{
		Type: "m.room.redaction", Content: content, Redacts: target, TxnID: txnID,
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"event_id": e.EventID()})
	return nil
}

// requirePower answers 403 unless user's power level in roomID reaches the level of action
// ("redact", "kick", "ban", "invite").
func (a *API) requirePower(r *http.Request, roomID, userID, action string) error {
	levels, err := a.powerLevels(r, roomID)
	if err != nil {
		return err
	}
	var required int64
	switch action {
	case "redact":
		required = levels.Redact
	case "kick":
		required = levels.Kick
	case "ban":
		required = levels.Ban
	case "invite":
		required = levels.Invite
	}
	if levels.UserLevel(userID) < required {
		return httpapi.Forbidden("You don't have permission to %s in this room", action)
	}
	return nil
}

// powerLevels is the room's power levels in force.
func (a *API) powerLevels(r *http.Request, roomID string) (*spec.PowerLevels, error) {
	state, _, err := a.rooms.CurrentState(r.Context(), roomID)
	if err != nil {
		return nil, submitError(err)
	}
	var create, pl *spec.Event
	if e, ok := state[spec.StateTuple{Type: "m.room.create"}]; ok {
		create = e.Event
	}
	if e, ok := state[spec.StateTuple{Type: "m.room.power_levels"}]; ok {
		pl = e.Event
	}
	return spec.RoomPowerLevels(create, pl)
}
