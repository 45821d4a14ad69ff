package clientapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Client event format (client-server API "Room Event Format", definitions/client_event.yaml).

// ClientEvent is an event as clients see it.
type ClientEvent struct {
	Content        json.RawMessage `json:"content"`
	EventID        string          `json:"event_id"`
	OriginServerTS int64           `json:"origin_server_ts"`
	RoomID         string          `json:"room_id,omitempty"`
	Sender         string          `json:"sender"`
	StateKey       *string         `json:"state_key,omitempty"`
	Type           string          `json:"type"`
	// Redacts is kept at the top level for clients of room versions before 11, and copied
	// there for v11+ as Synapse does. NOTSPEC: helps clients that only read the top level.
	Redacts  string    `json:"redacts,omitempty"`
	Unsigned *Unsigned `json:"unsigned,omitempty"`
}

// Unsigned is the server-added "unsigned" data of a client event.
type Unsigned struct {
	Age             int64           `json:"age"`
	PrevContent     json.RawMessage `json:"prev_content,omitempty"`
	ReplacesState   string          `json:"replaces_state,omitempty"`
	TransactionID   string          `json:"transaction_id,omitempty"`
	RedactedBecause *ClientEvent    `json:"redacted_because,omitempty"`
	Membership      string          `json:"membership,omitempty"`
	// Relations are the bundled aggregations of the event's children (aggregations.go).
	Relations map[string]any `json:"m.relations,omitempty"`
}

// formatter turns stored events into client events for one requesting device, loading what
// unsigned needs (replaced state, redactions, bundled aggregations) in batches.
type formatter struct {
	api      *API
	userID   string
	deviceID string
	now      int64
	// withRoomID includes room_id (everywhere but inside /sync rooms).
	withRoomID bool
	// bundleRooms caches, per room ID, what bundling aggregations needs of the room.
	bundleRooms map[string]*bundleRoom
	// memberEvents caches, per room ID, the user's member events there, newest first
	// (membershipAt).
	memberEvents map[string][]*rooms.Event
}

func (a *API) formatter(d *Device, withRoomID bool) *formatter {
	f := &formatter{api: a, now: a.nowMS(), withRoomID: withRoomID}
	if d != nil {
		f.userID, f.deviceID = d.UserID, d.DeviceID
	}
	return f
}

// formatAll formats events in order.
func (f *formatter) formatAll(ctx context.Context, events []*rooms.Event) ([]ClientEvent, error) {
	var replacedNIDs []int64
	for _, e := range events {
		if e.ReplacesNID != 0 {
			replacedNIDs = append(replacedNIDs, e.ReplacesNID)
		}
	}
	replaced := map[int64]*rooms.Event{}
	if len(replacedNIDs) > 0 {
		loaded, err := f.api.rooms.EventsByNID(ctx, replacedNIDs)
		if err != nil {
			return nil, err
		}
		for _, e := range loaded {
			replaced[e.NID] = e
		}
	}
	out := make([]ClientEvent, 0, len(events))
	for _, e := range events {
		ce := f.format(e, replaced[e.ReplacesNID])
		membership, err := f.membershipAt(ctx, e)
		if err != nil {
			return nil, err
		}
		ce.Unsigned.Membership = membership
		if e.RedactedBy != "" {
			if redaction, err := f.api.rooms.TimelineEventByID(ctx, e.RedactedBy); err == nil {
				rc := f.format(redaction, nil)
				if rc.Unsigned.Membership, err = f.membershipAt(ctx, redaction); err != nil {
					return nil, err
				}
				ce.Unsigned.RedactedBecause = &rc
			}
		}
		out = append(out, ce)
	}
	if err := f.bundle(ctx, events, out, true); err != nil {
		return nil, err
	}
	return out, nil
}

// format turns one event into a client event; replaced is the state event it replaced.
func (f *formatter) format(e *rooms.Event, replaced *rooms.Event) ClientEvent {
	ce := ClientEvent{
		Content: e.Content(), EventID: e.EventID(), OriginServerTS: e.OriginServerTS(),
		Sender: e.Sender(), StateKey: e.StateKey(), Type: e.Type(), Redacts: e.Redacts(),
		Unsigned: &Unsigned{Age: max(f.now-e.OriginServerTS(), 0)},
	}
	if f.withRoomID {
		ce.RoomID = e.RoomID()
	}
	if replaced != nil {
		ce.Unsigned.PrevContent = replaced.Content()
		ce.Unsigned.ReplacesState = replaced.EventID()
	}
	// Transaction IDs go only to the device that sent the event ("Transaction identifiers").
	if e.TxnID != "" && e.Sender() == f.userID && e.SenderDevice == f.deviceID {
		ce.Unsigned.TransactionID = e.TxnID
	}
	return ce
}

