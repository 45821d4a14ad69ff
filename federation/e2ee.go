package federation

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/keys"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// End-to-end encryption across servers (server-server API "End-to-End Encryption",
// "Send-to-device messaging"): other servers query and claim our users' keys, and we theirs
// on behalf of our clients; to-device messages travel as m.direct_to_device EDUs.

// Limits of keys and to-device messages over federation. NOTSPEC: the spec sets none.
const (
	// maxKeysNamed bounds the users plus devices of one key query or claim.
	maxKeysNamed = 10_000
	// maxToDeviceEDUSize is the size above which the to-device messages to one server are
	// split into several EDUs (a single larger message still goes alone).
	maxToDeviceEDUSize = 64 * 1024
	// maxToDeviceTargets bounds the devices one m.direct_to_device may name.
	maxToDeviceTargets = 10_000
	// maxMessageIDLength is the longest message_id kept as it is; longer ones are hashed.
	maxMessageIDLength = 200
)

// keysQueryRequest is the body of POST /user/keys/query.
type keysQueryRequest struct {
	DeviceKeys map[string][]string `json:"device_keys"`
}

// keysQueryResponse is the answer of POST /user/keys/query (user_keys.yaml).
type keysQueryResponse struct {
	DeviceKeys      map[string]map[string]json.RawMessage `json:"device_keys"`
	MasterKeys      map[string]json.RawMessage            `json:"master_keys,omitempty"`
	SelfSigningKeys map[string]json.RawMessage            `json:"self_signing_keys,omitempty"`
}

// keysClaimRequest is the body of POST /user/keys/claim.
type keysClaimRequest struct {
	OneTimeKeys map[string]map[string]string `json:"one_time_keys"`
}

// keysClaimResponse is the answer of POST /user/keys/claim (user_keys.yaml).
type keysClaimResponse struct {
	OneTimeKeys map[string]map[string]map[string]json.RawMessage `json:"one_time_keys"`
}

// POST /_matrix/federation/v1/user/keys/query (user_keys.yaml queryUserKeys): the device
// keys and cross-signing keys (master and self-signing: the user-signing key stays with its
// owner's server) of our users named in the request. Users of other servers are skipped.
func (e *E2EE) userKeysQuery(w http.ResponseWriter, r *http.Request, origin string) error {
	var req keysQueryRequest
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	if req.DeviceKeys == nil {
		return httpapi.MissingParam("Missing device_keys")
	}
	named := 0
	local := map[string][]string{}
	for userID, devices := range req.DeviceKeys {
		named += 1 + len(devices)
		if userOf(e.ServerName, userID) == nil {
			local[userID] = devices
		}
	}
	if named > maxKeysNamed {
		return httpapi.TooLarge("At most %d users and devices may be queried at once", maxKeysNamed)
	}
	devices, master, selfSigning, err := e.Local.QueryLocalKeys(r.Context(), local)
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, keysQueryResponse{DeviceKeys: devices, MasterKeys: master, SelfSigningKeys: selfSigning})
	return nil
}

// POST /_matrix/federation/v1/user/keys/claim (user_keys.yaml claimUserKeys): one one-time
// key (else the fallback key) of each named device of our users.
func (e *E2EE) userKeysClaim(w http.ResponseWriter, r *http.Request, origin string) error {
	var req keysClaimRequest
	if err := httpapi.ReadJSON(r, maxKeysBody, &req); err != nil {
		return err
	}
	if req.OneTimeKeys == nil {
		return httpapi.MissingParam("Missing one_time_keys")
	}
	named := 0
	local := map[string]map[string]string{}
	for userID, devices := range req.OneTimeKeys {
		named += 1 + len(devices)
		if userOf(e.ServerName, userID) == nil {
			local[userID] = devices
		}
	}
	if named > maxKeysNamed {
		return httpapi.TooLarge("At most %d users and devices may be named at once", maxKeysNamed)
	}
	claimed, err := e.Local.ClaimLocalKeys(r.Context(), local)
	if err != nil {
		return err
	}
	if claimed == nil {
		claimed = map[string]map[string]map[string]json.RawMessage{}
	}
	httpapi.WriteJSON(w, http.StatusOK, keysClaimResponse{OneTimeKeys: claimed})
	return nil
}

