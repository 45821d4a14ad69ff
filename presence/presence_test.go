package presence

import (
	"encoding/json"
	"testing"
	"time"
)

// TestShouldNotify: changes of state, message or currently_active are news; a last active
// time that moves while the user is currently active is not.
func TestShouldNotify(t *testing.T) {
	base := Status{UserID: "@a:x", Presence: Online, LastActiveTS: 1_000_000, CurrentlyActive: true}
	with := func(edit func(*Status)) Status { s := base; edit(&s); return s }
	for _, tc := range []struct {
		name string
		next Status
		want bool
	}{
		{"same", base, false},
		{"state", with(func(s *Status) { s.Presence = Unavailable }), true},
		{"message", with(func(s *Status) { s.StatusMsg = "hi" }), true},
		{"no longer active", with(func(s *Status) { s.CurrentlyActive = false }), true},
		{"active again, later", with(func(s *Status) { s.LastActiveTS += 120_000 }), false},
	} {
		if got := shouldNotify(base, tc.next); got != tc.want {
			t.Errorf("%s: shouldNotify = %v, want %v", tc.name, got, tc.want)
		}
	}
	idle := with(func(s *Status) { s.CurrentlyActive = false })
	if !shouldNotify(idle, with(func(s *Status) { s.CurrentlyActive = false; s.LastActiveTS += 120_000 })) {
		t.Error("a last active time two minutes later while not currently active is news")
	}
	if shouldNotify(idle, with(func(s *Status) { s.CurrentlyActive = false; s.LastActiveTS += 30_000 })) {
		t.Error("a last active time 30 s later is within the granularity")
	}
	offline := Status{UserID: "@a:x", Presence: Offline, LastActiveTS: 1}
	if shouldNotify(offline, Status{UserID: "@a:x", Presence: Offline, LastActiveTS: 999_999}) {
		t.Error("an offline user's last active time alone is not news")
	}
}

// TestContentAndUpdate: the event content and the EDU entry carry the fields the spec
// defines, relative to now.
func TestContentAndUpdate(t *testing.T) {
	now := time.UnixMilli(10_000)
	s := Status{UserID: "@a:x", Presence: Online, StatusMsg: "hi", LastActiveTS: 4_000, CurrentlyActive: true}
	content, _ := json.Marshal(s.Content(now))
	if string(content) != `{"currently_active":true,"last_active_ago":6000,"presence":"online","status_msg":"hi"}` {
		t.Errorf("content %s", content)
	}
	off, _ := json.Marshal(Status{UserID: "@a:x", Presence: Offline}.Content(now))
	if string(off) != `{"presence":"offline"}` {
		t.Errorf("offline content %s", off)
	}
	edu, _ := MarshalUpdates(s.Update(now))
	if string(edu) != `{"push":[{"user_id":"@a:x","presence":"online","last_active_ago":6000,"currently_active":true,"status_msg":"hi"}]}` {
		t.Errorf("EDU content %s", edu)
	}
}
