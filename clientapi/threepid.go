package clientapi

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
)

// Third-party identifiers of accounts (client-server API "Adding Account Administrative
// Contact Information", administrative_contact.yaml; the requestToken endpoints of
// registration.yaml and password_management.yaml).
//
// This server keeps no third-party identifiers: it sends no email or SMS and talks to no
// identity server, and GET /capabilities says m.3pid_changes is disabled. Every endpoint
// still checks its request as the spec describes it, then gives the answer the spec defines
// for a server that does not take the identifier.

func (a *API) threePIDRoutes(r chi.Router, h func(httpapi.Handler) http.Handler, authed func(func(http.ResponseWriter, *http.Request, *Device) error) http.Handler) {
	r.Method(http.MethodGet, "/account/3pid", authed(a.getThreePIDs))
	r.Method(http.MethodPost, "/account/3pid", authed(a.addThreePIDDeprecated))
	r.Method(http.MethodPost, "/account/3pid/add", authed(a.addThreePID))
	r.Method(http.MethodPost, "/account/3pid/bind", authed(a.bindThreePID))
	r.Method(http.MethodPost, "/account/3pid/delete", authed(a.deleteThreePID))
	r.Method(http.MethodPost, "/account/3pid/unbind", authed(a.deleteThreePID))

	r.Method(http.MethodPost, "/account/3pid/email/requestToken", h(requestToken(mediumEmail, errMediumNotSupported)))
	r.Method(http.MethodPost, "/account/3pid/msisdn/requestToken", h(requestToken(mediumMSISDN, errMediumNotSupported)))
	r.Method(http.MethodPost, "/register/email/requestToken", h(requestToken(mediumEmail, errThreePIDDenied)))
	r.Method(http.MethodPost, "/register/msisdn/requestToken", h(requestToken(mediumMSISDN, errThreePIDDenied)))
	r.Method(http.MethodPost, "/account/password/email/requestToken", h(requestToken(mediumEmail, errThreePIDDenied)))
	r.Method(http.MethodPost, "/account/password/msisdn/requestToken", h(requestToken(mediumMSISDN, errThreePIDDenied)))
}

// The media of third-party identifiers.
const (
	mediumEmail  = "email"
	mediumMSISDN = "msisdn"
)

// maxThreePIDBody bounds the bodies of these endpoints. NOTSPEC: the spec sets no limit.
const maxThreePIDBody = 16 * 1024

// errMediumNotSupported answers the requestToken endpoints of /account/3pid: 400
// M_THREEPID_MEDIUM_NOT_SUPPORTED, "The homeserver does not support adding email
// addresses" (or phone numbers), as administrative_contact.yaml defines it.
func errMediumNotSupported(medium string) error {
	return httpapi.NewError(http.StatusBadRequest, "M_THREEPID_MEDIUM_NOT_SUPPORTED",
		"Adding %s to an account is not supported by this homeserver", mediumName(medium))
}

// errThreePIDDenied answers the requestToken endpoints of registration and password reset:
// 403 M_THREEPID_DENIED, "The homeserver does not permit the address to be bound"
// (registration.yaml, password_management.yaml), the one answer they define for an
// identifier the server will not take.
func errThreePIDDenied(medium string) error {
	return httpapi.NewError(http.StatusForbidden, "M_THREEPID_DENIED",
		"This homeserver does not use %s for accounts", mediumName(medium))
}

func mediumName(medium string) string {
	if medium == mediumEmail {
		return "email addresses"
	}
	return "phone numbers"
}

// GET /account/3pid (administrative_contact.yaml getAccount3PIDs): always empty.
func (a *API) getThreePIDs(w http.ResponseWriter, r *http.Request, d *Device) error {
	httpapi.WriteJSON(w, http.StatusOK, map[string]any{"threepids": []any{}})
	return nil
}

// threePIDCredentials are the three_pid_creds of POST /account/3pid and the body of
// POST /account/3pid/bind.
type threePIDCredentials struct {
	ClientSecret  *string `json:"client_secret"`
	IDServer      *string `json:"id_server"`
	IDAccessToken *string `json:"id_access_token"`
	SID           *string `json:"sid"`
}

// check requires the fields the spec requires; id_access_token only when requireToken
// ("Servers can treat this as optional to distinguish between r0.5-compatible clients").
func (c *threePIDCredentials) check(requireToken bool) error {
	if err := requireFields(bodyField("client_secret", c.ClientSecret), bodyField("id_server", c.IDServer), bodyField("sid", c.SID)); err != nil {
		return err
	}
	if requireToken {
		if err := requireFields(bodyField("id_access_token", c.IDAccessToken)); err != nil {
			return err
		}
	}
	return checkClientSecret(*c.ClientSecret)
}

// requiredField is a required field of a request body and whether the request has it.
type requiredField struct {
	name    string
	present bool
}

// bodyField is the requiredField of a field decoded into value.
func bodyField[T any](name string, value *T) requiredField {
	return requiredField{name: name, present: value != nil}
}

// requireFields answers 400 M_MISSING_PARAM for the first missing field.
func requireFields(fields ...requiredField) error {
	for _, f := range fields {
		if !f.present {
			return httpapi.MissingParam("Missing %s", f.name)
		}
	}
	return nil
}

