package federation

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-chi/chi/v5"
)

// wellKnownStub answers .well-known requests per hostname without any network.
type wellKnownStub struct {
	mu        sync.Mutex
	responses map[string]func() (*http.Response, error)
	requests  map[string]int
}

func (s *wellKnownStub) RoundTrip(r *http.Request) (*http.Response, error) {
	s.mu.Lock()
	s.requests[r.URL.Hostname()]++
	respond, ok := s.responses[r.URL.Hostname()]
	s.mu.Unlock()
	if !ok || r.URL.Path != wellKnownPath || r.URL.Scheme != "https" {
		return nil, errors.New("connection refused")
	}
	return respond()
}

func jsonResponse(status int, body string, header http.Header) func() (*http.Response, error) {
	return func() (*http.Response, error) {
		if header == nil {
			header = http.Header{}
		}
		return &http.Response{StatusCode: status, Header: header, Body: io.NopCloser(strings.NewReader(body))}, nil
	}
}

// srvStub answers SRV lookups from a table of "service name" → records.
func srvStub(records map[string][]*net.SRV) SRVLookup {
	return func(_ context.Context, service, proto, name string) (string, []*net.SRV, error) {
		found, ok := records[service+" "+name]
		if !ok || proto != "tcp" {
			return "", nil, &net.DNSError{Err: "no such host", Name: name, IsNotFound: true}
		}
		return "_" + service + "._tcp." + name, found, nil
	}
}

