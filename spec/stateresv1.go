package spec

import (
	"bytes"
	"cmp"
	"crypto/sha1"
	"fmt"
	"slices"
)

// State resolution v1 is the algorithm of room version 1 (rooms/v1.md "State resolution").
// The spec text is short and leaves several questions open; where it does, this file follows
// Synapse's synapse/state/v1.py, the implementation every room version 1 room was built with,
// and marks the place NOTSPEC:
//
//   - A key that only some of the states hold is not a conflict (the spec defines a conflict
//     as "different event_ids for the same (event_type, state_key)"), so it is kept.
//   - Conflicted events that cannot be loaded are left out; a key left with one event is
//     treated as unconflicted, and a key left with none is dropped.
//   - Every key of one pass (all m.room.member conflicts, all other conflicts) is resolved
//     against the same R, the one from before the pass, so that the result does not depend on
//     the order of the keys; R takes the pass's results only once the pass is over.
//   - An event is checked against the events of R that the auth events selection names for
//     it, as the authorization rules read nothing else.
//   - For "all other conflicts", if no event passes the auth checks the last one in the
//     ordering (lowest depth, then highest sha1(event_id)) is kept.
//   - m.room.join_rules and m.room.member conflicts are resolved in their pass whatever their
//     state key; m.room.power_levels conflicts only for the state key "".

// resolveStateV1 resolves stateSets with the room version 1 algorithm (rooms/v1.md "State
// resolution"): start R from the unconflicted state, then resolve the conflicts between
// m.room.power_levels events, m.room.join_rules events, m.room.member events and finally all
// others, each pass against the R left by the ones before.
func resolveStateV1(rv *RoomVersion, stateSets []StateMap, load LoadEvents) (StateMap, error) {
	resolved, conflicted := separateStatesV1(stateSets)
	if len(conflicted) == 0 {
		return resolved, nil
	}
	r := &resolverV1{rv: rv, events: map[string]*Event{}, cache: newAuthCache()}

	var conflictedIDs []string
	for _, ids := range conflicted {
		conflictedIDs = append(conflictedIDs, ids...)
	}
	if err := r.fetch(load, conflictedIDs); err != nil {
		return nil, err
	}
	groups := make(map[StateTuple][]*Event, len(conflicted))
	for key, ids := range conflicted {
		var events []*Event
		for _, id := range ids {
			if ev := r.events[id]; ev != nil {
				events = append(events, ev)
			}
		}
		switch len(events) {
		case 0:
			// NOTSPEC: none of the conflicting events can be loaded; Synapse drops the key.
		case 1:
			// NOTSPEC: the only loadable event is unconflicted, as in Synapse.
			resolved[key] = events[0].EventID()
		default:
			slices.SortFunc(events, compareV1)
			groups[key] = events
		}
	}

	// Load, in one call, the unconflicted events that the auth checks can read: those under
	// the auth events selection of every conflicted event. Conflict winners are loaded already.
	var authIDs []string
	for _, events := range groups {
		for _, ev := range events {
			for _, t := range authTuplesV1(ev) {
				if id, ok := resolved[t]; ok {
					authIDs = append(authIDs, id)
				}
			}
		}
	}
	if err := r.fetch(load, authIDs); err != nil {
		return nil, err
	}
	if err := r.checkOneRoom(); err != nil {
		return nil, err
	}

	// rooms/v1.md: power levels, then join rules, then members: "Repeat the above process".
	r.resolveAuthPass(resolved, groups, func(t StateTuple) bool { return t == powerLevelsTuple })
	r.resolveAuthPass(resolved, groups, func(t StateTuple) bool { return t.Type == typeJoinRules })
	r.resolveAuthPass(resolved, groups, func(t StateTuple) bool { return t.Type == typeMember })
	r.resolveOthers(resolved, groups)
	return resolved, nil
}

// separateStatesV1 returns R's starting point, "the union of the states to be resolved,
// excluding any conflicting events", and for each conflicted key its distinct event IDs
// (rooms/v1.md "State resolution": "A conflict occurs between states where those states have
// different event_ids for the same (event_type, state_key)").
func separateStatesV1(stateSets []StateMap) (StateMap, map[StateTuple][]string) {
	union := StateMap{}
	conflicted := map[StateTuple][]string{}
	for _, s := range stateSets {
		for key, id := range s {
			if ids, ok := conflicted[key]; ok {
				if !slices.Contains(ids, id) {
					conflicted[key] = append(ids, id)
				}
				continue
			}
			first, ok := union[key]
			if !ok {
				// NOTSPEC: a key missing from other states is no conflict, as in Synapse.
				union[key] = id
				continue
			}
			if first != id {
				conflicted[key] = []string{first, id}
				delete(union, key)
			}
		}
	}
	return union, conflicted
}

