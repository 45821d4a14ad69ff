package clientapi

import (
	"context"
	"encoding/json"

	"github.com/scrambledeggs/eggs/rooms"
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
}

// formatter turns stored events into client events for one requesting device, loading what
// unsigned needs (replaced state, redactions) in batches.
type formatter struct {
	api      *API
	userID   string
	deviceID string
	now      int64
	// withRoomID includes room_id (everywhere but inside /sync rooms).
	withRoomID bool
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
		if e.RedactedBy != "" {
			if redaction, err := f.api.rooms.TimelineEventByID(ctx, e.RedactedBy); err == nil {
				rc := f.format(redaction, nil)
				ce.Unsigned.RedactedBecause = &rc
			}
		}
		out = append(out, ce)
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
