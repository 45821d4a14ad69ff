package clientapi

import (
	"encoding/json"
	"net/http"
	"path"
	"strconv"
	"strings"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/storage"
)

// Filters (client-server API "Filtering"; data/api/client-server/definitions/*filter*.yaml).

// EventFilter selects events by type and sender (definitions/event_filter.yaml).
type EventFilter struct {
	Limit      *int     `json:"limit,omitempty"`
	Types      []string `json:"types,omitempty"`
	NotTypes   []string `json:"not_types,omitempty"`
	Senders    []string `json:"senders,omitempty"`
	NotSenders []string `json:"not_senders,omitempty"`
}

// RoomEventFilter adds room and content conditions (definitions/room_event_filter.yaml).
type RoomEventFilter struct {
	EventFilter
	Rooms                     []string `json:"rooms,omitempty"`
	NotRooms                  []string `json:"not_rooms,omitempty"`
	ContainsURL               *bool    `json:"contains_url,omitempty"`
	LazyLoadMembers           bool     `json:"lazy_load_members,omitempty"`
	IncludeRedundantMembers   bool     `json:"include_redundant_members,omitempty"`
	UnreadThreadNotifications bool     `json:"unread_thread_notifications,omitempty"`
}

// RoomFilter is the "room" part of a sync filter.
type RoomFilter struct {
	Rooms        []string        `json:"rooms,omitempty"`
	NotRooms     []string        `json:"not_rooms,omitempty"`
	IncludeLeave bool            `json:"include_leave,omitempty"`
	Timeline     RoomEventFilter `json:"timeline"`
	State        RoomEventFilter `json:"state"`
	Ephemeral    RoomEventFilter `json:"ephemeral"`
	AccountData  RoomEventFilter `json:"account_data"`
}

// Filter is a whole filter (definitions/sync_filter.yaml).
type Filter struct {
	EventFields []string    `json:"event_fields,omitempty"`
	EventFormat string      `json:"event_format,omitempty"`
	Presence    EventFilter `json:"presence"`
	AccountData EventFilter `json:"account_data"`
	Room        RoomFilter  `json:"room"`

	// fieldPaths are EventFields split into property names; nil when EventFields is absent.
	fieldPaths [][]string
}

// maxFilterSize bounds a stored or inline filter.
const maxFilterSize = 64 * 1024

// maxTimelineLimit caps any filter's limit. NOTSPEC: Synapse caps at 1000 too.
const maxTimelineLimit = 1000

// parseFilter decodes and validates a filter.
func parseFilter(body []byte) (*Filter, error) {
	f := &Filter{}
	if err := httpapi.DecodeJSON(body, f); err != nil {
		return nil, err
	}
	if f.EventFormat != "" && f.EventFormat != "client" && f.EventFormat != "federation" {
		return nil, httpapi.BadJSON("event_format must be client or federation")
	}
	for _, l := range []*int{f.Room.Timeline.Limit, f.Room.State.Limit, f.Presence.Limit, f.AccountData.Limit} {
		if l != nil && *l < 0 {
			return nil, httpapi.BadJSON("limit must not be negative")
		}
	}
	if f.EventFields != nil {
		f.fieldPaths = make([][]string, 0, len(f.EventFields))
		for _, field := range f.EventFields {
			f.fieldPaths = append(f.fieldPaths, splitPropertyPath(field))
		}
	}
	return f, nil
}

// splitPropertyPath splits a dot-separated property path (appendices, "Dot-separated
// property paths"): "\." is a literal dot and "\\" a literal backslash inside a name; any
// other backslash is kept as it is.
func splitPropertyPath(p string) []string {
	var names []string
	var name strings.Builder
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case c == '\\' && i+1 < len(p) && (p[i+1] == '.' || p[i+1] == '\\'):
			name.WriteByte(p[i+1])
			i++
		case c == '.':
			names = append(names, name.String())
			name.Reset()
		default:
			name.WriteByte(c)
		}
	}
	return append(names, name.String())
}

// matchPattern implements the "*" wildcard of type filters.
func matchPattern(pattern, value string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == value
	}
	ok, err := path.Match(strings.ReplaceAll(pattern, "[", "\\["), value)
	return err == nil && ok
}