// compareV1 orders events as Synapse's _ordered_events does: greater depth first, then
// smaller sha1(event_id). The spec's two orderings are this one ("the event with the highest
// depth and lowest sha1(event_id)", for all other conflicts) and its reverse ("ascending depth
// then descending sha1(event_id)", for the power-levels, join-rules and member passes).
func compareV1(x, y *Event) int {
	if c := cmp.Compare(y.Depth(), x.Depth()); c != 0 {
		return c
	}
	hx, hy := sha1.Sum([]byte(x.EventID())), sha1.Sum([]byte(y.EventID()))
	return bytes.Compare(hx[:], hy[:])
}

// authTuplesV1 are the keys of R that the authorization rules may read to check ev: its auth
// events selection, with the create event always among them.
func authTuplesV1(ev *Event) []StateTuple {
	tuples := AuthEventSelection(ev.Version(), ev.Type(), ev.StateKey(), ev.Sender(), ev.Content())
	if !containsTuple(tuples, createTuple) {
		tuples = append(tuples, createTuple)
	}
	return tuples
}

// resolverV1 holds one v1 resolution's loaded events.
type resolverV1 struct {
	rv     *RoomVersion
	events map[string]*Event
	cache  *authCache
}

// fetch loads the IDs not loaded yet in one call. Events that load does not return, or
// returns under another ID, stay unknown.
func (r *resolverV1) fetch(load LoadEvents, ids []string) error {
	var want []string
	wanted := map[string]bool{}
	for _, id := range ids {
		if _, ok := r.events[id]; !ok && !wanted[id] {
			wanted[id] = true
			want = append(want, id)
		}
	}
	if len(want) == 0 {
		return nil
	}
	got, err := load(want)
	if err != nil {
		return fmt.Errorf("state resolution v1: load events: %w", err)
	}
	for _, id := range want {
		if ev := got[id]; ev != nil && ev.EventID() == id {
			r.events[id] = ev
		}
	}
	return nil
}

// checkOneRoom makes sure every loaded event belongs to one room of version rv, as Synapse
// does before resolving: state from another room can only come from a storage bug.
func (r *resolverV1) checkOneRoom() error {
	var roomID, firstID string
	for id, ev := range r.events {
		if ev.Version().ID != r.rv.ID {
			return fmt.Errorf("state resolution v1: event %s is of room version %s, not %s", id, ev.Version().ID, r.rv.ID)
		}
		if firstID == "" {
			roomID, firstID = ev.RoomID(), id
			continue
		}
		if ev.RoomID() != roomID {
			return fmt.Errorf("state resolution v1: events %s and %s are in different rooms (%s, %s)", firstID, id, roomID, ev.RoomID())
		}
	}
	return nil
}

// allowed reports whether the authorization rules allow ev in a room whose state is state,
// with override (if not nil) taking the place of whatever state holds at its own key.
func (r *resolverV1) allowed(ev *Event, state StateMap, override *Event) bool {
	var overrideKey StateTuple
	if override != nil {
		overrideKey, _ = override.Tuple()
	}
	tuples := authTuplesV1(ev)
	authState := make(map[StateTuple]*Event, len(tuples))
	for _, t := range tuples {
		if override != nil && t == overrideKey {
			authState[t] = override
			continue
		}
		if a := r.events[state[t]]; a != nil {
			authState[t] = a
		}
	}
	return checkAuth(ev, authState, nil, r.cache) == nil
}

// resolveAuthPass is one pass of the power-levels, join-rules and member steps (rooms/v1.md
// "State resolution") over the conflicted keys that inPass selects. For each key, with the
// events in ascending depth then descending sha1(event_id) order: the first event goes into R;
// each following one goes into R if the authorization rules allow it in R, and the first one
// they do not allow ends the key's pass. The winners enter resolved once the pass is over.
func (r *resolverV1) resolveAuthPass(resolved StateMap, groups map[StateTuple][]*Event, inPass func(StateTuple) bool) {
	winners := StateMap{}
	for key, events := range groups {
		if !inPass(key) {
			continue
		}
		// events is in compareV1 order; the pass walks it backwards.
		current := events[len(events)-1]
		for i := len(events) - 2; i >= 0; i-- {
			if !r.allowed(events[i], resolved, current) {
				break
			}
			current = events[i]
		}
		winners[key] = current.EventID()
		delete(groups, key)
	}
	for key, id := range winners {
		resolved[key] = id
	}
}

// resolveOthers is the last step of rooms/v1.md "State resolution": for every conflict left,
// "pick the event with the highest depth and lowest sha1(event_id) that passes authentication
// in R and add it to R".
func (r *resolverV1) resolveOthers(resolved StateMap, groups map[StateTuple][]*Event) {
	winners := StateMap{}
	for key, events := range groups {
		// NOTSPEC: if none passes, Synapse keeps the last one, of the lowest depth.
		winner := events[len(events)-1]
		for _, ev := range events {
			if r.allowed(ev, resolved, nil) {
				winner = ev
				break
			}
		}
		winners[key] = winner.EventID()
	}
	for key, id := range winners {
		resolved[key] = id
	}
}
