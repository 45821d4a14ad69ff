package spec

import (
	"container/heap"
	"fmt"
	"math"
	"slices"
	"strings"
)

// LoadEvents fetches events by ID. It returns the events it has; IDs it does not know are
// simply absent from the map (state resolution skips them). It must not return events that
// were rejected: the algorithm uses auth events only "if the auth event is not rejected".
type LoadEvents func(eventIDs []string) (map[string]*Event, error)

// ResolveState resolves a set of room states into one (rooms v2 "State resolution", and the
// v12 changes "state resolution v2.1" for StateResV2_1; rooms v1 "State resolution" for
// StateResV1, in stateresv1.go). Every state map must belong to the same room of version rv.
// Events that load does not return are skipped, as the algorithm only works with events it
// can see.
func ResolveState(rv *RoomVersion, stateSets []StateMap, load LoadEvents) (StateMap, error) {
	switch rv.StateRes {
	case StateResV2, StateResV2_1:
	case StateResV1:
		return resolveStateV1(rv, stateSets, load)
	default:
		return nil, fmt.Errorf("room version %s: unknown state resolution algorithm %d", rv.ID, rv.StateRes)
	}
	if len(stateSets) == 0 {
		return StateMap{}, nil
	}
	unconflicted, conflictedIDs := splitConflicts(stateSets)
	if len(conflictedIDs) == 0 {
		return unconflicted, nil
	}
	r := &resolver{
		rv:      rv,
		load:    load,
		events:  make(map[string]*Event, len(unconflicted)+len(conflictedIDs)),
		missing: map[string]bool{},
		cache:   newAuthCache(),
		power:   map[*Event]int64{},
		levels:  map[[2]*Event]*PowerLevels{},
		posMemo: map[string]int{},
	}
	return r.resolve(stateSets, unconflicted, conflictedIDs)
}

