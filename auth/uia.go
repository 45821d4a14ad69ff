package auth

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"time"
)

// Authentication types of the Client-Server API, "Authentication types".
const (
	StagePassword          = "m.login.password"
	StageRecaptcha         = "m.login.recaptcha"
	StageSSO               = "m.login.sso"
	StageEmailIdentity     = "m.login.email.identity"
	StageMSISDN            = "m.login.msisdn"
	StageDummy             = "m.login.dummy"
	StageRegistrationToken = "m.login.registration_token"
	StageTerms             = "m.login.terms"
	StageOAuth             = "m.oauth"
)

// Defaults of UIAConfig.
const (
	DefaultUIASessionTTL  = 10 * time.Minute
	DefaultUIAMaxSessions = 10_000
)

// Flow is one way through user-interactive authentication: stages completed in order.
type Flow struct {
	Stages []string `json:"stages"`
}

// UIAResponse is the body of a 401 response of an endpoint protected by User-Interactive
// Authentication (Client-Server API, "User-interactive API in the REST API";
// definitions/auth_response.yaml). ErrCode and Error are set when the last attempt at a
// stage failed.
type UIAResponse struct {
	Flows     []Flow         `json:"flows"`
	Params    map[string]any `json:"params"`
	Session   string         `json:"session,omitempty"`
	Completed []string       `json:"completed"`
	ErrCode   string         `json:"errcode,omitempty"`
	Error     string         `json:"error,omitempty"`
}

// AuthFlows is what an endpoint offers: its flows, each a list of stage types, and the
// per-stage params shown to the client (for example the policies of m.login.terms).
type AuthFlows struct {
	Flows  [][]string
	Params map[string]any
}

// Operation identifies the request a UIA session was started for. The spec forbids
// clients to change the request between stages; a session is bound to the Operation of
// its first request and any later request with a different one is refused.
type Operation struct {
	// Method and Path are the HTTP method and the endpoint path without query string,
	// e.g. "POST", "/_matrix/client/v3/delete_devices".
	Method string
	Path   string
	// UserID is the authenticated user making the request, "" on unauthenticated
	// endpoints such as /register.
	UserID string
	// Fingerprint optionally binds the session to the request body too: a digest of the
	// body without its "auth" member (HashToken of its canonical JSON, say). Leave it empty
	// where clients legitimately vary the body between stages: /register clients may omit
	// the password on later requests (Synapse allows this too).
	Fingerprint string
}

// StageValidator checks one attempt at a stage. It returns nil when the stage is
// completed, a *StageError when the attempt failed but may be retried (401 with the UIA
// body), an *Error to end the request with that status, or any other error for an
// internal failure.
type StageValidator func(stageType string, authDict json.RawMessage) error

// UIAConfig configures a UIA engine. Zero values select the defaults.
type UIAConfig struct {
	// SessionTTL is how long a session lives after it was created.
	SessionTTL time.Duration
	// MaxSessions bounds the sessions kept at once; when full, the oldest is forgotten.
	MaxSessions int
	// Clock is the time source (nil means time.Now).
	Clock func() time.Time
}

// UIA is the User-Interactive Authentication engine (Client-Server API, "User-Interactive
// Authentication API"). It keeps sessions in memory, each bound to the operation it
// was created for, with the stages completed so far; the caller supplies the flows an
// endpoint offers and the validators of their stages. It is safe for concurrent use.
//
// NOTSPEC: sessions live in one process's memory, like Dendrite's. A client must finish
// UIA against the process that started it; behind a load balancer, route by session.
type UIA struct {
	mu       sync.Mutex
	clock    func() time.Time
	sessions *ttlCache[*uiaSession]
}

type uiaSession struct {
	id        string
	op        Operation
	completed []string
	data      map[string]any
}

// sessionIDLength gives 32 letters, about 182 bits: unguessable, so a session ID is a
// bearer capability for the stages already completed in it.
const sessionIDLength = 32

const sessionIDAlphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"

// SessionDataRegistrationToken is the session data key under which the engine keeps the
// registration token once an m.login.registration_token stage completes, so that the
// /register handler can charge the token when the account is created even if the last
// request carried only m.login.dummy.
const SessionDataRegistrationToken = StageRegistrationToken

// NewUIA returns an engine with the given configuration.
func NewUIA(cfg UIAConfig) *UIA {
	if cfg.SessionTTL <= 0 {
		cfg.SessionTTL = DefaultUIASessionTTL
	}
	if cfg.MaxSessions <= 0 {
		cfg.MaxSessions = DefaultUIAMaxSessions
	}
	if cfg.Clock == nil {
		cfg.Clock = time.Now
	}
	return &UIA{clock: cfg.Clock, sessions: newTTLCache[*uiaSession](cfg.SessionTTL, cfg.MaxSessions)}
}

var errSessionChanged = &Error{
	Status:  http.StatusForbidden,
	Code:    ErrCodeForbidden,
	Message: "Requested operation has changed during the UI authentication session.",
}

