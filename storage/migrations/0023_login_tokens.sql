-- Login tokens (client-server API "Token-based" login, m.login.token, and
-- POST /login/get_token): short-lived, single-use, stored as the SHA-256 of the token.
CREATE TABLE login_tokens (
    token_hash  {{BYTES}} PRIMARY KEY,
    user_id     TEXT NOT NULL,
    expires_ts  {{BIGINT}} NOT NULL
);
CREATE INDEX login_tokens_expiry ON login_tokens (expires_ts);
