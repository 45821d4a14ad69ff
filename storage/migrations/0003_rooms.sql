-- Rooms, their events (the DAG), state snapshots and current state.
--
-- Numeric IDs ("nids") are interned once and used everywhere else, so that state snapshots
-- are rows of three integers.
CREATE TABLE rooms (
    room_nid         {{BIGSERIAL}},
    room_id          TEXT NOT NULL UNIQUE,
    room_version     TEXT NOT NULL,
    -- Snapshot of the current (resolved) state.
    current_snapshot {{BIGINT}} NOT NULL DEFAULT 0,
    is_public        BOOLEAN NOT NULL DEFAULT FALSE
);

CREATE TABLE events (
    event_nid      {{BIGSERIAL}},
    event_id       TEXT NOT NULL UNIQUE,
    room_nid       {{BIGINT}} NOT NULL,
    -- Position in the server-wide stream; 0 for events in no timeline (outliers,
    -- soft-failed and rejected events).
    stream_pos     {{BIGINT}} NOT NULL,
    -- 0 accepted, 1 outlier (stored without state), 2 soft-failed, 3 rejected.
    status         SMALLINT NOT NULL DEFAULT 0,
    depth          {{BIGINT}} NOT NULL,
    type           TEXT NOT NULL,
    state_key      TEXT,
    sender         TEXT NOT NULL,
    origin_ts      {{BIGINT}} NOT NULL,
    -- Snapshots of the room state before and after this event (equal for message events).
    state_before   {{BIGINT}} NOT NULL,
    state_after    {{BIGINT}} NOT NULL DEFAULT 0,
    -- For state events: the event this one replaced in the state (for unsigned.prev_content).
    replaces_nid   {{BIGINT}} NOT NULL DEFAULT 0,
    -- The redaction event that applies to this event, if any.
    redacted_by    TEXT,
    -- The local device and transaction ID that sent it (for unsigned.transaction_id).
    sender_device  TEXT,
    txn_id         TEXT,
    json           TEXT NOT NULL
);
CREATE UNIQUE INDEX events_stream_pos ON events (stream_pos) WHERE stream_pos > 0;
CREATE INDEX events_room_stream ON events (room_nid, stream_pos);
CREATE INDEX events_membership ON events (state_key, stream_pos) WHERE type = 'm.room.member';

CREATE TABLE forward_extremities (
    room_nid   {{BIGINT}} NOT NULL,
    event_nid  {{BIGINT}} NOT NULL,
    PRIMARY KEY (room_nid, event_nid)
);

CREATE TABLE state_tuples (
    tuple_nid  {{BIGSERIAL}},
    type       TEXT NOT NULL,
    state_key  TEXT NOT NULL,
    UNIQUE (type, state_key)
);

-- A snapshot is stored as a delta against an ancestor snapshot (its base); see
-- rooms/statesnapshots.go for how bases are chosen so that chains stay short and the
-- total size grows with the number of state changes.
CREATE TABLE state_snapshots (
    snapshot_nid  {{BIGSERIAL}},
    room_nid      {{BIGINT}} NOT NULL,
    base_nid      {{BIGINT}} NOT NULL,
    depth         {{BIGINT}} NOT NULL
);

CREATE TABLE state_deltas (
    snapshot_nid  {{BIGINT}} NOT NULL,
    tuple_nid     {{BIGINT}} NOT NULL,
    -- 0 removes the tuple from the state.
    event_nid     {{BIGINT}} NOT NULL,
    PRIMARY KEY (snapshot_nid, tuple_nid)
);

-- The current state of each room, denormalised for fast membership and state queries.
CREATE TABLE current_state (
    room_nid    {{BIGINT}} NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT NOT NULL,
    event_nid   {{BIGINT}} NOT NULL,
    membership  TEXT,
    PRIMARY KEY (room_nid, type, state_key)
);
CREATE INDEX current_state_user ON current_state (state_key, membership) WHERE type = 'm.room.member';

-- Client transaction IDs, so that a retried send returns the original event.
CREATE TABLE txn_ids (
    user_id     TEXT NOT NULL,
    device_id   TEXT NOT NULL,
    txn_id      TEXT NOT NULL,
    event_id    TEXT NOT NULL,
    created_ts  {{BIGINT}} NOT NULL,
    PRIMARY KEY (user_id, device_id, txn_id)
);

CREATE TABLE room_aliases (
    alias     TEXT PRIMARY KEY,
    room_id   TEXT NOT NULL,
    creator   TEXT NOT NULL
);
CREATE INDEX room_aliases_room ON room_aliases (room_id);

-- Rooms a user has forgotten after leaving them.
CREATE TABLE forgotten_rooms (
    user_id  TEXT NOT NULL,
    room_id  TEXT NOT NULL,
    PRIMARY KEY (user_id, room_id)
);
