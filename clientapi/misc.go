package clientapi

import (
	"encoding/base64"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Smaller endpoints of the Client-Server API: third-party lookup, VoIP, the deprecated
// GET /events/{eventId}, mutual rooms, whois and token refresh; and the routes of room
// tagging (tags.go), content reports (reports.go) and third-party identifiers
// (threepid.go).

// miscRoutes mounts the endpoints of these files under /v3 (and /r0).
func (a *API) miscRoutes(r chi.Router, h func(httpapi.Handler) http.Handler, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	a.tagRoutes(r, authed)
	a.reportRoutes(r, authed)
	a.threePIDRoutes(r, h, authed)

	r.Method(http.MethodGet, "/thirdparty/protocols", authed(a.thirdPartyProtocols))
	r.Method(http.MethodGet, "/thirdparty/protocol/{protocol}", authed(a.thirdPartyUnknownProtocol))
	r.Method(http.MethodGet, "/thirdparty/location/{protocol}", authed(a.thirdPartyUnknownProtocol))
	r.Method(http.MethodGet, "/thirdparty/user/{protocol}", authed(a.thirdPartyUnknownProtocol))
	r.Method(http.MethodGet, "/thirdparty/location", authed(a.thirdPartyLocationByAlias))
	r.Method(http.MethodGet, "/thirdparty/user", authed(a.thirdPartyUserByID))

	r.Method(http.MethodGet, "/voip/turnServer", authed(a.turnServer))
	r.Method(http.MethodGet, "/events/{eventId}", authed(a.getEventByID))
	r.Method(http.MethodGet, "/admin/whois/{userId}", authed(a.whois))
	r.Method(http.MethodPost, "/refresh", h(a.refresh))
}

// miscV1Routes mounts the endpoints of these files under /v1.
func (a *API) miscV1Routes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/mutual_rooms", authed(a.mutualRooms))
	// registration_tokens.yaml serves the endpoint under /v1; account.go mounts it under
	// /v3 and /r0, where clients older than v1.2 look for it.
	r.Method(http.MethodGet, "/register/m.login.registration_token/validity", httpapi.Handler(a.registrationTokenValidity))
}

// Third-party lookup (client-server API "Third-party Networks", third_party_lookup.yaml).
// Protocols come from application services, and this server has none: it knows no
// protocol, and the reverse lookups find nothing.

