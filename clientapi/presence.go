package clientapi

import (
	"context"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/presence"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Presence (client-server API "Presence"; presence.yaml). Package presence keeps the state;
// this file serves it, and /sync (syncPresence) delivers its changes.

// maxPresenceBody bounds a PUT /presence body: a status message and a state.
const maxPresenceBody = presence.MaxStatusMsg + 1024

func (a *API) presenceRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/presence/{userId}/status", authed(a.getPresence))
	r.Method(http.MethodPut, "/presence/{userId}/status", authed(a.putPresence))
}

// Presence is the presence tracker, for the federation API and the server's background work.
func (a *API) Presence() *presence.Tracker { return a.presence }

// GET /presence/{userId}/status. Others' presence is visible to users sharing a room with
// them (module "Security considerations"); to anyone else the answer is 403.
func (a *API) getPresence(w http.ResponseWriter, r *http.Request, d *Device) error {
	userID := pathParam(r, "userId")
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	ctx := r.Context()
	if userID != d.UserID {
		shares, err := storage.SharesRoom(ctx, a.db, d.UserID, userID)
		if err != nil {
			return err
		}
		if !shares {
			return httpapi.Forbidden("You are not allowed to see their presence")
		}
	}
	if user.Server() == a.cfg.ServerName {
		if _, err := storage.LoadUser(ctx, a.db, userID); errors.Is(err, storage.ErrNotFound) {
			return httpapi.NotFound("There is no presence state for this user")
		} else if err != nil {
			return err
		}
	}
	status, err := a.presence.Get(ctx, userID)
	if err != nil {
		return err
	}
	content := status.Content(a.presence.Now())
	if _, ok := content["status_msg"]; !ok {
		content["status_msg"] = nil
	}
	httpapi.WriteJSON(w, http.StatusOK, content)
	return nil
}

// PUT /presence/{userId}/status: a user sets their own presence and status message.
func (a *API) putPresence(w http.ResponseWriter, r *http.Request, d *Device) error {
	userID := pathParam(r, "userId")
	if _, err := spec.ParseUserID(userID); err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	if userID != d.UserID {
		return httpapi.Forbidden("You cannot set the presence of another user")
	}
	var req struct {
		Presence  *string `json:"presence"`
		StatusMsg *string `json:"status_msg"`
	}
	if err := httpapi.ReadJSON(r, maxPresenceBody, &req); err != nil {
		return err
	}
	if req.Presence == nil {
		return httpapi.MissingParam("Missing presence")
	}
	if !presence.Valid(*req.Presence) {
		return httpapi.InvalidParam("presence must be online, unavailable or offline")
	}
	msg := ""
	if req.StatusMsg != nil {
		msg = *req.StatusMsg
	}
	if len(msg) > presence.MaxStatusMsg {
		return httpapi.NewError(http.StatusBadRequest, "M_TOO_LARGE", "status_msg is too long")
	}
	// NOTSPEC: a status_msg left out clears the message, as in Synapse.
	if err := a.presence.Set(r.Context(), d.UserID, d.DeviceID, *req.Presence, msg); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// active records a pro-active event of the device (a message sent, a receipt, typing), which
// makes the user online and moves their last active time. Presence is a side matter: a
// failure to record it is logged, not returned.
func (a *API) active(ctx context.Context, d *Device) {
	if err := a.presence.Active(ctx, d.UserID, d.DeviceID); err != nil && ctx.Err() == nil {
		a.log.Warn("presence: record activity", "user", d.UserID, "err", err)
	}
}

// syncPresence is the presence section of a /sync covering (since, to]: on an initial sync
// the users sharing a room with the user (and the user) who are not offline, else those whose
// presence changed in the window, and those of newlyShared (who started sharing a room with
// the user in the window: their presence is news to the user) who are not offline.
func (a *API) syncPresence(ctx context.Context, userID string, filter *EventFilter, since, to int64, everything bool, newlyShared []string) ([]any, error) {
	if !a.presence.Enabled() || (filter.Types != nil && !matchAny(filter.Types, "m.presence")) || matchAny(filter.NotTypes, "m.presence") ||
		(filter.Limit != nil && *filter.Limit == 0) {
		return nil, nil
	}
	var rows []storage.PresenceRow
	var err error
	switch {
	case everything:
		rows, err = storage.PresenceSharing(ctx, a.db, userID, to)
	case a.rooms.Stream().ChangedSince(streams.PresenceKey(userID), since):
		rows, err = storage.PresenceChanged(ctx, a.db, userID, since, to)
	}
	if err != nil {
		return nil, err
	}
	if !everything && len(newlyShared) > 0 {
		listed := make(map[string]bool, len(rows))
		for _, row := range rows {
			listed[row.UserID] = true
		}
		var more []string
		for _, u := range newlyShared {
			if !listed[u] {
				more = append(more, u)
			}
		}
		shared, err := storage.PresenceOfUsers(ctx, a.db, more, to)
		if err != nil {
			return nil, err
		}
		rows = append(rows, shared...)
	}
	now := a.presence.Now()
	var events []any
	for _, row := range rows {
		if !filter.Allows("m.presence", row.UserID) {
			continue
		}
		if filter.Limit != nil && len(events) >= *filter.Limit {
			break
		}
		events = append(events, map[string]any{
			"type": "m.presence", "sender": row.UserID, "content": a.presence.Fresh(row).Content(now),
		})
	}
	return events, nil
}
