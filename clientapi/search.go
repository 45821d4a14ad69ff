package clientapi

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Server-side search (client-server API "Server Side Search": search.yaml, modules/search.md).
//
// room_events, the one category the spec defines, searches the rooms the user is in or has
// left ("all rooms that the user has been in, including those that they have left"). The
// index and the matching are storage's (storage/search.go): every token of the search
// term, the last one as a prefix while it is being typed. The hits then pass the request's
// filter and the rules of "Room History Visibility" exactly as /messages applies them
// (roomReader, events.go), so that "the server must only return results that the user has
// permission to see". Encrypted rooms' events are m.room.encrypted, which has no searched
// key, so "the search will not include rooms that are end to end encrypted".

const (
	// maxSearchBodySize bounds the request: a filter and a little more.
	maxSearchBodySize = maxFilterSize + 4096
	// maxEventSearchTermLength bounds search_term, in bytes, as /publicRooms bounds its
	// term. NOTSPEC: Synapse has no limit; only the first storage.MaxSearchTerms words count.
	maxEventSearchTermLength = 1000
	// defaultSearchLimit is the page size without a filter limit. NOTSPEC: Synapse's default
	// filter limit, 10.
	defaultSearchLimit = 10
	// maxSearchLimit caps the page size. NOTSPEC: each result may carry context.
	maxSearchLimit = 100
	// defaultContextLimit is before_limit and after_limit when absent ("By default, this is 5").
	defaultContextLimit = 5
	// maxContextLimit caps before_limit and after_limit. NOTSPEC: bounds a page to
	// maxSearchLimit × 2 × maxContextLimit context events.
	maxContextLimit = 20
	// maxSearchScanned bounds the hits one request examines while skipping those that the
	// filter or history visibility hide. NOTSPEC: as /messages does (maxScannedEvents), the
	// rest is reached through next_batch, and a page may be short or empty.
	maxSearchScanned = 500
	// maxPushedFilterValues bounds the filter values handed to the database query; longer
	// lists are applied to the hits only.
	maxPushedFilterValues = 500
	// maxSearchTokenLength bounds a next_batch token.
	maxSearchTokenLength = 1024
)

type searchRequest struct {
	SearchCategories *struct {
		RoomEvents *roomEventsCriteria `json:"room_events"`
	} `json:"search_categories"`
}

type roomEventsCriteria struct {
	SearchTerm   *string          `json:"search_term"`
	Keys         []string         `json:"keys"`
	Filter       *RoomEventFilter `json:"filter"`
	OrderBy      string           `json:"order_by"`
	EventContext *struct {
		BeforeLimit    *int `json:"before_limit"`
		AfterLimit     *int `json:"after_limit"`
		IncludeProfile bool `json:"include_profile"`
	} `json:"event_context"`
	IncludeState bool `json:"include_state"`
	Groupings    struct {
		GroupBy []struct {
			Key string `json:"key"`
		} `json:"group_by"`
	} `json:"groupings"`
}

type searchResponse struct {
	SearchCategories struct {
		RoomEvents *roomEventsResults `json:"room_events,omitempty"`
	} `json:"search_categories"`
}

type roomEventsResults struct {
	Count      int64                                    `json:"count"`
	Highlights []string                                 `json:"highlights"`
	Results    []searchResult                           `json:"results"`
	State      map[string][]ClientEvent                 `json:"state,omitempty"`
	Groups     map[string]map[string]*searchResultGroup `json:"groups,omitempty"`
	NextBatch  string                                   `json:"next_batch,omitempty"`
}

type searchResult struct {
	Rank    float64             `json:"rank"`
	Result  ClientEvent         `json:"result"`
	Context *searchEventContext `json:"context,omitempty"`
}

type searchEventContext struct {
	Start        string                   `json:"start"`
	End          string                   `json:"end"`
	ProfileInfo  map[string]searchProfile `json:"profile_info,omitempty"`
	EventsBefore []ClientEvent            `json:"events_before"`
	EventsAfter  []ClientEvent            `json:"events_after"`
}