// authDictHeader is the part of every auth dict the engine itself reads.
type authDictHeader struct {
	Type    *string `json:"type"`
	Session *string `json:"session"`
}

// Check runs one request of an endpoint protected by UIA. authDict is the request's
// "auth" member (nil or JSON null when absent); op identifies the request; offer lists
// the flows the endpoint accepts.
//
//   - No auth dict (or one with neither type nor session): a new session is created and
//     the 401 body returned. A request without auth never succeeds, even when a flow is
//     just m.login.dummy (spec note in "User-interactive API in the REST API").
//   - An auth dict with a type but no session creates the session implicitly and then
//     attempts the stage, so /register accepts m.login.dummy on the first request.
//   - A type already completed in the session is not validated again (completed stages
//     cannot be retried); an auth dict with only a session re-evaluates the session, for
//     stages completed out of band (CompleteStage).
//   - A type that is not the next stage of any offered flow, given the stages completed,
//     is refused with 401 M_UNAUTHORIZED: stages must be completed in order.
//
// When some flow is complete Check returns done = true and the request may proceed; resp
// then carries the session ID and completed stages and must not be sent. Otherwise resp
// is the 401 body to send. err is an *Error (send its status and errcode: malformed auth,
// unknown session, changed operation, or an *Error from validate) or an internal error.
//
// A finished session stays valid until it expires, so a retried request succeeds as the
// spec requires; call Delete after performing an operation that must not be repeated.
func (u *UIA) Check(op Operation, offer AuthFlows, authDict json.RawMessage, validate StageValidator) (done bool, resp *UIAResponse, err error) {
	if err := offer.validate(); err != nil {
		return false, nil, err
	}
	stage, sessionID, err := parseAuthHeader(authDict)
	if err != nil {
		return false, nil, err
	}
	now := u.clock()
	if sessionID == "" {
		sessionID = u.newSession(now, op)
		if stage == "" {
			return false, u.challenge(sessionID, offer, nil, nil), nil
		}
	}

	u.mu.Lock()
	s, ok := u.sessions.get(now, sessionID)
	if !ok {
		u.mu.Unlock()
		return false, nil, &Error{Status: http.StatusBadRequest, Code: ErrCodeUnknown, Message: "Unknown or expired UIA session"}
	}
	if s.op != op {
		u.mu.Unlock()
		return false, nil, errSessionChanged
	}
	completed := slices.Clone(s.completed)
	u.mu.Unlock()

	if stage == "" || slices.Contains(completed, stage) {
		return u.evaluate(sessionID, offer, completed)
	}
	if !offer.isNext(completed, stage) {
		return false, u.challenge(sessionID, offer, completed, &StageError{
			Code:    ErrCodeUnauthorized,
			Message: fmt.Sprintf("%s is not the next stage of any offered flow", stage),
		}), nil
	}

	// Validators may be slow (a password hash), so they run without the lock.
	if err := validate(stage, authDict); err != nil {
		var stageErr *StageError
		if errors.As(err, &stageErr) {
			return false, u.challenge(sessionID, offer, completed, stageErr), nil
		}
		var matrixErr *Error
		if errors.As(err, &matrixErr) {
			return false, nil, matrixErr
		}
		return false, nil, fmt.Errorf("validate UIA stage %s: %w", stage, err)
	}

	u.mu.Lock()
	s, ok = u.sessions.get(u.clock(), sessionID)
	if !ok {
		u.mu.Unlock()
		return false, nil, &Error{Status: http.StatusBadRequest, Code: ErrCodeUnknown, Message: "Unknown or expired UIA session"}
	}
	// Another request of the same session may have completed a stage meanwhile; the
	// order is checked again against the session as it is now.
	if !slices.Contains(s.completed, stage) && offer.isNext(s.completed, stage) {
		s.completed = append(s.completed, stage)
		if stage == StageRegistrationToken {
			if token, ok := registrationTokenOf(authDict); ok {
				s.setData(SessionDataRegistrationToken, token)
			}
		}
	}
	completed = slices.Clone(s.completed)
	u.mu.Unlock()
	return u.evaluate(sessionID, offer, completed)
}

// evaluate returns done if completed finishes a flow, else the 401 body.
func (u *UIA) evaluate(sessionID string, offer AuthFlows, completed []string) (bool, *UIAResponse, error) {
	return offer.isDone(completed), u.challenge(sessionID, offer, completed, nil), nil
}

func (u *UIA) newSession(now time.Time, op Operation) string {
	id := randomString(sessionIDLength, sessionIDAlphabet)
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sessions.add(now, id, &uiaSession{id: id, op: op})
	return id
}

