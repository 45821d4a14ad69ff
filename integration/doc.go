// Package integration holds the tests that a user would recognise: real Matrix clients
// (mautrix-go) talking to real eggs servers on loopback, on SQLite and on PostgreSQL.
package integration