type searchProfile struct {
	DisplayName *string `json:"displayname,omitempty"`
	AvatarURL   *string `json:"avatar_url,omitempty"`
}

type searchResultGroup struct {
	NextBatch string   `json:"next_batch,omitempty"`
	Order     int64    `json:"order"`
	Results   []string `json:"results"`
}

// searchGroupKeys are the groupings the spec requires ("room_id", "sender").
var searchGroupKeys = map[string]bool{"room_id": true, "sender": true}

// searchToken is what a next_batch token holds: where the last page ended, in which order,
// and, for a group's token, the group it stays within ("using a token inside a group will
// return more results from within that group").
type searchToken struct {
	byRank     bool
	after      storage.SearchCursor
	groupKey   string
	groupValue string
}

func (t searchToken) encode() string {
	order := "recent"
	if t.byRank {
		order = "rank"
	}
	raw := strings.Join([]string{order, strconv.FormatInt(t.after.Score, 10), strconv.FormatInt(t.after.StreamPos, 10),
		t.groupKey, t.groupValue}, "\n")
	return base64.RawURLEncoding.EncodeToString([]byte(raw))
}

// parseSearchToken reads a token made by encode; ok is false for anything else.
func parseSearchToken(s string) (t searchToken, ok bool) {
	if len(s) > maxSearchTokenLength {
		return t, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return t, false
	}
	fields := strings.Split(string(raw), "\n")
	if len(fields) != 5 || (fields[0] != "rank" && fields[0] != "recent") {
		return t, false
	}
	t.byRank = fields[0] == "rank"
	score, err1 := strconv.ParseInt(fields[1], 10, 64)
	pos, err2 := strconv.ParseInt(fields[2], 10, 64)
	if err1 != nil || err2 != nil {
		return t, false
	}
	t.after = storage.SearchCursor{Score: score, StreamPos: pos}
	t.groupKey, t.groupValue = fields[3], fields[4]
	switch t.groupKey {
	case "":
		return t, t.groupValue == ""
	case "room_id":
		_, err = spec.ParseRoomID(t.groupValue)
	case "sender":
		_, err = spec.ParseUserID(t.groupValue)
	default:
		return t, false
	}
	return t, err == nil
}

// roomEventsSearch is a validated room_events search.
type roomEventsSearch struct {
	terms  storage.SearchTerms
	types  []string
	filter *RoomEventFilter
	byRank bool
	limit  int
	// before and after are the context limits; withContext says whether context was asked.
	withContext    bool
	before, after  int
	includeProfile bool
	includeState   bool
	groupKeys      []string
	// token is the next_batch being continued, nil on the first page.
	token *searchToken
}

