package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/auth"
	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/keys"
	"github.com/scrambledeggs/eggs/storage"
)

// Dehydrated devices (MSC3814, under /_matrix/client/unstable/org.matrix.msc3814.v1): a
// device whose private keys the client stored encrypted on the server (device_data, opaque
// here), so that others can encrypt to the user while all their devices are offline. The
// server keeps at most one per user: a device without an access token, with its keys
// published like any other, whose to-device messages the user's next device fetches
// through the events endpoint.

func (a *API) dehydratedRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPut, "/dehydrated_device", authed(a.putDehydratedDevice))
	r.Method(http.MethodGet, "/dehydrated_device", authed(a.getDehydratedDevice))
	r.Method(http.MethodDelete, "/dehydrated_device", authed(a.deleteDehydratedDevice))
	r.Method(http.MethodPost, "/dehydrated_device/{deviceId}/events", authed(a.dehydratedDeviceEvents))
}

// maxDeviceDataSize bounds device_data. NOTSPEC: MSC3814 sets no limit; a pickled Olm
// account with its one-time keys stays well below it.
const maxDeviceDataSize = 256 * 1024

// dehydratedDeviceRequest is the body of PUT /dehydrated_device.
type dehydratedDeviceRequest struct {
	DeviceID    string          `json:"device_id"`
	DeviceData  json.RawMessage `json:"device_data"`
	DisplayName string          `json:"initial_device_display_name"`
	uploadKeysRequest
}

// PUT /dehydrated_device (MSC3814): replaces the user's dehydrated device (and so deletes
// the previous one with its keys and messages) by a new one with its keys.
func (a *API) putDehydratedDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req dehydratedDeviceRequest
	if err := httpapi.ReadJSON(r, maxKeysBody+maxDeviceDataSize, &req); err != nil {
		return err
	}
	var data struct {
		Algorithm string `json:"algorithm"`
	}
	if len(req.DeviceData) == 0 || json.Unmarshal(req.DeviceData, &data) != nil || data.Algorithm == "" {
		return httpapi.MissingParam("device_data must be an object with an algorithm")
	}
	if len(req.DeviceData) > maxDeviceDataSize {
		return httpapi.TooLarge("device_data exceeds %d bytes", maxDeviceDataSize)
	}
	if req.DeviceID == "" {
		req.DeviceID = auth.NewDeviceID()
	}
	if err := validateDeviceRequest(&req.DeviceID, &req.DisplayName); err != nil {
		return err
	}
	ctx := r.Context()
	previous, err := storage.LoadDehydratedDevice(ctx, a.db, d.UserID)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	if previous == nil || previous.DeviceID != req.DeviceID {
		if _, err := storage.LoadDevice(ctx, a.db, d.UserID, req.DeviceID); err == nil {
			return httpapi.InvalidParam("Device ID %s is in use", req.DeviceID)
		} else if !errors.Is(err, storage.ErrNotFound) {
			return err
		}
	}
	var deviceKeys []byte
	if present(req.DeviceKeys) {
		if _, deviceKeys, err = keys.ParseDeviceKeys(req.DeviceKeys, d.UserID, req.DeviceID); err != nil {
			return err
		}
	}
	deviceKey := keys.DeviceKeyOf(deviceKeys, req.DeviceID)
	oneTime, err := keys.ParseOneTimeKeys(req.OneTimeKeys, d.UserID, req.DeviceID, deviceKey, false)
	if err != nil {
		return err
	}
	fallback, err := keys.ParseOneTimeKeys(req.FallbackKeys, d.UserID, req.DeviceID, deviceKey, true)
	if err != nil {
		return err
	}
	err = a.changeDeviceList(ctx, d.UserID, func(tx *storage.Tx, _ int64) (bool, error) {
		if previous != nil {
			if err := deleteDevicesE2E(ctx, tx, d.UserID, []string{previous.DeviceID}); err != nil {
				return false, err
			}
		}
		// The device has no access token: its token hash is that of a token nobody holds.
		_, unusable := auth.NewToken(auth.TokenPrefix)
		if err := storage.UpsertDevice(ctx, tx, d.UserID, req.DeviceID, req.DisplayName, unusable, "", a.nowMS()); err != nil {
			return false, err
		}
		if err := storage.PutDehydratedDevice(ctx, tx, d.UserID, req.DeviceID, req.DeviceData); err != nil {
			return false, err
		}
		if deviceKeys != nil {
			if _, err := storage.PutDeviceKeys(ctx, tx, d.UserID, req.DeviceID, deviceKeys); err != nil {
				return false, err
			}
		}
		if err := storage.InsertOneTimeKeys(ctx, tx, d.UserID, req.DeviceID, oneTime); err != nil {
			return false, err
		}
		for _, k := range fallback {
			if err := storage.PutFallbackKey(ctx, tx, d.UserID, req.DeviceID, k); err != nil {
				return false, err
			}
		}
		return true, nil
	})
	a.forgetTokens()
	if errors.Is(err, storage.ErrKeyConflict) {
		return httpapi.InvalidParam("A one-time key was uploaded twice with different contents")
	}
	if err != nil {
		return err
	}
	a.markOneTimeKeysChanged(d.UserID, req.DeviceID)
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"device_id": req.DeviceID})
	return nil
}

