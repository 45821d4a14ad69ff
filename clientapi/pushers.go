package clientapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/storage"
)

// Pushers (client-server API "Push Notifications", "Client behaviour": pusher.yaml). A
// pusher says where a user's notifications go: the URL of a push gateway (data.url) and the
// pushkey that the gateway routes to a device. Pushers are stored per user, app ID and
// pushkey and belong to the device whose access token set them: logging that device out or
// deleting it removes them (storage.DeleteDeviceE2E). The push sender (pushsender.go)
// delivers to them; GET /notifications (notifications.go) lists what they were, or would
// have been, sent.

// pushRoutes mounts the pusher and notification endpoints.
func (a *API) pushRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/pushers", authed(a.getPushers))
	r.Method(http.MethodPost, "/pushers/set", authed(a.setPusher))
	r.Method(http.MethodGet, "/notifications", authed(a.notifications))
}

// Limits on pushers. pusher.yaml gives the app ID ("Max length, 64 chars"; NOTSPEC: counted
// in bytes, which is stricter for non-ASCII) and the pushkey ("Max length, 512 bytes").
const (
	maxAppIDLength   = 64
	maxPushKeyLength = 512
	// NOTSPEC: limits of our own on the other fields, the request, and the pushers of a
	// user (a device has one or two; the bound keeps a user from fanning one event out
	// to thousands of requests).
	maxPusherTextLength = 512
	maxPusherData       = 4096
	maxPusherBody       = 16 << 10
	maxPushersPerUser   = 100
)

// pushGatewayPath is the path every pusher URL must have (pusher.yaml, data.url: "MUST be
// an HTTPS URL with a path of /_matrix/push/v1/notify").
const pushGatewayPath = "/_matrix/push/v1/notify"

// pusherFormatEventIDOnly is the data.format that asks for notifications without the
// event's details (push gateway API "Homeserver behaviour").
const pusherFormatEventIDOnly = "event_id_only"

// pusherJSON is a pusher as GET /pushers lists it.
type pusherJSON struct {
	PushKey           string          `json:"pushkey"`
	Kind              string          `json:"kind"`
	AppID             string          `json:"app_id"`
	AppDisplayName    string          `json:"app_display_name"`
	DeviceDisplayName string          `json:"device_display_name"`
	ProfileTag        string          `json:"profile_tag,omitempty"`
	Lang              string          `json:"lang"`
	Data              json.RawMessage `json:"data"`
}

// GET /pushers (getPushers): the user's pushers, of every device.
func (a *API) getPushers(w http.ResponseWriter, r *http.Request, d *Device) error {
	pushers, err := storage.UserPushers(r.Context(), a.db, d.UserID)
	if err != nil {
		return err
	}
	out := make([]pusherJSON, 0, len(pushers))
	for _, p := range pushers {
		out = append(out, pusherJSON{PushKey: p.PushKey, Kind: p.Kind, AppID: p.AppID, AppDisplayName: p.AppDisplayName,
			DeviceDisplayName: p.DeviceDisplayName, ProfileTag: p.ProfileTag, Lang: p.Lang, Data: p.Data})
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"pushers": out})
	return nil
}

// setPusherRequest is the body of POST /pushers/set. Kind is kept raw to tell null (delete)
// from absent (missing).
type setPusherRequest struct {
	Kind              json.RawMessage `json:"kind"`
	AppID             *string         `json:"app_id"`
	PushKey           *string         `json:"pushkey"`
	AppDisplayName    *string         `json:"app_display_name"`
	DeviceDisplayName *string         `json:"device_display_name"`
	ProfileTag        *string         `json:"profile_tag"`
	Lang              *string         `json:"lang"`
	Data              json.RawMessage `json:"data"`
	Append            *bool           `json:"append"`
}

