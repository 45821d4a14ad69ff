-- Whether a room has any relation at all (storage/relations.go roomHasRelations), asked
-- before the aggregation queries of a room's events.
CREATE INDEX event_relations_room ON event_relations (room_nid, stream_pos);
