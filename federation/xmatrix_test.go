package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// TestParseXMatrixSpecExample parses the header of §"Request Authentication", step 2.
func TestParseXMatrixSpecExample(t *testing.T) {
	raw, err := os.ReadFile("testdata/server-server-api-request-authentication.txt")
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseXMatrix(strings.TrimSpace(string(raw)))
	if err != nil {
		t.Fatal(err)
	}
	want := XMatrix{Origin: "origin.hs.example.com", Destination: "destination.hs.example.com", Key: "ed25519:key1", Signature: "ABCDEF..."}
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
	if got.String() != strings.TrimSpace(string(raw)) {
		t.Errorf("String() = %s, want the spec's form", got.String())
	}
}

// TestParseXMatrix covers the tolerance §"Request Authentication" asks of recipients.
func TestParseXMatrix(t *testing.T) {
	full := XMatrix{Origin: "a.example", Destination: "b.example", Key: "ed25519:k", Signature: "c2ln/+x"}
	noDest := XMatrix{Origin: "a.example", Key: "ed25519:k", Signature: "c2ln"}
	for _, tc := range []struct {
		name, header string
		want         XMatrix
		wantErr      bool
	}{
		{"canonical", `X-Matrix origin="a.example",destination="b.example",key="ed25519:k",sig="c2ln/+x"`, full, false},
		{"any order", `X-Matrix sig="c2ln/+x",key="ed25519:k",destination="b.example",origin="a.example"`, full, false},
		{"case-insensitive names and scheme", `x-matrix ORIGIN="a.example",Destination="b.example",KEY="ed25519:k",Sig="c2ln/+x"`, full, false},
		{"unquoted values with colons", `X-Matrix origin=a.example,destination=b.example,key=ed25519:k,sig=c2ln/+x`, full, false},
		{"spaces and tabs around commas", "X-Matrix   origin=\"a.example\" ,\tdestination=\"b.example\"\t, key=\"ed25519:k\" ,sig=\"c2ln/+x\"", full, false},
		{"spaces around equals", `X-Matrix origin = "a.example", destination= b.example,key ="ed25519:k",sig="c2ln/+x"`, full, false},
		{"escapes", `X-Matrix origin="a\.example",destination="b.example",key="ed25519:\k",sig="c2ln/+x"`, full, false},
		{"unknown parameters ignored", `X-Matrix origin="a.example",colour="blue",destination="b.example",key="ed25519:k",x=y,sig="c2ln/+x"`, full, false},
		{"empty list elements", `X-Matrix ,origin="a.example",,key="ed25519:k",sig="c2ln",`, noDest, false},
		{"no destination (pre-v1.3 sender)", `X-Matrix origin="a.example",key="ed25519:k",sig="c2ln"`, noDest, false},
		{"other scheme", `Bearer abc`, XMatrix{}, true},
		{"no space after scheme", `X-Matrixorigin="a.example",key="ed25519:k",sig="c2ln"`, XMatrix{}, true},
		{"scheme only", `X-Matrix`, XMatrix{}, true},
		{"no origin", `X-Matrix key="ed25519:k",sig="c2ln"`, XMatrix{}, true},
		{"no key", `X-Matrix origin="a.example",sig="c2ln"`, XMatrix{}, true},
		{"no sig", `X-Matrix origin="a.example",key="ed25519:k"`, XMatrix{}, true},
		{"empty sig", `X-Matrix origin="a.example",key="ed25519:k",sig=""`, XMatrix{}, true},
		{"duplicate parameter", `X-Matrix origin="a.example",origin="c.example",key="ed25519:k",sig="c2ln"`, XMatrix{}, true},
		{"unterminated quote", `X-Matrix origin="a.example,key="ed25519:k",sig="c2ln`, XMatrix{}, true},
		{"missing comma", `X-Matrix origin="a.example" key="ed25519:k",sig="c2ln"`, XMatrix{}, true},
		{"parameter without value", `X-Matrix origin,key="ed25519:k",sig="c2ln"`, XMatrix{}, true},
		{"control character", "X-Matrix origin=\"a\x01\",key=\"ed25519:k\",sig=\"c2ln\"", XMatrix{}, true},
		{"too long", `X-Matrix origin="` + strings.Repeat("a", maxXMatrixHeader) + `",key="k",sig="s"`, XMatrix{}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseXMatrix(tc.header)
			if tc.wantErr {
				if err == nil || !errors.Is(err, ErrBadXMatrix) {
					t.Fatalf("got %+v, %v; want ErrBadXMatrix", got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

// FuzzParseXMatrix checks that the parser never panics and that whatever it accepts is
// rendered by String into a header that parses back to the same parameters.
func FuzzParseXMatrix(f *testing.F) {
	f.Add(`X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="ABCDEF..."`)
	f.Fuzz(func(t *testing.T, header string) {
		x, err := ParseXMatrix(header)
		if err != nil {
			return
		}
		again, err := ParseXMatrix(x.String())
		if err != nil {
			t.Fatalf("String() of %+v does not parse: %v", x, err)
		}
		if again != x {
			t.Fatalf("round trip changed %+v into %+v", x, again)
		}
	})
}

// appendixKey is the signing key of the appendices' cryptographic test vectors
// (appendices §"Cryptographic test vectors"), so that signatures here are reproducible.
func appendixKey(t testing.TB) ed25519.PrivateKey {
	t.Helper()
	seed, err := spec.DecodeBase64("YJDBA9Xnr2sVqXD9Vj7XVUnmFZcZrlw8Md7kMW+3XA1")
	if err != nil {
		t.Fatal(err)
	}
	return ed25519.NewKeyFromSeed(seed)
}

// staticKeys is a spec.KeyLookup over a fixed set of keys, each valid until a time.
type staticKeys map[string]struct {
	key        ed25519.PublicKey
	validUntil int64
}

func (s staticKeys) lookup(server, keyID string, atTS int64) (ed25519.PublicKey, error) {
	k, ok := s[server+" "+keyID]
	if !ok {
		return nil, ErrKeyNotFound
	}
	if atTS > k.validUntil {
		return nil, ErrKeyExpired
	}
	return k.key, nil
}

// TestSignAndVerifyRequest signs requests and checks which alterations VerifyRequest refuses.
func TestSignAndVerifyRequest(t *testing.T) {
	key := appendixKey(t)
	now := time.UnixMilli(1_700_000_000_000)
	keys := staticKeys{
		"origin.example ed25519:1":   {key.Public().(ed25519.PublicKey), now.UnixMilli()},
		"origin.example ed25519:old": {key.Public().(ed25519.PublicKey), now.UnixMilli() - 1},
	}
	body := []byte(`{"pdus":[],"edus":[{"edu_type":"m.typing","content":{"a":1.5}}]}`)
	sign := func(method, target string, body []byte, origin, destination, keyID string) *http.Request {
		var reader io.Reader
		if body != nil {
			reader = bytes.NewReader(body)
		}
		req := httptest.NewRequest(method, target, reader)
		if err := SignRequest(req, body, origin, destination, keyID, key); err != nil {
			t.Fatal(err)
		}
		return req
	}
	for _, tc := range []struct {
		name string
		req  func() *http.Request
		body []byte
		ok   bool
	}{
		{"PUT with body", func() *http.Request {
			return sign("PUT", "/_matrix/federation/v1/send/1", body, "origin.example", "dest.example", "ed25519:1")
		}, body, true},
		{"GET with query", func() *http.Request {
			return sign("GET", "/_matrix/federation/v1/state/!r:x?event_id=%24e", nil, "origin.example", "dest.example", "ed25519:1")
		}, nil, true},
		{"no destination parameter", func() *http.Request {
			req := sign("GET", "/_matrix/federation/v1/version", nil, "origin.example", "dest.example", "ed25519:1")
			x, _ := ParseXMatrix(req.Header.Get("Authorization"))
			x.Destination = ""
			req.Header.Set("Authorization", x.String())
			return req
		}, nil, true},
		{"body altered", func() *http.Request {
			return sign("PUT", "/_matrix/federation/v1/send/1", body, "origin.example", "dest.example", "ed25519:1")
		}, []byte(`{"pdus":[]}`), false},
		{"method altered", func() *http.Request {
			req := sign("PUT", "/_matrix/federation/v1/send/1", body, "origin.example", "dest.example", "ed25519:1")
			req.Method = "POST"
			return req
		}, body, false},
		{"uri altered", func() *http.Request {
			req := sign("GET", "/_matrix/federation/v1/state/a", nil, "origin.example", "dest.example", "ed25519:1")
			req.RequestURI = "/_matrix/federation/v1/state/b"
			return req
		}, nil, false},
		{"other destination", func() *http.Request {
			return sign("GET", "/_matrix/federation/v1/version", nil, "origin.example", "elsewhere.example", "ed25519:1")
		}, nil, false},
		{"origin altered", func() *http.Request {
			req := sign("GET", "/_matrix/federation/v1/version", nil, "origin.example", "dest.example", "ed25519:1")
			req.Header.Set("Authorization", strings.Replace(req.Header.Get("Authorization"), "origin.example", "evil.example", 1))
			return req
		}, nil, false},
		{"invalid origin", func() *http.Request {
			return sign("GET", "/_matrix/federation/v1/version", nil, "bad origin", "dest.example", "ed25519:1")
		}, nil, false},
		{"unknown key", func() *http.Request {
			return sign("GET", "/_matrix/federation/v1/version", nil, "origin.example", "dest.example", "ed25519:2")
		}, nil, false},
		{"key no longer valid", func() *http.Request {
			return sign("GET", "/_matrix/federation/v1/version", nil, "origin.example", "dest.example", "ed25519:old")
		}, nil, false},
		{"no header", func() *http.Request {
			return httptest.NewRequest("GET", "/_matrix/federation/v1/version", nil)
		}, nil, false},
		{"not JSON", func() *http.Request {
			return httptest.NewRequest("PUT", "/_matrix/federation/v1/send/1", nil)
		}, []byte("{"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := tc.req()
			origin, err := VerifyRequest(req, tc.body, "dest.example", keys.lookup, now)
			if tc.ok {
				if err != nil || origin != "origin.example" {
					t.Fatalf("got %q, %v", origin, err)
				}
				return
			}
			var merr *httpapi.Error
			if !errors.As(err, &merr) || merr.Status/100 != 4 {
				t.Fatalf("got %q, %v; want a 4xx Matrix error", origin, err)
			}
		})
	}
}

// TestSignRequestHeaderForm checks the header as the spec wants senders to write it.
func TestSignRequestHeaderForm(t *testing.T) {
	req := httptest.NewRequest("POST", "/target", strings.NewReader(`{}`))
	if err := SignRequest(req, []byte(`{}`), "origin.hs.example.com", "destination.hs.example.com", "ed25519:key1", appendixKey(t)); err != nil {
		t.Fatal(err)
	}
	header := req.Header.Get("Authorization")
	prefix := `X-Matrix origin="origin.hs.example.com",destination="destination.hs.example.com",key="ed25519:key1",sig="`
	if !strings.HasPrefix(header, prefix) {
		t.Fatalf("header %s", header)
	}
	// The signature covers the step 1 JSON: check it by hand against the canonical object.
	signed := []byte(`{"content":{},"destination":"destination.hs.example.com","method":"POST","origin":"origin.hs.example.com","uri":"/target"}`)
	x, err := ParseXMatrix(header)
	if err != nil {
		t.Fatal(err)
	}
	signature, err := spec.DecodeBase64(x.Signature)
	if err != nil || !ed25519.Verify(appendixKey(t).Public().(ed25519.PublicKey), signed, signature) {
		t.Errorf("signature does not cover %s", signed)
	}
}

// keySourceFunc adapts a spec.KeyLookup to KeySource.
type keySourceFunc spec.KeyLookup

func (f keySourceFunc) KeyLookup(context.Context) spec.KeyLookup { return spec.KeyLookup(f) }

// TestAuthenticatorMiddleware checks statuses, the origin in the context and the body
// handed on to the handler.
func TestAuthenticatorMiddleware(t *testing.T) {
	key := appendixKey(t)
	now := time.UnixMilli(1_700_000_000_000)
	keys := staticKeys{"origin.example ed25519:1": {key.Public().(ed25519.PublicKey), now.UnixMilli()},
		"blocked.example ed25519:1": {key.Public().(ed25519.PublicKey), now.UnixMilli()}}
	auth := &Authenticator{
		ServerName:  "dest.example",
		Keys:        keySourceFunc(keys.lookup),
		Now:         func() time.Time { return now },
		MaxBodySize: 64,
		AllowOrigin: func(origin string) bool { return origin != "blocked.example" },
	}
	handler := auth.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		origin, _ := Origin(r.Context())
		body, _ := io.ReadAll(r.Body)
		httpapi.WriteJSON(w, http.StatusOK, map[string]string{"origin": origin, "body": string(body)})
	}))
	body := []byte(`{"hello":"world"}`)
	for _, tc := range []struct {
		name        string
		origin      string
		body        []byte
		sign        bool
		wantStatus  int
		wantErrCode string
	}{
		{"authenticated", "origin.example", body, true, http.StatusOK, ""},
		{"unsigned", "origin.example", body, false, http.StatusUnauthorized, "M_UNAUTHORIZED"},
		{"refused origin", "blocked.example", body, true, http.StatusForbidden, "M_FORBIDDEN"},
		{"body too large", "origin.example", []byte(`{"x":"` + strings.Repeat("a", 100) + `"}`), true, http.StatusRequestEntityTooLarge, "M_TOO_LARGE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest("PUT", "/_matrix/federation/v1/send/1", bytes.NewReader(tc.body))
			if tc.sign {
				if err := SignRequest(req, tc.body, tc.origin, "dest.example", "ed25519:1", key); err != nil {
					t.Fatal(err)
				}
			}
			recorder := httptest.NewRecorder()
			handler.ServeHTTP(recorder, req)
			if recorder.Code != tc.wantStatus {
				t.Fatalf("status %d, want %d: %s", recorder.Code, tc.wantStatus, recorder.Body)
			}
			var got map[string]string
			if err := json.Unmarshal(recorder.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if tc.wantErrCode != "" {
				if got["errcode"] != tc.wantErrCode {
					t.Errorf("errcode %q, want %q", got["errcode"], tc.wantErrCode)
				}
				return
			}
			if got["origin"] != tc.origin || got["body"] != string(tc.body) {
				t.Errorf("handler saw %v", got)
			}
		})
	}
}
