package clientapi

import (
	"context"
	"encoding/json"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Send-to-device messaging (client-server API "Send-to-Device messaging", to_device.yaml).
// Messages are stored per target device at a stream position, delivered in /sync's
// to_device, and deleted only once the device syncs from a later token: a response that is
// lost is delivered again, and nothing is lost across a restart.

// Limits of /sendToDevice. NOTSPEC: the spec sets none; Synapse bounds the body by its
// general limit and the content like an event.
const (
	maxToDeviceBody      = 1 << 20
	maxToDeviceContent   = 64 * 1024
	maxToDeviceTargets   = 10_000
	maxToDeviceTxnLength = 255
	// maxToDevicePerSync bounds the to-device messages of one /sync response; the rest
	// follow in the next one.
	maxToDevicePerSync = 100
)

// PUT /sendToDevice/{eventType}/{txnId} (to_device.yaml sendToDevice): messages to devices of
// local users, "*" meaning every device of the user. A transaction ID already used by this
// device answers success again without sending anything.
//
// NOTSPEC (for now): messages to users of other servers are dropped until the federation
// of to-device messages (m.direct_to_device) is connected.
func (a *API) sendToDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	eventType, txnID := pathParam(r, "eventType"), pathParam(r, "txnId")
	if eventType == "" || len(eventType) > maxAccountDataType {
		return httpapi.InvalidParam("Event type must be 1 to %d bytes", maxAccountDataType)
	}
	if txnID == "" || len(txnID) > maxToDeviceTxnLength {
		return httpapi.InvalidParam("Transaction ID must be 1 to %d bytes", maxToDeviceTxnLength)
	}
	var req struct {
		Messages map[string]map[string]json.RawMessage `json:"messages"`
	}
	if err := httpapi.ReadJSON(r, maxToDeviceBody, &req); err != nil {
		return err
	}
	if req.Messages == nil {
		return httpapi.MissingParam("Missing messages")
	}
	ctx := r.Context()
	seen, err := storage.ToDeviceTxnSeen(ctx, a.db, d.UserID, d.DeviceID, txnID)
	if err != nil {
		return err
	}
	if seen {
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	messages, err := a.toDeviceTargets(ctx, d.UserID, eventType, req.Messages)
	if err != nil {
		return err
	}
	if err := a.storeToDevice(ctx, d.DeviceID, txnID, messages); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// toDeviceTargets expands the messages of a request into one message per existing local
// target device.
func (a *API) toDeviceTargets(ctx context.Context, sender, eventType string, byUser map[string]map[string]json.RawMessage) ([]storage.ToDeviceMessage, error) {
	var out []storage.ToDeviceMessage
	for userID, byDevice := range byUser {
		if !a.isLocalUser(userID) {
			a.log.Debug("to-device message to remote user dropped", "user", userID)
			continue
		}
		existing, err := storage.DeviceIDs(ctx, a.db, userID)
		if err != nil {
			return nil, err
		}
		exists := make(map[string]bool, len(existing))
		for _, id := range existing {
			exists[id] = true
		}
		for deviceID, content := range byDevice {
			if len(content) > maxToDeviceContent {
				return nil, httpapi.TooLarge("Message content exceeds %d bytes", maxToDeviceContent)
			}
			var object map[string]json.RawMessage
			if err := json.Unmarshal(content, &object); err != nil || object == nil {
				return nil, httpapi.BadJSON("Message content must be a JSON object")
			}
			targets := []string{deviceID}
			if deviceID == "*" {
				targets = existing
			} else if !exists[deviceID] {
				continue
			}
			for _, target := range targets {
				if _, named := byDevice[target]; named && deviceID == "*" {
					continue // the message addressed to the device by name wins over "*"
				}
				out = append(out, storage.ToDeviceMessage{UserID: userID, DeviceID: target, Sender: sender, Type: eventType, Content: content})
				if len(out) > maxToDeviceTargets {
					return nil, httpapi.TooLarge("At most %d devices may be sent to at once", maxToDeviceTargets)
				}
			}
		}
	}
	return out, nil
}

// storeToDevice stores messages (from one sender) at a fresh stream position under the
// sender device's transaction ID and wakes the target devices.
func (a *API) storeToDevice(ctx context.Context, senderDevice, txnID string, messages []storage.ToDeviceMessage) error {
	if len(messages) == 0 {
		return nil
	}
	stream := a.rooms.Stream()
	pos := stream.Allocate()
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		_, err := storage.InsertToDevice(ctx, tx, senderDevice, txnID, pos, a.nowMS(), messages)
		return err
	})
	if err != nil {
		stream.Finish(pos)
		return err
	}
	changes := make([]string, 0, len(messages))
	users := map[string]bool{}
	var wake []string
	for _, m := range messages {
		changes = append(changes, streams.ToDeviceKey(m.UserID, m.DeviceID))
		if !users[m.UserID] {
			users[m.UserID] = true
			wake = append(wake, m.UserID)
		}
	}
	stream.MarkChanged(pos, changes...)
	stream.Finish(pos, wake...)
	return nil
}

// toDeviceEvent is a to-device message as /sync delivers it (to_device.yaml's event shape).
type toDeviceEvent struct {
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// syncToDevice reads the to-device messages of a sync covering (since, to] for a device,
// after deleting those up to since, which the device acknowledged by syncing from since.
// It returns at most maxToDevicePerSync messages and the position up to which the response
// may go: lower than to when more messages are waiting, so that the next token resumes
// right after the last delivered one.
func (a *API) syncToDevice(ctx context.Context, userID, deviceID string, since, to int64) ([]any, int64, error) {
	stream := a.rooms.Stream()
	key := streams.ToDeviceKey(userID, deviceID)
	inbox := userID + "\x00" + deviceID
	if since > 0 {
		acked, known := a.toDeviceAcked.get(inbox)
		if !known || acked < since && stream.ChangedSince(key, acked) {
			if err := storage.DeleteToDeviceThrough(ctx, a.db, userID, deviceID, since); err != nil {
				return nil, to, err
			}
		}
		a.toDeviceAcked.put(inbox, since)
	}
	events := []any{}
	if since > 0 && !stream.ChangedSince(key, since) {
		return events, to, nil
	}
	messages, err := storage.ToDeviceSince(ctx, a.db, userID, deviceID, since, to, maxToDevicePerSync+1)
	if err != nil {
		return nil, to, err
	}
	if len(messages) > maxToDevicePerSync {
		messages = messages[:maxToDevicePerSync]
		to = messages[len(messages)-1].StreamPos
	}
	for _, m := range messages {
		events = append(events, toDeviceEvent{Sender: m.Sender, Type: m.Type, Content: m.Content})
	}
	return events, to, nil
}
