package spec

import (
	"crypto/ed25519"
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
)

//go:embed testdata/stateresv1/state-resolution.jsonl
var stateResV1Fixture []byte

// stateResV1Case is one line of testdata/stateresv1/state-resolution.jsonl (rooms/v1.md
// "State resolution"): forks of events added on top of the base room, whose states are
// resolved and compared on the listed keys ("type|state_key" → event ID, "" for absent).
type stateResV1Case struct {
	Name     string            `json:"name"`
	Note     string            `json:"note"`
	Base     []testEvent       `json:"base"`
	Forks    [][]testEvent     `json:"forks"`
	Hide     []string          `json:"hide"`
	Expected map[string]string `json:"expected"`
}

// build grows the case's room and returns it with the state after each fork. Events without
// a depth get the next one: base events 1, 2, … and each fork's events after the base.
func (c *stateResV1Case) build(tb testing.TB, rv *RoomVersion) (*roomBuilder, []StateMap) {
	b := newRoomBuilder(tb, rv)
	base := StateMap{}
	b.baseRoom(base)
	depth := int64(0)
	for _, te := range c.Base {
		depth++
		if te.Depth == 0 {
			te.Depth = depth
		}
		b.add(base, b.expandLevels(te))
	}
	var sets []StateMap
	for _, fork := range c.Forks {
		s := copyState(base)
		for i, te := range fork {
			if te.Depth == 0 {
				te.Depth = depth + 1 + int64(i)
			}
			b.add(s, b.expandLevels(te))
		}
		sets = append(sets, s)
	}
	for _, id := range c.Hide {
		delete(b.events, id)
	}
	return b, sets
}

func TestResolveStateV1Fixtures(t *testing.T) {
	rv := mustVersion(t, "1")
	cases := readJSONL[stateResV1Case](t, stateResV1Fixture)
	if len(cases) < 20 {
		t.Fatalf("only %d fixture cases", len(cases))
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			b, sets := c.build(t, rv)
			got, err := ResolveState(rv, sets, b.load)
			if err != nil {
				t.Fatal(err)
			}
			for key, want := range c.Expected {
				typ, sk, _ := strings.Cut(key, "|")
				if id := got[StateTuple{Type: typ, StateKey: sk}]; id != want {
					t.Errorf("%s: got %q, want %q (%s)", key, id, want, c.Note)
				}
			}
			checkResolvedFromInputs(t, got, sets)
			slices.Reverse(sets)
			reversed, err := ResolveState(rv, sets, b.load)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffStates(got, reversed); diff != "" {
				t.Errorf("reversed state sets: %s", diff)
			}
		})
	}
}

// checkResolvedFromInputs checks what any resolution must give: every resolved entry is the
// event of one of the states at that key, and every key all states agree on is kept.
func checkResolvedFromInputs(tb testing.TB, resolved StateMap, sets []StateMap) {
	tb.Helper()
	for key, id := range resolved {
		found := false
		for _, s := range sets {
			if s[key] == id {
				found = true
				break
			}
		}
		if !found {
			tb.Errorf("%s = %s, which no state holds", key, id)
		}
	}
	for key, id := range sets[0] {
		agreed := true
		for _, s := range sets[1:] {
			if other, ok := s[key]; ok && other != id {
				agreed = false
				break
			}
		}
		if agreed && resolved[key] != id {
			tb.Errorf("unconflicted %s = %s, resolved to %q", key, id, resolved[key])
		}
	}
}

// diffStates describes the first difference between two state maps, or returns "".
func diffStates(want, got StateMap) string {
	if len(want) != len(got) {
		return fmt.Sprintf("%d entries, want %d", len(got), len(want))
	}
	for k, v := range want {
		if got[k] != v {
			return fmt.Sprintf("%s = %q, want %q", k, got[k], v)
		}
	}
	return ""
}

