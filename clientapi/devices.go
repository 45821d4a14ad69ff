package clientapi

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"unicode/utf8"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// Device management (client-server API "Device Management", device_management.yaml).

// clientDevice is a device as the API shows it (definitions/client_device.yaml).
type clientDevice struct {
	DeviceID    string `json:"device_id"`
	DisplayName string `json:"display_name,omitempty"`
	LastSeenIP  string `json:"last_seen_ip,omitempty"`
	LastSeenTS  int64  `json:"last_seen_ts,omitempty"`
}

func toClientDevice(d *storage.DeviceRow) clientDevice {
	return clientDevice{DeviceID: d.DeviceID, DisplayName: d.DisplayName, LastSeenIP: d.LastSeenIP, LastSeenTS: d.LastSeenTS}
}

// maxDeleteDevices bounds the device IDs of one POST /delete_devices. NOTSPEC: the spec sets
// no limit; a user with more devices deletes them in several requests.
const maxDeleteDevices = 1000

// GET /devices (device_management.yaml getDevices).
func (a *API) listDevices(w http.ResponseWriter, r *http.Request, d *Device) error {
	rows, err := storage.ListDevices(r.Context(), a.db, d.UserID)
	if err != nil {
		return err
	}
	devices := make([]clientDevice, 0, len(rows))
	for i := range rows {
		devices = append(devices, toClientDevice(&rows[i]))
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"devices": devices})
	return nil
}

// GET /devices/{deviceId} (device_management.yaml getDevice): 404 for a device the user
// does not have.
func (a *API) getDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	row, err := storage.LoadDevice(r.Context(), a.db, d.UserID, pathParam(r, "deviceId"))
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Unknown device")
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, toClientDevice(row))
	return nil
}

// PUT /devices/{deviceId} (device_management.yaml updateDevice): renames a device of the
// user; an absent display_name leaves it unchanged. Creating devices is only for
// application services, so an unknown device is 404.
func (a *API) updateDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		DisplayName *string `json:"display_name"`
	}
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	deviceID := pathParam(r, "deviceId")
	if req.DisplayName == nil {
		if _, err := storage.LoadDevice(r.Context(), a.db, d.UserID, deviceID); errors.Is(err, storage.ErrNotFound) {
			return httpapi.NotFound("Unknown device")
		} else if err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	// NOTSPEC: Synapse's limit and errcode for long device names.
	if utf8.RuneCountInString(*req.DisplayName) > maxDeviceDisplayName {
		return httpapi.NewError(http.StatusBadRequest, "M_TOO_LARGE", "Device display name is longer than %d characters", maxDeviceDisplayName)
	}
	// A new display name is part of the device list others see (device_display_name in
	// /keys/query): announce it like any device change.
	err := a.changeDeviceList(r.Context(), d.UserID, func(tx *storage.Tx, _ int64) (bool, error) {
		return true, storage.RenameDevice(r.Context(), tx, d.UserID, deviceID, *req.DisplayName)
	})
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("Unknown device")
	}
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// DELETE /devices/{deviceId} (device_management.yaml deleteDevice): UIA
// [m.login.password], then the device and its access token go. A device that does not
// exist (any more) is answered with 200, as the spec says.
func (a *API) deleteDevice(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth json.RawMessage `json:"auth"`
	}
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	return a.removeDevices(w, r, d, req.Auth, []string{pathParam(r, "deviceId")})
}

// POST /delete_devices (device_management.yaml deleteDevices): UIA [m.login.password],
// then the listed devices go; unknown device IDs are ignored.
func (a *API) deleteDevices(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Auth    json.RawMessage `json:"auth"`
		Devices *[]string       `json:"devices"`
	}
	if err := httpapi.ReadJSON(r, maxAccountBody, &req); err != nil {
		return err
	}
	if req.Devices == nil {
		return httpapi.MissingParam("Missing devices")
	}
	if len(*req.Devices) > maxDeleteDevices {
		return httpapi.InvalidParam("At most %d devices can be deleted at once", maxDeleteDevices)
	}
	return a.removeDevices(w, r, d, req.Auth, *req.Devices)
}

// removeDevices runs UIA for deleting deviceIDs and deletes them. The UIA session is bound
// to the device list, so that a session authorised for some devices cannot delete others.
func (a *API) removeDevices(w http.ResponseWriter, r *http.Request, d *Device, authDict json.RawMessage, deviceIDs []string) error {
	sorted := slices.Clone(deviceIDs)
	slices.Sort(sorted)
	sorted = slices.Compact(sorted)
	proceed, session, err := a.passwordUIA(w, r, d, authDict, fingerprint(sorted...))
	if err != nil || !proceed {
		return err
	}
	err = a.removeDevicesAnnounced(r.Context(), d.UserID, sorted)
	a.forgetTokens()
	if err != nil {
		return err
	}
	a.uia.Delete(session)
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