// TestResolve walks through every step of §"Resolving server names".
func TestResolve(t *testing.T) {
	wellKnown := map[string]func() (*http.Response, error){
		"delegates-ip.test":      jsonResponse(200, `{"m.server":"10.0.0.1"}`, nil),
		"delegates-ip-port.test": jsonResponse(200, `{"m.server":"[2001:db8::1]:1234"}`, nil),
		"delegates-port.test":    jsonResponse(200, `{"m.server":"matrix.delegated.test:4443"}`, nil),
		"delegates-srv.test":     jsonResponse(200, `{"m.server":"fed.delegated.test"}`, nil),
		"delegates-old-srv.test": jsonResponse(200, `{"m.server":"old.delegated.test"}`, nil),
		"delegates-plain.test":   jsonResponse(200, `{"m.server":"plain.delegated.test"}`, nil),
		"bad-json.test":          jsonResponse(200, `{"m.server":`, nil),
		"bad-name.test":          jsonResponse(200, `{"m.server":"not a name"}`, nil),
		"not-found.test":         jsonResponse(404, `{}`, nil),
		"html-content-type.test": jsonResponse(200, `{"m.server":"typed.test:8000"}`, http.Header{"Content-Type": {"text/html"}}),
		"too-big.test":           jsonResponse(200, `{"m.server":"big.test:1","x":"`+strings.Repeat("a", wellKnownMaxSize)+`"}`, nil),
	}
	srv := srvStub(map[string][]*net.SRV{
		"matrix-fed fed.delegated.test": {{Target: "a.backend.test.", Port: 1111}, {Target: "b.backend.test.", Port: 2222}},
		"matrix old.delegated.test":     {{Target: "old.backend.test.", Port: 3333}},
		"matrix-fed srv.test":           {{Target: "srv.backend.test.", Port: 4444}},
		"matrix-fed both.test":          {{Target: "new.backend.test.", Port: 5555}},
		"matrix both.test":              {{Target: "old.backend.test.", Port: 6666}},
		"matrix old-srv.test":           {{Target: "old.backend.test.", Port: 7777}},
		"matrix-fed dot.test":           {{Target: ".", Port: 0}},
	})
	resolver := NewResolver(ResolverConfig{
		LookupSRV:  srv,
		HTTPClient: &http.Client{Transport: &wellKnownStub{responses: wellKnown, requests: map[string]int{}}},
	})
	for _, tc := range []struct {
		serverName string
		want       Target
	}{
		// Step 1: IP literals.
		{"1.2.3.4", Target{[]string{"1.2.3.4:8448"}, "1.2.3.4", "1.2.3.4"}},
		{"1.2.3.4:80", Target{[]string{"1.2.3.4:80"}, "1.2.3.4", "1.2.3.4:80"}},
		{"[::1]", Target{[]string{"[::1]:8448"}, "::1", "[::1]"}},
		{"[::1]:8000", Target{[]string{"[::1]:8000"}, "::1", "[::1]:8000"}},
		// Step 2: explicit port, no .well-known asked.
		{"ported.test:8449", Target{[]string{"ported.test:8449"}, "ported.test", "ported.test:8449"}},
		// Step 3.1–3.5: delegation.
		{"delegates-ip.test", Target{[]string{"10.0.0.1:8448"}, "10.0.0.1", "10.0.0.1"}},
		{"delegates-ip-port.test", Target{[]string{"[2001:db8::1]:1234"}, "2001:db8::1", "[2001:db8::1]:1234"}},
		{"delegates-port.test", Target{[]string{"matrix.delegated.test:4443"}, "matrix.delegated.test", "matrix.delegated.test:4443"}},
		{"delegates-srv.test", Target{[]string{"a.backend.test:1111", "b.backend.test:2222"}, "fed.delegated.test", "fed.delegated.test"}},
		{"delegates-old-srv.test", Target{[]string{"old.backend.test:3333"}, "old.delegated.test", "old.delegated.test"}},
		{"delegates-plain.test", Target{[]string{"plain.delegated.test:8448"}, "plain.delegated.test", "plain.delegated.test"}},
		{"html-content-type.test", Target{[]string{"typed.test:8000"}, "typed.test", "typed.test:8000"}},
		// Invalid .well-known: on to step 4.
		{"bad-json.test", Target{[]string{"bad-json.test:8448"}, "bad-json.test", "bad-json.test"}},
		{"bad-name.test", Target{[]string{"bad-name.test:8448"}, "bad-name.test", "bad-name.test"}},
		{"not-found.test", Target{[]string{"not-found.test:8448"}, "not-found.test", "not-found.test"}},
		{"too-big.test", Target{[]string{"too-big.test:8448"}, "too-big.test", "too-big.test"}},
		// Steps 4–6: SRV of the hostname itself, _matrix-fed first, then 8448.
		{"srv.test", Target{[]string{"srv.backend.test:4444"}, "srv.test", "srv.test"}},
		{"both.test", Target{[]string{"new.backend.test:5555"}, "both.test", "both.test"}},
		{"old-srv.test", Target{[]string{"old.backend.test:7777"}, "old-srv.test", "old-srv.test"}},
		{"dot.test", Target{[]string{"dot.test:8448"}, "dot.test", "dot.test"}},
		{"nothing.test", Target{[]string{"nothing.test:8448"}, "nothing.test", "nothing.test"}},
	} {
		t.Run(tc.serverName, func(t *testing.T) {
			got, err := resolver.Resolve(context.Background(), tc.serverName)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got.Addrs, tc.want.Addrs) || got.TLSServerName != tc.want.TLSServerName || got.Host != tc.want.Host {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
	if _, err := resolver.Resolve(context.Background(), "bad name"); err == nil {
		t.Error("invalid server name resolved")
	}
}

// TestWellKnownCaching checks how long answers are kept: 24 hours by default, max-age
// within [5 minutes, 48 hours], invalid answers an hour, unreachable hosts with back-off.
func TestWellKnownCaching(t *testing.T) {
	for _, tc := range []struct {
		name    string
		respond func() (*http.Response, error)
		// cachedFor: a request after cachedFor-1ms is served from the cache, one after
		// cachedFor is not.
		cachedFor []time.Duration
	}{
		{"default 24 hours", jsonResponse(200, `{"m.server":"d.test:1"}`, nil), []time.Duration{24 * time.Hour, 24 * time.Hour}},
		{"max-age", jsonResponse(200, `{"m.server":"d.test:1"}`, http.Header{"Cache-Control": {"public, max-age=3600"}}), []time.Duration{time.Hour}},
		{"max-age capped at 48 hours", jsonResponse(200, `{"m.server":"d.test:1"}`, http.Header{"Cache-Control": {"max-age=999999999"}}), []time.Duration{48 * time.Hour}},
		{"max-age at least 5 minutes", jsonResponse(200, `{"m.server":"d.test:1"}`, http.Header{"Cache-Control": {"max-age=0"}}), []time.Duration{5 * time.Minute}},
		{"no-store", jsonResponse(200, `{"m.server":"d.test:1"}`, http.Header{"Cache-Control": {"no-store"}}), []time.Duration{5 * time.Minute}},
		{"invalid answer an hour", jsonResponse(404, ``, nil), []time.Duration{time.Hour, time.Hour}},
		{"server error backs off", jsonResponse(502, ``, nil), []time.Duration{2 * time.Minute, 4 * time.Minute, 8 * time.Minute}},
		{"unreachable backs off to an hour", func() (*http.Response, error) { return nil, errors.New("refused") },
			[]time.Duration{2 * time.Minute, 4 * time.Minute, 8 * time.Minute, 16 * time.Minute, 32 * time.Minute, time.Hour, time.Hour}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clock := newFakeClock()
			stub := &wellKnownStub{responses: map[string]func() (*http.Response, error){"hs.test": tc.respond}, requests: map[string]int{}}
			resolver := NewResolver(ResolverConfig{LookupSRV: srvStub(nil), HTTPClient: &http.Client{Transport: stub}, Now: clock.Now})
			resolve := func() {
				if _, err := resolver.Resolve(context.Background(), "hs.test"); err != nil {
					t.Fatal(err)
				}
			}
			resolve()
			for i, period := range tc.cachedFor {
				clock.Advance(period - time.Millisecond)
				resolve()
				if stub.requests["hs.test"] != i+1 {
					t.Fatalf("period %d (%v): %d requests before expiry, want %d", i, period, stub.requests["hs.test"], i+1)
				}
				clock.Advance(time.Millisecond)
				resolve()
				if stub.requests["hs.test"] != i+2 {
					t.Fatalf("period %d (%v): %d requests after expiry, want %d", i, period, stub.requests["hs.test"], i+2)
				}
			}
		})
	}
}

// TestWellKnownRedirectLoop follows redirects over real TLS but gives up on a loop.
func TestWellKnownRedirectLoop(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("final") != "" {
			_, _ = io.WriteString(w, `{"m.server":"final.test:1"}`)
			return
		}
		if r.URL.Query().Get("loop") != "" {
			http.Redirect(w, r, r.URL.String(), http.StatusFound)
			return
		}
		http.Redirect(w, r, wellKnownPath+"?final=1", http.StatusMovedPermanently)
	}))
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	client := srv.Client()
	transport := client.Transport.(*http.Transport).Clone()
	// Every hostname dials the test server; the certificate is valid for example.com.
	transport.DialContext = func(ctx context.Context, network, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, network, addr)
	}
	resolver := NewResolver(ResolverConfig{LookupSRV: srvStub(nil), HTTPClient: &http.Client{Transport: transport}})
	got, err := resolver.Resolve(context.Background(), "example.com")
	if err != nil || got.Host != "final.test:1" {
		t.Errorf("redirected: %+v, %v", got, err)
	}
	loopTransport := transport.Clone()
	loopTransport.DialContext = transport.DialContext
	looping := NewResolver(ResolverConfig{LookupSRV: srvStub(nil), HTTPClient: &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
		r.URL.RawQuery = "loop=1"
		return loopTransport.RoundTrip(r)
	})}})
	got, err = looping.Resolve(context.Background(), "example.com")
	if err != nil || got.Host != "example.com" {
		t.Errorf("redirect loop: %+v, %v", got, err)
	}
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestMountWellKnown serves our delegation, or nothing when none is configured.
func TestMountWellKnown(t *testing.T) {
	for _, tc := range []struct {
		delegated  string
		wantStatus int
		wantBody   string
		wantErr    bool
	}{
		{"matrix.example.com:443", 200, `{"m.server":"matrix.example.com:443"}`, false},
		{"", 404, "", false},
		{"not a name", 0, "", true},
	} {
		router := chi.NewRouter()
		err := MountWellKnown(router, tc.delegated)
		if tc.wantErr {
			if err == nil {
				t.Errorf("%q accepted", tc.delegated)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		recorder := httptest.NewRecorder()
		router.ServeHTTP(recorder, httptest.NewRequest("GET", wellKnownPath, nil))
		if recorder.Code != tc.wantStatus || tc.wantBody != "" && recorder.Body.String() != tc.wantBody {
			t.Errorf("%q: %d %s", tc.delegated, recorder.Code, recorder.Body)
		}
	}
}
