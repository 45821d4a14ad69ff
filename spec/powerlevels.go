package spec

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
)

// InfinitePowerLevel is the power level of a room creator in room versions whose creators have
// infinite power (room v12 auth rules, "room creators"). Real power levels are bounded by
// ±(2^53-1) in those versions, so every comparison against a real level behaves as "infinity".
const InfinitePowerLevel int64 = math.MaxInt64

// ErrBadPowerLevels is wrapped by ParsePowerLevels errors.
var ErrBadPowerLevels = errors.New("invalid m.room.power_levels content")

// Default levels (m.room.power_levels schema; server-server API "Definitions").
const (
	defaultBanLevel          = 50
	defaultKickLevel         = 50
	defaultRedactLevel       = 50
	defaultInviteLevel       = 0
	defaultEventsDefault     = 0
	defaultStateDefault      = 50
	defaultUsersDefault      = 0
	defaultNotificationLevel = 50
	creatorLevelWithoutPL    = 100
)

// Bits recording which top-level integer keys a power-levels event sets, so that the
// power-level change rules can tell "added, changed or removed" apart from "left at default".
const (
	hasBan = 1 << iota
	hasKick
	hasInvite
	hasRedact
	hasEventsDefault
	hasStateDefault
	hasUsersDefault
)

// PowerLevels is the parsed content of an m.room.power_levels event, with the defaults of the
// m.room.power_levels schema filled in, plus the room's creators where they have infinite power.
type PowerLevels struct {
	Ban           int64
	Kick          int64
	Invite        int64
	Redact        int64
	EventsDefault int64
	StateDefault  int64
	UsersDefault  int64
	// Events, Notifications and Users hold only the entries the content sets.
	Events        map[string]int64
	Notifications map[string]int64
	Users         map[string]int64

	present  uint8
	creators []string
}

// scalarKeys lists the top-level integer keys in the order the auth rules name them.
var scalarKeys = [...]struct {
	name string
	bit  uint8
	get  func(*PowerLevels) *int64
}{
	{"users_default", hasUsersDefault, func(p *PowerLevels) *int64 { return &p.UsersDefault }},
	{"events_default", hasEventsDefault, func(p *PowerLevels) *int64 { return &p.EventsDefault }},
	{"state_default", hasStateDefault, func(p *PowerLevels) *int64 { return &p.StateDefault }},
	{"ban", hasBan, func(p *PowerLevels) *int64 { return &p.Ban }},
	{"redact", hasRedact, func(p *PowerLevels) *int64 { return &p.Redact }},
	{"kick", hasKick, func(p *PowerLevels) *int64 { return &p.Kick }},
	{"invite", hasInvite, func(p *PowerLevels) *int64 { return &p.Invite }},
}

// DefaultPowerLevels are the levels of a room without an m.room.power_levels event: every
// default from the schema, the creators at 100 (or infinite where creators have infinite power)
// and everyone else at 0.
func DefaultPowerLevels(rv *RoomVersion, creators []string) *PowerLevels {
	pl := newPowerLevels()
	if rv.CreatorsHaveInfinitePower {
		pl.creators = creators
		return pl
	}
	for _, c := range creators {
		pl.Users[c] = creatorLevelWithoutPL
	}
	return pl
}

func newPowerLevels() *PowerLevels {
	return &PowerLevels{
		Ban:           defaultBanLevel,
		Kick:          defaultKickLevel,
		Invite:        defaultInviteLevel,
		Redact:        defaultRedactLevel,
		EventsDefault: defaultEventsDefault,
		StateDefault:  defaultStateDefault,
		UsersDefault:  defaultUsersDefault,
		Events:        map[string]int64{},
		Notifications: map[string]int64{},
		Users:         map[string]int64{},
	}
}

// ParsePowerLevels parses m.room.power_levels content under the rules of rv. Room versions
// without IntegerPowerLevels accept integers written as strings (rooms v1 "stringy power
// levels"); versions without StrictCanonicalJSON also accept floats, truncated ("floaty power
// levels"). Anything else that is not an integer is an error.
func ParsePowerLevels(content json.RawMessage, rv *RoomVersion) (*PowerLevels, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(content, &top); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadPowerLevels, err)
	}
	pl := newPowerLevels()
	for _, k := range scalarKeys {
		raw, ok := top[k.name]
		if !ok {
			continue
		}
		v, err := parseLevel(raw, rv)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrBadPowerLevels, k.name, err)
		}
		*k.get(pl) = v
		pl.present |= k.bit
	}
	var err error
	if pl.Events, err = parseLevelMap(top, "events", rv); err != nil {
		return nil, err
	}
	if pl.Notifications, err = parseLevelMap(top, "notifications", rv); err != nil {
		return nil, err
	}
	if pl.Users, err = parseLevelMap(top, "users", rv); err != nil {
		return nil, err
	}
	return pl, nil
}

