package federation

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/rooms"
)

// The federation HTTP client: requests to other homeservers over verified TLS, signed with
// X-Matrix (§"Request Authentication"), addressed per §"Resolving server names", and
// authenticated in return by the server's certificate (§"Response Authentication").

const (
	// defaultRequestTimeout bounds a whole request, body included.
	defaultRequestTimeout = time.Minute
	// defaultMaxResponseSize bounds a response body. NOTSPEC: large state responses fit.
	defaultMaxResponseSize = 64 << 20
	// dialTimeout bounds one connection attempt.
	dialTimeout = 10 * time.Second
	// maxTransports bounds the per-target connection pools kept.
	maxTransports = 1024
)

// ClientConfig configures a Client.
type ClientConfig struct {
	// Identity signs every request.
	Identity rooms.Identity
	// Resolver resolves destinations; nil means NewResolver with RootCAs.
	Resolver *Resolver
	// RootCAs verifies servers' certificates; nil means the system's roots. LoadRootCAs
	// builds the system roots plus extra CA files.
	RootCAs *x509.CertPool
	// Timeout bounds each request; 0 means one minute.
	Timeout time.Duration
	// MaxResponseSize bounds each response body unless the request sets its own; 0 means
	// 64 MiB.
	MaxResponseSize int64
	// DialContext opens connections; nil means a net.Dialer. Tests use it to reach a test
	// server whatever address a name resolves to.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)
}

// Client sends signed requests to other homeservers. It is safe for concurrent use.
type Client struct {
	cfg ClientConfig

	mu         sync.Mutex
	transports *lru[string, *http.Transport]
}

// NewClient builds a Client.
func NewClient(cfg ClientConfig) (*Client, error) {
	if cfg.Identity.ServerName == "" || cfg.Identity.KeyID == "" || len(cfg.Identity.Key) == 0 {
		return nil, errors.New("federation client: identity with server name and signing key required")
	}
	if cfg.Resolver == nil {
		cfg.Resolver = NewResolver(ResolverConfig{RootCAs: cfg.RootCAs})
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = defaultRequestTimeout
	}
	if cfg.MaxResponseSize <= 0 {
		cfg.MaxResponseSize = defaultMaxResponseSize
	}
	if cfg.DialContext == nil {
		cfg.DialContext = (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext
	}
	transports := newLRU[string, *http.Transport](maxTransports)
	transports.onEvict = func(t *http.Transport) { t.CloseIdleConnections() }
	return &Client{cfg: cfg, transports: transports}, nil
}

// LoadRootCAs returns the system's trusted roots (which honour SSL_CERT_FILE) plus the
// certificates of the given PEM files, such as EGGS_TRUSTED_CA. Empty paths are skipped.
func LoadRootCAs(files ...string) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil || pool == nil {
		pool = x509.NewCertPool()
	}
	for _, file := range files {
		if file == "" {
			continue
		}
		pem, err := os.ReadFile(file)
		if err != nil {
			return nil, fmt.Errorf("trusted CA: %w", err)
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("trusted CA %s: no PEM certificate in it", file)
		}
	}
	return pool, nil
}

// Request is one federation request.
type Request struct {
	Method string
	// Destination is the server name of the receiving server, before any delegation.
	Destination string
	// URI is the path and query, starting "/_matrix/", escaped as it goes on the wire.
	URI string
	// Body is sent as JSON: []byte and json.RawMessage as they are, anything else
	// marshalled. nil sends no body.
	Body any
	// MaxResponseSize overrides the client's limit for this request.
	MaxResponseSize int64
}

// RemoteError is a non-2xx answer of a remote server, with its Matrix error if it sent one.
type RemoteError struct {
	Status  int
	ErrCode string
	Message string
}

func (e *RemoteError) Error() string {
	if e.ErrCode == "" {
		return fmt.Sprintf("remote server answered HTTP %d", e.Status)
	}
	return fmt.Sprintf("remote server answered HTTP %d %s: %s", e.Status, e.ErrCode, e.Message)
}

// ErrResponseTooLarge is returned when a response body exceeds the size limit.
var ErrResponseTooLarge = errors.New("response too large")

// DoJSON sends req and decodes the JSON response into out (unless out is nil).
func (c *Client) DoJSON(ctx context.Context, req Request, out any) error {
	body, err := c.Do(ctx, req)
	if err != nil {
		return err
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("%s %s from %s: bad JSON response: %w", req.Method, req.URI, req.Destination, err)
	}
	return nil
}

// Do sends req, signed, and returns the body of a 2xx response. Other statuses give a
// *RemoteError.
func (c *Client) Do(ctx context.Context, req Request) ([]byte, error) {
	stream, err := c.DoStream(ctx, req)
	if err != nil {
		return nil, err
	}
	defer stream.Close()
	data, err := io.ReadAll(stream)
	if err != nil {
		return nil, err
	}
	return data, nil
}

// maxErrorBody bounds what is read of a non-2xx answer (its Matrix error).
const maxErrorBody = 64 << 10

// DoStream sends req, signed, and returns the body of a 2xx response to be read as it
// arrives (a large send_join answer, say), limited to the response size limit: reading past
// it fails with ErrResponseTooLarge. The caller must close it. Other statuses give a
// *RemoteError.
func (c *Client) DoStream(ctx context.Context, req Request) (io.ReadCloser, error) {
	body, _, err := c.DoStreamWithHeader(ctx, req)
	return body, err
}

