package spec

import (
	"bufio"
	"bytes"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// testEvent is the compact fixture form of an event: enough fields to drive the auth rules
// and state resolution without the event parser.
type testEvent struct {
	ID       string          `json:"id"`
	Type     string          `json:"type"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"sk"`
	Content  json.RawMessage `json:"content"`
	Prev     []string        `json:"prev"`
	Auth     []string        `json:"auth"`
	Room     *string         `json:"room"`
	TS       int64           `json:"ts"`
	Depth    int64           `json:"depth"`
	Redacts  string          `json:"redacts"`
}

// build turns a fixture event into an *Event of room version rv in room roomID (unless the
// fixture names a room).
func (te testEvent) build(rv *RoomVersion, roomID string) *Event {
	room := roomID
	if te.Room != nil {
		room = *te.Room
	}
	content := te.Content
	if content == nil {
		content = json.RawMessage(`{}`)
	}
	return &Event{
		version: rv,
		eventID: te.ID,
		fields: eventFields{
			RoomID:         room,
			Sender:         te.Sender,
			Type:           te.Type,
			StateKey:       te.StateKey,
			Content:        content,
			PrevEvents:     te.Prev,
			AuthEvents:     te.Auth,
			Depth:          te.Depth,
			OriginServerTS: te.TS,
			Redacts:        te.Redacts,
		},
	}
}

// parseVersionRange reads "1-12", "7", "1,2,10-12" into room versions.
func parseVersionRange(t testing.TB, spec string) []*RoomVersion {
	t.Helper()
	var out []*RoomVersion
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		if !isRange {
			hi = lo
		}
		from, err1 := strconv.Atoi(lo)
		to, err2 := strconv.Atoi(hi)
		if err1 != nil || err2 != nil {
			t.Fatalf("bad version range %q", spec)
		}
		for v := from; v <= to; v++ {
			rv, ok := LookupRoomVersion(strconv.Itoa(v))
			if !ok {
				t.Fatalf("unknown version %d", v)
			}
			out = append(out, rv)
		}
	}
	return out
}

//go:embed testdata/auth/rules.jsonl
var authRulesFixture []byte

// authCase is one line of testdata/auth/rules.jsonl.
type authCase struct {
	Name     string                     `json:"name"`
	Versions string                     `json:"versions"`
	NoBase   bool                       `json:"nobase"`
	Create   map[string]json.RawMessage `json:"create"`
	NoPL     bool                       `json:"nopl"`
	PL       map[string]json.RawMessage `json:"pl"`
	JoinRule string                     `json:"join_rule"`
	Members  map[string]string          `json:"members"`
	State    []testEvent                `json:"state"`
	Event    testEvent                  `json:"event"`
	Allow    bool                       `json:"allow"`
	Reason   string                     `json:"reason"`
}

const (
	testCreator   = "@alice:example.org"
	testCreateID  = "$create:example.org"
	testRoomIDOld = "!room:example.org"
)

func testRoomID(rv *RoomVersion) string {
	if rv.RoomIDIsCreateEventHash {
		return "!" + testCreateID[1:]
	}
	return testRoomIDOld
}

func strPtr(s string) *string { return &s }

