package federation

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/spec"
)

// Server discovery (server-server API §"Resolving server names"): a server name becomes the
// addresses to connect to, the name its certificate must be valid for, and the Host header.

// DefaultFederationPort is the port used when neither the server name, .well-known nor SRV
// give one.
const DefaultFederationPort = 8448

const (
	// wellKnownPath is where delegation is published (RFC 8615).
	wellKnownPath = "/.well-known/matrix/server"
	// wellKnownDefaultCache is used when a response has no cache headers: "The recommended
	// sensible default is 24 hours."
	wellKnownDefaultCache = 24 * time.Hour
	// wellKnownMaxCache caps the cache time: "48 hours is recommended".
	wellKnownMaxCache = 48 * time.Hour
	// wellKnownMinCache stops a max-age of 0 from refetching on every request.
	// NOTSPEC: five minutes, as Synapse.
	wellKnownMinCache = 5 * time.Minute
	// wellKnownInvalidCache is how long an invalid answer (non-200, bad JSON, …) is
	// remembered: "Errors are recommended to be cached for up to an hour".
	wellKnownInvalidCache = time.Hour
	// wellKnownDownCache is the first retry delay after the host could not be reached or
	// answered 5xx, doubled per consecutive failure up to wellKnownInvalidCache ("servers are
	// encouraged to exponentially back off"). NOTSPEC: two minutes, as Synapse.
	wellKnownDownCache = 2 * time.Minute
	// wellKnownMaxSize bounds the body read. NOTSPEC: Synapse's 50 KiB.
	wellKnownMaxSize = 50 << 10
	// wellKnownTimeout bounds one .well-known request.
	wellKnownTimeout = 10 * time.Second
	// wellKnownMaxRedirects bounds the 30x redirects followed, so loops end.
	wellKnownMaxRedirects = 5
	// defaultResolverCacheSize is how many server names' .well-known results are kept.
	defaultResolverCacheSize = 10000
)

// Target is where to send requests for a server name.
type Target struct {
	// Addrs are "host:port" to dial, tried in order. A host may be a DNS name, resolved
	// through CNAME, AAAA and A records when dialled.
	Addrs []string
	// TLSServerName is the name the server's certificate must be valid for: a DNS name or a
	// bare IP address (for which no SNI is sent).
	TLSServerName string
	// Host is the Host header of requests.
	Host string
}

// SRVLookup looks up SRV records, as net.Resolver.LookupSRV.
type SRVLookup func(ctx context.Context, service, proto, name string) (string, []*net.SRV, error)

// ResolverConfig configures a Resolver. Every field may be left zero.
type ResolverConfig struct {
	// LookupSRV defaults to net.DefaultResolver.LookupSRV.
	LookupSRV SRVLookup
	// HTTPClient fetches /.well-known/matrix/server; by default a client verifying
	// certificates against RootCAs, with timeouts, following at most 5 redirects.
	HTTPClient *http.Client
	// RootCAs are the trusted CAs for the default HTTP client; nil means the system's.
	RootCAs *x509.CertPool
	// Now is the clock for cache expiry; nil means time.Now.
	Now func() time.Time
	// CacheSize bounds the number of cached .well-known results; 0 means 10,000.
	CacheSize int
}

// Resolver resolves server names. It caches .well-known answers, successful or not, and is
// safe for concurrent use.
type Resolver struct {
	cfg ResolverConfig

	mu    sync.Mutex
	cache *lru[string, wellKnownResult]
}

// wellKnownResult is a cached outcome of a .well-known request.
type wellKnownResult struct {
	// delegated is the m.server value, or "" when the request failed.
	delegated string
	expires   time.Time
	// failures counts consecutive unreachable/5xx outcomes, for the back-off.
	failures int
}

