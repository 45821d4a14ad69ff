-- URL previews (client-server API "Content repository", GET /preview_url), kept for a while
-- so that the clients of a room, all asking for the same link, do not each make the server
-- fetch it again. A failed fetch is kept too, for less time, with the error given. The
-- images of previews are ordinary media (table media).
CREATE TABLE url_previews (
    -- The URL previewed, without its fragment.
    url         TEXT PRIMARY KEY,
    -- The Open Graph answer, a JSON object; '' when the fetch failed.
    og          TEXT NOT NULL DEFAULT '',
    -- When the fetch failed, the HTTP status and Matrix error given for it; 200 otherwise.
    status      INTEGER NOT NULL DEFAULT 200,
    errcode     TEXT NOT NULL DEFAULT '',
    message     TEXT NOT NULL DEFAULT '',
    -- When it was fetched, and when it must be fetched again (ms).
    created_ts  {{BIGINT}} NOT NULL,
    expires_ts  {{BIGINT}} NOT NULL
);
CREATE INDEX url_previews_expiry ON url_previews (expires_ts);
