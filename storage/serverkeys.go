package storage

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// Queries of the cache of remote servers' signing keys (server-server API "Retrieving server
// keys"). The federation key ring decides what to fetch and what to trust; these functions
// only keep what it learnt.

// ServerKey is one signing key of a remote server.
type ServerKey struct {
	ServerName string
	// KeyID is "ed25519:<version>".
	KeyID     string
	PublicKey []byte
	// ValidUntilTS is the valid_until_ts of the key response the key came from, as published.
	ValidUntilTS int64
	// ExpiredTS is 0 for a key of verify_keys, else its expired_ts from old_verify_keys.
	ExpiredTS int64
	// FetchedTS is when this server received the response.
	FetchedTS int64
}

// ServerKeyResponse is the latest self-signed key response of a server, kept to answer
// notary queries.
type ServerKeyResponse struct {
	ServerName   string
	Response     []byte
	ValidUntilTS int64
	FetchedTS    int64
}

const serverKeyColumns = `server_name, key_id, public_key, valid_until_ts, expired_ts, fetched_ts`

// PutServerKeys stores keys, each replacing the stored row of the same server and key ID
// unless that row came from a response valid for longer: a stale copy (say, from a notary's
// cache) never overwrites fresher knowledge. Once a key is known to have expired, it stays
// expired: a later row without expired_ts does not clear it.
func PutServerKeys(ctx context.Context, q Querier, keys []ServerKey) error {
	for _, k := range keys {
		_, err := q.Exec(ctx, `INSERT INTO server_keys (`+serverKeyColumns+`) VALUES ($1, $2, $3, $4, $5, $6)
			ON CONFLICT (server_name, key_id) DO UPDATE SET
				public_key = excluded.public_key,
				valid_until_ts = excluded.valid_until_ts,
				expired_ts = CASE WHEN excluded.expired_ts <> 0 THEN excluded.expired_ts ELSE server_keys.expired_ts END,
				fetched_ts = excluded.fetched_ts
			WHERE server_keys.valid_until_ts <= excluded.valid_until_ts`,
			k.ServerName, k.KeyID, k.PublicKey, k.ValidUntilTS, k.ExpiredTS, k.FetchedTS)
		if err != nil {
			return fmt.Errorf("storage: put server key %s %s: %w", k.ServerName, k.KeyID, err)
		}
	}
	return nil
}

// ServerKeys returns every stored key of serverName, ordered by key ID.
func ServerKeys(ctx context.Context, q Querier, serverName string) ([]ServerKey, error) {
	rows, err := q.Query(ctx, `SELECT `+serverKeyColumns+` FROM server_keys WHERE server_name = $1 ORDER BY key_id`, serverName)
	if err != nil {
		return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
	}
	defer rows.Close()
	var keys []ServerKey
	for rows.Next() {
		var k ServerKey
		if err := rows.Scan(&k.ServerName, &k.KeyID, &k.PublicKey, &k.ValidUntilTS, &k.ExpiredTS, &k.FetchedTS); err != nil {
			return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
		}
		keys = append(keys, k)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("storage: server keys of %s: %w", serverName, err)
	}
	return keys, nil
}

// PutServerKeyResponse stores r as the latest key response of its server, unless the stored
// one is valid for longer. Equal validity goes to the later fetch.
func PutServerKeyResponse(ctx context.Context, q Querier, r ServerKeyResponse) error {
	_, err := q.Exec(ctx, `INSERT INTO server_key_responses (server_name, response, valid_until_ts, fetched_ts)
		VALUES ($1, $2, $3, $4)
		ON CONFLICT (server_name) DO UPDATE SET
			response = excluded.response,
			valid_until_ts = excluded.valid_until_ts,
			fetched_ts = excluded.fetched_ts
		WHERE server_key_responses.valid_until_ts < excluded.valid_until_ts
			OR (server_key_responses.valid_until_ts = excluded.valid_until_ts
				AND server_key_responses.fetched_ts <= excluded.fetched_ts)`,
		r.ServerName, r.Response, r.ValidUntilTS, r.FetchedTS)
	if err != nil {
		return fmt.Errorf("storage: put key response of %s: %w", r.ServerName, err)
	}
	return nil
}

// GetServerKeyResponse returns the stored key response of serverName, and whether there is
// one.
func GetServerKeyResponse(ctx context.Context, q Querier, serverName string) (ServerKeyResponse, bool, error) {
	r := ServerKeyResponse{ServerName: serverName}
	err := q.QueryRow(ctx, `SELECT response, valid_until_ts, fetched_ts FROM server_key_responses
		WHERE server_name = $1`, serverName).Scan(&r.Response, &r.ValidUntilTS, &r.FetchedTS)
	if errors.Is(err, sql.ErrNoRows) {
		return ServerKeyResponse{}, false, nil
	}
	if err != nil {
		return ServerKeyResponse{}, false, fmt.Errorf("storage: key response of %s: %w", serverName, err)
	}
	return r, true, nil
}
