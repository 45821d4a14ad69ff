-- OpenID access tokens (client-server API "OpenID", server-server API "OpenID"): only their
-- SHA-256 hash is kept, with the user it identifies and when it stops being valid.
CREATE TABLE openid_tokens (
    token_hash  {{BYTES}} PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_ts  {{BIGINT}} NOT NULL
);
CREATE INDEX openid_tokens_expiry ON openid_tokens (expires_ts);

-- Finding a room's event closest to a timestamp (/timestamp_to_event).
CREATE INDEX events_room_origin_ts ON events (room_nid, origin_ts);
