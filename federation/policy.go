package federation

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// PolicySigner asks rooms' Policy Servers to sign events (server-server API §"Asking for a
// Policy Server signature on an event", POST /_matrix/policy/v1/sign). It is the room
// server's rooms.PolicySigner.
type PolicySigner struct {
	Client *Client
	// Clock is time.Now when nil.
	Clock func() time.Time

	mu sync.Mutex
	// down remembers, per Policy Server, until when it is taken as unreachable after a
	// request failed without an answer: the room's lock is held while it is asked, so an
	// unreachable one must not cost every event of its rooms a timeout.
	down map[string]time.Time
}

// policyDownFor is how long a Policy Server that could not be reached is not asked again.
// NOTSPEC: events meanwhile fail (sent) or are soft-failed (received) at once.
const policyDownFor = 30 * time.Second

// maxPolicyResponse bounds the answer of a Policy Server: one signature.
const maxPolicyResponse = 64 << 10

// Sign sends the event to ps and returns it with the signature ps returned added, once that
// signature verifies against the key of m.room.policy. Its errors are Matrix errors for the
// client whose event it was: the Policy Server's own error when it refused ("that error
// SHOULD be provided to the client verbatim"), else 502 M_UNKNOWN.
func (p *PolicySigner) Sign(ctx context.Context, ev *spec.Event, ps spec.PolicyServer) (*spec.Event, error) {
	now := p.now()
	p.mu.Lock()
	until := p.down[ps.ServerName]
	p.mu.Unlock()
	if now.Before(until) {
		return nil, policyUnavailable(ps, errors.New("unreachable a moment ago"))
	}
	var signatures map[string]map[string]string
	err := p.Client.DoJSON(ctx, Request{
		Method: http.MethodPost, Destination: ps.ServerName, URI: "/_matrix/policy/v1/sign",
		Body: json.RawMessage(ev.JSON()), MaxResponseSize: maxPolicyResponse,
	}, &signatures)
	if err != nil {
		var remote *RemoteError
		if !errors.As(err, &remote) && ctx.Err() == nil {
			p.mu.Lock()
			if p.down == nil {
				p.down = map[string]time.Time{}
			}
			p.down[ps.ServerName] = now.Add(policyDownFor)
			p.mu.Unlock()
		}
		return nil, policyError(ps, err)
	}
	signature, ok := signatures[ps.ServerName][spec.PolicyServerKeyID]
	if !ok {
		return nil, policyUnavailable(ps, errors.New("no signature in the answer"))
	}
	signed, err := ev.WithSignature(ps.ServerName, spec.PolicyServerKeyID, signature)
	if err != nil {
		return nil, policyUnavailable(ps, err)
	}
	if err := spec.VerifyPolicyServerSignature(signed, ps); err != nil {
		return nil, policyUnavailable(ps, err)
	}
	return signed, nil
}

func (p *PolicySigner) now() time.Time {
	if p.Clock != nil {
		return p.Clock()
	}
	return time.Now()
}

// policyError turns a failed request to a Policy Server into the client's error. A Matrix
// error of the Policy Server keeps its errcode and message; NOTSPEC: its status becomes 403
// (the event is refused because of the room's policy: a 404 M_NOT_FOUND of the Policy
// Server is no 404 of the client's request), except that rate limits stay 429.
func policyError(ps spec.PolicyServer, err error) error {
	var remote *RemoteError
	if !errors.As(err, &remote) || remote.ErrCode == "" || remote.Status >= 500 {
		return policyUnavailable(ps, err)
	}
	status := http.StatusForbidden
	if remote.Status == http.StatusTooManyRequests {
		status = http.StatusTooManyRequests
	}
	return fmt.Errorf("%w (%v)", httpapi.NewError(status, remote.ErrCode, "%s", remote.Message), err)
}

// policyUnavailable is the client's error when the Policy Server gave no valid signature
// nor an error of its own: unreachable, failing, or answering nonsense. NOTSPEC: 502, as
// for a gateway that failed, which clients may retry.
func policyUnavailable(ps spec.PolicyServer, cause error) error {
	return fmt.Errorf("%w (%v)", httpapi.NewError(http.StatusBadGateway, "M_UNKNOWN",
		"The room's Policy Server %s did not sign the event", ps.ServerName), cause)
}