func TestResolveStateV1Trivial(t *testing.T) {
	rv := mustVersion(t, "1")
	b := newRoomBuilder(t, rv)
	s := StateMap{}
	b.baseRoom(s)
	noLoad := func(ids []string) (map[string]*Event, error) {
		t.Fatalf("loaded %v without a conflict", ids)
		return nil, nil
	}
	if got, err := ResolveState(rv, nil, noLoad); err != nil || len(got) != 0 {
		t.Fatalf("no sets: %v, %v", got, err)
	}
	got, err := ResolveState(rv, []StateMap{s}, noLoad)
	if err != nil || diffStates(s, got) != "" {
		t.Fatalf("one set: %v, %v", got, err)
	}
	got, err = ResolveState(rv, []StateMap{s, copyState(s), copyState(s)}, noLoad)
	if err != nil || diffStates(s, got) != "" {
		t.Fatalf("equal sets: %v, %v", got, err)
	}
}

func TestResolveStateV1Errors(t *testing.T) {
	rv := mustVersion(t, "1")
	b := newRoomBuilder(t, rv)
	base := StateMap{}
	b.baseRoom(base)
	forkA, forkB := copyState(base), copyState(base)
	b.add(forkA, testEvent{ID: "$topicA", Type: "m.room.topic", Sender: testCreator, StateKey: strPtr(""), Depth: 5})
	b.add(forkB, testEvent{ID: "$topicB", Type: "m.room.topic", Sender: testCreator, StateKey: strPtr(""), Depth: 6})
	sets := []StateMap{forkA, forkB}

	failing := func([]string) (map[string]*Event, error) { return nil, errors.New("db down") }
	if _, err := ResolveState(rv, sets, failing); err == nil || !strings.Contains(err.Error(), "db down") {
		t.Fatalf("load error: %v", err)
	}
	// The second load (auth events) fails.
	calls := 0
	failSecond := func(ids []string) (map[string]*Event, error) {
		if calls++; calls > 1 {
			return nil, errors.New("db down")
		}
		return b.load(ids)
	}
	if _, err := ResolveState(rv, sets, failSecond); err == nil {
		t.Fatal("auth events load error not returned")
	}

	other := testEvent{ID: "$topicB", Type: "m.room.topic", Sender: testCreator, StateKey: strPtr(""), Depth: 6}.build(rv, "!other:example.org")
	wrongRoom := func(ids []string) (map[string]*Event, error) {
		out, err := b.load(ids)
		if _, ok := out["$topicB"]; ok {
			out["$topicB"] = other
		}
		return out, err
	}
	if _, err := ResolveState(rv, sets, wrongRoom); err == nil || !strings.Contains(err.Error(), "different rooms") {
		t.Fatalf("events of two rooms: %v", err)
	}

	v2 := mustVersion(t, "2")
	otherVersion := testEvent{ID: "$topicB", Type: "m.room.topic", Sender: testCreator, StateKey: strPtr(""), Depth: 6}.build(v2, testRoomIDOld)
	wrongVersion := func(ids []string) (map[string]*Event, error) {
		out, err := b.load(ids)
		if _, ok := out["$topicB"]; ok {
			out["$topicB"] = otherVersion
		}
		return out, err
	}
	if _, err := ResolveState(rv, sets, wrongVersion); err == nil || !strings.Contains(err.Error(), "room version") {
		t.Fatalf("event of another room version: %v", err)
	}

	// An event returned under another ID counts as missing.
	renamed := func(ids []string) (map[string]*Event, error) {
		out, err := b.load(ids)
		if _, ok := out["$topicB"]; ok {
			out["$topicB"] = b.events["$topicA"]
		}
		return out, err
	}
	got, err := ResolveState(rv, sets, renamed)
	if err != nil || got[StateTuple{Type: "m.room.topic"}] != "$topicA" {
		t.Fatalf("renamed event: %v, %v", got[StateTuple{Type: "m.room.topic"}], err)
	}
}