func mustJSON(t testing.TB, v any) json.RawMessage {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// baseState builds the fixture's room for one version: create (by @alice), @alice's join, the
// power levels (@alice 100 where creators have no infinite power, @mod and @mod2 50), the join
// rules, the listed memberships and finally the explicit state events.
func (c *authCase) baseState(t testing.TB, rv *RoomVersion) map[StateTuple]*Event {
	t.Helper()
	room := testRoomID(rv)
	state := map[StateTuple]*Event{}
	add := func(te testEvent) {
		ev := te.build(rv, room)
		tuple, ok := ev.Tuple()
		if !ok {
			t.Fatalf("%s: state event %s without state key", c.Name, te.ID)
		}
		state[tuple] = ev
	}
	if !c.NoBase {
		createContent := map[string]json.RawMessage{"room_version": mustJSON(t, rv.ID)}
		if !rv.CreatorInSender {
			createContent["creator"] = mustJSON(t, testCreator)
		}
		for k, v := range c.Create {
			createContent[k] = v
		}
		create := testEvent{ID: testCreateID, Type: typeCreate, Sender: testCreator, StateKey: strPtr(""), Content: mustJSON(t, createContent)}
		if rv.RoomIDIsCreateEventHash {
			create.Room = strPtr("")
		}
		add(create)
		add(testEvent{ID: "$m_alice", Type: typeMember, Sender: testCreator, StateKey: strPtr(testCreator), Content: json.RawMessage(`{"membership":"join"}`)})
		if !c.NoPL {
			users := map[string]json.RawMessage{"@mod:example.org": json.RawMessage(`50`), "@mod2:example.org": json.RawMessage(`50`)}
			if !rv.CreatorsHaveInfinitePower {
				users[testCreator] = json.RawMessage(`100`)
			}
			plContent := map[string]json.RawMessage{}
			for k, v := range c.PL {
				if k == "users" {
					var extra map[string]json.RawMessage
					if err := json.Unmarshal(v, &extra); err != nil {
						t.Fatalf("%s: pl.users: %v", c.Name, err)
					}
					for u, lvl := range extra {
						if string(lvl) == "null" {
							delete(users, u)
						} else {
							users[u] = lvl
						}
					}
					continue
				}
				plContent[k] = v
			}
			plContent["users"] = mustJSON(t, users)
			add(testEvent{ID: "$pl", Type: typePowerLevels, Sender: testCreator, StateKey: strPtr(""), Content: mustJSON(t, plContent)})
		}
		joinRule := c.JoinRule
		if joinRule == "" {
			joinRule = "invite"
		}
		if joinRule != "none" {
			add(testEvent{ID: "$jr", Type: typeJoinRules, Sender: testCreator, StateKey: strPtr(""), Content: mustJSON(t, map[string]string{"join_rule": joinRule})})
		}
		for user, membership := range c.Members {
			sender := user
			if membership == "invite" || membership == "ban" {
				sender = testCreator
			}
			add(testEvent{ID: "$m_" + user, Type: typeMember, Sender: sender, StateKey: strPtr(user), Content: mustJSON(t, map[string]string{"membership": membership})})
		}
	}
	for _, te := range c.State {
		add(te)
	}
	return state
}

func (c *authCase) event(rv *RoomVersion) *Event {
	te := c.Event
	if te.ID == "" {
		te.ID = "$ev:example.org"
	}
	if te.Prev == nil {
		te.Prev = []string{"$prev:example.org"}
	}
	room := testRoomID(rv)
	if te.Type == typeCreate && rv.RoomIDIsCreateEventHash && te.Room == nil {
		room = ""
	}
	return te.build(rv, room)
}

func readJSONL[T any](t testing.TB, data []byte) []T {
	t.Helper()
	var out []T
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for line := 1; sc.Scan(); line++ {
		text := bytes.TrimSpace(sc.Bytes())
		if len(text) == 0 || text[0] == '#' {
			continue
		}
		var v T
		dec := json.NewDecoder(bytes.NewReader(text))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("line %d: %v", line, err)
		}
		out = append(out, v)
	}
	return out
}

// TestCheckAuthFixtures runs every case of testdata/auth/rules.jsonl against each room version
// it names, with and without the parse cache that state resolution uses.
func TestCheckAuthFixtures(t *testing.T) {
	cases := readJSONL[authCase](t, authRulesFixture)
	if len(cases) < 80 {
		t.Fatalf("only %d auth cases", len(cases))
	}
	names := map[string]bool{}
	for _, c := range cases {
		if names[c.Name] {
			t.Fatalf("duplicate case name %q", c.Name)
		}
		names[c.Name] = true
		for _, rv := range parseVersionRange(t, c.Versions) {
			t.Run(fmt.Sprintf("%s/v%s", c.Name, rv.ID), func(t *testing.T) {
				state := c.baseState(t, rv)
				ev := c.event(rv)
				for _, cache := range []*authCache{nil, newAuthCache()} {
					err := checkAuth(ev, state, nil, cache)
					if c.Allow && err != nil {
						t.Fatalf("want allowed, got %v", err)
					}
					if !c.Allow {
						if err == nil {
							t.Fatalf("want rejected, got allowed")
						}
						var ae *AuthError
						if !errors.As(err, &ae) || !errors.Is(err, ErrNotAllowed) {
							t.Fatalf("error %v is not an *AuthError", err)
						}
						if c.Reason != "" && !strings.Contains(err.Error(), c.Reason) {
							t.Fatalf("error %q does not mention %q", err, c.Reason)
						}
					}
				}
			})
		}
	}
}

func TestCheckAuthWithVerifySignedBy(t *testing.T) {
	rv, _ := LookupRoomVersion("10")
	c := authCase{Name: "restricted", JoinRule: "restricted"}
	state := c.baseState(t, rv)
	c.Event = testEvent{Type: typeMember, Sender: "@bob:example.org", StateKey: strPtr("@bob:example.org"),
		Content: json.RawMessage(`{"membership":"join","join_authorised_via_users_server":"@alice:example.org"}`)}
	ev := c.event(rv)
	var asked string
	opts := &AuthOptions{VerifySignedBy: func(_ *Event, server string) error {
		asked = server
		if server == "example.org" {
			return nil
		}
		return errors.New("bad signature")
	}}
	if err := CheckAuthWith(ev, state, opts); err != nil || asked != "example.org" {
		t.Fatalf("err %v, asked %q", err, asked)
	}
	opts.VerifySignedBy = func(*Event, string) error { return errors.New("bad signature") }
	if err := CheckAuthWith(ev, state, opts); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("unsigned restricted join allowed: %v", err)
	}
}

func TestCheckAuthMissingCreate(t *testing.T) {
	rv, _ := LookupRoomVersion("11")
	ev := testEvent{ID: "$x", Type: "m.room.message", Sender: testCreator}.build(rv, testRoomIDOld)
	if err := CheckAuth(ev, map[StateTuple]*Event{}); !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("want ErrNotAllowed, got %v", err)
	}
}
