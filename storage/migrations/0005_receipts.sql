-- Receipts (client-server API "Receipts"): the latest receipt of each user, receipt type
-- and thread in a room, replaced in place by a receipt for a later event. stream_pos orders
-- the changes for /sync.
CREATE TABLE receipts (
    room_nid      {{BIGINT}} NOT NULL,
    user_id       TEXT NOT NULL,
    receipt_type  TEXT NOT NULL,
    -- '' for an unthreaded receipt, else "main" or the event ID of the thread root.
    thread_id     TEXT NOT NULL,
    event_id      TEXT NOT NULL,
    -- Stream position of the receipted event: how far the user has read.
    event_pos     {{BIGINT}} NOT NULL,
    ts            {{BIGINT}} NOT NULL,
    stream_pos    {{BIGINT}} NOT NULL,
    PRIMARY KEY (room_nid, user_id, receipt_type, thread_id)
);
CREATE INDEX receipts_stream ON receipts (stream_pos);
CREATE INDEX receipts_room_stream ON receipts (room_nid, stream_pos);
CREATE INDEX receipts_user ON receipts (user_id, room_nid);

-- Stream positions reserved for data kept only in memory (typing notifications): a restarted
-- server starts its stream above them, so that it never hands out again a position that a
-- client already holds in a sync token.
CREATE TABLE stream_reservations (
    name  TEXT PRIMARY KEY,
    pos   {{BIGINT}} NOT NULL
);