func (u *UIA) challenge(sessionID string, offer AuthFlows, completed []string, stageErr *StageError) *UIAResponse {
	resp := &UIAResponse{
		Flows:     make([]Flow, len(offer.Flows)),
		Params:    offer.Params,
		Session:   sessionID,
		Completed: completed,
	}
	for i, stages := range offer.Flows {
		resp.Flows[i] = Flow{Stages: slices.Clone(stages)}
	}
	if resp.Params == nil {
		resp.Params = map[string]any{}
	}
	if resp.Completed == nil {
		resp.Completed = []string{}
	}
	if stageErr != nil {
		resp.ErrCode, resp.Error = stageErr.Code, stageErr.Message
	}
	return resp
}

// CompleteStage marks stage completed in a session by means outside the auth dict: the
// fallback web page of a stage, a clicked e-mail link. It refuses stages that are not the
// next of some flow, as Check does. Completing a stage twice is not an error.
func (u *UIA) CompleteStage(sessionID string, offer AuthFlows, stage string) error {
	if err := offer.validate(); err != nil {
		return err
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.sessions.get(u.clock(), sessionID)
	if !ok {
		return &Error{Status: http.StatusBadRequest, Code: ErrCodeUnknown, Message: "Unknown or expired UIA session"}
	}
	if slices.Contains(s.completed, stage) {
		return nil
	}
	if !offer.isNext(s.completed, stage) {
		return &Error{Status: http.StatusBadRequest, Code: ErrCodeUnauthorized,
			Message: fmt.Sprintf("%s is not the next stage of any offered flow", stage)}
	}
	s.completed = append(s.completed, stage)
	return nil
}

// SetSessionData stores a value in a live session, for the handler's own use across the
// requests of one UIA exchange (Synapse keeps, for example, the registered user ID so
// that a retried /register returns the same account). It reports whether the session
// exists.
func (u *UIA) SetSessionData(sessionID, key string, value any) bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.sessions.get(u.clock(), sessionID)
	if ok {
		s.setData(key, value)
	}
	return ok
}

// SessionData returns a value stored with SetSessionData (or by the engine, see
// SessionDataRegistrationToken).
func (u *UIA) SessionData(sessionID, key string) (any, bool) {
	u.mu.Lock()
	defer u.mu.Unlock()
	s, ok := u.sessions.get(u.clock(), sessionID)
	if !ok {
		return nil, false
	}
	v, ok := s.data[key]
	return v, ok
}

// Delete ends a session, so that its completed stages cannot authorise another request.
func (u *UIA) Delete(sessionID string) {
	now := u.clock()
	u.mu.Lock()
	defer u.mu.Unlock()
	u.sessions.remove(now, sessionID)
}

// Len returns the number of live sessions.
func (u *UIA) Len() int {
	now := u.clock()
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.sessions.len(now)
}

func (s *uiaSession) setData(key string, value any) {
	if s.data == nil {
		s.data = make(map[string]any)
	}
	s.data[key] = value
}

// parseAuthHeader reads "type" and "session" from an auth dict. An absent dict yields two
// empty strings.
func parseAuthHeader(authDict json.RawMessage) (stage, session string, err error) {
	trimmed := bytes.TrimSpace(authDict)
	if len(trimmed) == 0 || bytes.Equal(trimmed, []byte("null")) {
		return "", "", nil
	}
	if trimmed[0] != '{' {
		return "", "", &Error{Status: http.StatusBadRequest, Code: ErrCodeBadJSON, Message: "auth must be a JSON object"}
	}
	var h authDictHeader
	if err := json.Unmarshal(trimmed, &h); err != nil {
		return "", "", &Error{Status: http.StatusBadRequest, Code: ErrCodeBadJSON,
			Message: "auth.type and auth.session must be strings"}
	}
	if h.Type != nil {
		stage = *h.Type
	}
	if h.Session != nil {
		session = *h.Session
	}
	return stage, session, nil
}

func registrationTokenOf(authDict json.RawMessage) (string, bool) {
	var d struct {
		Token string `json:"token"`
	}
	if json.Unmarshal(authDict, &d) != nil || d.Token == "" {
		return "", false
	}
	return d.Token, true
}

// validate rejects offers that could never complete; those are programming errors.
func (a AuthFlows) validate() error {
	if len(a.Flows) == 0 {
		return errors.New("UIA offer has no flows")
	}
	for i, f := range a.Flows {
		if len(f) == 0 {
			return fmt.Errorf("UIA offer flow %d has no stages", i)
		}
	}
	return nil
}

// isNext reports whether stage may be attempted after completed: some flow starts with
// completed and continues with stage.
func (a AuthFlows) isNext(completed []string, stage string) bool {
	for _, f := range a.Flows {
		if len(f) > len(completed) && slices.Equal(f[:len(completed)], completed) && f[len(completed)] == stage {
			return true
		}
	}
	return false
}

// isDone reports whether completed finishes some flow.
func (a AuthFlows) isDone(completed []string) bool {
	for _, f := range a.Flows {
		if len(completed) >= len(f) && slices.Equal(completed[:len(f)], f) {
			return true
		}
	}
	return false
}