// NewResolver builds a Resolver.
func NewResolver(cfg ResolverConfig) *Resolver {
	if cfg.LookupSRV == nil {
		cfg.LookupSRV = net.DefaultResolver.LookupSRV
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.CacheSize <= 0 {
		cfg.CacheSize = defaultResolverCacheSize
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{
			Timeout: wellKnownTimeout,
			Transport: &http.Transport{
				TLSClientConfig:       &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12},
				DialContext:           (&net.Dialer{Timeout: wellKnownTimeout}).DialContext,
				TLSHandshakeTimeout:   wellKnownTimeout,
				ResponseHeaderTimeout: wellKnownTimeout,
				MaxIdleConnsPerHost:   1,
				IdleConnTimeout:       time.Minute,
			},
		}
	}
	if cfg.HTTPClient.CheckRedirect == nil {
		client := *cfg.HTTPClient
		client.CheckRedirect = func(_ *http.Request, via []*http.Request) error {
			if len(via) >= wellKnownMaxRedirects {
				return errors.New("too many redirects")
			}
			return nil
		}
		cfg.HTTPClient = &client
	}
	return &Resolver{cfg: cfg, cache: newLRU[string, wellKnownResult](cfg.CacheSize)}
}

// Resolve finds where to reach serverName, following §"Resolving server names" step by step.
func (r *Resolver) Resolve(ctx context.Context, serverName string) (Target, error) {
	name, err := spec.ParseServerName(serverName)
	if err != nil {
		return Target{}, fmt.Errorf("resolve %q: %w", serverName, err)
	}
	// Step 1: an IP literal, with its port or 8448; Host is the server name as given.
	// Step 2: a hostname with an explicit port; likewise.
	if name.IsIPLiteral() || name.Port != 0 {
		return Target{
			Addrs:         []string{net.JoinHostPort(bareHost(name.Host), strconv.Itoa(portOr8448(name.Port)))},
			TLSServerName: bareHost(name.Host),
			Host:          serverName,
		}, nil
	}
	// Step 3: /.well-known delegation.
	if delegated := r.wellKnown(ctx, name.Host); delegated != "" {
		if target, err := r.resolveDelegated(ctx, delegated); err == nil {
			return target, nil
		}
	}
	// Steps 4–6: SRV records for the hostname itself, then port 8448.
	return r.resolveHostname(ctx, name.Host), nil
}

// resolveDelegated resolves an m.server value (step 3.1–3.5).
func (r *Resolver) resolveDelegated(ctx context.Context, delegated string) (Target, error) {
	name, err := spec.ParseServerName(delegated)
	if err != nil {
		return Target{}, err
	}
	if name.IsIPLiteral() || name.Port != 0 {
		// 3.1 and 3.2: the delegated name, with its port or 8448, is also the Host header.
		return Target{
			Addrs:         []string{net.JoinHostPort(bareHost(name.Host), strconv.Itoa(portOr8448(name.Port)))},
			TLSServerName: bareHost(name.Host),
			Host:          delegated,
		}, nil
	}
	// 3.3–3.5: SRV for the delegated hostname, then 8448.
	return r.resolveHostname(ctx, name.Host), nil
}

// resolveHostname looks up _matrix-fed._tcp, then the deprecated _matrix._tcp, then falls
// back to port 8448. The certificate and Host header are always those of hostname.
func (r *Resolver) resolveHostname(ctx context.Context, hostname string) Target {
	target := Target{TLSServerName: hostname, Host: hostname}
	for _, service := range []string{"matrix-fed", "matrix"} {
		_, records, err := r.cfg.LookupSRV(ctx, service, "tcp", hostname)
		if err != nil {
			continue
		}
		for _, record := range records {
			host := strings.TrimSuffix(record.Target, ".")
			// RFC 2782: a target of "." means the service is decidedly not available.
			if host == "" {
				continue
			}
			target.Addrs = append(target.Addrs, net.JoinHostPort(host, strconv.Itoa(int(record.Port))))
		}
		if len(target.Addrs) > 0 {
			return target
		}
	}
	target.Addrs = []string{net.JoinHostPort(hostname, strconv.Itoa(DefaultFederationPort))}
	return target
}

