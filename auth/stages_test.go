package auth

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestParsePasswordCredentials(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		want       PasswordCredentials
		wantStatus int
		wantCode   string
	}{
		{"user ID", `{"type":"m.login.password","identifier":{"type":"m.id.user","user":"@alice:example.org"},"password":"pw"}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierUser, User: "@alice:example.org"}, Password: "pw"}, 0, ""},
		{"localpart", `{"identifier":{"type":"m.id.user","user":"alice"},"password":"pw"}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierUser, User: "alice"}, Password: "pw"}, 0, ""},
		{"third party", `{"identifier":{"type":"m.id.thirdparty","medium":"email","address":"a@example.org"},"password":"pw"}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierThirdParty, Medium: "email", Address: "a@example.org"}, Password: "pw"}, 0, ""},
		{"phone", `{"identifier":{"type":"m.id.phone","country":"GB","phone":"07700900000"},"password":"pw"}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierPhone, Country: "GB", Phone: "07700900000"}, Password: "pw"}, 0, ""},
		{"legacy user", `{"user":"alice","password":"pw"}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierUser, User: "alice"}, Password: "pw"}, 0, ""},
		{"legacy medium and address", `{"medium":"email","address":"a@example.org","password":"pw"}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierThirdParty, Medium: "email", Address: "a@example.org"}, Password: "pw"}, 0, ""},
		{"empty password is a password", `{"identifier":{"type":"m.id.user","user":"alice"},"password":""}`,
			PasswordCredentials{Identifier: Identifier{Type: IdentifierUser, User: "alice"}, Password: ""}, 0, ""},
		{"missing password", `{"identifier":{"type":"m.id.user","user":"alice"}}`, PasswordCredentials{}, 400, ErrCodeMissingParam},
		{"missing identifier", `{"password":"pw"}`, PasswordCredentials{}, 400, ErrCodeMissingParam},
		{"unknown identifier type", `{"identifier":{"type":"m.id.carrier_pigeon"},"password":"pw"}`, PasswordCredentials{}, 400, ErrCodeUnknown},
		{"incomplete identifier", `{"identifier":{"type":"m.id.thirdparty","medium":"email"},"password":"pw"}`, PasswordCredentials{}, 400, ErrCodeMissingParam},
		{"identifier not an object", `{"identifier":"alice","password":"pw"}`, PasswordCredentials{}, 400, ErrCodeBadJSON},
		{"password not a string", `{"identifier":{"type":"m.id.user","user":"alice"},"password":1}`, PasswordCredentials{}, 400, ErrCodeBadJSON},
		{"not JSON", `{`, PasswordCredentials{}, 400, ErrCodeBadJSON},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParsePasswordCredentials(json.RawMessage(tt.body))
			if tt.wantStatus != 0 {
				var matrixErr *Error
				if !errors.As(err, &matrixErr) || matrixErr.Status != tt.wantStatus || matrixErr.Code != tt.wantCode {
					t.Fatalf("err = %v, want %d %s", err, tt.wantStatus, tt.wantCode)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestValidRegistrationTokenSyntax(t *testing.T) {
	tests := []struct {
		token string
		want  bool
	}{
		{"fBVFdqVE", true},
		{"a-b.c_d~e", true},
		{"0", true},
		{strings.Repeat("a", 64), true},
		{strings.Repeat("a", 65), false},
		{"", false},
		{"has space", false},
		{"slash/", false},
		{"ünïcode", false},
	}
	for _, tt := range tests {
		if got := ValidRegistrationTokenSyntax(tt.token); got != tt.want {
			t.Errorf("ValidRegistrationTokenSyntax(%q) = %v, want %v", tt.token, got, tt.want)
		}
	}
}

func TestRegistrationTokenStageStoreFailure(t *testing.T) {
	check := RegistrationTokenStage(func(string) (bool, error) { return false, errors.New("db down") })
	err := check(json.RawMessage(`{"type":"m.login.registration_token","token":"abc"}`))
	var stageErr *StageError
	if err == nil || errors.As(err, &stageErr) {
		t.Errorf("store failure: err = %v, want an internal error", err)
	}
}
