-- Indexes for the room directory, the user directory and history visibility checks.

-- Room-level state (name, topic, join rules, history visibility, …) of every room, read
-- when listing the published room directory and finding rooms anyone may join.
CREATE INDEX current_state_room_level ON current_state (type, room_nid) WHERE state_key = '';

-- Joined members of a room, read by the user directory.
CREATE INDEX current_state_members ON current_state (room_nid, membership) WHERE type = 'm.room.member';