// TestCompareV1 checks the order of rooms/v1.md "State resolution": greater depth first,
// then smaller sha1(event_id), not smaller event ID.
func TestCompareV1(t *testing.T) {
	rv := mustVersion(t, "1")
	mk := func(id string, depth int64) *Event {
		return testEvent{ID: id, Type: "m.room.topic", StateKey: strPtr(""), Depth: depth}.build(rv, testRoomIDOld)
	}
	tests := []struct {
		name       string
		x, y       *Event
		wantXFirst bool
	}{
		{"deeper first", mk("$a", 9), mk("$b", 2), true},
		{"shallower later", mk("$a", 2), mk("$b", 9), false},
		// sha1("$t2") = 2907…, sha1("$t1") = 94ac…
		{"same depth smaller sha1 first", mk("$t2", 4), mk("$t1", 4), true},
		{"same depth larger sha1 later", mk("$t1", 4), mk("$t2", 4), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := compareV1(tt.x, tt.y) < 0; got != tt.wantXFirst {
				t.Fatalf("compareV1 < 0 = %v", got)
			}
			if got := compareV1(tt.y, tt.x) < 0; got == tt.wantXFirst {
				t.Fatal("comparison is not antisymmetric")
			}
		})
	}
	if compareV1(mk("$a", 1), mk("$a", 1)) != 0 {
		t.Fatal("an event does not compare equal to itself")
	}
}

// randomForkedRoomV1 builds a room version 1 room with extra joined users and forks of random
// power-levels, join-rules, membership, topic and name events at overlapping depths; about a
// tenth of the fork events are hidden from the loader.
func randomForkedRoomV1(tb testing.TB, rng *rand.Rand) (*roomBuilder, []StateMap) {
	rv := mustVersion(tb, "1")
	b := newRoomBuilder(tb, rv)
	base := StateMap{}
	b.baseRoom(base)
	users := []string{testCreator, "@mod:example.org", "@bob:example.org", "@carol:example.org"}
	for i := range 6 {
		user := fmt.Sprintf("@u%d:example.org", i)
		users = append(users, user)
		b.add(base, testEvent{ID: fmt.Sprintf("$join%d", i), Type: typeMember, Sender: user, StateKey: strPtr(user), Content: json.RawMessage(`{"membership":"join"}`), Depth: int64(i + 1)})
	}
	pick := func() string { return users[rng.IntN(len(users))] }
	memberships := []string{"join", "leave", "ban", "invite"}
	joinRules := []string{"public", "invite"}
	var sets []StateMap
	var hidden []string
	for fork := range 2 + rng.IntN(3) {
		s := copyState(base)
		for i := range rng.IntN(9) {
			te := testEvent{
				ID:       fmt.Sprintf("$f%d_%d", fork, i),
				Sender:   pick(),
				StateKey: strPtr(""),
				Depth:    int64(7 + rng.IntN(4) + i),
			}
			switch rng.IntN(5) {
			case 0:
				te.Type = typePowerLevels
				te.Content = b.levels(fmt.Sprintf(`"@mod:example.org":%d,%q:%d`, 50*rng.IntN(2), pick(), 25*rng.IntN(5)))
			case 1:
				te.Type = typeJoinRules
				te.Content = json.RawMessage(fmt.Sprintf(`{"join_rule":%q}`, joinRules[rng.IntN(len(joinRules))]))
			case 2:
				te.Type = "m.room.topic"
				te.Content = json.RawMessage(fmt.Sprintf(`{"topic":"%d"}`, rng.IntN(100)))
			case 3:
				te.Type = "m.room.name"
				te.Content = json.RawMessage(`{"name":"n"}`)
			default:
				te.Type = typeMember
				te.StateKey = strPtr(pick())
				te.Content = json.RawMessage(fmt.Sprintf(`{"membership":%q}`, memberships[rng.IntN(len(memberships))]))
			}
			b.add(s, te)
			if rng.IntN(10) == 0 {
				hidden = append(hidden, te.ID)
			}
		}
		sets = append(sets, s)
	}
	for _, id := range hidden {
		delete(b.events, id)
	}
	return b, sets
}

// TestResolveStateV1OrderIndependent is the property test: the order of the state sets (and
// Go's random map iteration order) never changes the resolved state, and every resolved entry
// comes from the inputs.
func TestResolveStateV1OrderIndependent(t *testing.T) {
	rv := mustVersion(t, "1")
	for seed := range uint64(200) {
		rng := rand.New(rand.NewPCG(seed, 1))
		b, sets := randomForkedRoomV1(t, rng)
		want, err := ResolveState(rv, sets, b.load)
		if err != nil {
			t.Fatal(err)
		}
		checkResolvedFromInputs(t, want, sets)
		for range 6 {
			rng.Shuffle(len(sets), func(i, j int) { sets[i], sets[j] = sets[j], sets[i] })
			got, err := ResolveState(rv, sets, b.load)
			if err != nil {
				t.Fatal(err)
			}
			if diff := diffStates(want, got); diff != "" {
				t.Fatalf("seed %d: %s", seed, diff)
			}
		}
	}
}

