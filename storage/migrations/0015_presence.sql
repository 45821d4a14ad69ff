-- Presence (client-server API "Presence", server-server API "Presence"): the last known
-- presence of each user, ours and other servers', one row per user. A change takes a stream
-- position, so that /sync can read the changes of a window; rows are updated, never deleted.
CREATE TABLE presence (
    user_id           TEXT PRIMARY KEY,
    -- online, unavailable or offline.
    presence          TEXT NOT NULL,
    status_msg        TEXT NOT NULL DEFAULT '',
    -- When the user was last active (ms since the epoch); 0 when unknown.
    last_active_ts    {{BIGINT}} NOT NULL,
    currently_active  {{BOOL}} NOT NULL,
    -- When this row was last written: for another server's user, when that server last told
    -- us; a row not refreshed for long enough is taken as offline.
    updated_ts        {{BIGINT}} NOT NULL,
    stream_pos        {{BIGINT}} NOT NULL
);
CREATE INDEX presence_stream ON presence (stream_pos);
CREATE INDEX presence_updated ON presence (updated_ts);
