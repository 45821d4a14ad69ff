package federation

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/rooms"
)

// TestClient sends signed requests to a TLS test server that verifies them, and checks
// errors, size limits and certificate verification.
func TestClient(t *testing.T) {
	clock := newFakeClock()
	identity := rooms.Identity{ServerName: "origin.test", KeyID: "ed25519:o", Key: testKey("origin")}
	keys := staticKeys{"origin.test ed25519:o": {identity.Key.Public().(ed25519.PublicKey), clock.Now().UnixMilli()}}
	var destination string
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		origin, err := VerifyRequest(r, body, destination, keys.lookup, clock.Now())
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		switch r.URL.Path {
		case "/_matrix/federation/v1/echo":
			httpapi.WriteJSON(w, http.StatusOK, map[string]string{"origin": origin, "host": r.Host, "body": string(body), "query": r.URL.RawQuery})
		case "/_matrix/federation/v1/forbidden":
			httpapi.WriteError(w, r, httpapi.Forbidden("not you"))
		case "/_matrix/federation/v1/huge":
			_, _ = w.Write([]byte(`{"x":"` + strings.Repeat("a", 2048) + `"}`))
		case "/_matrix/federation/v1/html":
			w.WriteHeader(http.StatusBadGateway)
			_, _ = io.WriteString(w, "<html>bad gateway</html>")
		}
	}))
	srv.StartTLS()
	defer srv.Close()
	destination = srv.Listener.Addr().String()
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	client, err := NewClient(ClientConfig{Identity: identity, RootCAs: roots, MaxResponseSize: 1024,
		Resolver: NewResolver(ResolverConfig{Now: clock.Now})})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()

	var echo map[string]string
	err = client.DoJSON(ctx, Request{Method: "PUT", Destination: destination, URI: "/_matrix/federation/v1/echo?a=b%20c",
		Body: map[string]any{"pdus": []any{}}}, &echo)
	if err != nil {
		t.Fatal(err)
	}
	if echo["origin"] != "origin.test" || echo["host"] != destination || echo["body"] != `{"pdus":[]}` || echo["query"] != "a=b%20c" {
		t.Errorf("echo %v", echo)
	}
	if err := client.DoJSON(ctx, Request{Method: "GET", Destination: destination, URI: "/_matrix/federation/v1/echo"}, &echo); err != nil || echo["body"] != "" {
		t.Errorf("GET without body: %v %v", echo, err)
	}

	for _, tc := range []struct {
		name  string
		req   Request
		check func(error) bool
	}{
		{"Matrix error decoded", Request{Method: "GET", Destination: destination, URI: "/_matrix/federation/v1/forbidden"}, func(err error) bool {
			var remote *RemoteError
			return errors.As(err, &remote) && remote.Status == 403 && remote.ErrCode == "M_FORBIDDEN" && remote.Message == "not you"
		}},
		{"non-JSON error", Request{Method: "GET", Destination: destination, URI: "/_matrix/federation/v1/html"}, func(err error) bool {
			var remote *RemoteError
			return errors.As(err, &remote) && remote.Status == 502 && remote.ErrCode == ""
		}},
		{"response too large", Request{Method: "GET", Destination: destination, URI: "/_matrix/federation/v1/huge"}, func(err error) bool {
			return errors.Is(err, ErrResponseTooLarge)
		}},
		{"per-request size limit", Request{Method: "PUT", Destination: destination, URI: "/_matrix/federation/v1/echo", Body: []byte(`{}`), MaxResponseSize: 10}, func(err error) bool {
			return errors.Is(err, ErrResponseTooLarge)
		}},
		{"relative URI refused", Request{Method: "GET", Destination: destination, URI: "_matrix/x"}, func(err error) bool { return err != nil }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.Do(ctx, tc.req)
			if !tc.check(err) {
				t.Errorf("unexpected error %v", err)
			}
		})
	}

	// Certificates are always verified: against the system roots the test CA is unknown, and
	// a certificate not valid for the name is refused even from a trusted CA.
	untrusting, err := NewClient(ClientConfig{Identity: identity, Resolver: NewResolver(ResolverConfig{})})
	if err != nil {
		t.Fatal(err)
	}
	var unknownCA x509.UnknownAuthorityError
	if _, err := untrusting.Do(ctx, Request{Method: "GET", Destination: destination, URI: "/_matrix/federation/v1/echo"}); !errors.As(err, &unknownCA) {
		t.Errorf("untrusted CA: %v", err)
	}
	port := strings.Split(destination, ":")[1]
	redirected, err := NewClient(ClientConfig{Identity: identity, RootCAs: roots, Resolver: NewResolver(ResolverConfig{}),
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{Timeout: time.Second}).DialContext(ctx, network, destination)
		}})
	if err != nil {
		t.Fatal(err)
	}
	var hostname x509.HostnameError
	if _, err := redirected.Do(ctx, Request{Method: "GET", Destination: "other.test:" + port, URI: "/_matrix/federation/v1/echo"}); !errors.As(err, &hostname) {
		t.Errorf("certificate for the wrong name: %v", err)
	}
	// example.com is a name the httptest certificate is valid for: TLS succeeds and the
	// request reaches the handler, which refuses it as not addressed to it.
	var remote *RemoteError
	if _, err := redirected.Do(ctx, Request{Method: "GET", Destination: "example.com:" + port, URI: "/_matrix/federation/v1/echo"}); !errors.As(err, &remote) || remote.Status != 401 {
		t.Errorf("certificate for the right name: %v", err)
	}
}

// TestLoadRootCAs adds a PEM file to the system roots.
func TestLoadRootCAs(t *testing.T) {
	srv := httptest.NewTLSServer(http.NotFoundHandler())
	defer srv.Close()
	dir := t.TempDir()
	good := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(good, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, "bad.pem")
	if err := os.WriteFile(bad, []byte("not a certificate"), 0o600); err != nil {
		t.Fatal(err)
	}
	pool, err := LoadRootCAs(good, "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := srv.Certificate().Verify(x509.VerifyOptions{Roots: pool, DNSName: "example.com"}); err != nil {
		t.Errorf("added CA not trusted: %v", err)
	}
	for _, file := range []string{bad, filepath.Join(dir, "missing.pem")} {
		if _, err := LoadRootCAs(file); err == nil {
			t.Errorf("%s accepted", file)
		}
	}
}
