-- Staging of a federated join (rooms/join.go): the send_join response of a large room is
-- written here event by event as it is read, then checked in auth order one batch at a
-- time, so that the joining server never holds the whole response in memory. The rows of a
-- stage live only while its join runs; stages left behind by a crash are removed later.
CREATE TABLE join_stages (
    stage_nid   {{BIGSERIAL}},
    room_id     TEXT NOT NULL,
    created_ts  {{BIGINT}} NOT NULL
);
CREATE INDEX join_stages_created ON join_stages (created_ts);

CREATE TABLE join_staged_events (
    stage_nid   {{BIGINT}} NOT NULL,
    event_id    TEXT NOT NULL,
    -- Order of arrival: of two state events for one tuple, the later one counts.
    seq         {{BIGINT}} NOT NULL,
    -- Part of the room state before the join (else only of the auth chain).
    in_state    {{BOOL}} NOT NULL,
    type        TEXT NOT NULL,
    state_key   TEXT,
    -- The event as checked so far: signatures verified, redacted if its content hash failed.
    json        TEXT NOT NULL,
    -- How many of its auth events are staged and not checked yet; 0 makes it checkable.
    pending     INTEGER NOT NULL DEFAULT 0,
    -- 0 waiting, 1 passed (stored as an outlier), 2 failed.
    status      SMALLINT NOT NULL DEFAULT 0,
    PRIMARY KEY (stage_nid, event_id)
);
CREATE INDEX join_staged_events_ready ON join_staged_events (stage_nid, status, pending, seq);

-- The auth events of each staged event: the edges along which checking proceeds. An event
-- staged twice has its edges twice, counted and discounted alike.
CREATE TABLE join_staged_auth (
    stage_nid  {{BIGINT}} NOT NULL,
    event_id   TEXT NOT NULL,
    auth_id    TEXT NOT NULL
);
CREATE INDEX join_staged_auth_by_auth ON join_staged_auth (stage_nid, auth_id);