// GET /thirdparty/protocols (getProtocols): no protocols.
func (a *API) thirdPartyProtocols(w http.ResponseWriter, r *http.Request, d *Device) error {
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /thirdparty/protocol/{protocol}, /thirdparty/location/{protocol} and
// /thirdparty/user/{protocol} (getProtocolMetadata, queryLocationByProtocol,
// queryUserByProtocol): 404 M_NOT_FOUND, "The protocol is unknown", "No portal rooms were
// found", "The Matrix User ID was not found". NOTSPEC: Synapse answers the lookups of an
// unknown protocol with 200 and an empty list, which the spec's 200 ("At least one portal
// room was found") does not describe.
func (a *API) thirdPartyUnknownProtocol(w http.ResponseWriter, r *http.Request, d *Device) error {
	return httpapi.NotFound("Unknown protocol %q", pathParam(r, "protocol"))
}

// GET /thirdparty/location?alias= (queryLocationByAlias): no third-party locations.
func (a *API) thirdPartyLocationByAlias(w http.ResponseWriter, r *http.Request, d *Device) error {
	alias := r.URL.Query().Get("alias")
	if alias == "" {
		return httpapi.MissingParam("Missing alias")
	}
	if _, err := spec.ParseRoomAlias(alias); err != nil {
		return httpapi.InvalidParam("Invalid room alias")
	}
	httpapi.WriteJSON(w, http.StatusOK, []any{})
	return nil
}

// GET /thirdparty/user?userid= (queryUserByID): no third-party users.
func (a *API) thirdPartyUserByID(w http.ResponseWriter, r *http.Request, d *Device) error {
	userID := r.URL.Query().Get("userid")
	if userID == "" {
		return httpapi.MissingParam("Missing userid")
	}
	if _, err := spec.ParseUserID(userID); err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	httpapi.WriteJSON(w, http.StatusOK, []any{})
	return nil
}

// GET /voip/turnServer (voip.yaml getTurnServer). NOTSPEC: this server has no TURN server
// to offer; the spec's response requires credentials, so it is silent on this case, and the
// answer is Synapse's without a TURN configuration, 200 {}, which clients read as "no TURN
// server".
func (a *API) turnServer(w http.ResponseWriter, r *http.Request, d *Device) error {
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// GET /events/{eventId} (old_sync.yaml getOneEvent, deprecated): the event as
// GET /rooms/{roomId}/event/{eventId} gives it, in the room the event is in; 404 when it is
// unknown or the user may not see it.
func (a *API) getEventByID(w http.ResponseWriter, r *http.Request, d *Device) error {
	ctx := r.Context()
	eventID := pathParam(r, "eventId")
	notFound := httpapi.NotFound("Event not found")
	if eventID == "" || len(eventID) > spec.MaxIdentifierLength {
		return notFound
	}
	e, err := a.rooms.TimelineEventByID(ctx, eventID)
	if errors.Is(err, rooms.ErrEventNotFound) {
		return notFound
	}
	if err != nil {
		return err
	}
	if _, e, err = a.readableEvent(ctx, e.RoomID(), d.UserID, eventID); err != nil {
		return err
	}
	return a.writeEvent(w, r, d, e)
}

// mutualRoomsPage is how many rooms one page of /mutual_rooms holds (a variable so that
// tests can page through a few rooms). NOTSPEC: the spec leaves it to the server ("The
// server may decide that the response to this endpoint is too large"); Synapse does not
// page at all.
var mutualRoomsPage = 100

// GET /v1/mutual_rooms (mutual_rooms.yaml getMutualRooms, v1.19): the rooms where both the
// user and user_id are joined, in room ID order. next_batch is the last room ID of the
// page, encoded: the next page starts after it, so the token never expires, and rooms
// joined since the first page are included if they sort after it.
func (a *API) mutualRooms(w http.ResponseWriter, r *http.Request, d *Device) error {
	q := r.URL.Query()
	if len(q["user_id"]) == 0 {
		return httpapi.MissingParam("Missing user_id")
	}
	if len(q["user_id"]) > 1 {
		return httpapi.InvalidParam("Duplicate user_id")
	}
	other := q.Get("user_id")
	uid, err := spec.ParseUserID(other)
	if err != nil || !uid.IsCompliant() {
		return httpapi.InvalidParam("The user ID provided was invalid")
	}
	if other == d.UserID {
		return httpapi.InvalidParam("You cannot request a list of shared rooms with yourself")
	}
	after := ""
	if from := q.Get("from"); from != "" {
		decoded, err := base64.RawURLEncoding.DecodeString(from)
		if err != nil {
			return httpapi.InvalidParam("Invalid from token")
		}
		if _, err := spec.ParseRoomID(string(decoded)); err != nil {
			return httpapi.InvalidParam("Invalid from token")
		}
		after = string(decoded)
	}
	ctx := r.Context()
	joined, err := storage.MutualJoinedRooms(ctx, a.db, d.UserID, other, after, mutualRoomsPage+1)
	if err != nil {
		return err
	}
	count, err := storage.CountMutualJoinedRooms(ctx, a.db, d.UserID, other)
	if err != nil {
		return err
	}
	out := map[string]any{"joined": []string{}, "count": count}
	if len(joined) > mutualRoomsPage {
		joined = joined[:mutualRoomsPage]
		out["next_batch"] = base64.RawURLEncoding.EncodeToString([]byte(joined[len(joined)-1]))
	}
	if len(joined) > 0 {
		out["joined"] = joined
	}
	httpapi.WriteJSON(w, http.StatusOK, out)
	return nil
}

// whoisConnection is a ConnectionInfo of admin.yaml.
type whoisConnection struct {
	IP       string `json:"ip,omitempty"`
	LastSeen int64  `json:"last_seen,omitempty"`
}

// whoisSession is a SessionInfo of admin.yaml.
type whoisSession struct {
	Connections []whoisConnection `json:"connections"`
}

// whoisDevice is a DeviceInfo of admin.yaml.
type whoisDevice struct {
	Sessions []whoisSession `json:"sessions"`
}

// GET /admin/whois/{userId} (admin.yaml getWhoIs), for server admins and the user
// themself (403 M_FORBIDDEN for anyone else, before any lookup). Each device is one
// session, whose one connection is where and when the device was last seen: this server
// keeps no more than that, and no user agent.
//
// NOTSPEC: as Synapse, a user this server does not have is answered like one without
// devices.
func (a *API) whois(w http.ResponseWriter, r *http.Request, d *Device) error {
	userID := pathParam(r, "userId")
	if _, err := spec.ParseUserID(userID); err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	ctx := r.Context()
	if userID != d.UserID {
		admin, err := a.isServerAdmin(ctx, d)
		if err != nil {
			return err
		}
		if !admin {
			return httpapi.Forbidden("You are not a server admin")
		}
	}
	rows, err := storage.ListDevices(ctx, a.db, userID)
	if err != nil {
		return err
	}
	devices := make(map[string]whoisDevice, len(rows))
	for _, row := range rows {
		session := whoisSession{Connections: []whoisConnection{}}
		if row.LastSeenTS != 0 || row.LastSeenIP != "" {
			session.Connections = append(session.Connections, whoisConnection{IP: row.LastSeenIP, LastSeen: row.LastSeenTS})
		}
		devices[row.DeviceID] = whoisDevice{Sessions: []whoisSession{session}}
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"user_id": userID, "devices": devices})
	return nil
}

// POST /refresh (refresh.yaml refresh). This server never issues refresh tokens (login and
// registration ignore refresh_token: true, as the spec allows), so every refresh token is
// unknown: 401 M_UNKNOWN_TOKEN once the body is checked. soft_logout is false: the client
// has nothing to refresh, and its access token, if it has one, stays valid.
func (a *API) refresh(w http.ResponseWriter, r *http.Request) error {
	var req struct {
		RefreshToken *string `json:"refresh_token"`
	}
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	if req.RefreshToken == nil {
		return httpapi.MissingParam("Missing refresh_token")
	}
	return unknownToken("Unknown refresh token")
}