// parseRoomEventsSearch validates criteria and the next_batch parameter: 400 for anything
// the spec does not allow.
func parseRoomEventsSearch(c *roomEventsCriteria, nextBatch string) (*roomEventsSearch, error) {
	if c.SearchTerm == nil {
		return nil, httpapi.MissingParam("search_term is required")
	}
	if len(*c.SearchTerm) > maxEventSearchTermLength {
		return nil, httpapi.InvalidParam("search_term is longer than %d bytes", maxEventSearchTermLength)
	}
	s := &roomEventsSearch{terms: storage.ParseSearchTerm(*c.SearchTerm), filter: c.Filter, includeState: c.IncludeState}
	if s.filter == nil {
		s.filter = &RoomEventFilter{}
	}
	s.limit = s.filter.limit(defaultSearchLimit)
	if s.limit < 1 {
		// room_event_filter.yaml: "must be an integer greater than 0".
		return nil, httpapi.BadJSON("filter limit must be greater than 0")
	}
	s.limit = min(s.limit, maxSearchLimit)

	keys := c.Keys
	if keys == nil {
		// "The keys to search. Defaults to all." NOTSPEC: an empty list searches nothing,
		// as in Synapse.
		keys = []string{"content.body", "content.name", "content.topic"}
	}
	seen := map[string]bool{}
	for _, key := range keys {
		evType, ok := storage.SearchKeyTypes[key]
		if !ok {
			return nil, httpapi.InvalidParam("Unknown search key %q", key)
		}
		f := s.filter
		if !seen[evType] && !matchAny(f.NotTypes, evType) && (f.Types == nil || matchAny(f.Types, evType)) {
			s.types = append(s.types, evType)
		}
		seen[evType] = true
	}

	switch c.OrderBy {
	case "", "rank":
		// "By default, this is rank."
		s.byRank = true
	case "recent":
	default:
		return nil, httpapi.InvalidParam("order_by must be rank or recent")
	}

	if ec := c.EventContext; ec != nil {
		s.withContext, s.includeProfile = true, ec.IncludeProfile
		s.before, s.after = defaultContextLimit, defaultContextLimit
		for _, l := range []struct {
			value *int
			into  *int
		}{{ec.BeforeLimit, &s.before}, {ec.AfterLimit, &s.after}} {
			if l.value == nil {
				continue
			}
			if *l.value < 0 {
				return nil, httpapi.InvalidParam("before_limit and after_limit must not be negative")
			}
			*l.into = min(*l.value, maxContextLimit)
		}
	}

	for _, g := range c.Groupings.GroupBy {
		if !searchGroupKeys[g.Key] {
			return nil, httpapi.InvalidParam("Unknown group key %q", g.Key)
		}
		if !contains(s.groupKeys, g.Key) {
			s.groupKeys = append(s.groupKeys, g.Key)
		}
	}

	if nextBatch != "" {
		t, ok := parseSearchToken(nextBatch)
		if !ok || t.byRank != s.byRank {
			return nil, httpapi.InvalidParam("Invalid next_batch token")
		}
		s.token = &t
	}
	return s, nil
}

// query is the database query for s: the filter's conditions that SQL can apply (the rest
// are applied to the hits), narrowed to the group of a group's token.
func (s *roomEventsSearch) query(userID string) *storage.SearchQuery {
	f := s.filter
	pushed := func(values []string) []string {
		if len(values) > maxPushedFilterValues {
			return nil
		}
		return values
	}
	sq := &storage.SearchQuery{UserID: userID, Terms: s.terms, Types: s.types, ByRank: s.byRank,
		Rooms: pushed(f.Rooms), NotRooms: pushed(f.NotRooms), Senders: pushed(f.Senders), NotSenders: pushed(f.NotSenders)}
	if t := s.token; t != nil {
		sq.After = &t.after
		switch t.groupKey {
		case "room_id":
			sq.Rooms = []string{t.groupValue}
		case "sender":
			sq.Senders = []string{t.groupValue}
		}
	}
	return sq
}

