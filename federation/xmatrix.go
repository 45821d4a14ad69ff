package federation

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// Request authentication (server-server API §"Request Authentication"): every federation
// request carries an "Authorization: X-Matrix …" header whose signature covers the method,
// the request target, both server names and the JSON body.

// xMatrixScheme is the authorisation scheme; schemes are case-insensitive (RFC 9110 §11.1).
const xMatrixScheme = "X-Matrix"

// XMatrix holds the parameters of an X-Matrix Authorization header.
type XMatrix struct {
	// Origin is the sending server's name.
	Origin string
	// Destination is the receiving server's name; "" when an older sender left it out.
	Destination string
	// Key is the ID of the signing key, "ed25519:<version>".
	Key string
	// Signature is the unpadded base64 signature of the request JSON ("sig").
	Signature string
}

// String renders the header value as the spec asks senders to write it: one space after
// the scheme, lower-case names, every value quoted, no whitespace around commas.
func (x XMatrix) String() string {
	var b strings.Builder
	b.WriteString(xMatrixScheme)
	b.WriteString(" origin=")
	writeQuoted(&b, x.Origin)
	if x.Destination != "" {
		b.WriteString(",destination=")
		writeQuoted(&b, x.Destination)
	}
	b.WriteString(",key=")
	writeQuoted(&b, x.Key)
	b.WriteString(",sig=")
	writeQuoted(&b, x.Signature)
	return b.String()
}

func writeQuoted(b *strings.Builder, value string) {
	b.WriteByte('"')
	for i := 0; i < len(value); i++ {
		if value[i] == '"' || value[i] == '\\' {
			b.WriteByte('\\')
		}
		b.WriteByte(value[i])
	}
	b.WriteByte('"')
}

// ErrBadXMatrix is wrapped by every error of ParseXMatrix.
var ErrBadXMatrix = errors.New("malformed X-Matrix authorization")

// maxXMatrixHeader bounds the header parsed; real ones are a few hundred bytes.
const maxXMatrixHeader = 8 << 10

// ParseXMatrix parses an Authorization header value of the X-Matrix scheme, as tolerantly as
// §"Request Authentication" asks of recipients (RFC 9110 §11.4 credentials): the scheme
// name is case-insensitive and followed by one or more spaces; parameters are name=value
// pairs separated by commas with optional spaces and tabs around them; names are
// case-insensitive and in any order; values are tokens or quoted strings with backslash
// escapes; unquoted values may contain colons (for older senders) and any other visible
// character but comma; unknown parameters are ignored. origin, key and sig are required;
// destination is optional for compatibility with servers older than v1.3. A repeated
// parameter is rejected, since it would be ambiguous which one was signed.
func ParseXMatrix(header string) (XMatrix, error) {
	if len(header) > maxXMatrixHeader {
		return XMatrix{}, fmt.Errorf("%w: header too long", ErrBadXMatrix)
	}
	if len(header) <= len(xMatrixScheme) || !strings.EqualFold(header[:len(xMatrixScheme)], xMatrixScheme) || header[len(xMatrixScheme)] != ' ' {
		return XMatrix{}, fmt.Errorf("%w: not the X-Matrix scheme", ErrBadXMatrix)
	}
	rest := strings.TrimLeft(header[len(xMatrixScheme):], " ")
	params := map[string]string{}
	p := paramParser{s: rest}
	for {
		p.skipWhitespace()
		if p.done() {
			break
		}
		if p.peek() == ',' {
			// RFC 9110 §5.6.1: empty list elements are allowed and ignored.
			p.pos++
			continue
		}
		name, err := p.token()
		if err != nil {
			return XMatrix{}, err
		}
		p.skipWhitespace()
		if p.done() || p.peek() != '=' {
			return XMatrix{}, fmt.Errorf("%w: parameter %q has no value", ErrBadXMatrix, name)
		}
		p.pos++
		p.skipWhitespace()
		value, err := p.value()
		if err != nil {
			return XMatrix{}, err
		}
		name = strings.ToLower(name)
		if _, dup := params[name]; dup {
			return XMatrix{}, fmt.Errorf("%w: parameter %q given twice", ErrBadXMatrix, name)
		}
		params[name] = value
		p.skipWhitespace()
		if !p.done() {
			if p.peek() != ',' {
				return XMatrix{}, fmt.Errorf("%w: expected a comma after parameter %q", ErrBadXMatrix, name)
			}
			p.pos++
		}
	}
	x := XMatrix{Origin: params["origin"], Destination: params["destination"], Key: params["key"], Signature: params["sig"]}
	switch {
	case x.Origin == "":
		return XMatrix{}, fmt.Errorf("%w: no origin", ErrBadXMatrix)
	case x.Key == "":
		return XMatrix{}, fmt.Errorf("%w: no key", ErrBadXMatrix)
	case x.Signature == "":
		return XMatrix{}, fmt.Errorf("%w: no sig", ErrBadXMatrix)
	}
	return x, nil
}