// POST /account/3pid (administrative_contact.yaml post3PIDs, deprecated): 403
// M_THREEPID_AUTH_FAILED, "The credentials could not be verified with the identity server",
// as this server asks no identity server.
func (a *API) addThreePIDDeprecated(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		Creds *threePIDCredentials `json:"three_pid_creds"`
		// NOTSPEC: the r0 name, which Synapse still reads.
		OldCreds *threePIDCredentials `json:"threePidCreds"`
	}
	if err := httpapi.ReadJSON(r, maxThreePIDBody, &req); err != nil {
		return err
	}
	creds := req.Creds
	if creds == nil {
		creds = req.OldCreds
	}
	if creds == nil {
		return httpapi.MissingParam("Missing three_pid_creds")
	}
	if err := creds.check(false); err != nil {
		return err
	}
	return httpapi.NewError(http.StatusForbidden, "M_THREEPID_AUTH_FAILED",
		"The third-party credentials could not be verified: this homeserver does not use identity servers")
}

// POST /account/3pid/add (administrative_contact.yaml add3PID). The session ID would have
// come from this server's requestToken, which never gives one, so no session can be valid.
// NOTSPEC: the answer is Synapse's for an unvalidated session, 400 M_THREEPID_AUTH_FAILED,
// given before user-interactive auth, which could lead to nothing.
func (a *API) addThreePID(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		ClientSecret *string `json:"client_secret"`
		SID          *string `json:"sid"`
	}
	if err := httpapi.ReadJSON(r, maxThreePIDBody, &req); err != nil {
		return err
	}
	if err := requireFields(bodyField("client_secret", req.ClientSecret), bodyField("sid", req.SID)); err != nil {
		return err
	}
	if err := checkClientSecret(*req.ClientSecret); err != nil {
		return err
	}
	return httpapi.NewError(http.StatusBadRequest, "M_THREEPID_AUTH_FAILED", "No validated 3pid session found")
}

// POST /account/3pid/bind (administrative_contact.yaml bind3PID): 400 M_SERVER_NOT_TRUSTED
// ("The client's request used a third-party server, e.g. identity server, that this server
// does not trust"), since this server trusts no identity server. NOTSPEC: the endpoint
// lists no error of its own; it says to proxy the identity server's.
func (a *API) bindThreePID(w http.ResponseWriter, r *http.Request, d *Device) error {
	var creds threePIDCredentials
	if err := httpapi.ReadJSON(r, maxThreePIDBody, &creds); err != nil {
		return err
	}
	if err := creds.check(true); err != nil {
		return err
	}
	return httpapi.NewError(http.StatusBadRequest, "M_SERVER_NOT_TRUSTED",
		"This homeserver does not use identity servers: %s is not trusted", *creds.IDServer)
}

// POST /account/3pid/delete and POST /account/3pid/unbind (administrative_contact.yaml
// delete3pidFromAccount, unbind3pidFromAccount). There is nothing to remove, which
// succeeds, and no identity server to unbind from: "If the homeserver does not know the
// original id_server, it MUST return a id_server_unbind_result of no-support."
func (a *API) deleteThreePID(w http.ResponseWriter, r *http.Request, d *Device) error {
	var req struct {
		IDServer *string `json:"id_server"`
		Medium   *string `json:"medium"`
		Address  *string `json:"address"`
	}
	if err := httpapi.ReadJSON(r, maxThreePIDBody, &req); err != nil {
		return err
	}
	if err := requireFields(bodyField("medium", req.Medium), bodyField("address", req.Address)); err != nil {
		return err
	}
	if *req.Medium != mediumEmail && *req.Medium != mediumMSISDN {
		return httpapi.InvalidParam("medium must be email or msisdn")
	}
	httpapi.WriteJSON(w, http.StatusOK, map[string]string{"id_server_unbind_result": "no-support"})
	return nil
}

// maxClientSecret bounds a client secret: "Its length must not exceed 255 characters and it
// must not be empty" (identity definitions/request_email_validation.yaml).
const maxClientSecret = 255

// checkClientSecret checks the client_secret grammar, [0-9a-zA-Z.=_-]{1,255}: 400
// M_INVALID_PARAM otherwise.
func checkClientSecret(secret string) error {
	if secret == "" || len(secret) > maxClientSecret {
		return httpapi.InvalidParam("client_secret must be 1 to %d characters", maxClientSecret)
	}
	for i := 0; i < len(secret); i++ {
		c := secret[i]
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '.' || c == '=' || c == '_' || c == '-') {
			return httpapi.InvalidParam("client_secret may only contain [0-9a-zA-Z.=_-]")
		}
	}
	return nil
}

// requestTokenRequest is the body of the requestToken endpoints
// (definitions/request_email_validation.yaml, request_msisdn_validation.yaml).
type requestTokenRequest struct {
	ClientSecret *string `json:"client_secret"`
	Email        *string `json:"email"`
	Country      *string `json:"country"`
	PhoneNumber  *string `json:"phone_number"`
	SendAttempt  *int64  `json:"send_attempt"`
	NextLink     *string `json:"next_link"`
}

// requestToken serves a requestToken endpoint of medium, which needs no access token: it
// checks the body, then answers refuse(medium), as no token is ever sent.
func requestToken(medium string, refuse func(medium string) error) httpapi.Handler {
	return func(w http.ResponseWriter, r *http.Request) error {
		var req requestTokenRequest
		if err := httpapi.ReadJSON(r, maxThreePIDBody, &req); err != nil {
			return err
		}
		required := []requiredField{bodyField("client_secret", req.ClientSecret), bodyField("send_attempt", req.SendAttempt)}
		if medium == mediumEmail {
			required = append(required, bodyField("email", req.Email))
		} else {
			required = append(required, bodyField("country", req.Country), bodyField("phone_number", req.PhoneNumber))
		}
		if err := requireFields(required...); err != nil {
			return err
		}
		if err := checkClientSecret(*req.ClientSecret); err != nil {
			return err
		}
		return refuse(medium)
	}
}
