package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Querying for information (server-server API "Querying for information", "OpenID",
// "Published Room Directory", "Spaces", and /timestamp_to_event): the read-only questions
// other servers ask about our users and rooms, and the same questions asked of others on
// behalf of our clients.

// LocalData is what the client API knows of this server's users and rooms that other
// servers may ask about; the federation serves the same data as the client API does.
type LocalData interface {
	// LocalProfile is the public profile of one of our users (404 M_NOT_FOUND when there is
	// none), as GET /profile/{userId} gives it.
	LocalProfile(ctx context.Context, userID string) (map[string]json.RawMessage, error)
	// LocalPublicRooms answers a /publicRooms request (the JSON body of the POST form) from
	// our published room directory, as JSON.
	LocalPublicRooms(ctx context.Context, request json.RawMessage) (json.RawMessage, error)
	// LocalSpaceHierarchy is the federation form of a local space's hierarchy (the room and
	// its direct children) as server may see it.
	LocalSpaceHierarchy(ctx context.Context, roomID string, suggestedOnly bool, server string) (json.RawMessage, error)
}

// QueryAPI serves the query endpoints. It shares the API's identity, database and room
// server, and takes what the client API knows through Local.
type QueryAPI struct {
	*API
	Local LocalData
}

// Limits of the query endpoints. NOTSPEC: the spec sets none.
const (
	// maxQueryBody bounds the body of POST /publicRooms.
	maxQueryBody = 64 * 1024
	// maxQueryResponse bounds what we accept from other servers' answers.
	maxQueryResponse = 4 << 20
)

// Routes mounts the query endpoints on r: those that other servers sign (X-Matrix), and
// /openid/userinfo, which third-party services call with an OpenID token instead.
//
//	GET      /_matrix/federation/v1/query/directory
//	GET      /_matrix/federation/v1/query/profile
//	GET      /_matrix/federation/v1/query/{queryType}        (others: M_UNRECOGNIZED)
//	GET/POST /_matrix/federation/v1/publicRooms               (directory.go)
//	GET      /_matrix/federation/v1/hierarchy/{roomId}         (directory.go)
//	GET      /_matrix/federation/v1/timestamp_to_event/{roomId}
//	GET      /_matrix/federation/v1/openid/userinfo
func (q *QueryAPI) Routes(r chi.Router) {
	authenticator := &Authenticator{ServerName: q.ServerName, Keys: q.Keys, Now: q.Clock, MaxBodySize: maxQueryBody}
	r.Group(func(r chi.Router) {
		r.Use(authenticator.Middleware)
		r.Method(http.MethodGet, "/_matrix/federation/v1/query/directory", q.handler(q.queryDirectory))
		r.Method(http.MethodGet, "/_matrix/federation/v1/query/profile", q.handler(q.queryProfile))
		r.Method(http.MethodGet, "/_matrix/federation/v1/query/{queryType}", q.handler(q.unknownQuery))
		r.Method(http.MethodGet, "/_matrix/federation/v1/timestamp_to_event/{roomId}", q.handler(q.timestampToEvent))
		q.directoryRoutes(r)
	})
	r.Method(http.MethodGet, "/_matrix/federation/v1/openid/userinfo", httpapi.Handler(q.openIDUserInfo))
}

// GET /_matrix/federation/v1/query/directory?room_alias= (query.yaml queryRoomDirectory).
func (q *QueryAPI) queryDirectory(w http.ResponseWriter, r *http.Request, origin string) error {
	alias := r.URL.Query().Get("room_alias")
	parsed, err := spec.ParseRoomAlias(alias)
	if err != nil {
		return httpapi.InvalidParam("Invalid room alias")
	}
	if parsed.Server() != q.ServerName {
		return httpapi.NotFound("Room alias %s is not on this server", alias)
	}
	roomID, err := storage.LookupAlias(r.Context(), q.DB, alias)
	if err != nil {
		return err
	}
	if roomID == "" {
		return httpapi.NotFound("Room alias %s not found", alias)
	}
	servers, err := q.Rooms.ResidentServers(r.Context(), roomID)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"room_id": roomID, "servers": servers})
	return nil
}

// GET /_matrix/federation/v1/query/profile?user_id=&field= (query.yaml queryProfile).
func (q *QueryAPI) queryProfile(w http.ResponseWriter, r *http.Request, origin string) error {
	userID, field := r.URL.Query().Get("user_id"), r.URL.Query().Get("field")
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return httpapi.InvalidParam("Invalid user_id")
	}
	if user.Server() != q.ServerName {
		return httpapi.InvalidParam("User %s is not on this server", userID)
	}
	profile, err := q.Local.LocalProfile(r.Context(), userID)
	if err != nil {
		return err
	}
	if field != "" {
		value, ok := profile[field]
		if !ok {
			return httpapi.NotFound("Profile field %s not found", field)
		}
		profile = map[string]json.RawMessage{field: value}
	}
	httpapi.WriteJSON(w, http.StatusOK, profile)
	return nil
}