// paramParser walks the auth-param list of a credentials value.
type paramParser struct {
	s   string
	pos int
}

func (p *paramParser) done() bool { return p.pos >= len(p.s) }
func (p *paramParser) peek() byte { return p.s[p.pos] }

func (p *paramParser) skipWhitespace() {
	for !p.done() && (p.peek() == ' ' || p.peek() == '\t') {
		p.pos++
	}
}

// token reads an RFC 9110 §5.6.2 token: a parameter name.
func (p *paramParser) token() (string, error) {
	start := p.pos
	for !p.done() && isTokenChar(p.peek()) {
		p.pos++
	}
	if p.pos == start {
		return "", fmt.Errorf("%w: unexpected %q at offset %d", ErrBadXMatrix, p.peek(), p.pos)
	}
	return p.s[start:p.pos], nil
}

// value reads a quoted string, unescaping it, or an unquoted value: a run of visible ASCII
// other than comma and double quote. That is wider than a token, as the spec wants colons
// accepted and base64 signatures hold "/" and "+".
func (p *paramParser) value() (string, error) {
	if p.done() {
		return "", fmt.Errorf("%w: missing value", ErrBadXMatrix)
	}
	if p.peek() != '"' {
		start := p.pos
		for !p.done() {
			c := p.peek()
			if c == ',' || c == ' ' || c == '\t' {
				break
			}
			if c <= 0x20 || c >= 0x7f || c == '"' || c == '\\' {
				return "", fmt.Errorf("%w: bad character %q in unquoted value", ErrBadXMatrix, c)
			}
			p.pos++
		}
		if p.pos == start {
			return "", fmt.Errorf("%w: empty value", ErrBadXMatrix)
		}
		return p.s[start:p.pos], nil
	}
	p.pos++
	var b strings.Builder
	for !p.done() {
		c := p.peek()
		p.pos++
		switch {
		case c == '"':
			return b.String(), nil
		case c == '\\':
			if p.done() {
				return "", fmt.Errorf("%w: unterminated escape", ErrBadXMatrix)
			}
			c = p.peek()
			p.pos++
			if !isQuotedChar(c) && c != '"' && c != '\\' {
				return "", fmt.Errorf("%w: bad escaped character %q", ErrBadXMatrix, c)
			}
			b.WriteByte(c)
		case isQuotedChar(c):
			b.WriteByte(c)
		default:
			return "", fmt.Errorf("%w: bad character %q in quoted value", ErrBadXMatrix, c)
		}
	}
	return "", fmt.Errorf("%w: unterminated quoted value", ErrBadXMatrix)
}

// isTokenChar reports whether c is a tchar of RFC 9110 §5.6.2.
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isQuotedChar reports whether c may stand unescaped in a quoted string: tab, space and
// visible ASCII other than '"' and '\' (RFC 9110 §5.6.4 qdtext, without obs-text: server
// names, key IDs and signatures are ASCII).
func isQuotedChar(c byte) bool {
	return c == '\t' || (c >= 0x20 && c < 0x7f && c != '"' && c != '\\')
}

// requestJSON builds the canonical JSON that an X-Matrix signature covers (§"Request
// Authentication", step 1). content is the raw request body, or empty for none. Numbers are
// handled leniently: a transaction may carry events of old room versions with floats.
func requestJSON(method, uri, origin, destination string, content []byte) ([]byte, error) {
	object := struct {
		Method      string          `json:"method"`
		URI         string          `json:"uri"`
		Origin      string          `json:"origin"`
		Destination string          `json:"destination"`
		Content     json.RawMessage `json:"content,omitempty"`
	}{method, uri, origin, destination, nil}
	if len(strings.TrimSpace(string(content))) > 0 {
		if !json.Valid(content) {
			return nil, errors.New("request body is not JSON")
		}
		object.Content = content
	}
	raw, err := json.Marshal(object)
	if err != nil {
		return nil, err
	}
	return spec.CanonicalJSONLenient(raw)
}

// SignRequest signs req as origin for destination and sets its Authorization header
// (§"Request Authentication", step 2). body is the exact request body, or nil for none; the
// signed URI is req.URL's path and query as they go on the wire.
func SignRequest(req *http.Request, body []byte, origin, destination, keyID string, key ed25519.PrivateKey) error {
	if len(key) != ed25519.PrivateKeySize {
		return errors.New("sign request: bad ed25519 private key")
	}
	signed, err := requestJSON(req.Method, req.URL.RequestURI(), origin, destination, body)
	if err != nil {
		return fmt.Errorf("sign request: %w", err)
	}
	header := XMatrix{
		Origin:      origin,
		Destination: destination,
		Key:         keyID,
		Signature:   spec.EncodeBase64(ed25519.Sign(key, signed)),
	}
	req.Header.Set("Authorization", header.String())
	return nil
}

