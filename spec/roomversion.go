package spec

// EventIDFormat says how a room version names its events.
type EventIDFormat int

const (
	// EventIDOriginGenerated: "$opaque:server", chosen by the origin (v1, v2).
	EventIDOriginGenerated EventIDFormat = iota
	// EventIDReferenceHashStd: "$" + unpadded standard base64 of the reference hash (v3).
	EventIDReferenceHashStd
	// EventIDReferenceHashURL: "$" + unpadded URL-safe base64 of the reference hash (v4+).
	EventIDReferenceHashURL
)

// StateResAlgorithm names a state resolution algorithm.
type StateResAlgorithm int

const (
	StateResV1 StateResAlgorithm = iota + 1
	// StateResV2 is state resolution v2 (rooms/v2.md).
	StateResV2
	// StateResV2_1 is v2 with the room version 12 changes: the empty set as the starting
	// state and the conflicted state subgraph added to the full conflicted set.
	StateResV2_1
)

// RedactionRules names a redaction algorithm. Each later variant keeps what the earlier one
// kept plus its own additions (see redaction.go for the exact keys).
type RedactionRules int

const (
	RedactionV1  RedactionRules = iota + 1 // rooms v1–v5: original algorithm, m.room.aliases keeps "aliases"
	RedactionV6                            // v6, v7: m.room.aliases no longer special
	RedactionV8                            // v8: join_rules keeps "allow"
	RedactionV9                            // v9, v10: member keeps "join_authorised_via_users_server"
	RedactionV11                           // v11, v12: the v11 algorithm (create keeps all content, …)
)

// RoomVersion is one row of the room-version table: every per-version rule lives here as data,
// so that code asks the version what to do instead of comparing version strings.
type RoomVersion struct {
	ID     string
	Stable bool

	EventIDFormat EventIDFormat
	StateRes      StateResAlgorithm
	Redaction     RedactionRules

	// Auth-rule variants.
	SpecialCaseAliasesAuth     bool // v1–v5: m.room.aliases auth rule (rule 4)
	EnforceSenderDomainOfID    bool // v1, v2: event ID domain must match sender's server
	EnforceKeyValidity         bool // v5+: signing keys must be valid at origin_server_ts
	StrictCanonicalJSON        bool // v6+: reject floats and integers outside [-(2^53)+1, 2^53-1]
	NotificationsPowerLevels   bool // v6+: changes to "notifications" in power levels are checked
	AllowKnocking              bool // v7+: join rule "knock" and membership "knock"
	AllowRestrictedJoins       bool // v8+: join rule "restricted" with join_authorised_via_users_server
	AllowKnockRestricted       bool // v10+: join rule "knock_restricted"
	IntegerPowerLevels         bool // v10+: power level values must be integers, not strings
	CreatorInSender            bool // v11+: create event's "creator" is gone; the sender is the creator
	RedactsInContent           bool // v11+: m.room.redaction carries "redacts" in content
	RoomIDIsCreateEventHash    bool // v12+: room ID is "!" + reference hash of the create event
	CreatorsHaveInfinitePower  bool // v12+: creators (sender + additional_creators) outrank everyone
	CreateEventNotInAuthEvents bool // v12+: auth_events must not name the create event
	PrevEventsAreHashPairs     bool // v1, v2: prev_events/auth_events are [event_id, {hashes}] pairs
	DepthMustBePositiveInteger bool // all versions: depth is a non-negative integer (≤ 2^63-1 before v6, ≤ 2^53-1 from v6)
}

// DefaultRoomVersion is the version of new rooms.
const DefaultRoomVersion = "12"

var roomVersions = map[string]*RoomVersion{
	"1":  {ID: "1", Stable: true, EventIDFormat: EventIDOriginGenerated, StateRes: StateResV1, Redaction: RedactionV1, SpecialCaseAliasesAuth: true, EnforceSenderDomainOfID: true, PrevEventsAreHashPairs: true, DepthMustBePositiveInteger: true},
	"2":  {ID: "2", Stable: true, EventIDFormat: EventIDOriginGenerated, StateRes: StateResV2, Redaction: RedactionV1, SpecialCaseAliasesAuth: true, EnforceSenderDomainOfID: true, PrevEventsAreHashPairs: true, DepthMustBePositiveInteger: true},
	"3":  {ID: "3", Stable: true, EventIDFormat: EventIDReferenceHashStd, StateRes: StateResV2, Redaction: RedactionV1, SpecialCaseAliasesAuth: true, DepthMustBePositiveInteger: true},
	"4":  {ID: "4", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV1, SpecialCaseAliasesAuth: true, DepthMustBePositiveInteger: true},
	"5":  {ID: "5", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV1, SpecialCaseAliasesAuth: true, EnforceKeyValidity: true, DepthMustBePositiveInteger: true},
	"6":  {ID: "6", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV6, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, DepthMustBePositiveInteger: true},
	"7":  {ID: "7", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV6, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, AllowKnocking: true, DepthMustBePositiveInteger: true},
	"8":  {ID: "8", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV8, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, AllowKnocking: true, AllowRestrictedJoins: true, DepthMustBePositiveInteger: true},
	"9":  {ID: "9", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV9, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, AllowKnocking: true, AllowRestrictedJoins: true, DepthMustBePositiveInteger: true},
	"10": {ID: "10", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV9, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, AllowKnocking: true, AllowRestrictedJoins: true, AllowKnockRestricted: true, IntegerPowerLevels: true, DepthMustBePositiveInteger: true},
	"11": {ID: "11", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2, Redaction: RedactionV11, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, AllowKnocking: true, AllowRestrictedJoins: true, AllowKnockRestricted: true, IntegerPowerLevels: true, CreatorInSender: true, RedactsInContent: true, DepthMustBePositiveInteger: true},
	"12": {ID: "12", Stable: true, EventIDFormat: EventIDReferenceHashURL, StateRes: StateResV2_1, Redaction: RedactionV11, EnforceKeyValidity: true, StrictCanonicalJSON: true, NotificationsPowerLevels: true, AllowKnocking: true, AllowRestrictedJoins: true, AllowKnockRestricted: true, IntegerPowerLevels: true, CreatorInSender: true, RedactsInContent: true, RoomIDIsCreateEventHash: true, CreatorsHaveInfinitePower: true, CreateEventNotInAuthEvents: true, DepthMustBePositiveInteger: true},
}

// LookupRoomVersion returns the rules of a known room version, or false.
func LookupRoomVersion(id string) (*RoomVersion, bool) {
	rv, ok := roomVersions[id]
	return rv, ok
}

// RoomVersions lists every supported version, for /capabilities.
func RoomVersions() map[string]*RoomVersion { return roomVersions }
