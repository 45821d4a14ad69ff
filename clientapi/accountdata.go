package clientapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
	"github.com/scrambledeggs/eggs/streams"
)

// Client config: global and per-room account data (client-server API "Client Config",
// account-data.yaml). Every write takes a stream position, so that /sync delivers it.

// maxAccountDataSize bounds one piece of account data. NOTSPEC: the spec sets no limit; it
// matches the 64 KiB limit of an event, which clients already respect.
const maxAccountDataSize = 64 * 1024

// maxAccountDataType bounds an account data type, in bytes. NOTSPEC: as for event types.
const maxAccountDataType = 255

// serverManagedAccountData are the types clients may not write through account data
// (account-data.yaml, 405 M_BAD_JSON): m.fully_read is set through read markers and
// m.push_rules through the push rules API.
var serverManagedAccountData = map[string]bool{
	"m.fully_read": true,
	"m.push_rules": true,
}

// accountDataTarget checks the path of an account data request: the user must be the
// requester's own (403 otherwise), the type well-formed, and the room, if any, a valid room
// ID (400 M_INVALID_PARAM). roomID is "" for global account data.
func accountDataTarget(r *http.Request, d *Device, action string) (roomID, dataType string, err error) {
	if pathParam(r, "userId") != d.UserID {
		return "", "", httpapi.Forbidden("Cannot %s account data of other users.", action)
	}
	dataType = pathParam(r, "type")
	if dataType == "" || len(dataType) > maxAccountDataType {
		return "", "", httpapi.InvalidParam("Account data type must be 1 to %d bytes", maxAccountDataType)
	}
	roomID = pathParam(r, "roomId")
	if roomID != "" {
		if _, err := spec.ParseRoomID(roomID); err != nil {
			return "", "", httpapi.InvalidParam("Invalid room ID")
		}
	}
	return roomID, dataType, nil
}

// PUT /user/{userId}/account_data/{type} and PUT /user/{userId}/rooms/{roomId}/account_data/{type}
// (account-data.yaml setAccountData, setAccountDataPerRoom). The body is the content, a
// JSON object.
func (a *API) putAccountData(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, dataType, err := accountDataTarget(r, d, "add")
	if err != nil {
		return err
	}
	if serverManagedAccountData[dataType] {
		return httpapi.NewError(http.StatusMethodNotAllowed, "M_BAD_JSON", "Cannot set %s through this API.", dataType)
	}
	body, err := httpapi.ReadBody(r, maxAccountDataSize)
	if err != nil {
		return err
	}
	var object map[string]json.RawMessage
	if err := httpapi.DecodeJSON(body, &object); err != nil {
		return err
	}
	var content bytes.Buffer
	if len(bytes.TrimSpace(body)) == 0 {
		content.WriteString("{}")
	} else if err := json.Compact(&content, body); err != nil {
		return httpapi.NotJSON("Content must be a JSON object.")
	}

	err = a.putAccountDataContent(r.Context(), d.UserID, roomID, dataType, content.Bytes())
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// putAccountDataContent sets one piece of a user's account data (roomID "" for global).
func (a *API) putAccountDataContent(ctx context.Context, userID, roomID, dataType string, content []byte) error {
	return a.writeAccountData(userID, func(pos int64) (bool, error) {
		err := storage.PutAccountData(ctx, a.db, userID, roomID, dataType, content, pos)
		return err == nil, err
	})
}

// updateAccountData changes one piece of a user's account data (roomID "" for global) to
// what update makes of the current content (nil when there is none), atomically. update
// returns nil content to leave it as it is.
func (a *API) updateAccountData(ctx context.Context, userID, roomID, dataType string, update func(current []byte) ([]byte, error)) error {
	return a.writeAccountData(userID, func(pos int64) (bool, error) {
		return storage.UpdateAccountData(ctx, a.db, userID, roomID, dataType, pos, update)
	})
}

// writeAccountData runs write, a change of userID's account data, at a new stream position,
// so that /sync delivers it; write reports whether it changed anything.
func (a *API) writeAccountData(userID string, write func(pos int64) (bool, error)) error {
	stream := a.rooms.Stream()
	pos := stream.Allocate()
	changed, err := write(pos)
	if changed {
		stream.MarkChanged(pos, streams.AccountDataKey(userID))
	}
	stream.Finish(pos, userID)
	return err
}

// GET /user/{userId}/account_data/{type} and GET /user/{userId}/rooms/{roomId}/account_data/{type}
// (account-data.yaml getAccountData, getAccountDataPerRoom): 404 when none is set.
func (a *API) getAccountData(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, dataType, err := accountDataTarget(r, d, "get")
	if err != nil {
		return err
	}
	content, err := storage.GetAccountData(r.Context(), a.db, d.UserID, roomID, dataType)
	if errors.Is(err, storage.ErrNotFound) {
		return httpapi.NotFound("No account data of type %s", dataType)
	}
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(content)
	return nil
}
