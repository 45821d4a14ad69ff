package auth

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// StageCheck validates the auth dict of one stage type; see StageValidator for what it
// returns.
type StageCheck func(authDict json.RawMessage) error

// Stages maps stage types to their checks. Its Validate method is a StageValidator:
//
//	stages := auth.Stages{
//		auth.StageDummy:             auth.DummyStage,
//		auth.StageRegistrationToken: auth.RegistrationTokenStage(tokens.Valid),
//	}
//	done, resp, err := engine.Check(op, offer, body.Auth, stages.Validate)
type Stages map[string]StageCheck

// Validate runs the check registered for stageType. A stage offered without a check is a
// programming error and reported as an internal error.
func (s Stages) Validate(stageType string, authDict json.RawMessage) error {
	check, ok := s[stageType]
	if !ok {
		return fmt.Errorf("no validator for UIA stage %q", stageType)
	}
	return check(authDict)
}

// DummyStage checks m.login.dummy, which always succeeds (Client-Server API, "Dummy
// Auth").
func DummyStage(json.RawMessage) error { return nil }

// RegistrationTokenStage returns the check of m.login.registration_token (Client-Server
// API, "Token-authenticated registration"). The token must have the opaque identifier
// grammar with at most 64 characters; valid then reports whether the server knows it and
// it has uses left and has not expired. An unusable token is a retryable failure, 401
// M_UNAUTHORIZED as in Synapse. The engine keeps the token in the session
// (SessionDataRegistrationToken) for /register to charge once the account exists.
func RegistrationTokenStage(valid func(token string) (bool, error)) StageCheck {
	return func(authDict json.RawMessage) error {
		var d struct {
			Token *string `json:"token"`
		}
		if err := json.Unmarshal(authDict, &d); err != nil {
			return &Error{Status: http.StatusBadRequest, Code: ErrCodeBadJSON, Message: "auth.token must be a string"}
		}
		if d.Token == nil {
			return &Error{Status: http.StatusBadRequest, Code: ErrCodeMissingParam, Message: "Missing auth.token"}
		}
		if !ValidRegistrationTokenSyntax(*d.Token) {
			return &StageError{Code: ErrCodeUnauthorized, Message: "Invalid registration token"}
		}
		ok, err := valid(*d.Token)
		if err != nil {
			return fmt.Errorf("check registration token: %w", err)
		}
		if !ok {
			return &StageError{Code: ErrCodeUnauthorized, Message: "Invalid registration token"}
		}
		return nil
	}
}

// MaxRegistrationTokenLength is the longest registration token the spec allows
// ("Token-authenticated registration").
const MaxRegistrationTokenLength = 64

// ValidRegistrationTokenSyntax reports whether token follows the Opaque Identifier Grammar
// (appendices, "Opaque Identifiers": [0-9A-Za-z-._~]) and is 1 to 64 characters long. Use
// it also in GET /register/m.login.registration_token/validity, which answers 400
// M_INVALID_PARAM for tokens that fail it.
func ValidRegistrationTokenSyntax(token string) bool {
	if len(token) == 0 || len(token) > MaxRegistrationTokenLength {
		return false
	}
	for i := 0; i < len(token); i++ {
		c := token[i]
		switch {
		case c >= '0' && c <= '9', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z',
			c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

// Identifier types of the Client-Server API, "Identifier types".
const (
	IdentifierUser       = "m.id.user"
	IdentifierThirdParty = "m.id.thirdparty"
	IdentifierPhone      = "m.id.phone"
)

// Identifier is a user identifier object, as sent to /login and in the m.login.password
// auth dict. Which fields are set depends on Type.
type Identifier struct {
	Type string `json:"type"`
	// User is a full user ID or a localpart (m.id.user).
	User string `json:"user,omitempty"`
	// Medium and Address name a third-party identifier (m.id.thirdparty).
	Medium  string `json:"medium,omitempty"`
	Address string `json:"address,omitempty"`
	// Country and Phone name a phone number as dialled (m.id.phone).
	Country string `json:"country,omitempty"`
	Phone   string `json:"phone,omitempty"`
}

// PasswordCredentials are the identifier and password of an m.login.password login or
// UIA stage.
type PasswordCredentials struct {
	Identifier Identifier
	Password   string
}

// ParsePasswordCredentials reads the identifier and password from a /login request body
// or an m.login.password auth dict (Client-Server API, "Password-based"). Malformed input
// is a 400 *Error.
//
// NOTSPEC: like Synapse, the deprecated top-level "user", or "medium" and "address", are
// accepted when "identifier" is absent; old clients and scripts still send them.
func ParsePasswordCredentials(body json.RawMessage) (PasswordCredentials, error) {
	var d struct {
		Identifier *json.RawMessage `json:"identifier"`
		Password   *string          `json:"password"`
		User       string           `json:"user"`
		Medium     string           `json:"medium"`
		Address    string           `json:"address"`
	}
	badJSON := func(msg string) error {
		return &Error{Status: http.StatusBadRequest, Code: ErrCodeBadJSON, Message: msg}
	}
	if err := json.Unmarshal(body, &d); err != nil {
		return PasswordCredentials{}, badJSON("Invalid password login: " + err.Error())
	}
	if d.Password == nil {
		return PasswordCredentials{}, &Error{Status: http.StatusBadRequest, Code: ErrCodeMissingParam, Message: "Missing password"}
	}
	creds := PasswordCredentials{Password: *d.Password}
	switch {
	case d.Identifier != nil:
		if err := json.Unmarshal(*d.Identifier, &creds.Identifier); err != nil {
			return PasswordCredentials{}, badJSON("identifier must be an object of strings")
		}
	case d.User != "":
		creds.Identifier = Identifier{Type: IdentifierUser, User: d.User}
	case d.Medium != "" && d.Address != "":
		creds.Identifier = Identifier{Type: IdentifierThirdParty, Medium: d.Medium, Address: d.Address}
	default:
		return PasswordCredentials{}, &Error{Status: http.StatusBadRequest, Code: ErrCodeMissingParam, Message: "Missing identifier"}
	}
	id := creds.Identifier
	var complete bool
	switch id.Type {
	case IdentifierUser:
		complete = id.User != ""
	case IdentifierThirdParty:
		complete = id.Medium != "" && id.Address != ""
	case IdentifierPhone:
		complete = id.Country != "" && id.Phone != ""
	default:
		return PasswordCredentials{}, &Error{Status: http.StatusBadRequest, Code: ErrCodeUnknown,
			Message: fmt.Sprintf("Unknown login identifier type %q", id.Type)}
	}
	if !complete {
		return PasswordCredentials{}, &Error{Status: http.StatusBadRequest, Code: ErrCodeMissingParam,
			Message: fmt.Sprintf("Incomplete %s identifier", id.Type)}
	}
	return creds, nil
}

// PasswordStage returns the check of m.login.password. It parses the credentials and
// hands them to verify, which resolves the identifier to an account, makes sure it is the
// account the operation is for (Operation.UserID when authenticated) and checks the
// password with CheckPassword. verify returns a *StageError (401 M_FORBIDDEN "Invalid
// password", retryable) when the password is wrong, an *Error for other refusals (403
// for an unknown third-party identifier, as the spec requires), or an internal error.
func PasswordStage(verify func(creds PasswordCredentials) error) StageCheck {
	return func(authDict json.RawMessage) error {
		creds, err := ParsePasswordCredentials(authDict)
		if err != nil {
			return err
		}
		return verify(creds)
	}
}
