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
	s.federationClient, s.keyRing = client, ring
	federation.Routes(s.federationRouter, own, ring)

	// The authenticated API: inbound transactions and membership; outbound, the queue of
	// what other servers in our rooms must receive. With the federation listener off there
	// is no one to talk to.
	if s.cfg.FederationEnabled() {
		keyLookup := ring.KeyLookup(context.WithoutCancel(ctx))
		api := &federation.API{
			ServerName: s.identity.ServerName, DB: s.db, Rooms: s.rooms, Keys: ring, Client: client,
			Inbound: federation.NewInbound(s.db, s.rooms, keyLookup, time.Now, s.log),
			Sender:  federation.NewSender(s.db, s.identity.ServerName, client, time.Now, s.log),
			Invites: s.clientAPI, Log: s.log, Clock: time.Now,
		}
		api.Routes(s.federationRouter)
		// Queries, directory, hierarchy and OpenID answer from what the client API knows;
		// typing and receipts of other servers reach our users through it; server ACLs
		// guard every received event.
		(&federation.QueryAPI{API: api, Local: s.clientAPI}).Routes(s.federationRouter)
		api.HandleEDUs(s.clientAPI)
		api.HandlePresence(s.clientAPI.Presence())
		s.clientAPI.Presence().SetFederator(api)
		s.rooms.SetJoinObserver(s.clientAPI.Presence().Joined)
		s.rooms.SetReceiveCheck(api.ReceiveCheck)
		s.rooms.SetOutbound(api.Sender)
		s.rooms.SetPolicySigner(&federation.PolicySigner{Client: client})
		s.clientAPI.SetRemoteRooms(api)
		// End-to-end encryption: device lists, keys and to-device messages of our users go to
		// the servers sharing rooms with them, and theirs reach our users.
		e2ee := &federation.E2EE{API: api, Local: s.clientAPI}
		e2ee.Routes(s.federationRouter)
		e2ee.HandleEDUs()
		s.clientAPI.SetRemoteKeys(e2ee)
		s.Background(func(ctx context.Context) {
			if err := api.Sender.Start(ctx); err != nil {
				s.log.Error("federation sender", "err", err)
				return
			}
			<-ctx.Done()
			api.Sender.Wait()
		})
	}
	if err := federation.MountWellKnown(s.clientRouter, s.cfg.WellKnownServer); err != nil {
		return fmt.Errorf("EGGS_WELL_KNOWN_SERVER %q: %w", s.cfg.WellKnownServer, err)
	}
	return nil
}
