-- The content repository (client-server API "Content repository", server-server API
-- "Content Repository"): what is known of each piece of media, ours and other servers'
-- cached here. The bytes live on disk under the data directory, in files named by their
-- SHA-256 (package media), so identical content is stored once.
CREATE TABLE media (
    -- The media's mxc://<origin>/<media_id> URI.
    origin             TEXT NOT NULL,
    media_id           TEXT NOT NULL,
    -- The Content-Type given at upload (or served by the origin); '' while pending.
    content_type       TEXT NOT NULL DEFAULT '',
    -- The filename given at upload (or by the origin's Content-Disposition); '' for none.
    upload_name        TEXT NOT NULL DEFAULT '',
    size               {{BIGINT}} NOT NULL DEFAULT 0,
    -- Lower-case hex SHA-256 of the content, which names its file; '' while the media is a
    -- pending asynchronous upload (POST /create and no PUT yet).
    sha256             TEXT NOT NULL DEFAULT '',
    -- Who uploaded or created it; '' for other servers' media.
    user_id            TEXT NOT NULL DEFAULT '',
    -- When it was uploaded, created (while pending) or fetched from its origin (ms).
    created_ts         {{BIGINT}} NOT NULL,
    -- When a pending upload's media ID expires unused (ms); 0 once uploaded.
    unused_expires_ts  {{BIGINT}} NOT NULL DEFAULT 0,
    -- Quarantined media is never served, to clients or to other servers.
    quarantined        {{BOOL}} NOT NULL DEFAULT FALSE,
    PRIMARY KEY (origin, media_id)
);
-- Counting a user's pending uploads, and expiring them.
CREATE INDEX media_pending ON media (user_id, unused_expires_ts) WHERE sha256 = '';

-- Thumbnails generated from media (client-server API "Thumbnails"), one per size class and
-- method: width and height are the box asked for (package media picks it from a fixed
-- list; 0 × 0 is the image's own size), not the thumbnail's own dimensions. Their bytes are
-- files named by SHA-256 too.
CREATE TABLE media_thumbnails (
    origin        TEXT NOT NULL,
    media_id      TEXT NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    method        TEXT NOT NULL,
    content_type  TEXT NOT NULL,
    size          {{BIGINT}} NOT NULL,
    sha256        TEXT NOT NULL,
    created_ts    {{BIGINT}} NOT NULL,
    PRIMARY KEY (origin, media_id, width, height, method)
);
