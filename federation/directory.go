package federation

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// The published room directory and space hierarchies over federation (server-server API
// "Published Room Directory", public_rooms.yaml; "Spaces", space_hierarchy.yaml). Both
// answer from the same data as the client API's /publicRooms and /hierarchy.

func (q *QueryAPI) directoryRoutes(r chi.Router) {
	r.Method(http.MethodGet, "/_matrix/federation/v1/publicRooms", q.handler(q.getPublicRooms))
	r.Method(http.MethodPost, "/_matrix/federation/v1/publicRooms", q.handler(q.postPublicRooms))
	r.Method(http.MethodGet, "/_matrix/federation/v1/hierarchy/{roomId}", q.handler(q.hierarchy))
}

// GET /_matrix/federation/v1/publicRooms?limit=&since=&include_all_networks=
// &third_party_instance_id= : the query parameters become the body of the POST form.
func (q *QueryAPI) getPublicRooms(w http.ResponseWriter, r *http.Request, origin string) error {
	params := r.URL.Query()
	req := map[string]any{}
	if s := params.Get("limit"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil {
			return httpapi.InvalidParam("limit must be an integer")
		}
		req["limit"] = n
	}
	if s := params.Get("since"); s != "" {
		req["since"] = s
	}
	switch params.Get("include_all_networks") {
	case "", "false":
	case "true":
		req["include_all_networks"] = true
	default:
		return httpapi.InvalidParam("include_all_networks must be true or false")
	}
	if s := params.Get("third_party_instance_id"); s != "" {
		req["third_party_instance_id"] = s
	}
	body, err := json.Marshal(req)
	if err != nil {
		return err
	}
	return q.writePublicRooms(w, r, body)
}

// POST /_matrix/federation/v1/publicRooms: with a filter.
func (q *QueryAPI) postPublicRooms(w http.ResponseWriter, r *http.Request, origin string) error {
	body, err := httpapi.ReadBody(r, maxQueryBody)
	if err != nil {
		return err
	}
	return q.writePublicRooms(w, r, body)
}

func (q *QueryAPI) writePublicRooms(w http.ResponseWriter, r *http.Request, request []byte) error {
	resp, err := q.Local.LocalPublicRooms(r.Context(), request)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp)
	return nil
}

// GET /_matrix/federation/v1/hierarchy/{roomId}?suggested_only= : a local space and its
// direct children, as far as the requesting server could peek or join them.
func (q *QueryAPI) hierarchy(w http.ResponseWriter, r *http.Request, origin string) error {
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	suggestedOnly := false
	switch r.URL.Query().Get("suggested_only") {
	case "", "false":
	case "true":
		suggestedOnly = true
	default:
		return httpapi.InvalidParam("suggested_only must be true or false")
	}
	if err := q.CheckServerACL(r.Context(), roomID, origin); err != nil {
		return err
	}
	resp, err := q.Local.LocalSpaceHierarchy(r.Context(), roomID, suggestedOnly, origin)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(resp)
	return nil
}

// PublicRooms fetches the published room directory of another server: POST /publicRooms
// with request, the body of the client's POST /publicRooms (the two are alike).
func (a *API) PublicRooms(ctx context.Context, server string, request json.RawMessage) (json.RawMessage, error) {
	var resp json.RawMessage
	err := a.Client.DoJSON(ctx, Request{Method: http.MethodPost, Destination: server, MaxResponseSize: maxQueryResponse,
		URI: "/_matrix/federation/v1/publicRooms", Body: request}, &resp)
	if err != nil {
		return nil, forClient(fmt.Errorf("public rooms of %s: %w", server, err))
	}
	return resp, nil
}

// SpaceHierarchy asks server for a space it knows and that space's children with GET
// /hierarchy/{roomId}; the answer is returned as it came, for the caller to check.
func (a *API) SpaceHierarchy(ctx context.Context, server, roomID string, suggestedOnly bool) (json.RawMessage, error) {
	var resp json.RawMessage
	err := a.Client.DoJSON(ctx, Request{Method: http.MethodGet, Destination: server, MaxResponseSize: maxQueryResponse,
		URI: "/_matrix/federation/v1/hierarchy/" + url.PathEscape(roomID) + "?suggested_only=" + strconv.FormatBool(suggestedOnly)}, &resp)
	if err != nil {
		return nil, forClient(fmt.Errorf("hierarchy of %s from %s: %w", roomID, server, err))
	}
	return resp, nil
}
