-- History fetched from other servers with /backfill (server-server API "Backfilling and
-- retrieving missing events") is older than everything a room already has here, so its
-- events take negative stream positions, handed out downwards: the further back in a
-- room's history, the lower. Client pagination (/messages), which walks stream positions,
-- then reaches them after the room's earliest local event. The positive stream is untouched.
CREATE UNIQUE INDEX events_backfill_pos ON events (stream_pos) WHERE stream_pos < 0;

-- The lowest negative position handed out so far (one row).
CREATE TABLE backfill_stream (
    id      INTEGER PRIMARY KEY,
    lowest  {{BIGINT}} NOT NULL
);
INSERT INTO backfill_stream (id, lowest) VALUES (1, 0);
