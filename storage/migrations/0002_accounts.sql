-- Local user accounts, their devices and access tokens.
CREATE TABLE users (
    user_id        TEXT PRIMARY KEY,
    password_hash  TEXT NOT NULL DEFAULT '',
    is_admin       BOOLEAN NOT NULL DEFAULT FALSE,
    is_guest       BOOLEAN NOT NULL DEFAULT FALSE,
    deactivated    BOOLEAN NOT NULL DEFAULT FALSE,
    displayname    TEXT,
    avatar_url     TEXT,
    created_ts     {{BIGINT}} NOT NULL
);

CREATE TABLE devices (
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    display_name  TEXT,
    -- SHA-256 of the access token: the token itself is never stored.
    token_hash    {{BYTES}} NOT NULL,
    created_ts    {{BIGINT}} NOT NULL,
    last_seen_ts  {{BIGINT}} NOT NULL DEFAULT 0,
    last_seen_ip  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);
CREATE UNIQUE INDEX devices_token ON devices (token_hash);

CREATE TABLE registration_tokens (
    token        TEXT PRIMARY KEY,
    uses_allowed {{BIGINT}},
    pending      {{BIGINT}} NOT NULL DEFAULT 0,
    completed    {{BIGINT}} NOT NULL DEFAULT 0,
    expiry_ts    {{BIGINT}}
);

-- Global and per-room account data; stream_pos orders changes for /sync.
CREATE TABLE account_data (
    user_id     TEXT NOT NULL,
    room_id     TEXT NOT NULL DEFAULT '',
    type        TEXT NOT NULL,
    content     TEXT NOT NULL,
    stream_pos  {{BIGINT}} NOT NULL,
    PRIMARY KEY (user_id, room_id, type)
);
CREATE INDEX account_data_stream ON account_data (user_id, stream_pos);

CREATE TABLE filters (
    user_id    TEXT NOT NULL,
    filter_id  {{BIGINT}} NOT NULL,
    filter     TEXT NOT NULL,
    PRIMARY KEY (user_id, filter_id)
);

-- Custom profile fields (client-server API "Profiles", keyName since v1.16), including
-- m.tz; value is the field's JSON. displayname and avatar_url stay in users.
CREATE TABLE profile_fields (
    user_id  TEXT NOT NULL,
    field    TEXT NOT NULL,
    value    TEXT NOT NULL,
    PRIMARY KEY (user_id, field)
);
