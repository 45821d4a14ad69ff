package clientapi

import (
	"errors"
	"net/http"
	"unicode/utf8"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Reporting content (client-server API "Reporting content", report_content.yaml): users
// report events, rooms and users to the server administrators. Reports are stored
// (storage.InsertReport) for the administrators to review (storage.ListReports).

func (a *API) reportRoutes(r chi.Router, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodPost, "/rooms/{roomId}/report/{eventId}", authed(a.reportEvent))
	r.Method(http.MethodPost, "/rooms/{roomId}/report", authed(a.reportRoom))
	r.Method(http.MethodPost, "/users/{userId}/report", authed(a.reportUser))
}

// maxReportBody bounds the body of a report. NOTSPEC: the spec sets no limit.
const maxReportBody = 64 * 1024

// maxReportReason bounds a report's reason, in characters. NOTSPEC: the spec sets no limit;
// this is Synapse's for user reports ("Reason must be less than 1000 characters", 400
// M_BAD_JSON), applied to every kind of report.
const maxReportReason = 1000

// reportRequest is the body of the report endpoints. Score is only read for event reports:
// the spec removed it in v1.18, but clients still send it, and Synapse still takes it.
type reportRequest struct {
	Reason *string `json:"reason"`
	Score  *int64  `json:"score"`
}

// readReport reads and checks a report's body; reasonRequired is true for room and user
// reports, whose reason is required (though it may be blank).
func (a *API) readReport(r *http.Request, d *Device, reasonRequired bool) (*reportRequest, error) {
	if err := rateLimit(a.limiters.Report, d.UserID); err != nil {
		return nil, err
	}
	var req reportRequest
	if err := httpapi.ReadJSON(r, maxReportBody, &req); err != nil {
		return nil, err
	}
	if req.Reason == nil && reasonRequired {
		return nil, httpapi.MissingParam("Missing reason")
	}
	if req.Reason != nil && utf8.RuneCountInString(*req.Reason) > maxReportReason {
		return nil, httpapi.BadJSON("Reason must be at most %d characters", maxReportReason)
	}
	return &req, nil
}

// storeReport stores a report and answers {}.
func (a *API) storeReport(w http.ResponseWriter, r *http.Request, report *storage.ReportRow) error {
	report.ReceivedTS = a.nowMS()
	if _, err := storage.InsertReport(r.Context(), a.db, report); err != nil {
		return err
	}
	a.log.Info("content reported", "kind", report.Kind, "reporter", report.Reporter,
		"room_id", report.RoomID, "event_id", report.EventID, "user_id", report.UserID)
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}

// POST /rooms/{roomId}/report/{eventId} (report_content.yaml reportEvent). The reporter must
// be joined to the room (v1.8) and able to see the event; otherwise, as for an unknown or
// redacted event, 404 M_NOT_FOUND, one answer for all so that it reveals nothing. The
// reason is optional.
func (a *API) reportEvent(w http.ResponseWriter, r *http.Request, d *Device) error {
	req, err := a.readReport(r, d, false)
	if err != nil {
		return err
	}
	ctx := r.Context()
	roomID, eventID := pathParam(r, "roomId"), pathParam(r, "eventId")
	notFound := httpapi.NotFound("Unable to report event: it does not exist or you aren't able to see it.")
	rr, err := a.roomReader(ctx, roomID, d.UserID)
	if err == errNoAccess {
		return notFound
	}
	if err != nil {
		return err
	}
	if rr.membership != "join" {
		return notFound
	}
	e, err := a.visibleEvent(ctx, rr, eventID)
	var herr *httpapi.Error
	if errors.As(err, &herr) && herr.Status == http.StatusNotFound {
		return notFound
	}
	if err != nil {
		return err
	}
	// "Homeserver implementations can additionally return this error if the reported event
	// has been redacted": Synapse does, and so do we.
	if e.RedactedBy != "" {
		return notFound
	}
	return a.storeReport(w, r, &storage.ReportRow{Kind: storage.ReportEvent, Reporter: d.UserID,
		RoomID: roomID, EventID: eventID, Reason: req.Reason, Score: req.Score})
}

// POST /rooms/{roomId}/report (report_content.yaml reportRoom, v1.13). The reporter need not
// be in the room; a room this server does not know is 404 M_NOT_FOUND.
func (a *API) reportRoom(w http.ResponseWriter, r *http.Request, d *Device) error {
	req, err := a.readReport(r, d, true)
	if err != nil {
		return err
	}
	roomID := pathParam(r, "roomId")
	if _, err := spec.ParseRoomID(roomID); err != nil {
		return httpapi.InvalidParam("Invalid room ID")
	}
	if _, err := a.rooms.RoomNID(r.Context(), roomID); errors.Is(err, rooms.ErrRoomNotFound) {
		return httpapi.NotFound("The room was not found.")
	} else if err != nil {
		return err
	}
	return a.storeReport(w, r, &storage.ReportRow{Kind: storage.ReportRoom, Reporter: d.UserID,
		RoomID: roomID, Reason: req.Reason})
}

// POST /users/{userId}/report (report_content.yaml reportUser, v1.14). The reporter need not
// share a room with the user.
//
// NOTSPEC: as Synapse, a user of another server or an unknown user is answered 200 like
// any other and the report is dropped: the spec allows hiding whether the user exists, and
// this server can do nothing about other servers' users.
func (a *API) reportUser(w http.ResponseWriter, r *http.Request, d *Device) error {
	req, err := a.readReport(r, d, true)
	if err != nil {
		return err
	}
	userID := pathParam(r, "userId")
	if _, err := spec.ParseUserID(userID); err != nil {
		return httpapi.InvalidParam("Invalid user ID")
	}
	if a.isLocalUser(userID) {
		_, err := storage.LoadUser(r.Context(), a.db, userID)
		switch {
		case err == nil:
			return a.storeReport(w, r, &storage.ReportRow{Kind: storage.ReportUser, Reporter: d.UserID,
				UserID: userID, Reason: req.Reason})
		case !errors.Is(err, storage.ErrNotFound):
			return err
		}
	}
	httpapi.WriteJSON(w, http.StatusOK, struct{}{})
	return nil
}
