package clientapi

import (
	"net/http"
	"net/url"
	"reflect"
	"slices"
	"testing"

	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/storage/storagetest"
)

// TestUpgradeRoom upgrades rooms between versions with and without infinite creators (room
// v12): the replacement keeps the copied state, the bans and the power levels (without the
// new room's creators in "users" for v12, with the upgrading user raised only for the copy
// otherwise), the aliases and the directory entry move, the old room gets its tombstone and
// is restricted. Users without the power to send m.room.tombstone, or outside the room, get
// 403; unknown versions 400 M_UNSUPPORTED_ROOM_VERSION.
func TestUpgradeRoom(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		aliceID, alice, _ := s.register("alice", "password-alice")
		bobID, bob, _ := s.register("bob", "password-bob")
		_, carol, _ := s.register("carol", "password-carol")
		_, dave, _ := s.register("dave", "password-dave")
		const mallory = "@mallory:elsewhere.example"
		tokens := map[string]string{aliceID: alice, bobID: bob}

		s.expectErr("POST", "/_matrix/client/v3/rooms/!nowhere:"+testServerName+"/upgrade", alice,
			map[string]any{"new_version": "12"}, http.StatusNotFound, "M_NOT_FOUND")

		for _, tc := range []struct {
			name, from, to string
			upgrader       string
			// When bob upgrades, m.room.tombstone is lowered to his level 50 in the old room.
			additionalCreators []string
			wantUsers          map[string]any
		}{
			{name: "v10-v12", from: "10", to: "12", upgrader: aliceID, additionalCreators: []string{bobID},
				wantUsers: map[string]any{}},
			{name: "v12-v12", from: "12", to: "12", upgrader: aliceID,
				wantUsers: map[string]any{bobID: 50.0}},
			// Alice, a creator of the v12 room, keeps the level of its highest event power level
			// (m.room.tombstone, 150 in v12 rooms) in the v10 room, which has no infinite power.
			{name: "v12-v10", from: "12", to: "10", upgrader: aliceID,
				wantUsers: map[string]any{aliceID: 150.0, bobID: 50.0}},
			{name: "v10-v11-moderator", from: "10", to: "11", upgrader: bobID,
				wantUsers: map[string]any{aliceID: 100.0, bobID: 50.0}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				s := s.on(t)
				roomsPath := "/_matrix/client/v3/rooms/"
				alias := "#up-" + tc.name + ":" + testServerName
				alt := "#alt-" + tc.name + ":" + testServerName
				const remote = "#elsewhere:remote.example"
				roomID := s.createRoom(alice, map[string]any{
					"room_version": tc.from, "preset": "public_chat", "visibility": "public",
					"room_alias_name": "up-" + tc.name, "name": "Upgrade me", "topic": "Old topic",
					"creation_content": map[string]any{"type": "org.example.kind", "m.federate": false},
				})
				s.do("PUT", "/_matrix/client/v3/directory/room/"+url.PathEscape(alt), alice, map[string]any{"room_id": roomID}, http.StatusOK)
				s.setState(alice, roomID, "m.room.canonical_alias", map[string]any{"alias": alias, "alt_aliases": []string{alt, remote}})
				s.setState(alice, roomID, "m.room.encryption", map[string]any{"algorithm": "m.megolm.v1.aes-sha2"})
				s.joinRoom(bob, roomID)
				s.joinRoom(carol, roomID)
				levels := s.do("GET", roomsPath+roomID+"/state/m.room.power_levels", alice, nil, http.StatusOK)
				levels["users"].(map[string]any)[bobID] = 50
				if tc.upgrader == bobID {
					levels["events"].(map[string]any)["m.room.tombstone"] = 50
				}
				s.setState(alice, roomID, "m.room.power_levels", levels)
				s.do("POST", roomsPath+roomID+"/ban", alice, map[string]any{"user_id": mallory, "reason": "spam"}, http.StatusOK)
				oldLevels := s.do("GET", roomsPath+roomID+"/state/m.room.power_levels", alice, nil, http.StatusOK)

				path := roomsPath + roomID + "/upgrade"
				upgrader := tokens[tc.upgrader]
				s.expectErr("POST", path, carol, map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
				if tc.upgrader != bobID {
					s.expectErr("POST", path, bob, map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
				}
				s.expectErr("POST", path, dave, map[string]any{"new_version": tc.to}, http.StatusForbidden, "M_FORBIDDEN")
				s.expectErr("POST", path, upgrader, map[string]any{"new_version": "999"}, http.StatusBadRequest, "M_UNSUPPORTED_ROOM_VERSION")
				s.expectErr("POST", path, upgrader, map[string]any{}, http.StatusBadRequest, "M_MISSING_PARAM")
				if tc.to == "12" {
					s.expectErr("POST", path, upgrader, map[string]any{"new_version": tc.to, "additional_creators": []string{"bob"}},
						http.StatusBadRequest, "M_INVALID_PARAM")
				}

				body := map[string]any{"new_version": tc.to}
				if tc.additionalCreators != nil {
					body["additional_creators"] = tc.additionalCreators
				}
				newID, _ := s.do("POST", "/_matrix/client/r0/rooms/"+roomID+"/upgrade", upgrader, body, http.StatusOK)["replacement_room"].(string)
				if newID == "" || newID == roomID {
					t.Fatalf("replacement_room %q", newID)
				}
				state := func(token, room, evType string) map[string]any {
					return s.do("GET", roomsPath+room+"/state/"+evType, token, nil, http.StatusOK)
				}

				// The create event: version, predecessor, the old room's type and m.federate.
				create := state(upgrader, newID, "m.room.create")
				predecessor, _ := create["predecessor"].(map[string]any)
				if create["room_version"] != tc.to || predecessor["room_id"] != roomID ||
					create["type"] != "org.example.kind" || create["m.federate"] != false {
					t.Fatalf("create content %v", create)
				}
				if eventID, ok := predecessor["event_id"].(string); tc.to == "12" && ok {
					t.Fatalf("predecessor names an event in a v12 room: %v", predecessor)
				} else if tc.to != "12" {
					if !ok {
						t.Fatalf("predecessor without event_id: %v", predecessor)
					}
					s.do("GET", roomsPath+roomID+"/event/"+url.PathEscape(eventID), alice, nil, http.StatusOK)
				}
				if creator, ok := create["creator"]; (tc.to == "10") != ok || ok && creator != tc.upgrader {
					t.Fatalf("creator in create content %v", create)
				}
				if got, _ := create["additional_creators"].([]any); len(got) != len(tc.additionalCreators) ||
					len(got) == 1 && got[0] != tc.additionalCreators[0] {
					t.Fatalf("additional_creators %v", create["additional_creators"])
				}

				// The copied state.
				for evType, field := range map[string]string{
					"m.room.name": "name", "m.room.topic": "topic", "m.room.join_rules": "join_rule",
					"m.room.history_visibility": "history_visibility", "m.room.encryption": "algorithm",
				} {
					if got, want := state(upgrader, newID, evType)[field], state(alice, roomID, evType)[field]; got != want {
						t.Fatalf("%s: %v, want %v", evType, got, want)
					}
				}
				newLevels := state(upgrader, newID, "m.room.power_levels")
				if !reflect.DeepEqual(newLevels["users"], tc.wantUsers) {
					t.Fatalf("users in the new power levels: %v, want %v", newLevels["users"], tc.wantUsers)
				}
				if !reflect.DeepEqual(newLevels["events"], oldLevels["events"]) || newLevels["events_default"] != oldLevels["events_default"] {
					t.Fatalf("new power levels %v, old %v", newLevels, oldLevels)
				}
				if ban := state(upgrader, newID, "m.room.member/"+mallory); ban["membership"] != "ban" || ban["reason"] != "spam" {
					t.Fatalf("ban in the new room: %v", ban)
				}

				// The aliases and the directory entry moved; the remote alias stays behind.
				for _, a := range []string{alias, alt} {
					if got := s.do("GET", "/_matrix/client/v3/directory/room/"+url.PathEscape(a), "", nil, http.StatusOK); got["room_id"] != newID {
						t.Fatalf("%s resolves to %v", a, got["room_id"])
					}
				}
				if got := s.do("GET", roomsPath+newID+"/aliases", upgrader, nil, http.StatusOK)["aliases"].([]any); len(got) != 2 {
					t.Fatalf("aliases of the new room: %v", got)
				}
				newCanonical := state(upgrader, newID, "m.room.canonical_alias")
				if newCanonical["alias"] != alias || !reflect.DeepEqual(newCanonical["alt_aliases"], []any{alt}) {
					t.Fatalf("new canonical alias %v", newCanonical)
				}
				oldCanonical := state(alice, roomID, "m.room.canonical_alias")
				if _, ok := oldCanonical["alias"]; ok || !reflect.DeepEqual(oldCanonical["alt_aliases"], []any{remote}) {
					t.Fatalf("old canonical alias %v", oldCanonical)
				}
				for room, want := range map[string]string{roomID: "private", newID: "public"} {
					if got := s.do("GET", "/_matrix/client/v3/directory/list/room/"+room, "", nil, http.StatusOK); got["visibility"] != want {
						t.Fatalf("directory visibility of %s: %v, want %s", room, got, want)
					}
				}

				// The old room: tombstone, restricted power levels. Bob may send the tombstone
				// but not m.room.power_levels (100): the upgrade stands without the restriction.
				if tombstone := state(alice, roomID, "m.room.tombstone"); tombstone["replacement_room"] != newID || tombstone["body"] == "" {
					t.Fatalf("tombstone %v", tombstone)
				}
				restricted := state(alice, roomID, "m.room.power_levels")
				if tc.upgrader == bobID {
					if !reflect.DeepEqual(restricted, oldLevels) {
						t.Fatalf("old power levels changed by bob: %v", restricted)
					}
				} else {
					if restricted["events_default"] != 50.0 || restricted["invite"] != 50.0 {
						t.Fatalf("old room not restricted: %v", restricted)
					}
					s.expectErr("PUT", roomsPath+roomID+"/send/m.room.message/after-upgrade", carol,
						map[string]any{"msgtype": "m.text", "body": "still here?"}, http.StatusForbidden, "M_FORBIDDEN")
				}

				// Only the upgrading user is in the new room.
				for token, want := range map[string]bool{upgrader: true, carol: false} {
					joined := s.do("GET", "/_matrix/client/v3/joined_rooms", token, nil, http.StatusOK)["joined_rooms"].([]any)
					if slices.Contains(joined, any(newID)) != want {
						t.Fatalf("joined rooms %v, want the new room: %v", joined, want)
					}
				}
			})
		}
	})
}

