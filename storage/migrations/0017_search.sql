-- Full-text search of room events (client-server API "Server Side Search"; storage/search.go).
--
-- One row per distinct token of an event's searchable text (content.body of m.room.message,
-- content.name of m.room.name, content.topic of m.room.topic), made by one Go tokenizer so
-- that both engines match alike. Tokens are UTF-8 bytes: bytes compare the same on both
-- engines whatever the collation, so that a prefix is a range of the primary key.
--
-- Rows are written after the event is stored, by a background indexer (storage/search.go).
-- Whether a row may match is decided when searching, from the events row (its stream
-- position, status and redaction), since all three change after the event is stored.
CREATE TABLE event_search (
    token      {{BYTES}} NOT NULL,
    room_nid   {{BIGINT}} NOT NULL,
    event_nid  {{BIGINT}} NOT NULL,
    -- How often the token occurs in the text: the event's score for order_by rank.
    hits       INTEGER NOT NULL,
    PRIMARY KEY (token, room_nid, event_nid)
);

-- How far the background indexer has come (IndexSearchBatch): every event with an event_nid
-- up to indexed_nid that has searchable text is in event_search, unless it was redacted,
-- soft-failed or rejected.
-- One row, locked by each batch so that the indexers of several processes take turns.
CREATE TABLE event_search_position (
    id          INTEGER PRIMARY KEY,
    indexed_nid {{BIGINT}} NOT NULL
);
INSERT INTO event_search_position (id, indexed_nid) VALUES (1, 0);