// POST /pushers/set (postPusher): kind null deletes the user's pusher for app_id and
// pushkey; kind "http" creates or updates it. Unless append is true, the pushers of other
// users with the same app_id and pushkey are removed.
func (a *API) setPusher(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req setPusherRequest
	if err := httpapi.ReadJSON(r, maxPusherBody, &req); err != nil {
		return err
	}
	var missing []string
	if req.Kind == nil {
		missing = append(missing, "kind")
	}
	if req.AppID == nil {
		missing = append(missing, "app_id")
	}
	if req.PushKey == nil {
		missing = append(missing, "pushkey")
	}
	if len(missing) > 0 {
		return missingParams(missing)
	}
	appID, pushKey := *req.AppID, *req.PushKey
	if appID == "" || len(appID) > maxAppIDLength {
		return httpapi.InvalidParam("app_id must be 1 to %d bytes", maxAppIDLength)
	}
	if pushKey == "" || len(pushKey) > maxPushKeyLength {
		return httpapi.InvalidParam("pushkey must be 1 to %d bytes", maxPushKeyLength)
	}
	ctx := r.Context()
	if string(req.Kind) == "null" {
		// NOTSPEC: deleting a pusher that does not exist succeeds, as in Synapse.
		if _, err := storage.DeletePusher(ctx, a.db, d.UserID, appID, pushKey); err != nil {
			return err
		}
		httpapi.WriteJSON(w, http.StatusOK, struct{}{})
		return nil
	}
	var kind string
	if err := json.Unmarshal(req.Kind, &kind); err != nil {
		return httpapi.BadJSON("kind must be a string or null")
	}
	p, err := a.newPusher(d, kind, &req)
	if err != nil {
		return err
	}
	err = a.db.WithTx(ctx, func(tx *storage.Tx) error {
		if req.Append == nil || !*req.Append {
			if err := storage.DeleteOtherUsersPushers(ctx, tx, appID, pushKey, d.UserID); err != nil {
				return err
			}
		}
		created, err := storage.PutPusher(ctx, tx, p)
		if err != nil || !created {
			return err
		}
		count, err := storage.CountUserPushers(ctx, tx, d.UserID)
		if err != nil {
			return err
		}
		if count > maxPushersPerUser {
			return httpapi.NewError(http.StatusBadRequest, "M_UNKNOWN", "Too many pushers: at most %d per user", maxPushersPerUser)
		}
		return nil
	})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// missingParams is the answer to a request without required fields, worded as in
// pusher.yaml's example.
func missingParams(names []string) error {
	return httpapi.MissingParam("Missing parameters: %s", strings.Join(names, ", "))
}

// newPusher checks the fields of a pusher that is set (kind not null) and builds it.
func (a *API) newPusher(d *Device, kind string, req *setPusherRequest) (*storage.Pusher, error) {
	var missing []string
	for _, field := range []struct {
		name  string
		value *string
	}{{"app_display_name", req.AppDisplayName}, {"device_display_name", req.DeviceDisplayName}, {"lang", req.Lang}} {
		if field.value == nil {
			missing = append(missing, field.name)
		} else if len(*field.value) > maxPusherTextLength {
			return nil, httpapi.InvalidParam("%s is longer than %d bytes", field.name, maxPusherTextLength)
		}
	}
	if req.Data == nil || string(req.Data) == "null" {
		missing = append(missing, "data")
	}
	if len(missing) > 0 {
		return nil, missingParams(missing)
	}
	switch kind {
	case "http":
	case "email":
		// An email pusher sends to one of the user's email addresses (pusher.yaml: the
		// pushkey "is the email address"). This server keeps none and sends no email, so
		// the address is never one of the user's: Synapse's answer then.
		return nil, httpapi.NewError(http.StatusBadRequest, "M_THREEPID_NOT_FOUND", "Email not found")
	default:
		// NOTSPEC: Synapse stores pushers of kinds it cannot run and never sends to them;
		// refusing them tells the client that no notification would arrive.
		return nil, httpapi.InvalidParam("Unsupported pusher kind %q", kind)
	}
	profileTag := ""
	if req.ProfileTag != nil {
		if len(*req.ProfileTag) > maxPusherTextLength {
			return nil, httpapi.InvalidParam("profile_tag is longer than %d bytes", maxPusherTextLength)
		}
		profileTag = *req.ProfileTag
	}
	data, err := pusherData(req.Data)
	if err != nil {
		return nil, err
	}
	return &storage.Pusher{
		UserID: d.UserID, DeviceID: d.DeviceID, Kind: kind, AppID: *req.AppID, PushKey: *req.PushKey,
		AppDisplayName: *req.AppDisplayName, DeviceDisplayName: *req.DeviceDisplayName, ProfileTag: profileTag,
		Lang: *req.Lang, Data: data, PushKeyTS: a.nowMS(), FromPos: a.rooms.Stream().Current(),
	}, nil
}

// pusherData checks the data of an http pusher and returns it compacted: an object of at
// most maxPusherData bytes whose url is the gateway's notify URL and whose format, if any,
// is a string. Other keys are the client's, forwarded to the gateway as they are.
func pusherData(raw json.RawMessage) ([]byte, error) {
	var data map[string]json.RawMessage
	if err := json.Unmarshal(raw, &data); err != nil || data == nil {
		return nil, httpapi.BadJSON("data must be an object")
	}
	compact, err := json.Marshal(data)
	if err != nil {
		return nil, httpapi.BadJSON("data must be an object")
	}
	if len(compact) > maxPusherData {
		return nil, httpapi.TooLarge("data is larger than %d bytes", maxPusherData)
	}
	rawURL, ok := data["url"]
	if !ok {
		return nil, httpapi.MissingParam("'url' required in data for HTTP pusher")
	}
	var gatewayURL string
	if err := json.Unmarshal(rawURL, &gatewayURL); err != nil {
		return nil, httpapi.InvalidParam("data.url must be a string")
	}
	if _, err := parseGatewayURL(gatewayURL); err != nil {
		return nil, err
	}
	if format, ok := data["format"]; ok {
		var s string
		if err := json.Unmarshal(format, &s); err != nil {
			return nil, httpapi.InvalidParam("data.format must be a string")
		}
	}
	return compact, nil
}

// parseGatewayURL checks a push gateway URL: absolute, http or https, with a host and the
// path /_matrix/push/v1/notify. NOTSPEC: plain http is accepted, as Synapse accepts it ("it
// isn't up to the homeserver to verify that"): gateways on a private network use it.
func parseGatewayURL(raw string) (*url.URL, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil {
		return nil, httpapi.InvalidParam("data.url must be an absolute http(s) URL")
	}
	if u.Path != pushGatewayPath {
		return nil, httpapi.InvalidParam("data.url must have the path %s", pushGatewayPath)
	}
	return u, nil
}

// pusherFormat reads data.format of a stored pusher; "" when absent.
func pusherFormat(data []byte) string {
	var d struct {
		Format any `json:"format"`
	}
	_ = json.Unmarshal(data, &d)
	format, _ := d.Format.(string)
	return format
}
