-- End-to-end encryption over federation (server-server API "Device Management",
-- "End-to-End Encryption"): the stream of m.device_list_update EDUs of each local user, what
-- was last announced of their devices, and the cached device lists of other servers' users.

-- Per local user: the stream_id of the last m.device_list_update EDU made for them (the next
-- one names it as prev_id; GET /user/devices answers it), and a digest of the cross-signing
-- keys last announced in an m.signing_key_update.
CREATE TABLE device_list_outbound (
    user_id              TEXT PRIMARY KEY,
    stream_id            {{BIGINT}} NOT NULL,
    cross_signing_digest TEXT NOT NULL DEFAULT ''
);

-- Per local user and device: a digest of the keys and display name last announced, so that
-- a change of the device list is announced as the devices that differ.
CREATE TABLE device_list_outbound_devices (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- The device lists of other servers' users that we keep up to date from their EDUs: the
-- stream_id they are at, and the user's master and self-signing keys ('' when none).
CREATE TABLE remote_device_lists (
    user_id           TEXT PRIMARY KEY,
    stream_id         {{BIGINT}} NOT NULL,
    master_key        TEXT NOT NULL DEFAULT '',
    self_signing_key  TEXT NOT NULL DEFAULT '',
    updated_ts        {{BIGINT}} NOT NULL
);

-- The devices of those users, with their identity keys as the owner's server sent them.
CREATE TABLE remote_device_keys (
    user_id       TEXT NOT NULL,
    device_id     TEXT NOT NULL,
    key_json      TEXT NOT NULL,
    display_name  TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (user_id, device_id)
);
