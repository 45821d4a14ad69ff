package spec

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
)

func TestAuthEventSelection(t *testing.T) {
	member := func(u string) StateTuple { return StateTuple{Type: typeMember, StateKey: u} }
	tests := []struct {
		name, version, evType string
		stateKey              *string
		sender, content       string
		want                  []StateTuple
	}{
		{"create", "10", typeCreate, strPtr(""), "@a:x", `{}`, nil},
		{"message v10", "10", "m.room.message", nil, "@a:x", `{}`, []StateTuple{createTuple, powerLevelsTuple, member("@a:x")}},
		{"message v12", "12", "m.room.message", nil, "@a:x", `{}`, []StateTuple{powerLevelsTuple, member("@a:x")}},
		{"join", "12", typeMember, strPtr("@a:x"), "@a:x", `{"membership":"join"}`, []StateTuple{powerLevelsTuple, member("@a:x"), joinRulesTuple}},
		{"invite", "11", typeMember, strPtr("@b:x"), "@a:x", `{"membership":"invite"}`, []StateTuple{createTuple, powerLevelsTuple, member("@a:x"), member("@b:x"), joinRulesTuple}},
		{"knock", "12", typeMember, strPtr("@b:x"), "@b:x", `{"membership":"knock"}`, []StateTuple{powerLevelsTuple, member("@b:x"), joinRulesTuple}},
		{"ban", "12", typeMember, strPtr("@b:x"), "@a:x", `{"membership":"ban"}`, []StateTuple{powerLevelsTuple, member("@a:x"), member("@b:x")}},
		{"third party invite", "12", typeMember, strPtr("@b:x"), "@a:x", `{"membership":"invite","third_party_invite":{"signed":{"token":"tok"}}}`,
			[]StateTuple{powerLevelsTuple, member("@a:x"), member("@b:x"), joinRulesTuple, {Type: typeThirdPartyInvite, StateKey: "tok"}}},
		{"restricted join v8", "8", typeMember, strPtr("@b:x"), "@b:x", `{"membership":"join","join_authorised_via_users_server":"@c:x"}`,
			[]StateTuple{createTuple, powerLevelsTuple, member("@b:x"), joinRulesTuple, member("@c:x")}},
		{"restricted join v7 ignored", "7", typeMember, strPtr("@b:x"), "@b:x", `{"membership":"join","join_authorised_via_users_server":"@c:x"}`,
			[]StateTuple{createTuple, powerLevelsTuple, member("@b:x"), joinRulesTuple}},
		{"bad content", "12", typeMember, strPtr("@b:x"), "@b:x", `[`, []StateTuple{powerLevelsTuple, member("@b:x")}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rv, _ := LookupRoomVersion(tt.version)
			got := AuthEventSelection(rv, tt.evType, tt.stateKey, tt.sender, json.RawMessage(tt.content))
			if !slices.Equal(got, tt.want) {
				t.Fatalf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestCheckAuthEventsValid(t *testing.T) {
	v10, _ := LookupRoomVersion("10")
	v12, _ := LookupRoomVersion("12")
	mk := func(rv *RoomVersion, id, typ, sk, sender, room string, auth ...string) *Event {
		return testEvent{ID: id, Type: typ, StateKey: strPtr(sk), Sender: sender, Auth: auth, Room: &room, Content: json.RawMessage(`{"membership":"join"}`)}.build(rv, "")
	}
	create10 := mk(v10, "$c", typeCreate, "", "@a:x", "!r:x")
	pl10 := mk(v10, "$pl", typePowerLevels, "", "@a:x", "!r:x")
	pl10b := mk(v10, "$pl2", typePowerLevels, "", "@a:x", "!r:x")
	ma10 := mk(v10, "$ma", typeMember, "@a:x", "@a:x", "!r:x")
	jr10 := mk(v10, "$jr", typeJoinRules, "", "@a:x", "!r:x")
	other10 := mk(v10, "$o", typeMember, "@o:x", "@o:x", "!r:x")
	wrongRoom := mk(v10, "$w", typeJoinRules, "", "@a:x", "!elsewhere:x")
	create12 := mk(v12, "$c12", typeCreate, "", "@a:x", "")
	pl12 := mk(v12, "$pl12", typePowerLevels, "", "@a:x", "!c12")
	tests := []struct {
		name    string
		ev      *Event
		auth    []*Event
		wantErr bool
	}{
		{"ok v10", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c", "$pl", "$ma", "$jr"), []*Event{create10, pl10, ma10, jr10}, false},
		{"create with auth events", mk(v10, "$e", typeCreate, "", "@a:x", "!r:x", "$pl"), []*Event{pl10}, true},
		{"create without", mk(v10, "$e", typeCreate, "", "@a:x", "!r:x"), nil, false},
		{"id listed twice", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c", "$c"), []*Event{create10}, true},
		{"duplicate tuple", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c", "$pl", "$pl2"), []*Event{create10, pl10, pl10b}, true},
		{"not selected", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c", "$o"), []*Event{create10, other10}, true},
		{"missing create v10", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$pl"), []*Event{pl10}, true},
		{"unlisted event given", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c"), []*Event{create10, pl10}, true},
		{"listed event missing", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c", "$pl"), []*Event{create10}, true},
		{"other room", mk(v10, "$e", typeMember, "@a:x", "@a:x", "!r:x", "$c", "$w"), []*Event{create10, wrongRoom}, true},
		{"ok v12", mk(v12, "$e", typeMember, "@a:x", "@a:x", "!c12", "$pl12"), []*Event{pl12}, false},
		{"create selected v12", mk(v12, "$e", typeMember, "@a:x", "@a:x", "!c12", "$c12", "$pl12"), []*Event{create12, pl12}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckAuthEventsValid(tt.ev, tt.auth)
			if tt.wantErr != (err != nil) {
				t.Fatalf("err = %v", err)
			}
			if err != nil && !errors.Is(err, ErrNotAllowed) {
				t.Fatalf("error %v does not wrap ErrNotAllowed", err)
			}
		})
	}
}
