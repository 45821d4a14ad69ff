package server

import (
	"context"
	"fmt"
	"time"

	"github.com/scrambledeggs/eggs/federation"
)

// mountFederation is the federation API as a component: the server's signing keys, the
// notary and the implementation version on the federation router (federation.Routes, see
// package federation's doc for how its pieces fit), and the server delegation
// (EGGS_WELL_KNOWN_SERVER) on the client router. Outbound requests verify peers against
// TrustPool.
func mountFederation(ctx context.Context, s *Server) error {
	own, err := federation.NewServerKeys(ctx, s.db, s.identity, time.Now)
	if err != nil {
		return fmt.Errorf("federation signing keys: %w", err)
	}
	resolver := federation.NewResolver(federation.ResolverConfig{RootCAs: s.trustPool})
	client, err := federation.NewClient(federation.ClientConfig{Identity: s.identity, Resolver: resolver, RootCAs: s.trustPool})
	if err != nil {
		return err
	}
	ring := federation.NewKeyRing(federation.KeyRingConfig{DB: s.db, Client: client, Own: own})
	federation.Routes(s.federationRouter, own, ring)
	if err := federation.MountWellKnown(s.clientRouter, s.cfg.WellKnownServer); err != nil {
		return fmt.Errorf("EGGS_WELL_KNOWN_SERVER %q: %w", s.cfg.WellKnownServer, err)
	}
	return nil
}
