package spec

import (
	_ "embed"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
)

// roomBuilder grows a room DAG for state resolution tests: each added event gets as auth
// events the auth events selection applied to the state of the fork it is added to.
type roomBuilder struct {
	tb     testing.TB
	rv     *RoomVersion
	roomID string
	events map[string]*Event
	ts     int64
}

func newRoomBuilder(tb testing.TB, rv *RoomVersion) *roomBuilder {
	return &roomBuilder{tb: tb, rv: rv, roomID: testRoomID(rv), events: map[string]*Event{}}
}

// add appends an event to the fork whose state is state, updating it. ts 0 means "next".
func (b *roomBuilder) add(state StateMap, te testEvent) *Event {
	if te.TS == 0 {
		b.ts++
		te.TS = b.ts
	}
	if te.Content == nil {
		te.Content = json.RawMessage(`{}`)
	}
	room := b.roomID
	if te.Type == typeCreate {
		te.Auth = []string{}
		te.Prev = []string{}
		if b.rv.RoomIDIsCreateEventHash {
			room = ""
		}
	} else {
		te.Auth = nil
		for _, t := range AuthEventSelection(b.rv, te.Type, te.StateKey, te.Sender, te.Content) {
			if id, ok := state[t]; ok {
				te.Auth = append(te.Auth, id)
			}
		}
		te.Prev = []string{"$prev"}
	}
	if _, dup := b.events[te.ID]; dup {
		b.tb.Fatalf("duplicate event ID %s", te.ID)
	}
	ev := te.build(b.rv, room)
	b.events[te.ID] = ev
	if t, ok := ev.Tuple(); ok {
		state[t] = te.ID
	}
	return ev
}

func (b *roomBuilder) load(ids []string) (map[string]*Event, error) {
	out := make(map[string]*Event, len(ids))
	for _, id := range ids {
		if ev, ok := b.events[id]; ok {
			out[id] = ev
		}
	}
	return out, nil
}

func copyState(s StateMap) StateMap {
	out := make(StateMap, len(s))
	for k, v := range s {
		out[k] = v
	}
	return out
}

// baseRoom adds the usual start of a room: create by @alice, her join, power levels (@alice
// 100 unless creators have infinite power, @mod 50), public join rules, and joins of @bob,
// @carol and @mod.
func (b *roomBuilder) baseRoom(state StateMap) {
	createContent := fmt.Sprintf(`{"room_version":%q,"creator":%q}`, b.rv.ID, testCreator)
	if b.rv.CreatorInSender {
		createContent = fmt.Sprintf(`{"room_version":%q}`, b.rv.ID)
	}
	b.add(state, testEvent{ID: testCreateID, Type: typeCreate, Sender: testCreator, StateKey: strPtr(""), Content: json.RawMessage(createContent)})
	b.add(state, testEvent{ID: "$ma", Type: typeMember, Sender: testCreator, StateKey: strPtr(testCreator), Content: json.RawMessage(`{"membership":"join"}`)})
	b.add(state, testEvent{ID: "$pl0", Type: typePowerLevels, Sender: testCreator, StateKey: strPtr(""), Content: b.levels(`"@mod:example.org":50`)})
	b.add(state, testEvent{ID: "$jr", Type: typeJoinRules, Sender: testCreator, StateKey: strPtr(""), Content: json.RawMessage(`{"join_rule":"public"}`)})
	for _, u := range []string{"bob", "carol", "mod"} {
		user := "@" + u + ":example.org"
		b.add(state, testEvent{ID: "$m" + u, Type: typeMember, Sender: user, StateKey: strPtr(user), Content: json.RawMessage(`{"membership":"join"}`)})
	}
}

// levels is power levels content with the given users entries plus @alice at 100 where
// creators have no infinite power.
func (b *roomBuilder) levels(users string) json.RawMessage {
	if !b.rv.CreatorsHaveInfinitePower {
		if users != "" {
			users += ","
		}
		users += `"@alice:example.org":100`
	}
	return json.RawMessage(`{"users":{` + users + `}}`)
}

// expandLevels replaces content written as the string "$LEVELS:<users entries>" by levels().
func (b *roomBuilder) expandLevels(te testEvent) testEvent {
	var s string
	if json.Unmarshal(te.Content, &s) == nil {
		if users, ok := strings.CutPrefix(s, "$LEVELS:"); ok {
			te.Content = b.levels(users)
		}
	}
	return te
}

//go:embed testdata/stateres/scenarios.jsonl
var stateResFixture []byte

