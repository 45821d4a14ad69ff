package clientapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"net/http"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
)

// Inviting by third-party identifier (client-server API "Third-party invites" module,
// third_party_membership.yaml). POST /rooms/{roomId}/invite has two forms: with user_id
// (membership.go) and with id_server, id_access_token, medium and address, which asks the
// homeserver to look the identifier up on that identity server
// (/_matrix/identity/v2/lookup) and either invite the bound Matrix ID or store the invite
// there (/_matrix/identity/v2/store-invite) and send an m.room.third_party_invite.
//
// This server talks to no identity server, so the second form ends where the identity
// server would be contacted, after the checks that do not need it; the server-server half
// (an identity server's /3pid/onbind, other servers' /exchange_third_party_invite) is
// complete: see federation/thirdparty.go.

// thirdPartyInviteRequest is the body of the third-party form of /invite (invite_3pid.yaml).
type thirdPartyInviteRequest struct {
	IDServer      *string `json:"id_server"`
	IDAccessToken *string `json:"id_access_token"`
	Medium        *string `json:"medium"`
	Address       *string `json:"address"`
}

// isThirdPartyInvite reports whether an /invite body is of the third-party form: it has
// medium and address (as Synapse tells the forms apart) and no user_id.
func isThirdPartyInvite(body []byte) bool {
	var probe struct {
		UserID  json.RawMessage `json:"user_id"`
		Medium  json.RawMessage `json:"medium"`
		Address json.RawMessage `json:"address"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return false
	}
	return probe.UserID == nil && probe.Medium != nil && probe.Address != nil
}

// inviteEitherForm serves POST /rooms/{roomId}/invite in both forms: the third-party one
// here, the user_id one by invite (membership.go), which reads the body again.
func (a *API) inviteEitherForm(w http.ResponseWriter, r *http.Request, d *Device) error {
	if err := d.requireNotSuspended(); err != nil {
		return err
	}
	body, err := httpapi.ReadBody(r, httpapi.MaxBodySize)
	if err != nil {
		return err
	}
	if isThirdPartyInvite(body) {
		return a.inviteThirdParty(w, r, d, body)
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	r.ContentLength = int64(len(body))
	return a.invite(w, r, d)
}

// inviteThirdParty handles the third-party form of /invite. The answers that need no
// identity server are the endpoint's: 400 M_MISSING_PARAM for a missing field (Synapse
// requires id_access_token as well: "`id_server` and `id_access_token` are required"),
// 403 M_FORBIDDEN when the inviter is not in the room or may neither invite nor send
// m.room.third_party_invite. Past those the identity server would be asked; as it cannot
// be, the answer is the one Synapse gives when the identity server cannot be reached:
// 500 M_UNKNOWN. NOTSPEC: the spec does not say how that failure is answered.
func (a *API) inviteThirdParty(w http.ResponseWriter, r *http.Request, d *Device, body []byte) error {
	var req thirdPartyInviteRequest
	if err := httpapi.DecodeJSON(body, &req); err != nil {
		return err
	}
	for _, f := range []struct {
		name  string
		value *string
	}{{"id_server", req.IDServer}, {"id_access_token", req.IDAccessToken}, {"medium", req.Medium}, {"address", req.Address}} {
		if f.value == nil || *f.value == "" {
			return httpapi.MissingParam("%s is required for a third-party invite", f.name)
		}
	}
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	ctx := r.Context()
	membership, _, err := a.rooms.Membership(ctx, roomID, d.UserID)
	if err != nil && !errors.Is(err, rooms.ErrRoomNotFound) {
		return err
	}
	if membership != "join" {
		return httpapi.Forbidden("You are not in the room")
	}
	create, err := a.rooms.CurrentStateEvent(ctx, roomID, "m.room.create", "")
	if err != nil {
		return err
	}
	powerLevels, err := a.rooms.CurrentStateEvent(ctx, roomID, "m.room.power_levels", "")
	if err != nil {
		return err
	}
	if create == nil {
		return httpapi.Forbidden("You are not in the room")
	}
	var plEvent *spec.Event
	if powerLevels != nil {
		plEvent = powerLevels.Event
	}
	pl, err := spec.RoomPowerLevels(create.Event, plEvent)
	if err != nil {
		return err
	}
	level := pl.UserLevel(d.UserID)
	if pl.IsInfiniteCreator(d.UserID) {
		level = spec.InfinitePowerLevel
	}
	// The m.room.third_party_invite needs the invite level (auth rules v12 §7) and the
	// event's own level (§9).
	if level < pl.Invite || level < pl.EventLevel("m.room.third_party_invite", true) {
		return httpapi.Forbidden("You do not have permission to invite to this room")
	}
	a.log.Info("third-party invite without identity server", "room_id", roomID, "user_id", d.UserID, "id_server", *req.IDServer)
	return httpapi.NewError(http.StatusInternalServerError, "M_UNKNOWN",
		"Could not contact identity server %s: this homeserver does not use identity servers", *req.IDServer)
}
