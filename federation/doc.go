// Package federation is the Server-Server API of Scrambled Eggs (server-server API, spec
// v1.19): the server's own signing keys and the notary key service, the key ring that
// fetches, verifies and caches other servers' keys, X-Matrix request signing and
// verification, server discovery (.well-known, SRV, port 8448) and the signed HTTPS client
// that talks to other homeservers.
//
// The pieces fit together like this:
//
//	roots, err := federation.LoadRootCAs(os.Getenv("EGGS_TRUSTED_CA"))  // system roots + extra CA
//	own, err := federation.NewServerKeys(ctx, db, identity, time.Now)   // our keys, old keys kept
//	resolver := federation.NewResolver(federation.ResolverConfig{RootCAs: roots})
//	client, err := federation.NewClient(federation.ClientConfig{Identity: identity, Resolver: resolver, RootCAs: roots})
//	ring := federation.NewKeyRing(federation.KeyRingConfig{DB: db, Client: client, Own: own})
//	federation.Routes(router, own, ring)                                // /_matrix/key/v2/*, version
//	auth := &federation.Authenticator{ServerName: name, Keys: ring}      // X-Matrix middleware
//	router.With(auth.Middleware).Put("/_matrix/federation/v1/send/{txnID}", …)
package federation
