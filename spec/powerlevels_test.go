package spec

import (
	"encoding/json"
	"errors"
	"testing"
)

func TestParsePowerLevels(t *testing.T) {
	tests := []struct {
		name    string
		version string
		content string
		wantErr bool
		check   func(*PowerLevels) bool
	}{
		{"defaults", "12", `{}`, false, func(p *PowerLevels) bool {
			return p.Ban == 50 && p.Kick == 50 && p.Redact == 50 && p.Invite == 0 && p.StateDefault == 50 &&
				p.EventsDefault == 0 && p.UsersDefault == 0 && p.NotificationLevel("room") == 50 && p.present == 0
		}},
		{"explicit", "12", `{"ban":10,"events":{"m.room.name":70},"notifications":{"room":5},"users":{"@a:x":60},"users_default":3}`, false, func(p *PowerLevels) bool {
			return p.Ban == 10 && p.EventLevel("m.room.name", true) == 70 && p.EventLevel("m.room.topic", true) == 50 &&
				p.EventLevel("m.room.message", false) == 0 && p.NotificationLevel("room") == 5 &&
				p.UserLevel("@a:x") == 60 && p.UserLevel("@b:x") == 3 && p.present == hasBan|hasUsersDefault
		}},
		{"stringy v9", "9", `{"ban":" +0050 ","users":{"@a:x":"-7"}}`, false, func(p *PowerLevels) bool { return p.Ban == 50 && p.UserLevel("@a:x") == -7 }},
		{"stringy v10", "10", `{"ban":"50"}`, true, nil},
		{"stringy float", "5", `{"ban":"5.5"}`, true, nil},
		{"stringy empty", "5", `{"ban":"  "}`, true, nil},
		{"floaty v5", "5", `{"users":{"@b:x":50.57},"kick":5.114698E4}`, false, func(p *PowerLevels) bool { return p.UserLevel("@b:x") == 50 && p.Kick == 51146 }},
		{"floaty v6", "6", `{"kick":1.5}`, true, nil},
		{"float overflow v1", "1", `{"kick":1e300}`, true, nil},
		{"out of range v6", "6", `{"kick":9007199254740992}`, true, nil},
		{"bool", "1", `{"kick":true}`, true, nil},
		{"null", "1", `{"kick":null}`, true, nil},
		{"events array", "1", `{"events":[]}`, true, nil},
		{"users null", "11", `{"users":null}`, true, nil},
		{"not object", "11", `[]`, true, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rv, _ := LookupRoomVersion(tt.version)
			pl, err := ParsePowerLevels(json.RawMessage(tt.content), rv)
			if tt.wantErr {
				if !errors.Is(err, ErrBadPowerLevels) {
					t.Fatalf("want ErrBadPowerLevels, got %v", err)
				}
				return
			}
			if err != nil || !tt.check(pl) {
				t.Fatalf("got %+v, %v", pl, err)
			}
		})
	}
}

func TestPowerLevelOf(t *testing.T) {
	tests := []struct {
		name, version, createContent, createSender, plContent, user string
		want                                                        int64
		infinite                                                    bool
	}{
		{"no pl creator v10", "10", `{"creator":"@c:x"}`, "@s:x", "", "@c:x", 100, false},
		{"no pl sender not creator v10", "10", `{"creator":"@c:x"}`, "@s:x", "", "@s:x", 0, false},
		{"no pl creator v11", "11", `{}`, "@s:x", "", "@s:x", 100, false},
		{"pl without creator v11", "11", `{}`, "@s:x", `{"users_default":5}`, "@s:x", 5, false},
		{"v12 sender infinite", "12", `{}`, "@s:x", `{"users":{"@o:x":100}}`, "@s:x", InfinitePowerLevel, true},
		{"v12 additional creator", "12", `{"additional_creators":["@a:x"]}`, "@s:x", `{}`, "@a:x", InfinitePowerLevel, true},
		{"v12 no pl additional creator", "12", `{"additional_creators":["@a:x"]}`, "@s:x", "", "@a:x", InfinitePowerLevel, true},
		{"v12 other user", "12", `{"additional_creators":["@a:x"]}`, "@s:x", `{"users":{"@o:x":70}}`, "@o:x", 70, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rv, _ := LookupRoomVersion(tt.version)
			create := testEvent{ID: "$c", Type: typeCreate, Sender: tt.createSender, StateKey: strPtr(""), Content: json.RawMessage(tt.createContent)}.build(rv, "")
			var pl *Event
			if tt.plContent != "" {
				pl = testEvent{ID: "$p", Type: typePowerLevels, Sender: tt.createSender, StateKey: strPtr(""), Content: json.RawMessage(tt.plContent)}.build(rv, "")
			}
			level, infinite, err := PowerLevelOf(tt.user, create, pl)
			if err != nil || level != tt.want || infinite != tt.infinite {
				t.Fatalf("got %d %v %v", level, infinite, err)
			}
		})
	}
	if _, _, err := PowerLevelOf("@a:x", nil, nil); err == nil {
		t.Fatal("no create event accepted")
	}
}