// GET /_matrix/federation/v1/query/{queryType}: the generic form, for query types we do
// not know.
func (q *QueryAPI) unknownQuery(w http.ResponseWriter, r *http.Request, origin string) error {
	return httpapi.Unrecognized("Unknown query type %s", pathParam(r, "queryType"))
}

// GET /_matrix/federation/v1/timestamp_to_event/{roomId}?ts=&dir= (events.yaml
// timestampToEvent): the event of the room closest to ts in direction dir.
func (q *QueryAPI) timestampToEvent(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID := pathParam(r, "roomId")
	ts, forward, err := httpapi.TimestampQuery(r.URL.Query())
	if err != nil {
		return err
	}
	if err := q.CheckServerACL(r.Context(), roomID, origin); err != nil {
		return err
	}
	eventID, originTS, err := q.EventNearTimestamp(r.Context(), roomID, ts, forward)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"event_id": eventID, "origin_server_ts": originTS})
	return nil
}

// EventNearTimestamp finds the local timeline event of a room closest to ts in one
// direction; 404 M_NOT_FOUND when there is none.
func (a *API) EventNearTimestamp(ctx context.Context, roomID string, ts int64, forward bool) (string, int64, error) {
	roomNID, err := a.Rooms.RoomNID(ctx, roomID)
	if err != nil {
		return "", 0, roomError(err, roomID)
	}
	eventID, originTS, err := storage.EventNearTimestamp(ctx, a.DB, roomNID, ts, forward)
	if errors.Is(err, storage.ErrNotFound) {
		return "", 0, httpapi.NotFound("Unable to find event from %d in direction %s", ts, dirName(forward))
	}
	return eventID, originTS, err
}

func dirName(forward bool) string {
	if forward {
		return "f"
	}
	return "b"
}

// GET /_matrix/federation/v1/openid/userinfo?access_token= (openid.yaml
// exchangeOpenIdToken): the user an OpenID token was issued to.
func (q *QueryAPI) openIDUserInfo(w http.ResponseWriter, r *http.Request) error {
	token := r.URL.Query().Get("access_token")
	if token == "" {
		return httpapi.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Missing access token")
	}
	userID, err := storage.OpenIDTokenUser(r.Context(), q.DB, auth.HashToken(token), q.Clock().UnixMilli())
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NewError(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", "Access token unknown or expired")
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"sub": userID})
	return nil
}

// QueryDirectory resolves a room alias of another server with GET /query/directory.
func (a *API) QueryDirectory(ctx context.Context, alias string) (roomID string, servers []string, err error) {
	parsed, err := spec.ParseRoomAlias(alias)
	if err != nil {
		return "", nil, err
	}
	var resp struct {
		RoomID  string   `json:"room_id"`
		Servers []string `json:"servers"`
	}
	err = a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: parsed.Server(), MaxResponseSize: maxQueryResponse,
		URI: "/_matrix/federation/v1/query/directory?" + url.Values{"room_alias": {alias}}.Encode()}, &resp)
	if err != nil {
		return "", nil, forClient(fmt.Errorf("query directory of %s: %w", parsed.Server(), err))
	}
	if _, err := spec.ParseRoomID(resp.RoomID); err != nil {
		return "", nil, fmt.Errorf("query directory of %s: bad room_id %q", parsed.Server(), resp.RoomID)
	}
	valid := make([]string, 0, len(resp.Servers))
	for _, s := range resp.Servers {
		if validServerName(s) {
			valid = append(valid, s)
		}
	}
	return resp.RoomID, valid, nil
}

// QueryProfile asks the server of userID for the user's profile (one field when field is
// not empty) with GET /query/profile.
func (a *API) QueryProfile(ctx context.Context, userID, field string) (map[string]json.RawMessage, error) {
	user, err := spec.ParseUserID(userID)
	if err != nil {
		return nil, err
	}
	params := url.Values{"user_id": {userID}}
	if field != "" {
		params.Set("field", field)
	}
	var profile map[string]json.RawMessage
	err = a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: user.Server(), MaxResponseSize: 128 * 1024,
		URI: "/_matrix/federation/v1/query/profile?" + params.Encode()}, &profile)
	if err != nil {
		return nil, forClient(fmt.Errorf("query profile of %s: %w", userID, err))
	}
	if profile == nil {
		profile = map[string]json.RawMessage{}
	}
	return profile, nil
}

// forClient turns another server's "not found" and "forbidden" answers into the same
// Matrix errors for our client, keeping what it said; other failures stay as they are (the
// client API answers 502 for them).
func forClient(err error) error {
	var remote *RemoteError
	if !errors.As(err, &remote) {
		return err
	}
	switch remote.Status {
	case http.StatusNotFound:
		return httpapi.NotFound("%s", remoteMessage(remote, "Not found"))
	case http.StatusForbidden:
		return httpapi.Forbidden("%s", remoteMessage(remote, "Forbidden"))
	}
	return err
}

// remoteMessage is a remote error's message, bounded, or fallback.
func remoteMessage(remote *RemoteError, fallback string) string {
	msg := remote.Message
	if msg == "" {
		return fallback
	}
	if len(msg) > 500 {
		msg = msg[:500]
	}
	return msg
}
