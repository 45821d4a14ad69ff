-- End-to-end encryption (client-server API "End-to-End Encryption", "Send-to-Device
-- messaging", "Server-side key backups"): device keys, one-time and fallback keys,
-- cross-signing keys and signatures, device-list changes, to-device inboxes, key backups and
-- dehydrated devices. Every key object is stored as the JSON the client signed: the server
-- never interprets or re-encodes what it cannot check.

-- Identity keys of a device (definitions/device_keys.yaml), one object per device.
CREATE TABLE device_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id)
);

-- Unclaimed one-time keys; a claim deletes its row, so a key is given out once.
CREATE TABLE one_time_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    PRIMARY KEY (user_id, device_id, algorithm, key_id)
);

-- At most one fallback key per device and algorithm; used once it has been claimed.
CREATE TABLE fallback_keys (
    user_id    TEXT NOT NULL,
    device_id  TEXT NOT NULL,
    algorithm  TEXT NOT NULL,
    key_id     TEXT NOT NULL,
    key_json   TEXT NOT NULL,
    used       BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, device_id, algorithm)
);

-- Cross-signing keys: key_type is master, self_signing or user_signing.
CREATE TABLE cross_signing_keys (
    user_id   TEXT NOT NULL,
    key_type  TEXT NOT NULL,
    key_json  TEXT NOT NULL,
    PRIMARY KEY (user_id, key_type)
);

-- Signatures uploaded through /keys/signatures/upload, merged into the signed object when
-- it is queried. target_key_id is a device ID or the public key of a cross-signing key.
CREATE TABLE key_signatures (
    target_user_id  TEXT NOT NULL,
    target_key_id   TEXT NOT NULL,
    signer_user_id  TEXT NOT NULL,
    signer_key_id   TEXT NOT NULL,
    signature       TEXT NOT NULL,
    PRIMARY KEY (target_user_id, target_key_id, signer_user_id, signer_key_id)
);

-- The last stream position at which each user's device list (devices, their keys,
-- cross-signing keys and signatures) changed, for device_lists in /sync and /keys/changes.
CREATE TABLE device_list_changes (
    user_id     TEXT PRIMARY KEY,
    stream_pos  {{BIGINT}} NOT NULL
);
CREATE INDEX device_list_changes_stream ON device_list_changes (stream_pos);

-- To-device messages waiting for their device, until a /sync acknowledges them.
CREATE TABLE to_device_messages (
    message_nid  {{BIGSERIAL}},
    user_id      TEXT NOT NULL,
    device_id    TEXT NOT NULL,
    stream_pos   {{BIGINT}} NOT NULL,
    sender       TEXT NOT NULL,
    type         TEXT NOT NULL,
    content      TEXT NOT NULL
);
CREATE INDEX to_device_inbox ON to_device_messages (user_id, device_id, stream_pos);

-- Transaction IDs of /sendToDevice, so that a retried request is not delivered twice.
CREATE TABLE to_device_txns (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    created_ts  {{BIGINT}} NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

-- Server-side key backups: versions are numbered per user and never reused; etag changes
-- whenever the keys of a version change.
CREATE TABLE backup_versions (
    user_id    TEXT NOT NULL,
    version    {{BIGINT}} NOT NULL,
    algorithm  TEXT NOT NULL,
    auth_data  TEXT NOT NULL,
    etag       {{BIGINT}} NOT NULL DEFAULT 0,
    deleted    BOOLEAN NOT NULL DEFAULT FALSE,
    PRIMARY KEY (user_id, version)
);

CREATE TABLE backup_keys (
    user_id              TEXT NOT NULL,
    version              {{BIGINT}} NOT NULL,
    room_id              TEXT NOT NULL,
    session_id           TEXT NOT NULL,
    first_message_index  {{BIGINT}} NOT NULL,
    forwarded_count      {{BIGINT}} NOT NULL,
    is_verified          BOOLEAN NOT NULL,
    session_data         TEXT NOT NULL,
    PRIMARY KEY (user_id, version, room_id, session_id)
);

-- Dehydrated devices (MSC3814): at most one per user. The device itself is a row of devices
-- without a usable access token; device_data is opaque to the server.
CREATE TABLE dehydrated_devices (
    user_id      TEXT PRIMARY KEY,
    device_id    TEXT NOT NULL,
    device_data  TEXT NOT NULL
);
