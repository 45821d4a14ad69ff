package spec

import (
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// ErrNotAllowed is wrapped by every *AuthError: the event fails the authorization rules.
var ErrNotAllowed = errors.New("event not allowed by the authorization rules")

// AuthError says why an event failed the authorization rules. Clients get it as M_FORBIDDEN
// with Reason as the message.
type AuthError struct {
	Reason string
}

func (e *AuthError) Error() string { return "forbidden: " + e.Reason }

// Unwrap makes errors.Is(err, ErrNotAllowed) true.
func (e *AuthError) Unwrap() error { return ErrNotAllowed }

// AuthOptions supplies the checks of the authorization rules that need more than the events
// themselves.
type AuthOptions struct {
	// VerifySignedBy reports whether ev carries a valid signature of serverName. It implements
	// auth rules v8+ "If content has a join_authorised_via_users_server property: if the event
	// is not validly signed by the homeserver of the user ID denoted by the key, reject".
	// When nil that rule is skipped, and the caller's signature checks (checks on receipt of
	// a PDU, step 2) must have verified the authorising server's signature, as Synapse does.
	VerifySignedBy func(ev *Event, serverName string) error
}

// CheckAuth applies the authorization rules of ev's room version to ev against authState: the
// state the event is checked against (its auth events, the state before it, or the current
// state), keyed by (type, state_key). authState must hold the room's m.room.create event under
// (m.room.create, ""); other entries are read only where the rules mention them. It returns nil
// when the event is allowed and an *AuthError otherwise.
//
// Rules on the auth_events list itself (duplicates, selection, rejected entries) are checked by
// CheckAuthEventsValid.
func CheckAuth(ev *Event, authState map[StateTuple]*Event) error {
	return checkAuth(ev, authState, nil, nil)
}

// CheckAuthWith is CheckAuth with the checks of opts.
func CheckAuthWith(ev *Event, authState map[StateTuple]*Event, opts *AuthOptions) error {
	return checkAuth(ev, authState, opts, nil)
}

// authCache remembers what the auth rules parsed out of event content, so that state
// resolution, which checks many events against much the same state, parses each event once.
type authCache struct {
	powerLevels map[*Event]*PowerLevels
	plErrors    map[*Event]error
	membership  map[*Event]string
	joinRule    map[*Event]string
	creators    map[*Event][]string
}

func newAuthCache() *authCache {
	return &authCache{
		powerLevels: map[*Event]*PowerLevels{},
		plErrors:    map[*Event]error{},
		membership:  map[*Event]string{},
		joinRule:    map[*Event]string{},
		creators:    map[*Event][]string{},
	}
}

// authCheck carries one run of the rules.
type authCheck struct {
	ev     *Event
	rv     *RoomVersion
	state  map[StateTuple]*Event
	create *Event
	opts   *AuthOptions
	cache  *authCache

	levels *PowerLevels
}

func checkAuth(ev *Event, authState map[StateTuple]*Event, opts *AuthOptions, cache *authCache) error {
	rv := ev.Version()
	// Auth rules v1 §1 / v12 §1: the create event.
	if ev.Type() == typeCreate {
		return checkCreateEvent(ev)
	}
	create := authState[createTuple]
	if create == nil {
		return authErrorf("no m.room.create event in the auth state")
	}
	if rv.RoomIDIsCreateEventHash {
		// Auth rules v12 §2: the room ID is the create event's ID with sigil "!".
		if !strings.HasPrefix(create.EventID(), "$") || ev.RoomID() != "!"+create.EventID()[1:] {
			return authErrorf("room ID %s does not name create event %s", ev.RoomID(), create.EventID())
		}
	}
	// Auth rules v1 §2.5 / v12 §3.5: every auth event belongs to the event's room. In v12 the
	// create event has no room_id; rule §2 above ties it to the room instead.
	for tuple, ae := range authState {
		if ae == nil || (tuple == createTuple && rv.RoomIDIsCreateEventHash) {
			continue
		}
		if ae.RoomID() != ev.RoomID() {
			return authErrorf("auth event %s is in room %s, not %s", ae.EventID(), ae.RoomID(), ev.RoomID())
		}
	}
	a := &authCheck{ev: ev, rv: rv, state: authState, create: create, opts: opts, cache: cache}
	return a.run()
}

// checkCreateEvent is auth rules §1 (all versions).
func checkCreateEvent(ev *Event) error {
	rv := ev.Version()
	if len(ev.PrevEventIDs()) > 0 {
		return authErrorf("create event has prev_events")
	}
	if rv.RoomIDIsCreateEventHash {
		// v12 §1.2: the room ID is derived from the create event, which has none.
		if ev.RoomID() != "" && !ev.roomIDDerived {
			return authErrorf("create event has a room_id")
		}
	} else if serverNameOf(ev.RoomID()) != serverNameOf(ev.Sender()) || serverNameOf(ev.Sender()) == "" {
		// v1 §1.2: the room ID's domain is the sender's.
		return authErrorf("room ID domain does not match the sender's")
	}
	var content map[string]json.RawMessage
	if err := json.Unmarshal(ev.Content(), &content); err != nil {
		return authErrorf("create event content is not an object")
	}
	// §1.3: a room_version, when present, must be known.
	if raw, ok := content["room_version"]; ok {
		var id string
		if json.Unmarshal(raw, &id) != nil {
			return authErrorf("room_version is not a string")
		}
		if _, known := LookupRoomVersion(id); !known {
			return authErrorf("unknown room version %q", id)
		}
	}
	// v12 §1.4: additional_creators is an array of valid user IDs.
	if rv.CreatorsHaveInfinitePower {
		if raw, ok := content["additional_creators"]; ok {
			var creators []json.RawMessage
			if json.Unmarshal(raw, &creators) != nil || creators == nil {
				return authErrorf("additional_creators is not an array")
			}
			for _, c := range creators {
				var id string
				if json.Unmarshal(c, &id) != nil || !validUserIDForAuth(id) {
					return authErrorf("additional_creators entry %s is not a user ID", c)
				}
			}
		}
	}
	// v1–v10 §1.4: content.creator is required.
	if !rv.CreatorInSender {
		if _, ok := content["creator"]; !ok {
			return authErrorf("create event has no creator")
		}
	}
	return nil
}

func (a *authCheck) run() error {
	ev, rv := a.ev, a.rv
	// v1 §3 / v12 §4: m.federate false keeps other servers out.
	var createContent struct {
		Federate *bool `json:"m.federate"`
	}
	if json.Unmarshal(a.create.Content(), &createContent) == nil && createContent.Federate != nil && !*createContent.Federate {
		if serverNameOf(ev.Sender()) != serverNameOf(a.create.Sender()) {
			return authErrorf("room is not federated and %s is from another server", ev.Sender())
		}
	}
	// v1–v5 §4: m.room.aliases is authorised by the sender's domain alone.
	if rv.SpecialCaseAliasesAuth && ev.Type() == typeAliases {
		if ev.StateKey() == nil {
			return authErrorf("m.room.aliases without a state_key")
		}
		if serverNameOf(ev.Sender()) != *ev.StateKey() {
			return authErrorf("m.room.aliases state_key must be the sender's domain")
		}
		return nil
	}
	levels, err := a.powerLevels()
	if err != nil {
		return err
	}
	if ev.Type() == typeMember {
		return a.checkMember()
	}
	// v12 §6: the sender must be joined.
	if a.membershipOf(ev.Sender()) != "join" {
		return authErrorf("%s is not joined to the room", ev.Sender())
	}
	senderLevel := levels.UserLevel(ev.Sender())
	// v12 §7: m.room.third_party_invite needs the invite level.
	if ev.Type() == typeThirdPartyInvite {
		if senderLevel >= levels.Invite {
			return nil
		}
		return authErrorf("sender's power level is below the invite level")
	}
	// v12 §8: the event type's required power level.
	if required := levels.EventLevel(ev.Type(), ev.IsState()); required > senderLevel {
		return authErrorf("sending %s requires power level %d", ev.Type(), required)
	}
	// v12 §9: state keys that are user IDs belong to that user.
	if sk := ev.StateKey(); sk != nil && strings.HasPrefix(*sk, "@") && *sk != ev.Sender() {
		return authErrorf("state key %s is another user's", *sk)
	}
	if ev.Type() == typePowerLevels {
		return a.checkPowerLevels(levels, senderLevel)
	}
	// v1, v2 §11: redactions need the redact level or the same origin as the redacted event.
	// Only these versions have origin-generated event IDs that carry a domain.
	if rv.EventIDFormat == EventIDOriginGenerated && ev.Type() == typeRedaction {
		if senderLevel >= levels.Redact {
			return nil
		}
		if target := ev.Redacts(); target != "" && serverNameOf(target) == serverNameOf(ev.EventID()) {
			return nil
		}
		return authErrorf("redacting another server's event requires the redact level")
	}
	return nil
}

// checkMember is auth rules v12 §5 (v1 §5, v3 §5, v8 §4).
func (a *authCheck) checkMember() error {
	ev, rv := a.ev, a.rv
	sk := ev.StateKey()
	if sk == nil {
		return authErrorf("m.room.member without a state_key")
	}
	target := *sk
	mc, err := parseMemberContent(ev.Content())
	if err != nil || mc.Membership == nil {
		return authErrorf("m.room.member without a membership")
	}
	// v8+ §4.2: the authorising server must have signed the join.
	if rv.AllowRestrictedJoins && mc.JoinAuthorisedVia != nil && a.opts != nil && a.opts.VerifySignedBy != nil {
		server := serverNameOf(mc.joinAuthorisedViaValue)
		if server == "" {
			return authErrorf("join_authorised_via_users_server is not a user ID")
		}
		if err := a.opts.VerifySignedBy(ev, server); err != nil {
			return authErrorf("not signed by the authorising server %s: %v", server, err)
		}
	}
	levels := a.levels
	sender := ev.Sender()
	senderMembership := a.membershipOf(sender)
	switch *mc.Membership {
	case "join":
		// §5.3.1: the creator's own join right after the create event.
		prev := ev.PrevEventIDs()
		if len(prev) == 1 && prev[0] == a.create.EventID() {
			if creators := a.creators(); len(creators) > 0 && creators[0] == target {
				return nil
			}
		}
		if sender != target {
			return authErrorf("cannot join on behalf of %s", target)
		}
		if senderMembership == "ban" {
			return authErrorf("%s is banned", sender)
		}
		joinRule := a.joinRule()
		switch {
		case joinRule == "invite" || (joinRule == "knock" && rv.AllowKnocking):
			if senderMembership == "invite" || senderMembership == "join" {
				return nil
			}
			return authErrorf("join rule %s requires an invite", joinRule)
		case (joinRule == "restricted" && rv.AllowRestrictedJoins) || (joinRule == "knock_restricted" && rv.AllowKnockRestricted):
			if senderMembership == "invite" || senderMembership == "join" {
				return nil
			}
			via := mc.joinAuthorisedViaValue
			if via == "" {
				return authErrorf("restricted join without join_authorised_via_users_server")
			}
			if a.membershipOf(via) != "join" {
				return authErrorf("authorising user %s is not joined", via)
			}
			if levels.UserLevel(via) < levels.Invite {
				return authErrorf("authorising user %s cannot invite", via)
			}
			return nil
		case joinRule == "public":
			return nil
		}
		return authErrorf("join rule %q does not allow joining", joinRule)
	case "invite":
		if len(mc.ThirdPartyInviteRaw) > 0 {
			return a.checkThirdPartyInvite(target, mc.ThirdPartyInviteRaw)
		}
		if senderMembership != "join" {
			return authErrorf("inviter %s is not joined", sender)
		}
		if m := a.membershipOf(target); m == "join" || m == "ban" {
			return authErrorf("cannot invite %s whose membership is %s", target, m)
		}
		if levels.UserLevel(sender) >= levels.Invite {
			return nil
		}
		return authErrorf("sender's power level is below the invite level")
	case "leave":
		if sender == target {
			m := senderMembership
			if m == "invite" || m == "join" || (m == "knock" && rv.AllowKnocking) {
				return nil
			}
			return authErrorf("cannot leave with membership %q", m)
		}
		if senderMembership != "join" {
			return authErrorf("%s is not joined", sender)
		}
		senderLevel := levels.UserLevel(sender)
		if a.membershipOf(target) == "ban" && senderLevel < levels.Ban {
			return authErrorf("unbanning requires the ban level")
		}
		if senderLevel >= levels.Kick && levels.UserLevel(target) < senderLevel {
			return nil
		}
		return authErrorf("kicking %s requires the kick level and a higher power level", target)
	case "ban":
		if senderMembership != "join" {
			return authErrorf("%s is not joined", sender)
		}
		senderLevel := levels.UserLevel(sender)
		if senderLevel >= levels.Ban && levels.UserLevel(target) < senderLevel {
			return nil
		}
		return authErrorf("banning %s requires the ban level and a higher power level", target)
	case "knock":
		if !rv.AllowKnocking {
			break
		}
		joinRule := a.joinRule()
		if joinRule != "knock" && !(joinRule == "knock_restricted" && rv.AllowKnockRestricted) {
			return authErrorf("join rule %q does not allow knocking", joinRule)
		}
		if sender != target {
			return authErrorf("cannot knock on behalf of %s", target)
		}
		if m := senderMembership; m == "ban" || m == "invite" || m == "join" {
			return authErrorf("cannot knock with membership %s", m)
		}
		return nil
	}
	return authErrorf("unknown membership %q", *mc.Membership)
}

// checkThirdPartyInvite is auth rules v12 §5.4.1.
func (a *authCheck) checkThirdPartyInvite(target string, raw json.RawMessage) error {
	if a.membershipOf(target) == "ban" {
		return authErrorf("%s is banned", target)
	}
	var tpi struct {
		Signed json.RawMessage `json:"signed"`
	}
	if json.Unmarshal(raw, &tpi) != nil || len(tpi.Signed) == 0 || string(tpi.Signed) == "null" {
		return authErrorf("third_party_invite has no signed object")
	}
	var signed struct {
		MXID       *string                      `json:"mxid"`
		Token      *string                      `json:"token"`
		Signatures map[string]map[string]string `json:"signatures"`
	}
	if json.Unmarshal(tpi.Signed, &signed) != nil || signed.MXID == nil || signed.Token == nil {
		return authErrorf("third_party_invite.signed needs mxid and token")
	}
	if *signed.MXID != target {
		return authErrorf("third_party_invite mxid does not match the state key")
	}
	invite := a.state[StateTuple{Type: typeThirdPartyInvite, StateKey: *signed.Token}]
	if invite == nil {
		return authErrorf("no m.room.third_party_invite for the token")
	}
	if invite.Sender() != a.ev.Sender() {
		return authErrorf("sender did not send the m.room.third_party_invite")
	}
	var keys struct {
		PublicKey  *string `json:"public_key"`
		PublicKeys []struct {
			PublicKey string `json:"public_key"`
		} `json:"public_keys"`
	}
	_ = json.Unmarshal(invite.Content(), &keys)
	var publicKeys []string
	if keys.PublicKey != nil {
		publicKeys = append(publicKeys, *keys.PublicKey)
	}
	for _, k := range keys.PublicKeys {
		publicKeys = append(publicKeys, k.PublicKey)
	}
	message, err := signedObjectMessage(tpi.Signed)
	if err != nil {
		return authErrorf("third_party_invite.signed is not valid JSON: %v", err)
	}
	for _, sigs := range signed.Signatures {
		for _, sig := range sigs {
			sigBytes, ok := decodeEitherBase64(sig)
			if !ok || len(sigBytes) != ed25519.SignatureSize {
				continue
			}
			for _, pk := range publicKeys {
				key, ok := decodeEitherBase64(pk)
				if !ok || len(key) != ed25519.PublicKeySize {
					continue
				}
				if ed25519.Verify(ed25519.PublicKey(key), message, sigBytes) {
					return nil
				}
			}
		}
	}
	return authErrorf("no third_party_invite signature matches the invite's public keys")
}

// checkPowerLevels is auth rules v12 §10 (v1 §10, v8 §9).
func (a *authCheck) checkPowerLevels(current *PowerLevels, senderLevel int64) error {
	ev, rv := a.ev, a.rv
	// v10+ §10.1–10.3 (and v1 §10.1 for users): every value is an integer (or, before v10, a
	// string holding one).
	// NOTSPEC: before v10 the rules only validate "users"; other malformed values make Synapse
	// fail the event once it compares them, which rejecting here matches.
	proposed, err := ParsePowerLevels(ev.Content(), rv)
	if err != nil {
		return authErrorf("%v", err)
	}
	for user := range proposed.Users {
		if !validUserIDForAuth(user) {
			return authErrorf("users key %q is not a user ID", user)
		}
	}
	// v12 §10.4: creators cannot be listed in users.
	if rv.CreatorsHaveInfinitePower {
		for _, c := range a.creators() {
			if _, ok := proposed.Users[c]; ok {
				return authErrorf("room creator %s cannot be given a power level", c)
			}
		}
	}
	// v12 §10.5: the first power levels event is allowed.
	if a.state[powerLevelsTuple] == nil {
		return nil
	}
	// v12 §10.6: top-level levels added, changed or removed.
	for _, k := range scalarKeys {
		oldHas, newHas := current.present&k.bit != 0, proposed.present&k.bit != 0
		oldV, newV := *k.get(current), *k.get(proposed)
		if oldHas == newHas && (!oldHas || oldV == newV) {
			continue
		}
		if oldHas && oldV > senderLevel {
			return authErrorf("cannot change %s from %d above your level", k.name, oldV)
		}
		if newHas && newV > senderLevel {
			return authErrorf("cannot set %s to %d above your level", k.name, newV)
		}
	}
	// v12 §10.7–10.8 (notifications from v6).
	if err := checkLevelMapChange("events", current.Events, proposed.Events, senderLevel); err != nil {
		return err
	}
	if rv.NotificationsPowerLevels {
		if err := checkLevelMapChange("notifications", current.Notifications, proposed.Notifications, senderLevel); err != nil {
			return err
		}
	}
	// v12 §10.9: users changed or removed, other than the sender's own entry.
	for user, oldV := range current.Users {
		if newV, ok := proposed.Users[user]; ok && newV == oldV {
			continue
		}
		if user != ev.Sender() && oldV >= senderLevel {
			return authErrorf("cannot change the level of %s, who is not below you", user)
		}
	}
	// v12 §10.10: users added or changed.
	for user, newV := range proposed.Users {
		if oldV, ok := current.Users[user]; ok && oldV == newV {
			continue
		}
		if newV > senderLevel {
			return authErrorf("cannot give %s level %d above your own", user, newV)
		}
	}
	return nil
}

// checkLevelMapChange is auth rules v12 §10.7 and §10.8 for one of "events", "notifications".
func checkLevelMapChange(name string, current, proposed map[string]int64, senderLevel int64) error {
	for k, oldV := range current {
		if newV, ok := proposed[k]; ok && newV == oldV {
			continue
		}
		if oldV > senderLevel {
			return authErrorf("cannot change %s[%q] from %d above your level", name, k, oldV)
		}
	}
	for k, newV := range proposed {
		if oldV, ok := current[k]; ok && oldV == newV {
			continue
		}
		if newV > senderLevel {
			return authErrorf("cannot set %s[%q] to %d above your level", name, k, newV)
		}
	}
	return nil
}

// powerLevels are the levels in force in the auth state (defaults without a power-levels
// event), with the room's creators where they have infinite power.
func (a *authCheck) powerLevels() (*PowerLevels, error) {
	if a.levels != nil {
		return a.levels, nil
	}
	plEvent := a.state[powerLevelsTuple]
	if plEvent == nil {
		a.levels = DefaultPowerLevels(a.rv, a.creators())
		return a.levels, nil
	}
	parsed, err := a.parsedPowerLevels(plEvent)
	if err != nil {
		return nil, authErrorf("current power levels are invalid: %v", err)
	}
	if a.rv.CreatorsHaveInfinitePower {
		withCreators := *parsed
		withCreators.creators = a.creators()
		parsed = &withCreators
	}
	a.levels = parsed
	return parsed, nil
}

func (a *authCheck) parsedPowerLevels(plEvent *Event) (*PowerLevels, error) {
	if a.cache == nil {
		return ParsePowerLevels(plEvent.Content(), a.rv)
	}
	if pl, ok := a.cache.powerLevels[plEvent]; ok {
		return pl, nil
	}
	if err, ok := a.cache.plErrors[plEvent]; ok {
		return nil, err
	}
	pl, err := ParsePowerLevels(plEvent.Content(), a.rv)
	if err != nil {
		a.cache.plErrors[plEvent] = err
		return nil, err
	}
	a.cache.powerLevels[plEvent] = pl
	return pl, nil
}

func (a *authCheck) creators() []string {
	if a.cache == nil {
		return RoomCreators(a.create)
	}
	if c, ok := a.cache.creators[a.create]; ok {
		return c
	}
	c := RoomCreators(a.create)
	a.cache.creators[a.create] = c
	return c
}

// membershipOf is the user's membership in the auth state; "leave" when there is none.
func (a *authCheck) membershipOf(user string) string {
	ev := a.state[StateTuple{Type: typeMember, StateKey: user}]
	if ev == nil {
		return "leave"
	}
	return membershipCached(ev, a.cache)
}

func membershipCached(ev *Event, cache *authCache) string {
	if cache != nil {
		if m, ok := cache.membership[ev]; ok {
			return m
		}
	}
	m, err := ev.Membership()
	if err != nil {
		m = ""
	}
	if cache != nil {
		cache.membership[ev] = m
	}
	return m
}

// joinRule is content.join_rule of the join rules in the auth state.
// NOTSPEC: without a join rules event, or without a join_rule in it, the rules name no join
// rule; Synapse treats the room as "invite", so invited and joined users may still join.
func (a *authCheck) joinRule() string {
	ev := a.state[joinRulesTuple]
	if ev == nil {
		return "invite"
	}
	if a.cache != nil {
		if r, ok := a.cache.joinRule[ev]; ok {
			return r
		}
	}
	var c struct {
		JoinRule *json.RawMessage `json:"join_rule"`
	}
	rule := ""
	if json.Unmarshal(ev.Content(), &c) == nil {
		if c.JoinRule == nil {
			rule = "invite"
		} else if json.Unmarshal(*c.JoinRule, &rule) != nil {
			rule = ""
		}
	}
	if a.cache != nil {
		a.cache.joinRule[ev] = rule
	}
	return rule
}

// serverNameOf is the part of a user, room (before v12) or event (v1, v2) ID after the first
// colon; "" if there is none.
func serverNameOf(id string) string {
	i := strings.IndexByte(id, ':')
	if i < 0 {
		return ""
	}
	return id[i+1:]
}

// validUserIDForAuth is the user ID check the auth rules apply to power-level users keys and
// additional_creators: the one event parsing applies to sender (at most 255 bytes, parsed
// by ParseUserID with historical localparts accepted).
func validUserIDForAuth(id string) bool {
	if len(id) > 255 {
		return false
	}
	_, err := ParseUserID(id)
	return err == nil
}

func decodeEitherBase64(s string) ([]byte, bool) {
	if b, err := DecodeBase64(s); err == nil {
		return b, true
	}
	if b, err := DecodeBase64URL(s); err == nil {
		return b, true
	}
	return nil, false
}

// signedObjectMessage is the byte string a signed JSON object's signatures cover (appendices
// "Signing JSON"): its canonical JSON without "signatures" and "unsigned".
func signedObjectMessage(signed json.RawMessage) ([]byte, error) {
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(signed, &obj); err != nil {
		return nil, err
	}
	if obj == nil {
		return nil, fmt.Errorf("not a JSON object")
	}
	delete(obj, "signatures")
	delete(obj, "unsigned")
	stripped, err := json.Marshal(obj)
	if err != nil {
		return nil, err
	}
	return CanonicalJSONLenient(stripped)
}