// DoStreamWithHeader is DoStream that also returns the response's header, for answers whose
// body is not JSON (a multipart/mixed media download names its boundary there).
func (c *Client) DoStreamWithHeader(ctx context.Context, req Request) (io.ReadCloser, http.Header, error) {
	body, err := encodeBody(req.Body)
	if err != nil {
		return nil, nil, fmt.Errorf("%s %s to %s: %w", req.Method, req.URI, req.Destination, err)
	}
	target, err := c.cfg.Resolver.Resolve(ctx, req.Destination)
	if err != nil {
		return nil, nil, err
	}
	if !strings.HasPrefix(req.URI, "/") {
		return nil, nil, fmt.Errorf("federation request URI %q must start with /", req.URI)
	}
	u, err := url.ParseRequestURI(req.URI)
	if err != nil {
		return nil, nil, fmt.Errorf("federation request URI %q: %w", req.URI, err)
	}
	u.Scheme, u.Host = "https", target.Host
	ctx, cancel := context.WithTimeout(ctx, c.cfg.Timeout)
	var reader io.Reader
	if body != nil {
		reader = bytes.NewReader(body)
	}
	httpReq, err := http.NewRequestWithContext(ctx, req.Method, u.String(), reader)
	if err != nil {
		cancel()
		return nil, nil, err
	}
	httpReq.Host = target.Host
	if body != nil {
		httpReq.Header.Set("Content-Type", "application/json")
	}
	id := c.cfg.Identity
	if err := SignRequest(httpReq, body, id.ServerName, req.Destination, id.KeyID, id.Key); err != nil {
		cancel()
		return nil, nil, err
	}
	client := &http.Client{
		Transport: c.transport(target),
		// Federation requests are not redirected; a 30x is an answer like any other.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	response, err := client.Do(httpReq)
	if err != nil {
		cancel()
		return nil, nil, fmt.Errorf("%s %s to %s: %w", req.Method, req.URI, req.Destination, err)
	}
	what := fmt.Sprintf("%s %s to %s", req.Method, req.URI, req.Destination)
	if response.StatusCode < 200 || response.StatusCode > 299 {
		data, _ := io.ReadAll(io.LimitReader(response.Body, maxErrorBody))
		response.Body.Close()
		cancel()
		remote := &RemoteError{Status: response.StatusCode}
		var matrixErr struct {
			ErrCode string `json:"errcode"`
			Error   string `json:"error"`
		}
		if json.Unmarshal(data, &matrixErr) == nil {
			remote.ErrCode, remote.Message = matrixErr.ErrCode, matrixErr.Error
		}
		return nil, nil, fmt.Errorf("%s: %w", what, remote)
	}
	limit := c.cfg.MaxResponseSize
	if req.MaxResponseSize > 0 {
		limit = req.MaxResponseSize
	}
	return &limitedBody{body: response.Body, remaining: limit, limit: limit, cancel: cancel, what: what}, response.Header, nil
}

// limitedBody is a response body that fails once more than limit bytes were read.
type limitedBody struct {
	body      io.ReadCloser
	remaining int64
	limit     int64
	cancel    context.CancelFunc
	what      string
}

func (l *limitedBody) Read(p []byte) (int, error) {
	if l.remaining <= 0 {
		// At the limit: the body is fine if it ends here.
		var probe [1]byte
		if n, _ := l.body.Read(probe[:]); n > 0 {
			return 0, fmt.Errorf("%s: %w (over %d bytes)", l.what, ErrResponseTooLarge, l.limit)
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.remaining {
		p = p[:l.remaining]
	}
	n, err := l.body.Read(p)
	l.remaining -= int64(n)
	if err != nil && err != io.EOF {
		err = fmt.Errorf("%s: read response: %w", l.what, err)
	}
	return n, err
}

func (l *limitedBody) Close() error {
	l.cancel()
	return l.body.Close()
}

// encodeBody turns a Request body into bytes; nil stays nil.
func encodeBody(body any) ([]byte, error) {
	switch b := body.(type) {
	case nil:
		return nil, nil
	case []byte:
		return b, nil
	case json.RawMessage:
		return b, nil
	default:
		return json.Marshal(b)
	}
}

// transport returns the connection pool for target: it dials target's addresses in turn and
// verifies the certificate for target's TLS server name, so connections to one target are
// never reused for another.
func (c *Client) transport(target Target) *http.Transport {
	key := target.TLSServerName + "|" + strings.Join(target.Addrs, ",")
	c.mu.Lock()
	defer c.mu.Unlock()
	if t, ok := c.transports.get(key); ok {
		return t
	}
	addrs := append([]string(nil), target.Addrs...)
	t := &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			var errs []error
			for _, addr := range addrs {
				conn, err := c.cfg.DialContext(ctx, network, addr)
				if err == nil {
					return conn, nil
				}
				errs = append(errs, err)
			}
			return nil, errors.Join(errs...)
		},
		TLSClientConfig: &tls.Config{
			RootCAs:    c.cfg.RootCAs,
			ServerName: target.TLSServerName,
			MinVersion: tls.VersionTLS12,
		},
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   dialTimeout,
		ResponseHeaderTimeout: c.cfg.Timeout,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       90 * time.Second,
	}
	c.transports.put(key, t)
	return t
}