// unauthorized is the 401 M_UNAUTHORIZED that a request failing authentication gets.
func unauthorized(format string, args ...any) *httpapi.Error {
	return httpapi.NewError(http.StatusUnauthorized, "M_UNAUTHORIZED", format, args...)
}

// VerifyRequest authenticates an inbound federation request (§"Request Authentication") and
// returns the origin server's name. body is the request body as read. The first X-Matrix
// Authorization header must parse, name a valid origin, name us (ourName) as destination if
// it names one, and carry a valid signature by a key that keys returns for the origin as
// valid at now: old_verify_keys only sign events, never requests. Every failure is a
// *httpapi.Error with status 401 and M_UNAUTHORIZED.
func VerifyRequest(r *http.Request, body []byte, ourName string, keys spec.KeyLookup, now time.Time) (string, error) {
	var header string
	for _, value := range r.Header.Values("Authorization") {
		if len(value) > len(xMatrixScheme) && strings.EqualFold(value[:len(xMatrixScheme)], xMatrixScheme) {
			header = value
			break
		}
	}
	if header == "" {
		return "", unauthorized("Missing X-Matrix Authorization header")
	}
	x, err := ParseXMatrix(header)
	if err != nil {
		return "", unauthorized("%v", err)
	}
	if _, err := spec.ParseServerName(x.Origin); err != nil {
		return "", unauthorized("Invalid origin %q", x.Origin)
	}
	if x.Destination != "" && x.Destination != ourName {
		return "", unauthorized("Request is for %q, not for this server", x.Destination)
	}
	uri := r.RequestURI
	if uri == "" {
		uri = r.URL.RequestURI()
	}
	signed, err := requestJSON(r.Method, uri, x.Origin, ourName, body)
	if err != nil {
		return "", httpapi.NotJSON("Request body is not valid JSON")
	}
	key, err := keys(x.Origin, x.Key, now.UnixMilli())
	if err != nil || len(key) != ed25519.PublicKeySize {
		return "", unauthorized("No valid key %s of %s", x.Key, x.Origin)
	}
	signature, err := spec.DecodeBase64(x.Signature)
	if err != nil || !strings.HasPrefix(x.Key, "ed25519:") || !ed25519.Verify(key, signed, signature) {
		return "", unauthorized("Invalid signature")
	}
	return x.Origin, nil
}

// KeySource gives the key lookup used to check request signatures. *KeyRing is one.
type KeySource interface {
	KeyLookup(ctx context.Context) spec.KeyLookup
}

// Authenticator is the middleware in front of every authenticated federation endpoint. It
// reads the body (up to MaxBodySize), checks the X-Matrix signature and hands the origin to
// the handler through the request context (Origin); the handler reads the body again from
// the request as usual.
type Authenticator struct {
	// ServerName is our server name: the destination requests must name.
	ServerName string
	Keys       KeySource
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// MaxBodySize bounds request bodies; 0 means httpapi.MaxBodySize.
	MaxBodySize int64
	// AllowOrigin, when set, decides whether an authenticated origin may use the API;
	// refused origins get 403 M_FORBIDDEN. NOTSPEC: Synapse's federation_domain_whitelist.
	AllowOrigin func(origin string) bool
}

type originKey struct{}

// Origin returns the authenticated origin server of a request that passed Authenticator.
func Origin(ctx context.Context) (string, bool) {
	origin, ok := ctx.Value(originKey{}).(string)
	return origin, ok
}

// WithOrigin returns ctx carrying origin as the authenticated origin, for handler tests.
func WithOrigin(ctx context.Context, origin string) context.Context {
	return context.WithValue(ctx, originKey{}, origin)
}

// Middleware wraps next with request authentication.
func (a *Authenticator) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		limit := a.MaxBodySize
		if limit <= 0 {
			limit = httpapi.MaxBodySize
		}
		body, err := httpapi.ReadBody(r, limit)
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		now := time.Now
		if a.Now != nil {
			now = a.Now
		}
		origin, err := VerifyRequest(r, body, a.ServerName, a.Keys.KeyLookup(r.Context()), now())
		if err != nil {
			httpapi.WriteError(w, r, err)
			return
		}
		if a.AllowOrigin != nil && !a.AllowOrigin(origin) {
			httpapi.WriteError(w, r, httpapi.Forbidden("Federation with %s is not allowed", origin))
			return
		}
		r = r.WithContext(WithOrigin(r.Context(), origin))
		r.Body = io.NopCloser(bytes.NewReader(body))
		r.ContentLength = int64(len(body))
		next.ServeHTTP(w, r)
	})
}
