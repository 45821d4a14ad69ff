package rooms

import (
	"context"
	"fmt"
	"time"

	"github.com/scrambledeggs/eggs/spec"
	"github.com/scrambledeggs/eggs/storage"
)

// Policy Servers (server-server API §"Policy Servers"). A room uses one when its current
// state has a valid m.room.policy with an empty state key and the server it names has a
// joined user in the room. Then every event but that m.room.policy needs the Policy Server's
// signature: our own events get it before they are stored ("servers SHOULD fail to send
// that event" when it refuses), and a received event without a valid one is asked for one
// once and soft-failed if it still has none.

// policySignTimeout bounds one request for a Policy Server signature. The room's lock is held
// meanwhile, so an unreachable Policy Server must not stall the room for the federation
// client's full timeout. NOTSPEC: the spec sets no time.
const policySignTimeout = 10 * time.Second

// PolicySigner asks a room's Policy Server to sign an event (POST /_matrix/policy/v1/sign).
// Sign returns the event with the Policy Server's signature added, or an error: a refusal or
// an unreachable Policy Server. Its error reaches the client that sent the event, so the
// Policy Server's own Matrix error should be kept in it. The room server verifies the
// returned signature itself.
type PolicySigner interface {
	Sign(ctx context.Context, ev *spec.Event, ps spec.PolicyServer) (*spec.Event, error)
}

// SetPolicySigner connects the Policy Server client. Without one (no federation), Policy
// Servers are not consulted. Call it before the server takes requests.
func (s *Server) SetPolicySigner(p PolicySigner) { s.policySigner = p }

// policyServer is the Policy Server that room r uses in state (its current state, with the
// events of a send not yet stored laid over it), if any.
func (r *room) policyServer(state stateView) (spec.PolicyServer, bool) {
	ps, ok := spec.ParsePolicyServer(state.get(spec.PolicyTuple))
	if !ok || !state.hasJoinedServer(r, ps.ServerName) {
		return spec.PolicyServer{}, false
	}
	return ps, true
}

// hasJoinedServer reports whether a user of server is joined to r in state.
func (v stateView) hasJoinedServer(r *room, server string) bool {
	for tuple, e := range v.overlay {
		if tuple.Type == "m.room.member" && serverOf(tuple.StateKey) == server {
			if m, _ := e.Membership(); m == "join" {
				return true
			}
		}
	}
	for _, user := range r.joinedMembers() {
		if serverOf(user) != server {
			continue
		}
		if _, changed := v.overlay[spec.StateTuple{Type: "m.room.member", StateKey: user}]; !changed {
			return true
		}
	}
	return false
}

// policySign gets the signature of r's Policy Server, if r uses one in state, on a local
// event about to be stored. An error means the event must not be sent.
func (s *Server) policySign(ctx context.Context, r *room, state stateView, ev *spec.Event) (*spec.Event, error) {
	if s.policySigner == nil || !spec.NeedsPolicyServerSignature(ev) {
		return ev, nil
	}
	ps, ok := r.policyServer(state)
	if !ok {
		return ev, nil
	}
	return s.askPolicyServer(ctx, ev, ps)
}

// policyCheckReceived checks a received event against r's Policy Server, if r uses one
// (§"Validating Policy Server signatures"): an event without a valid signature is sent to
// the Policy Server once for a new one. It returns the event to store, signed if the Policy
// Server signed it now; an error says the event is not recommended for inclusion and is to
// be soft-failed.
func (s *Server) policyCheckReceived(ctx context.Context, r *room, ev *spec.Event) (*spec.Event, error) {
	if s.policySigner == nil || !spec.NeedsPolicyServerSignature(ev) {
		return ev, nil
	}
	ps, ok := r.policyServer(stateView{base: r.state})
	if !ok {
		return ev, nil
	}
	if spec.VerifyPolicyServerSignature(ev, ps) == nil {
		return ev, nil
	}
	// The signature may be missing, or made with a key the room has rotated since.
	return s.askPolicyServer(ctx, ev, ps)
}

// askPolicyServer asks ps to sign ev and verifies the signature it returns against the key
// in the room's state.
func (s *Server) askPolicyServer(ctx context.Context, ev *spec.Event, ps spec.PolicyServer) (*spec.Event, error) {
	ctx, cancel := context.WithTimeout(ctx, policySignTimeout)
	defer cancel()
	signed, err := s.policySigner.Sign(ctx, ev, ps)
	if err != nil {
		return nil, fmt.Errorf("policy server %s on %s: %w", ps.ServerName, ev.EventID(), err)
	}
	if signed.EventID() != ev.EventID() {
		return nil, fmt.Errorf("policy server %s returned %s for %s", ps.ServerName, signed.EventID(), ev.EventID())
	}
	if err := spec.VerifyPolicyServerSignature(signed, ps); err != nil {
		return nil, fmt.Errorf("policy server %s: %w", ps.ServerName, err)
	}
	return signed, nil
}

// policyStatus is the status of a received event that passed every other check: accepted,
// or soft-failed when the room's Policy Server does not recommend it. It returns the event
// to store.
func (s *Server) policyStatus(ctx context.Context, r *room, ev *spec.Event) (*spec.Event, storage.EventStatus) {
	signed, err := s.policyCheckReceived(ctx, r, ev)
	if err != nil {
		s.log.Info("soft-failing event", "event_id", ev.EventID(), "room_id", r.id, "reason", err)
		return ev, storage.EventSoftFailed
	}
	return signed, storage.EventAccepted
}
