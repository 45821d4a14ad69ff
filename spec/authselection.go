package spec

import (
	"encoding/json"
	"fmt"
)

// Event types that the authorization rules read.
const (
	typeCreate           = "m.room.create"
	typeMember           = "m.room.member"
	typeJoinRules        = "m.room.join_rules"
	typePowerLevels      = "m.room.power_levels"
	typeThirdPartyInvite = "m.room.third_party_invite"
	typeAliases          = "m.room.aliases"
	typeRedaction        = "m.room.redaction"
)

var (
	createTuple      = StateTuple{Type: typeCreate}
	powerLevelsTuple = StateTuple{Type: typePowerLevels}
	joinRulesTuple   = StateTuple{Type: typeJoinRules}
)

// memberContent is the part of m.room.member content that auth selection and auth rules read.
type memberContent struct {
	Membership             *string          `json:"membership"`
	JoinAuthorisedVia      *json.RawMessage `json:"join_authorised_via_users_server"`
	ThirdPartyInviteRaw    json.RawMessage  `json:"third_party_invite"`
	joinAuthorisedViaValue string
}

func parseMemberContent(content json.RawMessage) (*memberContent, error) {
	var mc memberContent
	if err := json.Unmarshal(content, &mc); err != nil {
		return nil, err
	}
	if mc.JoinAuthorisedVia != nil {
		// A non-string value cannot name a user; it is kept as "" so that the restricted-join
		// rule rejects it.
		_ = json.Unmarshal(*mc.JoinAuthorisedVia, &mc.joinAuthorisedViaValue)
	}
	return &mc, nil
}

// thirdPartyInviteToken is content.third_party_invite.signed.token, if it is a string.
func (mc *memberContent) thirdPartyInviteToken() (string, bool) {
	if len(mc.ThirdPartyInviteRaw) == 0 {
		return "", false
	}
	var tpi struct {
		Signed struct {
			Token *string `json:"token"`
		} `json:"signed"`
	}
	if json.Unmarshal(mc.ThirdPartyInviteRaw, &tpi) != nil || tpi.Signed.Token == nil {
		return "", false
	}
	return *tpi.Signed.Token, true
}

// AuthEventSelection returns the state tuples whose current events become the auth_events of a
// new event (server-server API "Auth events selection"). The create event is included only in
// room versions that list it (room v12 does not: the room ID implies it). An m.room.create event
// has no auth events.
func AuthEventSelection(rv *RoomVersion, evType string, stateKey *string, sender string, content json.RawMessage) []StateTuple {
	if evType == typeCreate && stateKey != nil && *stateKey == "" {
		return nil
	}
	tuples := make([]StateTuple, 0, 6)
	if !rv.CreateEventNotInAuthEvents {
		tuples = append(tuples, createTuple)
	}
	tuples = append(tuples, powerLevelsTuple, StateTuple{Type: typeMember, StateKey: sender})
	if evType != typeMember || stateKey == nil {
		return tuples
	}
	if *stateKey != sender {
		tuples = append(tuples, StateTuple{Type: typeMember, StateKey: *stateKey})
	}
	mc, err := parseMemberContent(content)
	if err != nil || mc.Membership == nil {
		return tuples
	}
	switch *mc.Membership {
	case "join", "invite", "knock":
		tuples = append(tuples, joinRulesTuple)
	}
	if *mc.Membership == "invite" {
		if token, ok := mc.thirdPartyInviteToken(); ok {
			tuples = append(tuples, StateTuple{Type: typeThirdPartyInvite, StateKey: token})
		}
	}
	if *mc.Membership == "join" && rv.AllowRestrictedJoins && mc.joinAuthorisedViaValue != "" {
		via := StateTuple{Type: typeMember, StateKey: mc.joinAuthorisedViaValue}
		if via.StateKey != sender && via.StateKey != *stateKey {
			tuples = append(tuples, via)
		}
	}
	return tuples
}

// CheckAuthEventsValid applies the checks on an event's auth_events list itself (auth rules
// v1–v11 §2, v12 §3): no two entries for one (type, state_key); no entry that the auth events
// selection would not pick; an m.room.create entry present (before v12); every entry in the
// event's room. authEvents are the events the event's auth_events name, as loaded by the
// caller; rule §2.3/§3.3 (no rejected entries) is the caller's to enforce, since rejection is
// not a property of the event itself — pass only events that were not rejected, and a missing
// one is reported here.
func CheckAuthEventsValid(ev *Event, authEvents []*Event) error {
	rv := ev.Version()
	ids := ev.AuthEventIDs()
	if ev.Type() == typeCreate && ev.StateKeyEquals("") {
		if len(ids) != 0 || len(authEvents) != 0 {
			return authErrorf("the create event must not have auth events")
		}
		return nil
	}
	listed := make(map[string]bool, len(ids))
	for _, id := range ids {
		if listed[id] {
			return authErrorf("auth event %s is listed twice", id)
		}
		listed[id] = true
	}
	allowed := AuthEventSelection(rv, ev.Type(), ev.StateKey(), ev.Sender(), ev.Content())
	seen := make(map[StateTuple]bool, len(authEvents))
	provided := make(map[string]bool, len(authEvents))
	haveCreate := false
	for _, ae := range authEvents {
		if !listed[ae.EventID()] {
			return authErrorf("%s is not among the event's auth_events", ae.EventID())
		}
		provided[ae.EventID()] = true
		tuple, ok := ae.Tuple()
		if !ok {
			return authErrorf("auth event %s is not a state event", ae.EventID())
		}
		// Auth rules v1 §2.1 / v12 §3.1: no duplicate (type, state_key).
		if seen[tuple] {
			return authErrorf("duplicate auth events for %s", tuple)
		}
		seen[tuple] = true
		// Auth rules v1 §2.2 / v12 §3.2: only tuples the selection algorithm picks.
		if !containsTuple(allowed, tuple) {
			return authErrorf("auth event %s for %s is not in the auth events selection", ae.EventID(), tuple)
		}
		if tuple == createTuple {
			haveCreate = true
		}
		// Auth rules v1 §2.5 / v12 §3.5: every auth event is in the event's room.
		if ae.RoomID() != ev.RoomID() {
			return authErrorf("auth event %s is in room %s, not %s", ae.EventID(), ae.RoomID(), ev.RoomID())
		}
	}
	for _, id := range ids {
		if !provided[id] {
			return authErrorf("auth event %s is missing or rejected", id)
		}
	}
	// Auth rules v1 §2.4: an m.room.create event must be among the entries (not in v12).
	if !rv.CreateEventNotInAuthEvents && !haveCreate {
		return authErrorf("no m.room.create event among the auth events")
	}
	return nil
}

func containsTuple(tuples []StateTuple, t StateTuple) bool {
	for _, x := range tuples {
		if x == t {
			return true
		}
	}
	return false
}

// authErrorf builds an *AuthError.
func authErrorf(format string, args ...any) error {
	return &AuthError{Reason: fmt.Sprintf(format, args...)}
}