// TestResolveStateV1SignedEvents resolves a conflict between events built and signed as room
// version 1 events by ProtoEvent.Build, with their "$opaque:server" IDs and parsed depths.
func TestResolveStateV1SignedEvents(t *testing.T) {
	rv := mustVersion(t, "1")
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	const room = "!room:example.org"
	events := map[string]*Event{}
	state := StateMap{}
	build := func(p ProtoEvent, into StateMap) *Event {
		t.Helper()
		p.RoomID = room
		for _, tuple := range AuthEventSelection(rv, p.Type, p.StateKey, p.Sender, p.Content) {
			if id, ok := into[tuple]; ok {
				p.AuthEvents = append(p.AuthEvents, id)
			}
		}
		ev, err := p.Build(rv, "example.org", "ed25519:1", key)
		if err != nil {
			t.Fatal(err)
		}
		events[ev.EventID()] = ev
		tuple, _ := ev.Tuple()
		into[tuple] = ev.EventID()
		return ev
	}
	build(ProtoEvent{Type: typeCreate, StateKey: strPtr(""), Sender: testCreator, Content: json.RawMessage(`{"creator":"@alice:example.org"}`), Depth: 1}, state)
	build(ProtoEvent{Type: typeMember, StateKey: strPtr(testCreator), Sender: testCreator, Content: json.RawMessage(`{"membership":"join"}`), Depth: 2}, state)
	build(ProtoEvent{Type: typePowerLevels, StateKey: strPtr(""), Sender: testCreator, Content: json.RawMessage(`{"users":{"@alice:example.org":100,"@bob:example.org":50}}`), Depth: 3}, state)
	build(ProtoEvent{Type: typeJoinRules, StateKey: strPtr(""), Sender: testCreator, Content: json.RawMessage(`{"join_rule":"public"}`), Depth: 4}, state)
	build(ProtoEvent{Type: typeMember, StateKey: strPtr("@bob:example.org"), Sender: "@bob:example.org", Content: json.RawMessage(`{"membership":"join"}`), Depth: 5}, state)

	forkA, forkB := copyState(state), copyState(state)
	demote := build(ProtoEvent{Type: typePowerLevels, StateKey: strPtr(""), Sender: testCreator, Content: json.RawMessage(`{"users":{"@alice:example.org":100}}`), Depth: 6}, forkA)
	topicA := build(ProtoEvent{Type: "m.room.topic", StateKey: strPtr(""), Sender: testCreator, Content: json.RawMessage(`{"topic":"A"}`), Depth: 7}, forkA)
	build(ProtoEvent{Type: "m.room.topic", StateKey: strPtr(""), Sender: "@bob:example.org", Content: json.RawMessage(`{"topic":"B"}`), Depth: 8}, forkB)

	load := func(ids []string) (map[string]*Event, error) {
		out := map[string]*Event{}
		for _, id := range ids {
			if ev, ok := events[id]; ok {
				out[id] = ev
			}
		}
		return out, nil
	}
	got, err := ResolveState(rv, []StateMap{forkA, forkB}, load)
	if err != nil {
		t.Fatal(err)
	}
	// @bob's deeper topic fails against the resolved demotion; @alice's is the next.
	if got[powerLevelsTuple] != demote.EventID() || got[StateTuple{Type: "m.room.topic"}] != topicA.EventID() {
		t.Fatalf("resolved %v", got)
	}
}

func BenchmarkResolveStateV1(b *testing.B) {
	rv := mustVersion(b, "1")
	room, sets := bigForkedRoom(b, rv, 10000, rand.New(rand.NewPCG(1, 2)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ResolveState(rv, sets, room.load); err != nil {
			b.Fatal(err)
		}
	}
}
