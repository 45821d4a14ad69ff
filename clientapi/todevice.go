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
// lost is delivered again, and nothing is lost across a restart. Messages to other
// servers' users are queued, in the same transaction as the sender's transaction ID, as
// m.direct_to_device EDUs (server-server API "Send-to-device messaging"); those of other
// servers' users to ours arrive through ReceiveToDevice.

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
// users of this server and of others, "*" meaning every device of the user. A transaction
// ID already used by this device answers success again without sending anything.
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
	messages, remote, err := a.toDeviceTargets(ctx, d.UserID, eventType, req.Messages)
	if err != nil {
		return err
	}
	if err := a.storeToDevice(ctx, d.UserID, d.DeviceID, txnID, eventType, messages, remote); err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// ReceiveToDevice delivers a to-device message of another server's user (an
// m.direct_to_device EDU) to our users' devices, "*" meaning all of a user's devices. The
// message ID is recorded as the sender's transaction, so that the same message is delivered
// once however often it arrives.
func (a *API) ReceiveToDevice(ctx context.Context, sender, eventType, messageID string, messages map[string]map[string]json.RawMessage) error {
	if len(eventType) > maxAccountDataType {
		return httpapi.InvalidParam("Event type must be at most %d bytes", maxAccountDataType)
	}
	local, _, err := a.toDeviceTargets(ctx, sender, eventType, messages)
	if err != nil {
		return err
	}
	// A remote sender has no device of ours, so the empty device ID keeps its transaction
	// IDs apart from those of our users' devices.
	return a.storeToDevice(ctx, sender, "", "m.direct_to_device:"+messageID, eventType, local, nil)
}

// checkToDeviceContent checks the content of one to-device message.
func checkToDeviceContent(content json.RawMessage) error {
	if len(content) > maxToDeviceContent {
		return httpapi.TooLarge("Message content exceeds %d bytes", maxToDeviceContent)
	}
	var object map[string]json.RawMessage
	if err := json.Unmarshal(content, &object); err != nil || object == nil {
		return httpapi.BadJSON("Message content must be a JSON object")
	}
	return nil
}

// toDeviceTargets expands the messages of a request into one message per existing local
// target device, and returns those for other servers' users (user ID → device ID or "*" →
// content) apart, checked, when the federation is connected.
func (a *API) toDeviceTargets(ctx context.Context, sender, eventType string, byUser map[string]map[string]json.RawMessage) (
	[]storage.ToDeviceMessage, map[string]map[string]json.RawMessage, error) {
	var out []storage.ToDeviceMessage
	remote := map[string]map[string]json.RawMessage{}
	targets := 0
	for userID, byDevice := range byUser {
		if !a.isLocalUser(userID) {
			if a.remoteKeys == nil || serverOf(userID) == "" {
				a.log.Debug("to-device message to remote user dropped", "user", userID)
				continue
			}
			for _, content := range byDevice {
				if err := checkToDeviceContent(content); err != nil {
					return nil, nil, err
				}
				if targets++; targets > maxToDeviceTargets {
					return nil, nil, httpapi.TooLarge("At most %d devices may be sent to at once", maxToDeviceTargets)
				}
			}
			if len(byDevice) > 0 {
				remote[userID] = byDevice
			}
			continue
		}
		existing, err := storage.DeviceIDs(ctx, a.db, userID)
		if err != nil {
			return nil, nil, err
		}
		exists := make(map[string]bool, len(existing))
		for _, id := range existing {
			exists[id] = true
		}
		for deviceID, content := range byDevice {
			if err := checkToDeviceContent(content); err != nil {
				return nil, nil, err
			}
			devices := []string{deviceID}
			if deviceID == "*" {
				devices = existing
			} else if !exists[deviceID] {
				continue
			}
			for _, target := range devices {
				if _, named := byDevice[target]; named && deviceID == "*" {
					continue // the message addressed to the device by name wins over "*"
				}
				out = append(out, storage.ToDeviceMessage{UserID: userID, DeviceID: target, Sender: sender, Type: eventType, Content: content})
				if targets++; targets > maxToDeviceTargets {
					return nil, nil, httpapi.TooLarge("At most %d devices may be sent to at once", maxToDeviceTargets)
				}
			}
		}
	}
	return out, remote, nil
}

// storeToDevice stores messages (from one sender) at a fresh stream position under the
// sender device's transaction ID, queues those for other servers' users (remote) in the
// same transaction, and wakes the target devices and servers. A transaction ID already
// recorded sends nothing.
func (a *API) storeToDevice(ctx context.Context, sender, senderDevice, txnID, eventType string, messages []storage.ToDeviceMessage,
	remote map[string]map[string]json.RawMessage) error {
	if len(messages) == 0 && len(remote) == 0 {
		return nil
	}
	stream := a.rooms.Stream()
	pos := stream.Allocate()
	var destinations []string
	err := a.db.WithTx(ctx, func(tx *storage.Tx) error {
		destinations = nil
		fresh, err := true, error(nil)
		if len(messages) > 0 {
			fresh, err = storage.InsertToDevice(ctx, tx, senderDevice, txnID, pos, a.nowMS(), messages)
		} else if txnID != "" {
			fresh, err = storage.RecordToDeviceTxn(ctx, tx, sender, senderDevice, txnID, a.nowMS())
		}
		if err != nil || !fresh || len(remote) == 0 {
			return err
		}
		destinations, err = a.remoteKeys.QueueToDevice(ctx, tx, sender, eventType, remote)
		return err
	})
	if err != nil {
		stream.Finish(pos)
		return err
	}
	if len(destinations) > 0 {
		a.remoteKeys.Wake(destinations...)
	}
	if len(messages) == 0 {
		stream.Finish(pos)
		return nil
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
