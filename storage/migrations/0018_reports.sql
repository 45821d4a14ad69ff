-- Content reports (client-server API "Reporting content", report_content.yaml): what users
-- reported to the server administrators, one row per report, kept for them to review.
CREATE TABLE reports (
    report_id    {{BIGSERIAL}},
    -- event, room or user.
    kind         TEXT NOT NULL CHECK (kind IN ('event', 'room', 'user')),
    reporter     TEXT NOT NULL,
    -- The reported room (event and room reports), event (event reports) and user (user
    -- reports); NULL where they do not apply.
    room_id      TEXT,
    event_id     TEXT,
    user_id      TEXT,
    -- NULL when an event report gave no reason; room and user reports always give one,
    -- possibly blank.
    reason       TEXT,
    -- The score of an event report (removed from the spec in v1.18, still sent by some
    -- clients); NULL when none was given.
    score        {{BIGINT}},
    received_ts  {{BIGINT}} NOT NULL
);
CREATE INDEX reports_room ON reports (room_id, report_id);
CREATE INDEX reports_user ON reports (user_id, report_id);