// wellKnown returns the m.server of hostname's /.well-known/matrix/server, or "", from the
// cache when it holds an unexpired answer.
func (r *Resolver) wellKnown(ctx context.Context, hostname string) string {
	now := r.cfg.Now()
	r.mu.Lock()
	cached, ok := r.cache.get(hostname)
	r.mu.Unlock()
	if ok && now.Before(cached.expires) {
		return cached.delegated
	}
	delegated, cacheFor, down := r.fetchWellKnown(ctx, hostname)
	result := wellKnownResult{delegated: delegated, expires: now.Add(cacheFor)}
	if down {
		if ok {
			result.failures = cached.failures + 1
		} else {
			result.failures = 1
		}
		backoff := float64(wellKnownDownCache) * math.Pow(2, float64(result.failures-1))
		result.expires = now.Add(time.Duration(min(backoff, float64(wellKnownInvalidCache))))
	}
	r.mu.Lock()
	r.cache.put(hostname, result)
	r.mu.Unlock()
	return delegated
}

// fetchWellKnown makes the request. It returns the delegated server name ("" if the answer
// is invalid), how long to cache the outcome, and whether the host seemed down (network
// error or 5xx), which is retried sooner and with back-off.
func (r *Resolver) fetchWellKnown(ctx context.Context, hostname string) (delegated string, cacheFor time.Duration, down bool) {
	ctx, cancel := context.WithTimeout(ctx, wellKnownTimeout)
	defer cancel()
	request, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+hostname+wellKnownPath, nil)
	if err != nil {
		return "", wellKnownInvalidCache, false
	}
	response, err := r.cfg.HTTPClient.Do(request)
	if err != nil {
		return "", 0, true
	}
	defer response.Body.Close()
	if response.StatusCode >= 500 {
		return "", 0, true
	}
	if response.StatusCode != http.StatusOK {
		return "", wellKnownInvalidCache, false
	}
	body, err := io.ReadAll(io.LimitReader(response.Body, wellKnownMaxSize+1))
	if err != nil {
		return "", 0, true
	}
	if len(body) > wellKnownMaxSize {
		return "", wellKnownInvalidCache, false
	}
	// "servers parsing the response should assume that the body is JSON regardless of type".
	var parsed struct {
		Server string `json:"m.server"`
	}
	if err := json.Unmarshal(body, &parsed); err != nil || spec.ValidateServerName(parsed.Server) != nil {
		return "", wellKnownInvalidCache, false
	}
	return parsed.Server, cacheDuration(response.Header), false
}

// cacheDuration reads Cache-Control: no-store and no-cache mean the shortest time, max-age
// is used within [5 minutes, 48 hours], and without either 24 hours.
func cacheDuration(header http.Header) time.Duration {
	for _, directive := range strings.Split(strings.Join(header.Values("Cache-Control"), ","), ",") {
		name, value, _ := strings.Cut(strings.TrimSpace(directive), "=")
		switch strings.ToLower(name) {
		case "no-store", "no-cache":
			return wellKnownMinCache
		case "max-age":
			seconds, err := strconv.ParseInt(strings.Trim(value, `"`), 10, 64)
			if err != nil || seconds < 0 {
				continue
			}
			return min(max(time.Duration(min(seconds, math.MaxInt64/int64(time.Second)))*time.Second, wellKnownMinCache), wellKnownMaxCache)
		}
	}
	return wellKnownDefaultCache
}

// bareHost strips the brackets of an IPv6 literal.
func bareHost(host string) string {
	return strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
}

func portOr8448(port int) int {
	if port == 0 {
		return DefaultFederationPort
	}
	return port
}

// MountWellKnown serves GET /.well-known/matrix/server with {"m.server": delegated}
// (wellknown.yaml), delegating federation for our server name to another host. When
// delegated is "" nothing is mounted, so the path answers 404 and peers fall back to SRV
// and port 8448.
func MountWellKnown(r chi.Router, delegated string) error {
	if delegated == "" {
		return nil
	}
	if err := spec.ValidateServerName(delegated); err != nil {
		return fmt.Errorf("delegated federation server name: %w", err)
	}
	body, err := json.Marshal(map[string]string{"m.server": delegated})
	if err != nil {
		return err
	}
	r.Get(wellKnownPath, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Cache-Control", "max-age=86400")
		writeRawJSON(w, body)
	})
	return nil
}