// membershipAt is unsigned.membership of e (v1.11, client_event.yaml): "the room membership
// of the user making the request, at the time of the event", counting e itself, and "leave"
// before they had any. The room's timeline order stands for its state order: it is the
// user's latest member event at or before e, most often their current one, which costs no
// query; older ones are read once per room. It is omitted ("") without a requesting user,
// and in rooms this server is not in (where only the user's own invite or knock is shown).
func (f *formatter) membershipAt(ctx context.Context, e *rooms.Event) (string, error) {
	if f.userID == "" {
		return "", nil
	}
	if e.Type() == "m.room.member" && e.StateKeyEquals(f.userID) {
		m, _ := e.Membership()
		return m, nil
	}
	current, currentEvent, err := f.api.rooms.Membership(ctx, e.RoomID(), f.userID)
	if errors.Is(err, rooms.ErrRoomNotFound) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if currentEvent == nil {
		return "leave", nil
	}
	if e.StreamPos > 0 && currentEvent.StreamPos <= e.StreamPos {
		return current, nil
	}
	memberEvents, ok := f.memberEvents[e.RoomID()]
	if !ok {
		roomNID, err := f.api.rooms.RoomNID(ctx, e.RoomID())
		if err != nil {
			return "", err
		}
		rows, err := storage.UserMemberEventsBefore(ctx, f.api.db, roomNID, f.userID, currentEvent.StreamPos, maxMembershipScan)
		if err != nil {
			return "", err
		}
		if memberEvents, err = f.api.rooms.EventsFromRows(rows); err != nil {
			return "", err
		}
		if f.memberEvents == nil {
			f.memberEvents = map[string][]*rooms.Event{}
		}
		f.memberEvents[e.RoomID()] = memberEvents
	}
	for _, m := range memberEvents {
		if e.StreamPos > 0 && m.StreamPos <= e.StreamPos {
			membership, _ := m.Membership()
			return membership, nil
		}
	}
	return "leave", nil
}

// Event shaping of /sync (definitions/sync_filter.yaml, "event_format" and "event_fields").
// The shape applies to the room events of the response, timeline and state, of joined and
// left rooms: event_format chooses between client events and PDUs, which only room events
// have, and event_fields narrows those same events. Account data, ephemeral events and
// stripped invite state keep their fixed form ("A server may include more fields than were
// requested"), as in Synapse.

// formatSync formats room events for /sync as the filter asks.
func (f *formatter) formatSync(ctx context.Context, filter *Filter, events []*rooms.Event) ([]any, error) {
	out := make([]any, 0, len(events))
	if filter.EventFormat == "federation" {
		for _, e := range events {
			shaped, err := pickFields(federationJSON(e), filter.fieldPaths)
			if err != nil {
				return nil, err
			}
			out = append(out, shaped)
		}
		return out, nil
	}
	client, err := f.formatAll(ctx, events)
	if err != nil {
		return nil, err
	}
	for _, ce := range client {
		if filter.fieldPaths == nil {
			out = append(out, ce)
			continue
		}
		raw, err := json.Marshal(ce)
		if err != nil {
			return nil, err
		}
		shaped, err := pickFields(raw, filter.fieldPaths)
		if err != nil {
			return nil, err
		}
		out = append(out, shaped)
	}
	return out, nil
}

// federationJSON is an event in the "federation" event format: "the raw event as received
// over federation", that is the stored PDU, with its event ID added for room versions whose
// PDUs do not carry one (v3+ name events by reference hash) so that clients can refer to it.
// Client-only additions (age, transaction ID, prev_content) are not part of it.
func federationJSON(e *rooms.Event) json.RawMessage {
	raw := e.JSON()
	if e.Version().EventIDFormat == spec.EventIDOriginGenerated {
		return raw
	}
	id, _ := json.Marshal(e.EventID())
	out := make([]byte, 0, len(raw)+len(id)+14)
	out = append(out, `{"event_id":`...)
	out = append(out, id...)
	if len(raw) > 2 {
		out = append(out, ',')
	}
	return append(out, raw[1:]...)
}

// pickFields keeps only the properties of a JSON event that paths name (event_fields; each
// path is a list of property names). Paths through a missing property or a non-object are
// skipped. nil paths keep everything.
func pickFields(raw json.RawMessage, paths [][]string) (any, error) {
	if paths == nil {
		return raw, nil
	}
	var event map[string]json.RawMessage
	if err := json.Unmarshal(raw, &event); err != nil {
		return nil, fmt.Errorf("pick event fields: %w", err)
	}
	out := map[string]any{}
	for _, p := range paths {
		// A path under another requested path is already included whole.
		if slices.ContainsFunc(paths, func(other []string) bool {
			return len(other) < len(p) && slices.Equal(other, p[:len(other)])
		}) {
			continue
		}
		value, ok := lookupPath(event, p)
		if !ok {
			continue
		}
		node := out
		for _, name := range p[:len(p)-1] {
			child, ok := node[name].(map[string]any)
			if !ok {
				child = map[string]any{}
				node[name] = child
			}
			node = child
		}
		node[p[len(p)-1]] = value
	}
	return out, nil
}

// lookupPath finds the value at a property path of a JSON object.
func lookupPath(object map[string]json.RawMessage, path []string) (json.RawMessage, bool) {
	for i, name := range path {
		value, ok := object[name]
		if !ok {
			return nil, false
		}
		if i == len(path)-1 {
			return value, true
		}
		object = nil
		if json.Unmarshal(value, &object) != nil || object == nil {
			return nil, false
		}
	}
	return nil, false
}
