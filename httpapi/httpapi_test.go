package httpapi

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestDecodeJSONRefusesNUL: a \u0000 escape in any string is M_BAD_JSON; an escaped
// backslash followed by "u0000" is ordinary text.
func TestDecodeJSONRefusesNUL(t *testing.T) {
	for body, bad := range map[string]bool{
		`{"a":"x\u0000y"}`:    true,
		`{"a\u0000":1}`:       true,
		`{"a":"\\\u0000"}`:    true,
		`{"a":"\\u0000"}`:     false,
		`{"a":"u0000"}`:       false,
		`{"a":"\u0001 ok"}`:   false,
		`{"a":["\\\\u0000"]}`: false,
	} {
		var v map[string]any
		err := DecodeJSON([]byte(body), &v)
		var merr *Error
		if got := errors.As(err, &merr) && merr.ErrCode == "M_BAD_JSON"; got != bad {
			t.Errorf("%s: %v, want refused %v", body, err, bad)
		}
	}
}

// TestCleanText: NUL or invalid UTF-8 in the path or the query is 400 M_INVALID_PARAM.
func TestCleanText(t *testing.T) {
	h := CleanText(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }))
	for target, want := range map[string]int{
		"/rooms/!a:b/state":      http.StatusOK,
		"/rooms/%C3%A9t%C3%A9":   http.StatusOK,
		"/rooms/%00x":            http.StatusBadRequest,
		"/rooms/%FFx":            http.StatusBadRequest,
		"/rooms/x?from=%00":      http.StatusBadRequest,
		"/rooms/x?fr%FFom=1":     http.StatusBadRequest,
		"/rooms/x?from=s1&dir=b": http.StatusOK,
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, target, nil))
		if w.Code != want {
			t.Errorf("%s: %d, want %d", target, w.Code, want)
		}
	}
}