// serverFailure is the "failures" entry of /keys/query and /keys/claim for a server that
// did not answer. NOTSPEC: the spec leaves the contents open; this is Synapse's shape.
func serverFailure(err error) map[string]any {
	status := http.StatusServiceUnavailable
	var remote *RemoteError
	if errors.As(err, &remote) {
		status = remote.Status
	}
	message := "Could not reach the server"
	if errors.Is(err, context.DeadlineExceeded) {
		message = "The server did not answer in time"
	} else if remote != nil {
		message = remote.Error()
	}
	return map[string]any{"status": status, "message": message}
}

// groupByServer splits user IDs of other servers by server; invalid IDs and our own users
// are left out.
func groupByServer[V any](ourServer string, byUser map[string]V) map[string]map[string]V {
	out := map[string]map[string]V{}
	for userID, v := range byUser {
		user, err := spec.ParseUserID(userID)
		if err != nil || string(user.Server()) == ourServer {
			continue
		}
		server := string(user.Server())
		if out[server] == nil {
			out[server] = map[string]V{}
		}
		out[server][userID] = v
	}
	return out
}

// remoteKeysResult is the answer of QueryRemoteKeys, in the shape of a /keys/query response.
type remoteKeysResult struct {
	DeviceKeys      map[string]map[string]json.RawMessage
	MasterKeys      map[string]json.RawMessage
	SelfSigningKeys map[string]json.RawMessage
	Failures        map[string]any
}

// QueryRemoteKeys reads the keys of other servers' users (user ID → device IDs, none
// meaning all) for a client's /keys/query (client-server API "Tracking the device list for
// a user"): from the cache when it is kept up to date (the user shares a room with one of
// ours and the list was synced), else with POST /user/keys/query on their server. Servers
// that do not answer within timeout are reported under failures.
func (e *E2EE) QueryRemoteKeys(ctx context.Context, request map[string][]string, timeout time.Duration) (devices map[string]map[string]json.RawMessage,
	master, selfSigning map[string]json.RawMessage, failures map[string]any) {
	res := remoteKeysResult{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}, Failures: map[string]any{}}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for server, users := range groupByServer(e.ServerName, request) {
		missing := map[string][]string{}
		for userID, deviceIDs := range users {
			if !e.fromCache(ctx, userID, deviceIDs, &res) {
				missing[userID] = deviceIDs
			}
		}
		if len(missing) == 0 {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			answer, err := e.queryServerKeys(ctx, server, missing)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.Failures[server] = serverFailure(err)
				return
			}
			for userID, devices := range answer.DeviceKeys {
				res.DeviceKeys[userID] = devices
			}
			for userID, key := range answer.MasterKeys {
				res.MasterKeys[userID] = key
			}
			for userID, key := range answer.SelfSigningKeys {
				res.SelfSigningKeys[userID] = key
			}
		}()
	}
	wg.Wait()
	return res.DeviceKeys, res.MasterKeys, res.SelfSigningKeys, res.Failures
}

// fromCache answers the query of userID's keys from the cached device list if it is kept up
// to date, and reports whether it did. It runs before any query goroutine starts.
func (e *E2EE) fromCache(ctx context.Context, userID string, deviceIDs []string, res *remoteKeysResult) bool {
	tracked, err := e.tracked(ctx, userID)
	if err != nil || !tracked {
		return false
	}
	list, err := storage.LoadRemoteDeviceList(ctx, e.DB, userID, deviceIDs)
	if err != nil {
		if !errors.Is(err, storage.ErrNotFound) {
			e.Log.Warn("federation: read cached device list", "user", userID, "err", err)
		}
		return false
	}
	devices := map[string]json.RawMessage{}
	for _, d := range list.Devices {
		unsigned := map[string]any{}
		if d.DisplayName != "" {
			unsigned["device_display_name"] = d.DisplayName
		}
		devices[d.DeviceID] = keys.WithUnsigned(d.KeyJSON, unsigned)
	}
	res.DeviceKeys[userID] = devices
	if list.MasterKey != nil {
		res.MasterKeys[userID] = list.MasterKey
	}
	if list.SelfSigningKey != nil {
		res.SelfSigningKeys[userID] = list.SelfSigningKey
	}
	return true
}

