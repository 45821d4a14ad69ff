package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Room tagging (client-server API "Room Tagging", tags.yaml). A user's tags on a room are
// the room account data m.tag, {"tags": {tag: {order?}}}; every change takes a stream
// position, as account data PUT does, so that /sync delivers the new m.tag.

func (a *API) tagRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/user/{userId}/rooms/{roomId}/tags", authed(a.getTags))
	r.Method(http.MethodPut, "/user/{userId}/rooms/{roomId}/tags/{tag}", authed(a.putTag))
	r.Method(http.MethodDelete, "/user/{userId}/rooms/{roomId}/tags/{tag}", authed(a.deleteTag))
}

// tagAccountData is the account data type that holds a room's tags.
const tagAccountData = "m.tag"

// maxTagName bounds a tag name, in bytes: "The name of a tag MUST NOT exceed 255 bytes"
// (client-server API "Room Tagging").
const maxTagName = 255

// tagTarget checks the user and room of a tags request: the user must be the requester's
// own (403 otherwise) and the room a valid room ID (400 M_INVALID_PARAM).
func tagTarget(r *http.Request, d *Device, action string) (roomID string, err error) {
	if pathParam(r, "userId") != d.UserID {
		return "", httpapi.Forbidden("Cannot %s tags for other users.", action)
	}
	roomID = pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return "", httpapi.InvalidParam("Invalid room ID")
	}
	return roomID, nil
}

// tagName reads the {tag} path parameter: 1 to 255 bytes.
func tagName(r *http.Request) (string, error) {
	tag := pathParam(r, "tag")
	if tag == "" || len(tag) > maxTagName {
		return "", httpapi.InvalidParam("Tag names must be 1 to %d bytes", maxTagName)
	}
	return tag, nil
}

// tagContent is the content of m.tag: the tags, plus whatever other keys a client stored
// through the account data API, which are kept as they are.
type tagContent struct {
	tags  map[string]json.RawMessage
	other map[string]json.RawMessage
}

// parseTagContent reads stored m.tag content. Content that is not an object, or whose tags
// are not an object (a client may have written anything through the account data API),
// reads as no tags.
func parseTagContent(raw []byte) *tagContent {
	c := &tagContent{tags: map[string]json.RawMessage{}, other: map[string]json.RawMessage{}}
	if raw == nil || json.Unmarshal(raw, &c.other) != nil || c.other == nil {
		c.other = map[string]json.RawMessage{}
		return c
	}
	if tags, ok := c.other["tags"]; ok {
		if json.Unmarshal(tags, &c.tags) != nil || c.tags == nil {
			c.tags = map[string]json.RawMessage{}
		}
		delete(c.other, "tags")
	}
	return c
}

// encode is the content to store.
func (c *tagContent) encode() ([]byte, error) {
	out := make(map[string]any, len(c.other)+1)
	for k, v := range c.other {
		out[k] = v
	}
	out["tags"] = c.tags
	return json.Marshal(out)
}

// GET /user/{userId}/rooms/{roomId}/tags (tags.yaml getRoomTags): {"tags": {}} when the
// room has none.
func (a *API) getTags(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, err := tagTarget(r, d, "get")
	if err != nil {
		return err
	}
	raw, err := storage.GetAccountData(r.Context(), a.db, d.UserID, roomID, tagAccountData)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"tags": parseTagContent(raw).tags})
	return nil
}

// PUT /user/{userId}/rooms/{roomId}/tags/{tag} (tags.yaml setRoomTag). The body is the tag's
// object (definitions/tag.yaml); its order, when present, must be a number in [0,1]. Other
// keys are kept.
//
// NOTSPEC: as Synapse, the user must have some membership of the room (any, even leave),
// else 403: tagging rooms one never saw only stores data nobody needs.
func (a *API) putTag(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, err := tagTarget(r, d, "add")
	if err != nil {
		return err
	}
	tag, err := tagName(r)
	if err != nil {
		return err
	}
	body, err := httpapi.ReadBody(r, maxAccountDataSize)
	if err != nil {
		return err
	}
	var fields map[string]json.RawMessage
	if err := httpapi.DecodeJSON(body, &fields); err != nil {
		return err
	}
	if order, ok := fields["order"]; ok {
		var n float64
		if string(order) == "null" || json.Unmarshal(order, &n) != nil {
			return httpapi.BadJSON("order must be a number")
		}
		if n < 0 || n > 1 {
			return httpapi.InvalidParam("order must be between 0 and 1")
		}
	}
	var tagObject bytes.Buffer
	if len(fields) == 0 {
		tagObject.WriteString("{}")
	} else if err := json.Compact(&tagObject, body); err != nil {
		return httpapi.NotJSON("Request body is not valid JSON")
	}

	membership, _, err := a.rooms.Membership(r.Context(), roomID, d.UserID)
	if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
		return err
	}
	if membership == "" {
		return httpapi.Forbidden("User %s has no membership in room %s", d.UserID, roomID)
	}
	return a.updateTags(w, r, d, roomID, func(c *tagContent) bool {
		if bytes.Equal(c.tags[tag], tagObject.Bytes()) {
			return false
		}
		c.tags[tag] = json.RawMessage(tagObject.Bytes())
		return true
	})
}

// DELETE /user/{userId}/rooms/{roomId}/tags/{tag} (tags.yaml deleteRoomTag): removing a tag
// the room does not have succeeds and changes nothing.
func (a *API) deleteTag(w http.ResponseWriter, r *http.Request, d *Device) error {
	roomID, err := tagTarget(r, d, "remove")
	if err != nil {
		return err
	}
	tag, err := tagName(r)
	if err != nil {
		return err
	}
	return a.updateTags(w, r, d, roomID, func(c *tagContent) bool {
		if _, ok := c.tags[tag]; !ok {
			return false
		}
		delete(c.tags, tag)
		return true
	})
}

// errTooManyTags refuses a change that would make m.tag larger than any account data may be.
var errTooManyTags = httpapi.TooLarge("The room's tags would exceed %d bytes", maxAccountDataSize)

// updateTags applies change to the room's m.tag, atomically, and answers {}. change reports
// whether it changed anything.
func (a *API) updateTags(w http.ResponseWriter, r *http.Request, d *Device, roomID string, change func(*tagContent) bool) error {
	err := a.updateAccountData(r.Context(), d.UserID, roomID, tagAccountData,
		func(current []byte) ([]byte, error) {
			c := parseTagContent(current)
			if !change(c) {
				return nil, nil
			}
			content, err := c.encode()
			if err != nil {
				return nil, err
			}
			if len(content) > maxAccountDataSize {
				return nil, errTooManyTags
			}
			return content, nil
		})
	if err != nil {
		return err
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
