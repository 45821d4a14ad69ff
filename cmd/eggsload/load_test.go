package main

import (
	"encoding/json"
	"testing"
	"time"
)

// syncWith builds a /sync response with the given message bodies in one room.
func syncWith(t *testing.T, roomID string, bodies ...string) *syncResponse {
	t.Helper()
	var events []map[string]any
	for _, b := range bodies {
		events = append(events, map[string]any{"type": "m.room.message", "sender": "@a:x", "event_id": "$e",
			"content": map[string]string{"msgtype": "m.text", "body": b}})
	}
	events = append(events, map[string]any{"type": "m.room.member", "state_key": "@a:x", "content": map[string]any{"membership": "join", "body": 5}})
	data, err := json.Marshal(map[string]any{"next_batch": "s9", "rooms": map[string]any{"join": map[string]any{
		roomID: map[string]any{"timeline": map[string]any{"events": events, "limited": false}}}}})
	if err != nil {
		t.Fatal(err)
	}
	resp := &syncResponse{}
	if err := json.Unmarshal(data, resp); err != nil {
		t.Fatal(err)
	}
	return resp
}

func TestCheckDeliveries(t *testing.T) {
	sent := time.Now()
	senders := []*sender{{index: 0, records: []sendRecord{{room: 0, acked: true}, {room: 1, acked: true}, {room: 0, acked: false}}}}
	roomIndex := map[string]int{"!a:x": 0, "!b:x": 1}
	newListener := func() *listener {
		return &listener{roomIndex: roomIndex, seen: map[messageKey]delivery{}}
	}

	complete := newListener()
	complete.record(syncWith(t, "!a:x", messageBody(0, 0, sent)), sent.Add(time.Millisecond))
	complete.record(syncWith(t, "!b:x", messageBody(0, 1, sent)), sent.Add(time.Millisecond))

	faulty := newListener()
	faulty.record(syncWith(t, "!a:x", messageBody(0, 0, sent), messageBody(0, 0, sent)), sent)
	faulty.record(syncWith(t, "!a:x", messageBody(0, 2, sent), messageBody(7, 0, sent), "hello"), sent)

	got := checkDeliveries(senders, []*listener{complete, faulty})
	want := deliveryCheck{expected: 4, delivered: 3, missing: 1, duplicates: 1, unacked: 1, unknown: 1}
	if got != want {
		t.Errorf("checkDeliveries = %+v, want %+v", got, want)
	}
	if faulty.foreign != 1 {
		t.Errorf("foreign = %d, want 1 (the plain \"hello\")", faulty.foreign)
	}
	if len(complete.latencies) != 2 || complete.latencies[0] != time.Millisecond {
		t.Errorf("latencies = %v, want two of 1ms", complete.latencies)
	}
}

func TestCheckDeliveriesWrongRoom(t *testing.T) {
	sent := time.Now()
	senders := []*sender{{index: 3, records: []sendRecord{{room: 1, acked: true}}}}
	l := &listener{roomIndex: map[string]int{"!a:x": 0, "!b:x": 1}, seen: map[messageKey]delivery{}}
	l.record(syncWith(t, "!a:x", messageBody(3, 0, sent)), sent)
	got := checkDeliveries(senders, []*listener{l})
	if got.wrongRoom != 1 || got.delivered != 1 {
		t.Errorf("checkDeliveries = %+v, want one delivery in the wrong room", got)
	}
}