// queryServerKeys asks server for its users' keys and keeps what checks out: keys of the
// users asked for, each device's keys signed by that device, cross-signing keys of their
// owner.
func (e *E2EE) queryServerKeys(ctx context.Context, server string, request map[string][]string) (*keysQueryResponse, error) {
	var resp keysQueryResponse
	err := e.Client.DoJSON(ctx, Request{Method: http.MethodPost, Destination: server, URI: "/_matrix/federation/v1/user/keys/query",
		Body: keysQueryRequest{DeviceKeys: request}, MaxResponseSize: maxDevicesResponse}, &resp)
	if err != nil {
		return nil, err
	}
	out := &keysQueryResponse{DeviceKeys: map[string]map[string]json.RawMessage{}, MasterKeys: map[string]json.RawMessage{},
		SelfSigningKeys: map[string]json.RawMessage{}}
	for userID, devices := range resp.DeviceKeys {
		if _, asked := request[userID]; !asked {
			continue
		}
		kept := map[string]json.RawMessage{}
		for deviceID, raw := range devices {
			if _, _, err := keys.ParseDeviceKeys(raw, userID, deviceID); err != nil {
				e.Log.Info("federation: device keys refused", "user", userID, "device", deviceID, "reason", err)
				continue
			}
			kept[deviceID] = raw
		}
		out.DeviceKeys[userID] = kept
	}
	for userID := range request {
		if key := checkedCrossSigningKey(resp.MasterKeys[userID], userID, storage.KeyTypeMaster); key != nil {
			out.MasterKeys[userID] = key
		}
		if key := checkedCrossSigningKey(resp.SelfSigningKeys[userID], userID, storage.KeyTypeSelfSigning); key != nil {
			out.SelfSigningKeys[userID] = key
		}
	}
	return out, nil
}

// ClaimRemoteKeys claims one-time keys of other servers' users' devices (user ID → device
// ID → algorithm) for a client's /keys/claim, with POST /user/keys/claim on each server.
// Servers that do not answer within timeout are reported under failures.
func (e *E2EE) ClaimRemoteKeys(ctx context.Context, request map[string]map[string]string, timeout time.Duration) (
	map[string]map[string]map[string]json.RawMessage, map[string]any) {
	claimed := map[string]map[string]map[string]json.RawMessage{}
	failures := map[string]any{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for server, users := range groupByServer(e.ServerName, request) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var resp keysClaimResponse
			err := e.Client.DoJSON(ctx, Request{Method: http.MethodPost, Destination: server, URI: "/_matrix/federation/v1/user/keys/claim",
				Body: keysClaimRequest{OneTimeKeys: users}, MaxResponseSize: maxDevicesResponse}, &resp)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				failures[server] = serverFailure(err)
				return
			}
			for userID, devices := range resp.OneTimeKeys {
				asked, ok := users[userID]
				if !ok {
					continue
				}
				for deviceID, key := range devices {
					if _, ok := asked[deviceID]; !ok {
						continue
					}
					if claimed[userID] == nil {
						claimed[userID] = map[string]map[string]json.RawMessage{}
					}
					claimed[userID][deviceID] = key
				}
			}
		}()
	}
	wg.Wait()
	return claimed, failures
}

// directToDevice is the content of an m.direct_to_device EDU.
type directToDevice struct {
	Sender    string                                `json:"sender"`
	Type      string                                `json:"type"`
	MessageID string                                `json:"message_id"`
	Messages  map[string]map[string]json.RawMessage `json:"messages"`
}