func parseLevelMap(top map[string]json.RawMessage, key string, rv *RoomVersion) (map[string]int64, error) {
	raw, ok := top[key]
	if !ok {
		return map[string]int64{}, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil || m == nil {
		return nil, fmt.Errorf("%w: %s is not an object", ErrBadPowerLevels, key)
	}
	out := make(map[string]int64, len(m))
	for k, v := range m {
		n, err := parseLevel(v, rv)
		if err != nil {
			return nil, fmt.Errorf("%w: %s[%q]: %v", ErrBadPowerLevels, key, k, err)
		}
		out[k] = n
	}
	return out, nil
}

// parseLevel reads one power level value.
func parseLevel(raw json.RawMessage, rv *RoomVersion) (int64, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return 0, errors.New("empty value")
	}
	switch c := raw[0]; {
	case c == '"':
		if rv.IntegerPowerLevels {
			return 0, errors.New("string where an integer is required")
		}
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, err
		}
		// Rooms v1 "stringy power levels": optional surrounding whitespace, one optional
		// sign, base-10 digits (leading zeroes allowed).
		s = strings.TrimSpace(s)
		if s == "" || strings.ContainsAny(s, "_") {
			return 0, fmt.Errorf("%q is not an integer", s)
		}
		return strconv.ParseInt(s, 10, 64)
	case c == '-' || (c >= '0' && c <= '9'):
		if n, err := strconv.ParseInt(string(raw), 10, 64); err == nil {
			if rv.StrictCanonicalJSON && (n > MaxCanonicalInt || n < MinCanonicalInt) {
				return 0, fmt.Errorf("%d is outside the canonical JSON range", n)
			}
			return n, nil
		}
		if rv.StrictCanonicalJSON || rv.IntegerPowerLevels {
			return 0, fmt.Errorf("%s is not an integer", raw)
		}
		// Rooms v1 "floaty power levels": truncate at the decimal point.
		f, err := strconv.ParseFloat(string(raw), 64)
		if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
			return 0, fmt.Errorf("%s is not a number", raw)
		}
		f = math.Trunc(f)
		if f >= math.MaxInt64 || f < math.MinInt64 {
			return 0, fmt.Errorf("%s is out of range", raw)
		}
		return int64(f), nil
	default:
		return 0, fmt.Errorf("%s is not an integer", raw)
	}
}

// UserLevel is the power level of a user: infinite for creators where creators have infinite
// power, else their entry in users, else users_default.
func (pl *PowerLevels) UserLevel(userID string) int64 {
	if pl.IsInfiniteCreator(userID) {
		return InfinitePowerLevel
	}
	if v, ok := pl.Users[userID]; ok {
		return v
	}
	return pl.UsersDefault
}

// IsInfiniteCreator reports whether the user is a room creator with infinite power (room v12).
func (pl *PowerLevels) IsInfiniteCreator(userID string) bool {
	for _, c := range pl.creators {
		if c == userID {
			return true
		}
	}
	return false
}

// EventLevel is the required power level to send an event of this type (server-server API
// "Required Power Level"): events[type], else state_default or events_default.
func (pl *PowerLevels) EventLevel(evType string, isState bool) int64 {
	if v, ok := pl.Events[evType]; ok {
		return v
	}
	if isState {
		return pl.StateDefault
	}
	return pl.EventsDefault
}

// NotificationLevel is the level needed to trigger the notification named key ("room" → @room).
func (pl *PowerLevels) NotificationLevel(key string) int64 {
	if v, ok := pl.Notifications[key]; ok {
		return v
	}
	// The schema defines only "room", defaulting to 50; other keys get the same default.
	return defaultNotificationLevel
}

// RoomCreators lists the room's creators according to its create event: content.creator before
// room v11, the sender from v11 (CreatorInSender), plus content.additional_creators from v12
// (CreatorsHaveInfinitePower). Malformed additional_creators entries are ignored here; the
// create-event auth rule rejects them.
func RoomCreators(create *Event) []string {
	if create == nil {
		return nil
	}
	rv := create.Version()
	if !rv.CreatorInSender {
		var c struct {
			Creator string `json:"creator"`
		}
		if json.Unmarshal(create.Content(), &c) != nil || c.Creator == "" {
			return nil
		}
		return []string{c.Creator}
	}
	creators := []string{create.Sender()}
	if rv.CreatorsHaveInfinitePower {
		var c struct {
			AdditionalCreators []json.RawMessage `json:"additional_creators"`
		}
		if json.Unmarshal(create.Content(), &c) == nil {
			for _, raw := range c.AdditionalCreators {
				var s string
				if json.Unmarshal(raw, &s) == nil && s != "" {
					creators = append(creators, s)
				}
			}
		}
	}
	return creators
}

// RoomPowerLevels combines a room's create event and its current power-levels event (nil if the
// room has none) into the levels in force.
func RoomPowerLevels(create, powerLevels *Event) (*PowerLevels, error) {
	if create == nil {
		return nil, fmt.Errorf("%w: no create event", ErrBadPowerLevels)
	}
	rv := create.Version()
	creators := RoomCreators(create)
	if powerLevels == nil {
		return DefaultPowerLevels(rv, creators), nil
	}
	pl, err := ParsePowerLevels(powerLevels.Content(), rv)
	if err != nil {
		return nil, err
	}
	if rv.CreatorsHaveInfinitePower {
		pl.creators = creators
	}
	return pl, nil
}

// PowerLevelOf is the power level of user in a room with this create event and current
// power-levels event (nil if none). infinite is true for creators with infinite power (v12),
// in which case level is InfinitePowerLevel.
func PowerLevelOf(user string, create, powerLevels *Event) (level int64, infinite bool, err error) {
	pl, err := RoomPowerLevels(create, powerLevels)
	if err != nil {
		return 0, false, err
	}
	if pl.IsInfiniteCreator(user) {
		return InfinitePowerLevel, true, nil
	}
	return pl.UserLevel(user), false, nil
}
