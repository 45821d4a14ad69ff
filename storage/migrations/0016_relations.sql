-- Event relationships (client-server API "Forming relationships between events"): an index
-- of the timeline events whose content carries a valid m.relates_to, for /relations, /threads
-- and the aggregations bundled with parent events. Only events in a room's timeline have a
-- row (accepted events, and outliers once backfill gives them a position): not outliers at
-- position 0, soft-failed or rejected events. A redacted event loses its m.relates_to, and
-- its row. See storage/relations.go.
CREATE TABLE event_relations (
    event_nid      {{BIGINT}} PRIMARY KEY,
    event_id       TEXT NOT NULL UNIQUE,
    room_nid       {{BIGINT}} NOT NULL,
    -- The parent: m.relates_to.event_id and m.relates_to.rel_type.
    relates_to_id  TEXT NOT NULL,
    rel_type       TEXT NOT NULL,
    -- The child's own type and sender, for the eventType filter, edits and participation.
    type           TEXT NOT NULL,
    sender         TEXT NOT NULL,
    -- The child's stream position (negative inside backfilled history; never 0).
    stream_pos     {{BIGINT}} NOT NULL
);
CREATE INDEX event_relations_parent ON event_relations (relates_to_id, rel_type, stream_pos);
CREATE INDEX event_relations_sender ON event_relations (relates_to_id, rel_type, sender);

-- Threads ("Threading"): one row per thread root with an m.thread child in the index, and
-- the stream position of its latest child, by which /threads orders and pages.
CREATE TABLE event_threads (
    room_nid    {{BIGINT}} NOT NULL,
    root_id     TEXT NOT NULL,
    latest_pos  {{BIGINT}} NOT NULL,
    PRIMARY KEY (room_nid, root_id)
);
CREATE INDEX event_threads_latest ON event_threads (room_nid, latest_pos);
