package clientapi

import (
	"context"
	"encoding/json"
	"net/http"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// POST /user_directory/search (client-server API "User directory"; users.yaml).
//
// The directory holds the users visible to the requester through rooms, the minimum the
// spec asks for: "users that share a room with the requesting user", and users joined to
// rooms "that have a public join rule" or "a world_readable history visibility". Matching is
// a case-insensitive substring match on the user ID and the display name.

func (a *API) userDirectoryRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/user_directory/search", authed(a.searchUserDirectory))
}

// Bounds of a user directory search. NOTSPEC: the spec only gives the default limit (10);
// the cap of 50 and the others are Synapse-like bounds on the work of one request.
const (
	defaultUserDirectoryLimit = 10
	maxUserDirectoryLimit     = 50
	maxUserSearchTermRunes    = 256
	// maxUserDirectoryRows caps the (user, room) rows read per query.
	maxUserDirectoryRows = 1000
	// maxOpenRooms caps the publicly joinable or world-readable rooms searched.
	maxOpenRooms = 10000
)

type userDirectoryRequest struct {
	SearchTerm *string `json:"search_term"`
	Limit      *int    `json:"limit"`
}

type userDirectoryResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

func (a *API) searchUserDirectory(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req userDirectoryRequest
	if err := httpapi.ReadJSON(r, 16*1024, &req); err != nil {
		return err
	}
	if req.SearchTerm == nil {
		return httpapi.MissingParam("Missing search_term")
	}
	term := strings.ToLower(strings.TrimSpace(*req.SearchTerm))
	if utf8.RuneCountInString(term) > maxUserSearchTermRunes {
		return httpapi.InvalidParam("search_term too long")
	}
	limit := defaultUserDirectoryLimit
	if req.Limit != nil {
		if *req.Limit < 0 {
			return httpapi.InvalidParam("limit must not be negative")
		}
		limit = min(*req.Limit, maxUserDirectoryLimit)
	}
	ctx := r.Context()
	open, err := a.openRooms(ctx)
	if err != nil {
		return err
	}
	rows, err := storage.SearchJoinedMembers(ctx, a.db, d.UserID, open, term, maxUserDirectoryRows)
	if err != nil {
		return err
	}
	results, truncated, err := a.directoryMatches(ctx, rows, term)
	if err != nil {
		return err
	}
	limited := truncated || len(results) > limit
	if len(results) > limit {
		results = results[:limit]
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"results": results, "limited": limited})
	return nil
}

// openRooms lists the rooms whose members anyone may find: a public join rule or a
// world_readable history visibility in the current state.
func (a *API) openRooms(ctx context.Context) ([]int64, error) {
	var out []int64
	seen := map[int64]bool{}
	for _, kind := range []struct {
		evType, substring string
		open              func(json.RawMessage) bool
	}{
		{"m.room.join_rules", "public", func(c json.RawMessage) bool {
			var content struct {
				JoinRule string `json:"join_rule"`
			}
			return json.Unmarshal(c, &content) == nil && content.JoinRule == "public"
		}},
		{"m.room.history_visibility", "world_readable", func(c json.RawMessage) bool {
			return historyVisibilityOf(c) == "world_readable"
		}},
	} {
		rows, err := storage.RoomLevelStateEventsLike(ctx, a.db, kind.evType, []string{kind.substring}, maxOpenRooms)
		if err != nil {
			return nil, err
		}
		events, err := a.rooms.EventsFromRows(rows)
		if err != nil {
			return nil, err
		}
		for i, e := range events {
			if kind.open(e.Content()) && !seen[rows[i].RoomNID] {
				seen[rows[i].RoomNID] = true
				out = append(out, rows[i].RoomNID)
			}
		}
	}
	return out, nil
}

// rankedResult is a match with what orders it: "Ordered by rank and then whether or not
// profile info is available".
type rankedResult struct {
	userDirectoryResult
	rank int
}

// directoryMatches turns the pre-filtered rows into one result per user who really matches
// term, ordered. truncated reports that some query hit its row cap, so that more users may
// match than were seen.
func (a *API) directoryMatches(ctx context.Context, rows []storage.DirectoryMember, term string) ([]userDirectoryResult, bool, error) {
	truncated := len(rows) >= maxUserDirectoryRows
	// Remote users' profiles come from their member events.
	var memberNIDs []int64
	for _, m := range rows {
		if !m.Local {
			memberNIDs = append(memberNIDs, m.EventNID)
		}
	}
	profiles := map[int64]userDirectoryResult{}
	if len(memberNIDs) > 0 {
		events, err := a.rooms.EventsByNID(ctx, memberNIDs)
		if err != nil {
			return nil, false, err
		}
		for _, e := range events {
			var c struct {
				DisplayName any `json:"displayname"`
				AvatarURL   any `json:"avatar_url"`
			}
			_ = json.Unmarshal(e.Content(), &c)
			name, _ := c.DisplayName.(string)
			avatar, _ := c.AvatarURL.(string)
			profiles[e.NID] = userDirectoryResult{DisplayName: name, AvatarURL: avatar}
		}
	}
	byUser := map[string]*rankedResult{}
	for _, m := range rows {
		if m.Deactivated {
			continue
		}
		res := userDirectoryResult{UserID: m.UserID, DisplayName: m.DisplayName, AvatarURL: m.AvatarURL}
		if !m.Local {
			p := profiles[m.EventNID]
			res.DisplayName, res.AvatarURL = p.DisplayName, p.AvatarURL
		}
		rank, ok := matchRank(res, term)
		if !ok {
			continue
		}
		if prev, seen := byUser[m.UserID]; seen && (prev.rank < rank || (prev.rank == rank && prev.DisplayName != "")) {
			continue
		}
		byUser[m.UserID] = &rankedResult{userDirectoryResult: res, rank: rank}
	}
	ranked := make([]*rankedResult, 0, len(byUser))
	for _, r := range byUser {
		ranked = append(ranked, r)
	}
	sort.Slice(ranked, func(i, j int) bool {
		if ranked[i].rank != ranked[j].rank {
			return ranked[i].rank < ranked[j].rank
		}
		if hasI, hasJ := ranked[i].DisplayName != "", ranked[j].DisplayName != ""; hasI != hasJ {
			return hasI
		}
		return ranked[i].UserID < ranked[j].UserID
	})
	out := make([]userDirectoryResult, len(ranked))
	for i, r := range ranked {
		out[i] = r.userDirectoryResult
	}
	return out, truncated, nil
}

// matchRank reports whether the user matches term (lower-cased) and how well: 0 for an
// exact user ID, localpart or display name, 1 for a prefix of one of them or of a word of
// the display name, 2 for a substring.
func matchRank(res userDirectoryResult, term string) (int, bool) {
	userID := strings.ToLower(res.UserID)
	localpart := strings.TrimPrefix(userID, "@")
	if i := strings.IndexByte(localpart, ':'); i >= 0 {
		localpart = localpart[:i]
	}
	name := strings.ToLower(res.DisplayName)
	switch {
	case !strings.Contains(userID, term) && !strings.Contains(name, term):
		return 0, false
	case term == userID || term == localpart || term == name:
		return 0, true
	case strings.HasPrefix(localpart, term) || strings.HasPrefix(name, term):
		return 1, true
	}
	for _, word := range strings.Fields(name) {
		if strings.HasPrefix(word, term) {
			return 1, true
		}
	}
	return 2, true
}
