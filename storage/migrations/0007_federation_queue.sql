-- The outbound federation queue: what each destination still has to receive, kept until
-- the destination acknowledged it, so that a peer that is down or a restart loses nothing.
CREATE TABLE federation_queue (
    queue_id     {{BIGSERIAL}},
    destination  TEXT NOT NULL,
    -- A PDU is named by its event (event_nid <> 0); an EDU carries its JSON.
    event_nid    {{BIGINT}} NOT NULL DEFAULT 0,
    edu          TEXT,
    created_ts   {{BIGINT}} NOT NULL
);
CREATE INDEX federation_queue_destination ON federation_queue (destination, queue_id);

-- The health of each destination, for the retry schedule and the admin dashboard.
CREATE TABLE federation_destinations (
    destination      TEXT PRIMARY KEY,
    last_success_ts  {{BIGINT}} NOT NULL DEFAULT 0,
    last_failure_ts  {{BIGINT}} NOT NULL DEFAULT 0,
    failures         {{BIGINT}} NOT NULL DEFAULT 0,
    retry_at_ts      {{BIGINT}} NOT NULL DEFAULT 0,
    last_error       TEXT NOT NULL DEFAULT ''
);