// POST /search (search.yaml).
func (a *API) search(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req searchRequest
	if err := httpapi.ReadJSON(r, maxSearchBodySize, &req); err != nil {
		return err
	}
	if req.SearchCategories == nil {
		return httpapi.MissingParam("search_categories is required")
	}
	var resp searchResponse
	if criteria := req.SearchCategories.RoomEvents; criteria != nil {
		s, err := parseRoomEventsSearch(criteria, r.URL.Query().Get("next_batch"))
		if err != nil {
			return err
		}
		if resp.SearchCategories.RoomEvents, err = a.searchRoomEvents(r.Context(), d, s); err != nil {
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, resp)
	return nil
}

// searchHit is a result as found: the event and its score.
type searchHit struct {
	event *rooms.Event
	score int64
}

// searchRoomEvents runs a room_events search and builds its results.
func (a *API) searchRoomEvents(ctx context.Context, d *Device, s *roomEventsSearch) (*roomEventsResults, error) {
	out := &roomEventsResults{Highlights: s.terms.Tokens(), Results: []searchResult{}}
	if out.Highlights == nil {
		out.Highlights = []string{}
	}
	readers := map[string]*roomReader{}
	hits, count, next, err := a.findVisible(ctx, d.UserID, s, readers)
	if err != nil {
		return nil, err
	}
	out.Count = count
	if next != nil {
		t := searchToken{byRank: s.byRank, after: *next}
		if s.token != nil {
			t.groupKey, t.groupValue = s.token.groupKey, s.token.groupValue
		}
		out.NextBatch = t.encode()
	}

	f := a.formatter(d, true)
	events := make([]*rooms.Event, len(hits))
	for i, h := range hits {
		events[i] = h.event
	}
	formatted, err := f.formatAll(ctx, events)
	if err != nil {
		return nil, err
	}
	for i, h := range hits {
		result := searchResult{Rank: float64(h.score), Result: formatted[i]}
		if s.withContext {
			if result.Context, err = a.searchContext(ctx, f, readers[h.event.RoomID()], h.event, s); err != nil {
				return nil, err
			}
		}
		out.Results = append(out.Results, result)
	}

	if len(s.groupKeys) > 0 {
		out.Groups = map[string]map[string]*searchResultGroup{}
		for _, key := range s.groupKeys {
			out.Groups[key] = searchGroups(key, hits, s, next)
		}
	}
	if s.includeState {
		if out.State, err = a.searchState(ctx, f, hits, readers); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// findVisible pages through the hits of s until it has s.limit that pass the filter and
// that the user may see, or has examined maxSearchScanned. It returns them, the number of
// hits in all (the "approximate count": before the filter's remaining conditions and
// history visibility), and where the next page starts (nil at the end). readers collects
// the roomReader of each room met (nil for one the user may not read).
func (a *API) findVisible(ctx context.Context, userID string, s *roomEventsSearch, readers map[string]*roomReader) (
	found []searchHit, count int64, next *storage.SearchCursor, err error) {
	sq := s.query(userID)
	cursor := sq.After
	batch := s.limit + 1
	for scanned, first := 0, true; ; first = false {
		sq.After, sq.Limit = cursor, batch
		hits, total, err := storage.SearchRoomEvents(ctx, a.db, sq)
		if err != nil {
			return nil, 0, nil, err
		}
		if first {
			count = total
		}
		nids := make([]int64, len(hits))
		for i, h := range hits {
			nids[i] = h.EventNID
		}
		loaded, err := a.rooms.EventsByNID(ctx, nids)
		if err != nil {
			return nil, 0, nil, err
		}
		byNID := make(map[int64]*rooms.Event, len(loaded))
		for _, e := range loaded {
			byNID[e.NID] = e
		}
		for _, h := range hits {
			if len(found) == s.limit {
				return found, count, cursor, nil
			}
			scanned++
			c := h.Cursor()
			cursor = &c
			e := byNID[h.EventNID]
			if e == nil || !s.filter.AllowsEvent(e) {
				continue
			}
			visible, err := a.searchVisible(ctx, readers, userID, e)
			if err != nil {
				return nil, 0, nil, err
			}
			if visible {
				found = append(found, searchHit{event: e, score: h.Score})
			}
		}
		if len(hits) < batch {
			return found, count, nil, nil
		}
		if scanned >= maxSearchScanned {
			return found, count, cursor, nil
		}
		batch = max(s.limit+1, 100)
	}
}

// searchVisible reports whether the user may see e, as /messages decides (visibleEvent,
// events.go): within what they may read of its room, and allowed by history visibility.
func (a *API) searchVisible(ctx context.Context, readers map[string]*roomReader, userID string, e *rooms.Event) (bool, error) {
	rr, ok := readers[e.RoomID()]
	if !ok {
		var err error
		rr, err = a.roomReader(ctx, e.RoomID(), userID)
		if errors.Is(err, errNoAccess) {
			rr, err = nil, nil
		}
		if err != nil {
			return false, err
		}
		readers[e.RoomID()] = rr
	}
	if rr == nil || e.StreamPos == 0 || e.StreamPos > rr.upper {
		return false, nil
	}
	return rr.visibility.allows(ctx, e)
}

// searchContext is the context of a result (search.yaml "context"): the events around it
// that the user may see, as /context reads them, and optionally the senders' profiles as of
// the last of them. NOTSPEC: the request's filter does not apply to the context, as in
// Synapse.
func (a *API) searchContext(ctx context.Context, f *formatter, rr *roomReader, e *rooms.Event, s *roomEventsSearch) (*searchEventContext, error) {
	unfiltered := &RoomEventFilter{}
	before, err := a.scan(ctx, rr, unfiltered, e.StreamPos-1, minStreamPos, true, s.before)
	if err != nil {
		return nil, err
	}
	after, err := a.scan(ctx, rr, unfiltered, e.StreamPos, rr.upper, false, s.after)
	if err != nil {
		return nil, err
	}
	c := &searchEventContext{Start: streamToken(before.cursor), End: streamToken(after.cursor)}
	if c.EventsBefore, err = f.formatAll(ctx, before.events); err != nil {
		return nil, err
	}
	if c.EventsAfter, err = f.formatAll(ctx, after.events); err != nil {
		return nil, err
	}
	if !s.includeProfile {
		return c, nil
	}
	// "The historic profile information of the users that sent the events returned": their
	// member events in the state after the last of them.
	last := e
	if len(after.events) > 0 {
		last = after.events[len(after.events)-1]
	}
	var tuples [][2]string
	senders := map[string]bool{}
	for _, ev := range append(append(append([]*rooms.Event{}, before.events...), e), after.events...) {
		if !senders[ev.Sender()] {
			senders[ev.Sender()] = true
			tuples = append(tuples, [2]string{"m.room.member", ev.Sender()})
		}
	}
	nids, err := storage.SnapshotStateEventNIDs(ctx, a.db, last.StateAfter, tuples)
	if err != nil {
		return nil, err
	}
	want := make([]int64, 0, len(nids))
	for _, nid := range nids {
		want = append(want, nid)
	}
	members, err := a.rooms.EventsByNID(ctx, want)
	if err != nil {
		return nil, err
	}
	c.ProfileInfo = map[string]searchProfile{}
	for _, m := range members {
		var p searchProfile
		p.DisplayName, p.AvatarURL = memberProfile(m)
		c.ProfileInfo[*m.StateKey()] = p
	}
	return c, nil
}

// searchGroups partitions the results by room or sender. A group's order is its best
// result's score by rank, its newest result's stream position by recency: the higher, the
// earlier. While more results follow, each group has a token to continue within it, from
// where this page ended.
func searchGroups(key string, hits []searchHit, s *roomEventsSearch, next *storage.SearchCursor) map[string]*searchResultGroup {
	groups := map[string]*searchResultGroup{}
	for _, h := range hits {
		value := h.event.RoomID()
		if key == "sender" {
			value = h.event.Sender()
		}
		order := h.event.StreamPos
		if s.byRank {
			order = h.score
		}
		g, ok := groups[value]
		if !ok {
			g = &searchResultGroup{Order: order}
			groups[value] = g
		}
		g.Order = max(g.Order, order)
		g.Results = append(g.Results, h.event.EventID())
	}
	if next != nil {
		for value, g := range groups {
			g.NextBatch = searchToken{byRank: s.byRank, after: *next, groupKey: key, groupValue: value}.encode()
		}
	}
	return groups
}

// searchState is the state of each room with results (include_state): the current state
// while the user is joined, the state when they left otherwise, as /members reads it.
func (a *API) searchState(ctx context.Context, f *formatter, hits []searchHit, readers map[string]*roomReader) (map[string][]ClientEvent, error) {
	out := map[string][]ClientEvent{}
	for _, h := range hits {
		roomID := h.event.RoomID()
		if _, done := out[roomID]; done {
			continue
		}
		rr := readers[roomID]
		var state map[spec.StateTuple]*rooms.Event
		var err error
		if rr.membership == "join" || rr.memberEvent == nil {
			state, _, err = a.rooms.CurrentState(ctx, roomID)
		} else {
			state, err = a.rooms.StateAfter(ctx, rr.memberEvent)
		}
		if err != nil {
			return nil, err
		}
		events := make([]*rooms.Event, 0, len(state))
		for _, e := range state {
			events = append(events, e)
		}
		sortByStream(events)
		if out[roomID], err = f.formatAll(ctx, events); err != nil {
			return nil, err
		}
	}
	return out, nil
}