// noDehydratedDevice is the 404 when the user has no dehydrated device.
func noDehydratedDevice() error { return httpapi.NotFound("No dehydrated device available") }

// GET /dehydrated_device (MSC3814): the user's dehydrated device and its device_data.
func (a *API) getDehydratedDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	dev, err := storage.LoadDehydratedDevice(r.Context(), a.db, d.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return noDehydratedDevice()
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"device_id": dev.DeviceID, "device_data": json.RawMessage(dev.DeviceData)})
	return nil
}

// DELETE /dehydrated_device (MSC3814): the dehydrated device goes, with its keys.
func (a *API) deleteDehydratedDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	dev, err := storage.LoadDehydratedDevice(r.Context(), a.db, d.UserID)
	if errors.Is(err, storage.ErrNotFound) {
		return noDehydratedDevice()
	}
	if err != nil {
		return err
	}
	err = a.removeDevicesAnnounced(r.Context(), d.UserID, []string{dev.DeviceID})
	a.forgetTokens()
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"device_id": dev.DeviceID})
	return nil
}

// POST /dehydrated_device/{device_id}/events (MSC3814): the to-device messages of the
// dehydrated device, a page at a time. A next_batch from an earlier answer acknowledges
// (and deletes) what came before it.
func (a *API) dehydratedDeviceEvents(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		NextBatch string `json:"next_batch"`
	}
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	ctx := r.Context()
	dev, err := storage.LoadDehydratedDevice(ctx, a.db, d.UserID)
	if errors.Is(err, storage.ErrNotFound) || err == nil && dev.DeviceID != pathParam(r, "deviceId") {
		return httpapi.Forbidden("Not the user's dehydrated device")
	}
	if err != nil {
		return err
	}
	var since int64
	if req.NextBatch != "" {
		pos, ok := parseStreamToken(req.NextBatch)
		if !ok {
			return httpapi.InvalidParam("Invalid next_batch")
		}
		since = pos
		if err := storage.DeleteToDeviceThrough(ctx, a.db, d.UserID, dev.DeviceID, since); err != nil {
			return err
		}
	}
	to := a.rooms.Stream().Current()
	since = min(since, to)
	messages, err := storage.ToDeviceSince(ctx, a.db, d.UserID, dev.DeviceID, since, to, maxToDevicePerSync)
	if err != nil {
		return err
	}
	events := make([]toDeviceEvent, 0, len(messages))
	next := since
	for _, m := range messages {
		events = append(events, toDeviceEvent{Sender: m.Sender, Type: m.Type, Content: m.Content})
		next = m.StreamPos
	}
	if len(messages) < maxToDevicePerSync {
		next = to
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"events": events, "next_batch": streamToken(next)})
	return nil
}