// stateResCase is one line of testdata/stateres/scenarios.jsonl: forks of events added on top
// of the base room; the states after each fork are resolved and the listed keys compared
// ("type|state_key" → event ID, "" for absent).
type stateResCase struct {
	Name     string            `json:"name"`
	Versions string            `json:"versions"`
	Base     []testEvent       `json:"base"`
	Forks    [][]testEvent     `json:"forks"`
	Hide     []string          `json:"hide"`
	Expected map[string]string `json:"expected"`
}

func (c *stateResCase) run(tb testing.TB, rv *RoomVersion) (StateMap, *roomBuilder, []StateMap) {
	b := newRoomBuilder(tb, rv)
	base := StateMap{}
	b.baseRoom(base)
	for _, te := range c.Base {
		b.add(base, b.expandLevels(te))
	}
	var sets []StateMap
	for _, fork := range c.Forks {
		s := copyState(base)
		for _, te := range fork {
			b.add(s, b.expandLevels(te))
		}
		sets = append(sets, s)
	}
	for _, id := range c.Hide {
		delete(b.events, id)
	}
	got, err := ResolveState(rv, sets, b.load)
	if err != nil {
		tb.Fatal(err)
	}
	return got, b, sets
}

func TestResolveStateScenarios(t *testing.T) {
	cases := readJSONL[stateResCase](t, stateResFixture)
	for _, c := range cases {
		for _, rv := range parseVersionRange(t, c.Versions) {
			t.Run(fmt.Sprintf("%s/v%s", c.Name, rv.ID), func(t *testing.T) {
				got, _, _ := c.run(t, rv)
				for key, want := range c.Expected {
					typ, sk, _ := strings.Cut(key, "|")
					if id := got[StateTuple{Type: typ, StateKey: sk}]; id != want {
						t.Errorf("%s: got %q, want %q", key, id, want)
					}
				}
			})
		}
	}
}

func TestResolveStateTrivial(t *testing.T) {
	rv, _ := LookupRoomVersion("10")
	b := newRoomBuilder(t, rv)
	s := StateMap{}
	b.baseRoom(s)
	got, err := ResolveState(rv, []StateMap{s, copyState(s)}, b.load)
	if err != nil || len(got) != len(s) {
		t.Fatalf("got %v, %v", got, err)
	}
	if got, err := ResolveState(rv, nil, b.load); err != nil || len(got) != 0 {
		t.Fatalf("no sets: %v, %v", got, err)
	}
	failing := func([]string) (map[string]*Event, error) { return nil, errors.New("db down") }
	other := copyState(s)
	other[StateTuple{Type: "m.room.topic"}] = "$x"
	if _, err := ResolveState(rv, []StateMap{s, other}, failing); err == nil {
		t.Fatal("load error not returned")
	}
}

// TestPowerOrderTieBreak checks the comparison of rooms v2 "Reverse topological power
// ordering": power level, then origin_server_ts, then event ID.
func TestPowerOrderTieBreak(t *testing.T) {
	rv, _ := LookupRoomVersion("11")
	mk := func(id string, ts int64) *Event {
		return testEvent{ID: id, Type: typePowerLevels, StateKey: strPtr(""), TS: ts}.build(rv, testRoomIDOld)
	}
	tests := []struct {
		name       string
		x, y       *Event
		px, py     int64
		wantXFirst bool
	}{
		{"higher power first", mk("$b", 5), mk("$a", 1), 100, 50, true},
		{"lower power later", mk("$a", 1), mk("$b", 5), 0, 50, false},
		{"same power earlier ts", mk("$b", 1), mk("$a", 5), 50, 50, true},
		{"same power later ts", mk("$a", 9), mk("$b", 5), 50, 50, false},
		{"same power same ts smaller id", mk("$a", 5), mk("$b", 5), 50, 50, true},
		{"same power same ts larger id", mk("$c", 5), mk("$b", 5), 50, 50, false},
		{"infinite creator first", mk("$z", 9), mk("$a", 1), InfinitePowerLevel, 100, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			power := map[*Event]int64{tt.x: tt.px, tt.y: tt.py}
			if got := powerOrderLess(tt.x, tt.y, power); got != tt.wantXFirst {
				t.Fatalf("powerOrderLess = %v", got)
			}
			if powerOrderLess(tt.y, tt.x, power) == tt.wantXFirst {
				t.Fatal("comparison is not antisymmetric")
			}
		})
	}
}

