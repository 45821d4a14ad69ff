// Package httpapi holds what every Matrix HTTP API of the server shares: the standard error
// response (client-server API "Standard error response"), JSON bodies with size limits, CORS
// and panic recovery. Client and federation handlers both build on it.
package httpapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Error is a Matrix error: an HTTP status, an errcode and a message, plus optional extra keys
// (retry_after_ms, soft_logout, …) merged into the response body.
type Error struct {
	Status  int
	ErrCode string
	Message string
	Extra   map[string]any
	// Headers are sent with the response (Retry-After for rate limits).
	Headers map[string]string
}

func (e *Error) Error() string { return e.ErrCode + ": " + e.Message }

// NewError builds an Error.
func NewError(status int, errcode, format string, args ...any) *Error {
	return &Error{Status: status, ErrCode: errcode, Message: fmt.Sprintf(format, args...)}
}

// Common errors of the client-server API ("Common error codes").
func Forbidden(format string, args ...any) *Error {
	return NewError(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}
func BadJSON(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}
func NotJSON(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}
func NotFound(format string, args ...any) *Error {
	return NewError(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}
func MissingParam(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}
func InvalidParam(format string, args ...any) *Error {
	return NewError(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}
func Unrecognized(format string, args ...any) *Error {
	return NewError(http.StatusNotFound, "M_UNRECOGNIZED", format, args...)
}
func Unknown(format string, args ...any) *Error {
	return NewError(http.StatusInternalServerError, "M_UNKNOWN", format, args...)
}
func TooLarge(format string, args ...any) *Error {
	return NewError(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}

// LimitExceeded is M_LIMIT_EXCEEDED with retry_after_ms and a Retry-After header.
func LimitExceeded(retryAfter time.Duration) *Error {
	ms := retryAfter.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	seconds := (ms + 999) / 1000
	return &Error{
		Status: http.StatusTooManyRequests, ErrCode: "M_LIMIT_EXCEEDED", Message: "Too many requests",
		Extra:   map[string]any{"retry_after_ms": ms},
		Headers: map[string]string{"Retry-After": strconv.FormatInt(seconds, 10)},
	}
}

// WriteJSON sends v as a JSON body with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	body, err := json.Marshal(v)
	if err != nil {
		slog.Error("encode response", "err", err)
		status = http.StatusInternalServerError
		body = []byte(`{"errcode":"M_UNKNOWN","error":"internal error encoding the response"}`)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// WriteError sends err as a Matrix error. Errors that are not *Error are internal: they are
// logged and answered with 500 M_UNKNOWN without their text.
func WriteError(w http.ResponseWriter, r *http.Request, err error) {
	var merr *Error
	if !errors.As(err, &merr) {
		slog.Error("request failed", "method", r.Method, "path", r.URL.Path, "err", err)
		merr = Unknown("Internal server error")
	}
	body := make(map[string]any, 2+len(merr.Extra))
	for k, v := range merr.Extra {
		body[k] = v
	}
	body["errcode"] = merr.ErrCode
	body["error"] = merr.Message
	for k, v := range merr.Headers {
		w.Header().Set(k, v)
	}
	WriteJSON(w, merr.Status, body)
}

// MaxBodySize is the default limit on a JSON request body.
const MaxBodySize = 1 << 20

// ReadJSON decodes the request body (at most limit bytes) into v. An empty body decodes as {}.
// It answers M_TOO_LARGE, M_NOT_JSON and M_BAD_JSON as the spec wants.
func ReadJSON(r *http.Request, limit int64, v any) error {
	body, err := ReadBody(r, limit)
	if err != nil {
		return err
	}
	return DecodeJSON(body, v)
}

// ReadBody reads at most limit bytes of the request body.
func ReadBody(r *http.Request, limit int64) ([]byte, error) {
	if r.ContentLength > limit {
		return nil, TooLarge("Request body exceeds %d bytes", limit)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
	if err != nil {
		return nil, BadJSON("Could not read request body")
	}
	if int64(len(body)) > limit {
		return nil, TooLarge("Request body exceeds %d bytes", limit)
	}
	return body, nil
}

// DecodeJSON decodes a JSON object into v, with Matrix errors for bad input.
func DecodeJSON(body []byte, v any) error {
	body = bytes.TrimSpace(body)
	if len(body) == 0 {
		body = []byte("{}")
	}
	if body[0] != '{' {
		if json.Valid(body) {
			return BadJSON("Request body must be a JSON object")
		}
		return NotJSON("Request body is not valid JSON")
	}
	if hasEscapedNUL(body) {
		// NOTSPEC: no Matrix identifier or text needs U+0000, and PostgreSQL cannot store it
		// in text; Synapse refuses it too.
		return BadJSON("Strings may not contain U+0000")
	}
	if err := json.Unmarshal(body, v); err != nil {
		var typeErr *json.UnmarshalTypeError
		if errors.As(err, &typeErr) {
			return BadJSON("Field %q has the wrong type", typeErr.Field)
		}
		if json.Valid(body) {
			return BadJSON("Bad request body: %v", err)
		}
		return NotJSON("Request body is not valid JSON")
	}
	return nil
}

// hasEscapedNUL reports whether a JSON text has a \u0000 escape in a string (a raw NUL
// byte makes it invalid JSON anyway): a backslash-u-0000 that an odd run of backslashes
// starts.
func hasEscapedNUL(body []byte) bool {
	for i := 0; ; {
		j := bytes.Index(body[i:], []byte(`u0000`))
		if j < 0 {
			return false
		}
		j += i
		slashes := 0
		for k := j - 1; k >= 0 && body[k] == '\\'; k-- {
			slashes++
		}
		if slashes%2 == 1 {
			return true
		}
		i = j + 1
	}
}

// CleanText refuses requests whose path or query parameters hold U+0000 or are not valid
// UTF-8 (400 M_INVALID_PARAM): no Matrix identifier has either, and PostgreSQL cannot store
// them in text, so they are stopped before any handler looks them up.
func CleanText(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		bad := !cleanText(r.URL.Path)
		for key, values := range r.URL.Query() {
			bad = bad || !cleanText(key)
			for _, v := range values {
				bad = bad || !cleanText(v)
			}
		}
		if bad {
			WriteError(w, r, InvalidParam("Path and query parameters must be valid UTF-8 without U+0000"))
			return
		}
		next.ServeHTTP(w, r)
	})
}

func cleanText(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// CORS adds the headers the client-server API asks for ("Web Browser Clients") and answers
// preflight requests.
func CORS(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Access-Control-Allow-Origin", "*")
		h.Set("Access-Control-Allow-Methods", "GET, POST, PUT, DELETE, OPTIONS")
		h.Set("Access-Control-Allow-Headers", "X-Requested-With, Content-Type, Authorization")
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		next.ServeHTTP(w, r)
	})
}

// Recover turns a panic in a handler into 500 M_UNKNOWN and logs it, so that one bad request
// never takes the server down. A panic is always a bug: tests must never see one.
func Recover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				slog.Error("panic in handler", "method", r.Method, "path", r.URL.Path, "panic", p)
				WriteError(w, r, Unknown("Internal server error"))
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// Handler is an HTTP handler that returns an error instead of writing one.
type Handler func(w http.ResponseWriter, r *http.Request) error

// ServeHTTP runs h and writes its error, if any.
func (h Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if err := h(w, r); err != nil {
		WriteError(w, r, err)
	}
}