// splitConflicts divides the states into the unconflicted state map and the conflicted state
// set (rooms v2 "Unconflicted state map and conflicted state set"). The conflicted IDs are
// sorted, so that nothing later depends on map iteration order.
func splitConflicts(stateSets []StateMap) (StateMap, []string) {
	first := stateSets[0]
	unconflicted := make(StateMap, len(first))
	conflicted := map[string]struct{}{}
	conflictedKey := func(k StateTuple) {
		for _, s := range stateSets {
			if v, ok := s[k]; ok {
				conflicted[v] = struct{}{}
			}
		}
	}
	for k, v := range first {
		same := true
		for _, s := range stateSets[1:] {
			if w, ok := s[k]; !ok || w != v {
				same = false
				break
			}
		}
		if same {
			unconflicted[k] = v
		} else {
			conflictedKey(k)
		}
	}
	// Keys missing from the first state are conflicted by definition.
	for i, s := range stateSets[1:] {
		for k := range s {
			if _, inFirst := first[k]; inFirst {
				continue
			}
			seenBefore := false
			for _, earlier := range stateSets[1 : i+1] {
				if _, ok := earlier[k]; ok {
					seenBefore = true
					break
				}
			}
			if !seenBefore {
				conflictedKey(k)
			}
		}
	}
	ids := make([]string, 0, len(conflicted))
	for id := range conflicted {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return unconflicted, ids
}

// resolver holds one resolution's loaded events and everything derived from them.
type resolver struct {
	rv      *RoomVersion
	load    LoadEvents
	events  map[string]*Event
	missing map[string]bool
	cache   *authCache
	// power is the sender's power level of an event, read from its auth events.
	power map[*Event]int64
	// levels caches the power levels of a (create, power levels) pair.
	levels map[[2]*Event]*PowerLevels
	// posMemo caches mainline positions of power-levels events.
	posMemo map[string]int
}

// fetch loads the IDs not yet known in one call.
func (r *resolver) fetch(ids []string) error {
	var want []string
	for _, id := range ids {
		if _, ok := r.events[id]; !ok && !r.missing[id] {
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return nil
	}
	got, err := r.load(want)
	if err != nil {
		return fmt.Errorf("state resolution: load events: %w", err)
	}
	for _, id := range want {
		if ev := got[id]; ev != nil && ev.EventID() == id {
			r.events[id] = ev
		} else {
			r.missing[id] = true
		}
	}
	return nil
}

// get returns a loaded event, loading it alone if need be; nil if it is unavailable.
func (r *resolver) get(id string) (*Event, error) {
	if ev, ok := r.events[id]; ok {
		return ev, nil
	}
	if r.missing[id] {
		return nil, nil
	}
	if err := r.fetch([]string{id}); err != nil {
		return nil, err
	}
	return r.events[id], nil
}

// walkAuthChain visits the auth chain of the start events (their auth events, recursively;
// not the start events themselves) breadth first, loading each level in one call. visit
// returns false to stop the walk from going past an event. seen is shared state: events in it
// are not visited again.
func (r *resolver) walkAuthChain(starts []*Event, seen map[string]bool, visit func(*Event) bool) error {
	var frontier []string
	push := func(ev *Event) {
		for _, id := range ev.AuthEventIDs() {
			if !seen[id] {
				seen[id] = true
				frontier = append(frontier, id)
			}
		}
	}
	for _, ev := range starts {
		push(ev)
	}
	for len(frontier) > 0 {
		level := frontier
		frontier = nil
		if err := r.fetch(level); err != nil {
			return err
		}
		for _, id := range level {
			ev := r.events[id]
			if ev == nil {
				continue
			}
			if visit(ev) {
				push(ev)
			}
		}
	}
	return nil
}

func (r *resolver) resolve(stateSets []StateMap, unconflicted StateMap, conflictedIDs []string) (StateMap, error) {
	if err := r.fetch(conflictedIDs); err != nil {
		return nil, err
	}
	conflicted := map[string]bool{}
	for _, id := range conflictedIDs {
		if r.events[id] != nil {
			conflicted[id] = true
		}
	}
	full, chainOfConflicted, err := r.authDifference(stateSets, unconflicted, conflicted)
	if err != nil {
		return nil, err
	}
	for id := range conflicted {
		full[id] = true
	}
	// Rooms v12 "Full conflicted set": add the conflicted state subgraph.
	if r.rv.StateRes == StateResV2_1 {
		for id := range r.conflictedSubgraph(conflicted, chainOfConflicted) {
			full[id] = true
		}
	}

	// Algorithm step 1: power events of the full conflicted set and their auth chains within it.
	powerSet := map[string]bool{}
	var powerEvents []*Event
	for id := range full {
		if ev := r.events[id]; ev != nil && isPowerEvent(ev, r.cache) {
			powerSet[id] = true
			powerEvents = append(powerEvents, ev)
		}
	}
	err = r.walkAuthChain(powerEvents, map[string]bool{}, func(ev *Event) bool {
		if full[ev.EventID()] {
			powerSet[ev.EventID()] = true
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	sortedPower, err := r.reverseTopologicalPowerOrder(powerSet)
	if err != nil {
		return nil, err
	}

	// Step 2: iterative auth checks from the unconflicted state (v2) or from nothing (v2.1).
	// For v2 the unconflicted map is read underneath partial instead of being copied into it.
	partial := StateMap{}
	var under StateMap
	if r.rv.StateRes == StateResV2 {
		under = unconflicted
	}
	if err := r.iterativeAuthChecks(partial, under, sortedPower); err != nil {
		return nil, err
	}

	// Step 3: the other events in mainline order of the resolved power levels.
	var others []*Event
	for id := range full {
		if ev := r.events[id]; ev != nil && !powerSet[id] {
			others = append(others, ev)
		}
	}
	resolvedPL, ok := partial[powerLevelsTuple]
	if !ok {
		resolvedPL = under[powerLevelsTuple]
	}
	if err := r.mainlineSort(others, resolvedPL); err != nil {
		return nil, err
	}

	// Step 4: iterative auth checks on the partially resolved state.
	if err := r.iterativeAuthChecks(partial, under, others); err != nil {
		return nil, err
	}

	// Step 5: the unconflicted state map wins.
	resolved := make(StateMap, len(unconflicted)+len(partial))
	for k, v := range partial {
		resolved[k] = v
	}
	for k, v := range unconflicted {
		resolved[k] = v
	}
	return resolved, nil
}

// authDifference computes the auth difference ∪Cᵢ − ∩Cᵢ (rooms v2 "Auth difference") and
// returns it as a set, together with the auth chain of the conflicted events.
//
// Cᵢ is the auth chain of Sᵢ. Every Sᵢ holds all of the unconflicted events, so with U the
// auth chain of the unconflicted events and Aᵢ that of Sᵢ's conflicted events,
// Cᵢ = U ∪ Aᵢ and ∪Cᵢ − ∩Cᵢ = (∪Aᵢ − ∩Aᵢ) − U. The Aᵢ are small; U is walked only to strike
// candidates out, never past an event of ∩Aᵢ (whose ancestors are all in ∩Aᵢ), and the walk
// ends as soon as no candidate is left.
func (r *resolver) authDifference(stateSets []StateMap, unconflicted StateMap, conflicted map[string]bool) (map[string]bool, map[string]bool, error) {
	inSets := map[string]int{}
	for _, s := range stateSets {
		var starts []*Event
		for _, id := range s {
			if conflicted[id] {
				starts = append(starts, r.events[id])
			}
		}
		seen := map[string]bool{}
		err := r.walkAuthChain(starts, seen, func(ev *Event) bool {
			inSets[ev.EventID()]++
			return true
		})
		if err != nil {
			return nil, nil, err
		}
	}
	chainOfConflicted := make(map[string]bool, len(inSets))
	candidates := map[string]bool{}
	for id, n := range inSets {
		chainOfConflicted[id] = true
		if n < len(stateSets) {
			candidates[id] = true
		}
	}
	if len(candidates) == 0 {
		return candidates, chainOfConflicted, nil
	}
	ids := make([]string, 0, len(unconflicted))
	for _, id := range unconflicted {
		ids = append(ids, id)
	}
	// The walk's order does not matter: it only strikes out candidates it reaches.
	if err := r.fetch(ids); err != nil {
		return nil, nil, err
	}
	starts := make([]*Event, 0, len(ids))
	for _, id := range ids {
		if ev := r.events[id]; ev != nil {
			starts = append(starts, ev)
		}
	}
	err := r.walkAuthChain(starts, make(map[string]bool, len(starts)), func(ev *Event) bool {
		id := ev.EventID()
		delete(candidates, id)
		return len(candidates) > 0 && inSets[id] < len(stateSets)
	})
	if err != nil {
		return nil, nil, err
	}
	return candidates, chainOfConflicted, nil
}

// conflictedSubgraph is the rooms v12 "conflicted state subgraph": every event on an
// auth_events path between two conflicted events. Those are the events of the conflicted
// events' auth chain from which another conflicted event can be reached.
func (r *resolver) conflictedSubgraph(conflicted, chainOfConflicted map[string]bool) map[string]bool {
	const (
		unvisited = iota
		inProgress
		done
	)
	state := map[string]int{}
	reaches := map[string]bool{}
	out := map[string]bool{}
	type frame struct {
		id   string
		next int
	}
	for start := range chainOfConflicted {
		if state[start] != unvisited {
			continue
		}
		stack := []frame{{id: start}}
		state[start] = inProgress
		for len(stack) > 0 {
			top := &stack[len(stack)-1]
			ev := r.events[top.id]
			var auth []string
			if ev != nil {
				auth = ev.AuthEventIDs()
			}
			if top.next < len(auth) {
				parent := auth[top.next]
				top.next++
				if conflicted[parent] {
					reaches[top.id] = true
				}
				if !chainOfConflicted[parent] {
					continue
				}
				switch state[parent] {
				case unvisited:
					state[parent] = inProgress
					stack = append(stack, frame{id: parent})
				case done:
					if reaches[parent] {
						reaches[top.id] = true
					}
				}
				continue
			}
			state[top.id] = done
			stack = stack[:len(stack)-1]
			if len(stack) > 0 && reaches[top.id] {
				reaches[stack[len(stack)-1].id] = true
			}
		}
	}
	for id := range chainOfConflicted {
		if reaches[id] {
			out[id] = true
		}
	}
	return out
}

// isPowerEvent is rooms v2 "Power events".
func isPowerEvent(ev *Event, cache *authCache) bool {
	if !ev.IsState() {
		return false
	}
	switch ev.Type() {
	case typePowerLevels, typeJoinRules:
		return true
	case typeMember:
		m := membershipCached(ev, cache)
		return (m == "leave" || m == "ban") && !ev.StateKeyEquals(ev.Sender())
	}
	return false
}

// createFor is the create event that governs ev: the one in its auth events, or in room
// versions that leave it out, the one its room ID names.
func (r *resolver) createFor(ev *Event) (*Event, error) {
	if r.rv.CreateEventNotInAuthEvents {
		roomID := ev.RoomID()
		if !strings.HasPrefix(roomID, "!") {
			return nil, nil
		}
		return r.get("$" + roomID[1:])
	}
	for _, id := range ev.AuthEventIDs() {
		a, err := r.get(id)
		if err != nil {
			return nil, err
		}
		if a != nil && a.Type() == typeCreate && a.StateKeyEquals("") {
			return a, nil
		}
	}
	return nil, nil
}

// senderPower is the power level of ev's sender according to ev's own auth events (rooms v2
// "Reverse topological power ordering").
func (r *resolver) senderPower(ev *Event) (int64, error) {
	if p, ok := r.power[ev]; ok {
		return p, nil
	}
	create, err := r.createFor(ev)
	if err != nil {
		return 0, err
	}
	var plEvent *Event
	for _, id := range ev.AuthEventIDs() {
		a, err := r.get(id)
		if err != nil {
			return 0, err
		}
		if a != nil && a.Type() == typePowerLevels && a.StateKeyEquals("") {
			plEvent = a
		}
	}
	var level int64
	if create != nil {
		key := [2]*Event{create, plEvent}
		pl, ok := r.levels[key]
		if !ok {
			// NOTSPEC: unparsable power levels give everyone level 0 here, as in Synapse.
			pl, err = RoomPowerLevels(create, plEvent)
			if err != nil {
				pl = nil
			}
			r.levels[key] = pl
		}
		if pl != nil {
			level = pl.UserLevel(ev.Sender())
		}
	}
	r.power[ev] = level
	return level, nil
}

// powerOrderHeap orders events by rooms v2 "Reverse topological power ordering": greater
// sender power level first, then smaller origin_server_ts, then smaller event ID.
type powerOrderHeap struct {
	events []*Event
	power  map[*Event]int64
}

func (h *powerOrderHeap) Len() int { return len(h.events) }
func (h *powerOrderHeap) Less(i, j int) bool {
	return powerOrderLess(h.events[i], h.events[j], h.power)
}
func (h *powerOrderHeap) Swap(i, j int) { h.events[i], h.events[j] = h.events[j], h.events[i] }
func (h *powerOrderHeap) Push(x any)    { h.events = append(h.events, x.(*Event)) }
func (h *powerOrderHeap) Pop() any {
	last := h.events[len(h.events)-1]
	h.events = h.events[:len(h.events)-1]
	return last
}

func powerOrderLess(x, y *Event, power map[*Event]int64) bool {
	if px, py := power[x], power[y]; px != py {
		return px > py
	}
	if x.OriginServerTS() != y.OriginServerTS() {
		return x.OriginServerTS() < y.OriginServerTS()
	}
	return x.EventID() < y.EventID()
}

// reverseTopologicalPowerOrder sorts the events of set with Kahn's algorithm over their
// auth_events edges, picking the smallest ready event at each step (rooms v2).
func (r *resolver) reverseTopologicalPowerOrder(set map[string]bool) ([]*Event, error) {
	inDegree := make(map[*Event]int, len(set))
	children := make(map[string][]*Event, len(set))
	h := &powerOrderHeap{power: r.power}
	for id := range set {
		ev := r.events[id]
		if ev == nil {
			continue
		}
		if _, err := r.senderPower(ev); err != nil {
			return nil, err
		}
		parents := map[string]bool{}
		for _, a := range ev.AuthEventIDs() {
			if set[a] && r.events[a] != nil && !parents[a] {
				parents[a] = true
				children[a] = append(children[a], ev)
			}
		}
		inDegree[ev] = len(parents)
	}
	for ev, d := range inDegree {
		if d == 0 {
			h.events = append(h.events, ev)
		}
	}
	heap.Init(h)
	sorted := make([]*Event, 0, len(inDegree))
	for h.Len() > 0 {
		ev := heap.Pop(h).(*Event)
		sorted = append(sorted, ev)
		for _, child := range children[ev.EventID()] {
			inDegree[child]--
			if inDegree[child] == 0 {
				heap.Push(h, child)
			}
		}
	}
	// Events left with a positive in-degree sit on an auth_events cycle, which only a
	// malformed room (v1/v2 event IDs) can have; they cannot be ordered and are left out.
	return sorted, nil
}

// powerLevelsAuthEvent is the m.room.power_levels event among ev's auth events, or nil.
func (r *resolver) powerLevelsAuthEvent(ev *Event) (*Event, error) {
	for _, id := range ev.AuthEventIDs() {
		a, err := r.get(id)
		if err != nil {
			return nil, err
		}
		if a != nil && a.Type() == typePowerLevels && a.StateKeyEquals("") {
			return a, nil
		}
	}
	return nil, nil
}

// mainlineSort orders events by rooms v2 "Mainline ordering" based on the power levels event
// plID (possibly ""): greater mainline position first, then smaller origin_server_ts, then
// smaller event ID.
func (r *resolver) mainlineSort(events []*Event, plID string) error {
	mainlineIndex := map[string]int{}
	if plID != "" {
		p, err := r.get(plID)
		if err != nil {
			return err
		}
		for i := 0; p != nil; i++ {
			if _, seen := mainlineIndex[p.EventID()]; seen {
				break
			}
			mainlineIndex[p.EventID()] = i
			if p, err = r.powerLevelsAuthEvent(p); err != nil {
				return err
			}
		}
	}
	clear(r.posMemo)
	positions := make(map[*Event]int, len(events))
	for _, ev := range events {
		pos, err := r.mainlinePosition(ev, mainlineIndex)
		if err != nil {
			return err
		}
		positions[ev] = pos
	}
	slices.SortFunc(events, func(x, y *Event) int {
		if px, py := positions[x], positions[y]; px != py {
			if px > py {
				return -1
			}
			return 1
		}
		if x.OriginServerTS() != y.OriginServerTS() {
			if x.OriginServerTS() < y.OriginServerTS() {
				return -1
			}
			return 1
		}
		return strings.Compare(x.EventID(), y.EventID())
	})
	return nil
}

// mainlinePosition follows ev's chain of power-levels auth events to the first one on the
// mainline and returns its index, or math.MaxInt if none is.
func (r *resolver) mainlinePosition(ev *Event, mainlineIndex map[string]int) (int, error) {
	var walked []string
	visited := map[string]bool{}
	pos := math.MaxInt
	cur, err := r.powerLevelsAuthEvent(ev)
	if err != nil {
		return 0, err
	}
	for cur != nil {
		id := cur.EventID()
		if i, ok := mainlineIndex[id]; ok {
			pos = i
			break
		}
		if p, ok := r.posMemo[id]; ok {
			pos = p
			break
		}
		if visited[id] {
			break
		}
		visited[id] = true
		walked = append(walked, id)
		if cur, err = r.powerLevelsAuthEvent(cur); err != nil {
			return 0, err
		}
	}
	for _, id := range walked {
		r.posMemo[id] = pos
	}
	return pos, nil
}

// iterativeAuthChecks is rooms v2 "Iterative auth checks": apply each event in order to
// partial if the authorization rules allow it against the state partial-over-under (under
// may be nil), falling back to the event's own (unrejected) auth events for state that
// neither has.
func (r *resolver) iterativeAuthChecks(partial, under StateMap, events []*Event) error {
	lookup := func(t StateTuple) (string, bool) {
		if id, ok := partial[t]; ok {
			return id, true
		}
		id, ok := under[t]
		return id, ok
	}
	for _, ev := range events {
		tuple, ok := ev.Tuple()
		if !ok {
			continue
		}
		authState := make(map[StateTuple]*Event, 8)
		for _, id := range ev.AuthEventIDs() {
			a, err := r.get(id)
			if err != nil {
				return err
			}
			if a == nil {
				continue
			}
			if t, ok := a.Tuple(); ok {
				authState[t] = a
			}
		}
		for _, t := range AuthEventSelection(r.rv, ev.Type(), ev.StateKey(), ev.Sender(), ev.Content()) {
			id, ok := lookup(t)
			if !ok {
				continue
			}
			a, err := r.get(id)
			if err != nil {
				return err
			}
			if a != nil {
				authState[t] = a
			}
		}
		// The create event is in the selection only before v12; from v12 the room ID names it.
		if id, ok := lookup(createTuple); ok {
			if a, err := r.get(id); err != nil {
				return err
			} else if a != nil {
				authState[createTuple] = a
			}
		}
		if authState[createTuple] == nil {
			create, err := r.createFor(ev)
			if err != nil {
				return err
			}
			if create != nil {
				authState[createTuple] = create
			}
		}
		if checkAuth(ev, authState, nil, r.cache) == nil {
			partial[tuple] = ev.EventID()
		}
	}
	return nil
}