func matchAny(patterns []string, value string) bool {
	for _, p := range patterns {
		if matchPattern(p, value) {
			return true
		}
	}
	return false
}

func contains(list []string, value string) bool {
	for _, v := range list {
		if v == value {
			return true
		}
	}
	return false
}

// allowsRoom reports whether roomID passes rooms/not_rooms.
func allowsRoom(roomsList, notRooms []string, roomID string) bool {
	if contains(notRooms, roomID) {
		return false
	}
	return roomsList == nil || contains(roomsList, roomID)
}

// Allows reports whether the filter lets the event (type, sender) through.
func (f *EventFilter) Allows(evType, sender string) bool {
	if matchAny(f.NotTypes, evType) || contains(f.NotSenders, sender) {
		return false
	}
	if f.Types != nil && !matchAny(f.Types, evType) {
		return false
	}
	if f.Senders != nil && !contains(f.Senders, sender) {
		return false
	}
	return true
}

// AllowsEvent reports whether a room event passes the filter.
func (f *RoomEventFilter) AllowsEvent(e *rooms.Event) bool {
	if !allowsRoom(f.Rooms, f.NotRooms, e.RoomID()) || !f.Allows(e.Type(), e.Sender()) {
		return false
	}
	if f.ContainsURL != nil {
		var c struct {
			URL any `json:"url"`
		}
		_ = json.Unmarshal(e.Content(), &c)
		_, hasURL := c.URL.(string)
		if hasURL != *f.ContainsURL {
			return false
		}
	}
	return true
}

// limit is the filter's limit, or def, capped.
func (f *EventFilter) limit(def int) int {
	if f.Limit == nil {
		return def
	}
	return min(*f.Limit, maxTimelineLimit)
}

// loadFilter resolves the "filter" query parameter: a stored filter ID or inline JSON.
func (a *API) loadFilter(r *http.Request, userID, param string) (*Filter, error) {
	if param == "" {
		return &Filter{}, nil
	}
	if strings.HasPrefix(strings.TrimSpace(param), "{") {
		if len(param) > maxFilterSize {
			return nil, httpapi.TooLarge("Filter too large")
		}
		return parseFilter([]byte(param))
	}
	id, err := strconv.ParseInt(param, 10, 64)
	if err != nil {
		return nil, httpapi.InvalidParam("filter is neither a filter ID nor a JSON object")
	}
	body, err := storage.LoadFilter(r.Context(), a.db, userID, id)
	if err == storage.ErrNotFound {
		// NOTSPEC: sync.yaml names no error for an unknown filter ID; like Synapse, it is a
		// bad parameter of this request (400 M_INVALID_PARAM) rather than a missing resource.
		return nil, httpapi.InvalidParam("No such filter")
	}
	if err != nil {
		return nil, err
	}
	return parseFilter(body)
}

// POST /user/{userId}/filter
func (a *API) createFilter(w http.ResponseWriter, r *http.Request, d *Device) error {
	if pathParam(r, "userId") != d.UserID {
		return httpapi.Forbidden("Cannot create filters for other users")
	}
	body, err := httpapi.ReadBody(r, maxFilterSize)
	if err != nil {
		return err
	}
	if _, err := parseFilter(body); err != nil {
		return err
	}
	id, err := storage.InsertFilter(r.Context(), a.db, d.UserID, body)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"filter_id": strconv.FormatInt(id, 10)})
	return nil
}

// GET /user/{userId}/filter/{filterId}
func (a *API) getFilter(w http.ResponseWriter, r *http.Request, d *Device) error {
	if pathParam(r, "userId") != d.UserID {
		return httpapi.Forbidden("Cannot read filters of other users")
	}
	id, err := strconv.ParseInt(pathParam(r, "filterId"), 10, 64)
	if err != nil {
		return httpapi.NotFound("No such filter")
	}
	body, err := storage.LoadFilter(r.Context(), a.db, d.UserID, id)
	if err == storage.ErrNotFound {
		return httpapi.NotFound("No such filter")
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
	return nil
}
