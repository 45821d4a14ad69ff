// Package auth holds the authentication building blocks of the homeserver that do not
// depend on HTTP or on a database: password hashing, access-token and device-ID
// generation, per-key rate limiting, shared-secret (admin API) registration and the
// User-Interactive Authentication engine of the Client-Server API.
//
// Everything here is pure logic plus bounded in-memory state. Handlers in clientapi turn
// the results into HTTP responses; storage keeps the hashes this package produces.
package auth