// QueueToDevice queues, in q (the transaction recording the client's /sendToDevice), the
// to-device messages of sender for users of other servers (user ID → device ID or "*" →
// content) as m.direct_to_device EDUs, one per server (more when large), each with its own
// message_id. It returns the servers to Wake once q is committed.
func (e *E2EE) QueueToDevice(ctx context.Context, q storage.Querier, sender, eventType string, messages map[string]map[string]json.RawMessage) ([]string, error) {
	byServer := groupByServer(e.ServerName, messages)
	servers := make([]string, 0, len(byServer))
	for server := range byServer {
		servers = append(servers, server)
	}
	sort.Strings(servers)
	now := e.Clock().UnixMilli()
	for _, server := range servers {
		for _, chunk := range splitToDevice(byServer[server]) {
			messageID, err := randomMessageID()
			if err != nil {
				return nil, err
			}
			edu, err := json.Marshal(map[string]any{"edu_type": eduDirectToDevice,
				"content": directToDevice{Sender: sender, Type: eventType, MessageID: messageID, Messages: chunk}})
			if err != nil {
				return nil, err
			}
			if err := storage.EnqueueEDU(ctx, q, []string{server}, edu, now); err != nil {
				return nil, fmt.Errorf("queue to-device message: %w", err)
			}
		}
	}
	return servers, nil
}

// splitToDevice splits the messages for one server into groups of about
// maxToDeviceEDUSize bytes, users and devices in order.
func splitToDevice(messages map[string]map[string]json.RawMessage) []map[string]map[string]json.RawMessage {
	users := make([]string, 0, len(messages))
	for u := range messages {
		users = append(users, u)
	}
	sort.Strings(users)
	var out []map[string]map[string]json.RawMessage
	current, size := map[string]map[string]json.RawMessage{}, 0
	for _, u := range users {
		devices := make([]string, 0, len(messages[u]))
		for d := range messages[u] {
			devices = append(devices, d)
		}
		sort.Strings(devices)
		for _, d := range devices {
			content := messages[u][d]
			n := len(u) + len(d) + len(content) + 8
			if size > 0 && size+n > maxToDeviceEDUSize {
				out = append(out, current)
				current, size = map[string]map[string]json.RawMessage{}, 0
			}
			if current[u] == nil {
				current[u] = map[string]json.RawMessage{}
			}
			current[u][d] = content
			size += n
		}
	}
	if size > 0 {
		out = append(out, current)
	}
	return out
}

// randomMessageID makes the message_id of an m.direct_to_device EDU.
func randomMessageID() (string, error) {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return hex.EncodeToString(b), nil
}

// receiveDirectToDevice delivers an m.direct_to_device EDU from origin (server-server API
// "Send-to-device messaging") to our users' devices. The sender must belong to origin; the
// message_id makes a repeated EDU a no-op.
func (e *E2EE) receiveDirectToDevice(ctx context.Context, origin string, raw json.RawMessage) error {
	var m directToDevice
	if err := json.Unmarshal(raw, &m); err != nil {
		return fmt.Errorf("malformed m.direct_to_device: %w", err)
	}
	if err := userOf(origin, m.Sender); err != nil {
		return err
	}
	if m.Type == "" || m.MessageID == "" {
		return errors.New("m.direct_to_device without type or message_id")
	}
	messageID := m.MessageID
	if len(messageID) > maxMessageIDLength {
		sum := sha256.Sum256([]byte(messageID))
		messageID = "sha256:" + hex.EncodeToString(sum[:])
	}
	local := map[string]map[string]json.RawMessage{}
	targets := 0
	for userID, devices := range m.Messages {
		if userOf(e.ServerName, userID) != nil {
			continue
		}
		if targets += len(devices); targets > maxToDeviceTargets {
			return fmt.Errorf("m.direct_to_device from %s names more than %d devices", m.Sender, maxToDeviceTargets)
		}
		local[userID] = devices
	}
	if len(local) == 0 {
		return nil
	}
	return e.Local.ReceiveToDevice(ctx, m.Sender, m.Type, messageID, local)
}
