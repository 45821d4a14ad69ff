package auth

import "fmt"

// Matrix error codes used by this package (Client-Server API, "Common error codes" and
// "Other error codes").
const (
	ErrCodeForbidden    = "M_FORBIDDEN"
	ErrCodeUnauthorized = "M_UNAUTHORIZED"
	ErrCodeBadJSON      = "M_BAD_JSON"
	ErrCodeMissingParam = "M_MISSING_PARAM"
	ErrCodeInvalidParam = "M_INVALID_PARAM"
	ErrCodeUnknown      = "M_UNKNOWN"
)

// Error is a Matrix error that ends the request: the caller answers with Status and the
// standard error body {"errcode": Code, "error": Message}.
type Error struct {
	Status  int
	Code    string
	Message string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s: %s", e.Status, e.Code, e.Message) }

// StageError is what a UIA stage validator returns when an attempt failed but the client
// may try again: the engine answers 401 with the UIA body plus errcode and error
// (Client-Server API, "User-interactive API in the REST API").
type StageError struct {
	Code    string
	Message string
}

func (e *StageError) Error() string { return e.Code + ": " + e.Message }
