-- Push notifications (client-server API "Push Notifications", pusher.yaml; push gateway API).

-- Pushers: where each user's notifications go, one row per user, app ID and pushkey
-- (POST /pushers/set updates the row in place). A pusher belongs to the device that set it
-- and goes with it (logout, device deletion). The retry columns are the state of the
-- pusher's delivery: while its gateway fails, the pusher's queue waits until retry_at_ts.
CREATE TABLE pushers (
    pusher_id            {{BIGSERIAL}},
    user_id              TEXT NOT NULL,
    device_id            TEXT NOT NULL,
    -- Only "http" is stored: this server sends no email.
    kind                 TEXT NOT NULL,
    app_id               TEXT NOT NULL,
    pushkey              TEXT NOT NULL,
    app_display_name     TEXT NOT NULL,
    device_display_name  TEXT NOT NULL,
    profile_tag          TEXT NOT NULL DEFAULT '',
    lang                 TEXT NOT NULL,
    -- The data object as the client gave it (JSON), url included.
    data                 TEXT NOT NULL,
    -- When the pushkey was last set (ms since the epoch), and the stream position then:
    -- the pusher is sent the events after it.
    pushkey_ts           {{BIGINT}} NOT NULL,
    from_pos             {{BIGINT}} NOT NULL,
    -- Since when deliveries have been failing (0: they are not), how many attempts in a row
    -- failed, and when the next one may be made.
    failing_since_ts     {{BIGINT}} NOT NULL DEFAULT 0,
    failed_attempts      {{BIGINT}} NOT NULL DEFAULT 0,
    retry_at_ts          {{BIGINT}} NOT NULL DEFAULT 0,
    UNIQUE (app_id, pushkey, user_id)
);
CREATE INDEX pushers_user ON pushers (user_id, device_id);

-- How far the push sender has followed the stream: every event at or below pos has been
-- evaluated for the pushers' owners and its notifications queued. One row.
CREATE TABLE push_position (
    singleton  INTEGER PRIMARY KEY CHECK (singleton = 1),
    pos        {{BIGINT}} NOT NULL
);

-- Notifications waiting for their push gateway, oldest first per pusher. Queued in the
-- transaction that moves push_position past their event, deleted once the gateway answered
-- (or delivery was given up), so that a restart neither loses nor repeats one.
CREATE TABLE push_queue (
    queue_id      {{BIGSERIAL}},
    pusher_id     {{BIGINT}} NOT NULL,
    -- The event notified about; 0 for a badge update (counts only).
    event_nid     {{BIGINT}} NOT NULL,
    -- The notification object without devices and content (JSON), and the tweaks of the
    -- rule that matched (JSON object).
    notification  TEXT NOT NULL,
    tweaks        TEXT NOT NULL,
    created_ts    {{BIGINT}} NOT NULL
);
CREATE INDEX push_queue_pusher ON push_queue (pusher_id, queue_id);
