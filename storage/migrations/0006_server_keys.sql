-- Remote servers' signing keys (server-server API "Retrieving server keys"), fetched directly
-- or through notaries, cached until their valid_until_ts.
--
-- server_keys holds one row per key: what a signature check needs. expired_ts is 0 for a key
-- listed in verify_keys and the key's expired_ts for one listed in old_verify_keys.
-- valid_until_ts is that of the response the row came from, as published (uncapped);
-- fetched_ts is when we received it, from which callers derive the 7-day cap of rooms v5+.
CREATE TABLE server_keys (
    server_name     TEXT NOT NULL,
    key_id          TEXT NOT NULL,
    public_key      {{BYTES}} NOT NULL,
    valid_until_ts  {{BIGINT}} NOT NULL,
    expired_ts      {{BIGINT}} NOT NULL,
    fetched_ts      {{BIGINT}} NOT NULL,
    PRIMARY KEY (server_name, key_id)
);

-- server_key_responses holds the latest self-signed key response of each server, exactly as
-- the server signed it (other servers' signatures removed), so that this server can answer
-- notary queries (/_matrix/key/v2/query) with it, even while the server is unreachable.
CREATE TABLE server_key_responses (
    server_name     TEXT PRIMARY KEY,
    response        {{BYTES}} NOT NULL,
    valid_until_ts  {{BIGINT}} NOT NULL,
    fetched_ts      {{BIGINT}} NOT NULL
);