// bigForkedRoom builds a room with members joined users and two forks that conflict on power
// levels, bans, join rules, topics and a slice of memberships.
func bigForkedRoom(tb testing.TB, rv *RoomVersion, members int, rng *rand.Rand) (*roomBuilder, []StateMap) {
	b := newRoomBuilder(tb, rv)
	base := StateMap{}
	b.baseRoom(base)
	for i := range members {
		user := fmt.Sprintf("@u%d:example.org", i)
		b.add(base, testEvent{ID: fmt.Sprintf("$join%d", i), Type: typeMember, Sender: user, StateKey: strPtr(user), Content: json.RawMessage(`{"membership":"join"}`)})
	}
	forkA, forkB := copyState(base), copyState(base)
	b.add(forkA, testEvent{ID: "$plA", Type: typePowerLevels, Sender: testCreator, StateKey: strPtr(""), Content: b.levels(`"@mod:example.org":0,"@bob:example.org":50`)})
	b.add(forkB, testEvent{ID: "$jrB", Type: typeJoinRules, Sender: "@mod:example.org", StateKey: strPtr(""), Content: json.RawMessage(`{"join_rule":"invite"}`)})
	b.add(forkA, testEvent{ID: "$topicA", Type: "m.room.topic", Sender: testCreator, StateKey: strPtr(""), Content: json.RawMessage(`{"topic":"A"}`)})
	b.add(forkB, testEvent{ID: "$topicB", Type: "m.room.topic", Sender: "@mod:example.org", StateKey: strPtr(""), Content: json.RawMessage(`{"topic":"B"}`)})
	for i := 0; i < members/100+2; i++ {
		victim := fmt.Sprintf("@u%d:example.org", rng.IntN(members))
		fork, sender := forkA, testCreator
		if i%2 == 1 {
			fork, sender = forkB, "@mod:example.org"
		}
		b.add(fork, testEvent{ID: fmt.Sprintf("$ban%d", i), Type: typeMember, Sender: sender, StateKey: strPtr(victim), Content: json.RawMessage(`{"membership":"ban"}`)})
	}
	for i := 0; i < members/50+2; i++ {
		user := fmt.Sprintf("@u%d:example.org", rng.IntN(members))
		fork := forkA
		if i%2 == 1 {
			fork = forkB
		}
		b.add(fork, testEvent{ID: fmt.Sprintf("$leave%d", i), Type: typeMember, Sender: user, StateKey: strPtr(user), Content: json.RawMessage(`{"membership":"leave"}`)})
		late := fmt.Sprintf("@late%d:example.org", i)
		b.add(fork, testEvent{ID: fmt.Sprintf("$late%d", i), Type: typeMember, Sender: late, StateKey: strPtr(late), Content: json.RawMessage(`{"membership":"join"}`)})
	}
	b.add(forkB, testEvent{ID: "$plB", Type: typePowerLevels, Sender: testCreator, StateKey: strPtr(""), Content: b.levels(`"@mod:example.org":50,"@carol:example.org":50`)})
	return b, []StateMap{forkA, forkB}
}

// TestResolveStateOrderIndependent is the property test: shuffling the order of the state
// sets (and Go's random map iteration order) never changes the resolved state.
func TestResolveStateOrderIndependent(t *testing.T) {
	for _, id := range []string{"2", "6", "10", "11", "12"} {
		rv, _ := LookupRoomVersion(id)
		for seed := range uint64(4) {
			rng := rand.New(rand.NewPCG(seed, 7))
			b, sets := bigForkedRoom(t, rv, 200, rng)
			third := copyState(sets[0])
			b.add(third, testEvent{ID: fmt.Sprintf("$topicC%d", seed), Type: "m.room.topic", Sender: testCreator, StateKey: strPtr(""), TS: 3})
			sets = append(sets, third)
			want, err := ResolveState(rv, sets, b.load)
			if err != nil {
				t.Fatal(err)
			}
			for range 8 {
				rng.Shuffle(len(sets), func(i, j int) { sets[i], sets[j] = sets[j], sets[i] })
				got, err := ResolveState(rv, sets, b.load)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != len(want) {
					t.Fatalf("v%s seed %d: %d entries, want %d", id, seed, len(got), len(want))
				}
				for k, v := range want {
					if got[k] != v {
						t.Fatalf("v%s seed %d: %s = %s, want %s", id, seed, k, got[k], v)
					}
				}
			}
		}
	}
}

func BenchmarkResolveState(b *testing.B) {
	for _, id := range []string{"10", "12"} {
		rv, _ := LookupRoomVersion(id)
		room, sets := bigForkedRoom(b, rv, 10000, rand.New(rand.NewPCG(1, 2)))
		b.Run("v"+id+"/10k-members", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := ResolveState(rv, sets, room.load); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