// TestUpgradeSpace: a space's replacement keeps its children, not the removed ones (empty
// content), as Synapse.
func TestUpgradeSpace(t *testing.T) {
	storagetest.Each(t, func(t *testing.T, db *storage.DB) {
		s := newTestAPI(t, db, "open", "")
		_, alice, _ := s.register("alice", "password-alice")
		spaceID := s.createRoom(alice, map[string]any{"creation_content": map[string]any{"type": "m.space"}})
		child := "!child:" + testServerName
		removed := "!removed:" + testServerName
		s.setStateKey(alice, spaceID, "m.space.child", child, map[string]any{"via": []string{testServerName}})
		s.setStateKey(alice, spaceID, "m.space.child", removed, map[string]any{})

		newID := s.do("POST", "/_matrix/client/v3/rooms/"+spaceID+"/upgrade", alice, map[string]any{"new_version": "12"}, http.StatusOK)["replacement_room"].(string)
		statePath := "/_matrix/client/v3/rooms/" + newID + "/state/"
		if create := s.do("GET", statePath+"m.room.create", alice, nil, http.StatusOK); create["type"] != "m.space" {
			t.Fatalf("create content %v", create)
		}
		s.do("GET", statePath+"m.space.child/"+url.PathEscape(child), alice, nil, http.StatusOK)
		s.expectErr("GET", statePath+"m.space.child/"+url.PathEscape(removed), alice, nil, http.StatusNotFound, "M_NOT_FOUND")
	})
}
