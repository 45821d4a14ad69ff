package federation

import (
	"net/http"

	"github.com/go-chi/chi/v5"

	"github.com/scrambledeggs/eggs/httpapi"
	"github.com/scrambledeggs/eggs/spec"
)

// ServerSoftware is the implementation name reported by GET /_matrix/federation/v1/version.
const ServerSoftware = "Scrambled Eggs"

// Routes mounts the federation endpoints that need no request authentication:
//
//	GET  /_matrix/key/v2/server                 our keys (§"Publishing Keys")
//	GET  /_matrix/key/v2/server/{keyId}         the same, deprecated form
//	GET  /_matrix/key/v2/query/{serverName}     notary (§"Querying Keys Through Another Server")
//	POST /_matrix/key/v2/query                  notary, batch form
//
// GET /_matrix/federation/v1/version is the server package's: only it knows the build.
func Routes(r chi.Router, keys *ServerKeys, ring *KeyRing) {
	h := func(fn httpapi.Handler) http.HandlerFunc { return fn.ServeHTTP }
	n := &notary{keys: keys, ring: ring}
	r.Get("/_matrix/key/v2/server", h(keys.serveKeys))
	r.Get("/_matrix/key/v2/server/{keyID}", h(keys.serveKeys))
	r.Get("/_matrix/key/v2/query/{serverName}", h(n.queryOne))
	r.Post("/_matrix/key/v2/query", h(n.queryMany))
}

// validServerName reports whether name is a valid server name.
func validServerName(name string) bool { return spec.ValidateServerName(name) == nil }
