-- server_meta holds small server-wide values: the server's signing keys,
-- one-off flags, and the like. Read and written with GetMeta and SetMeta.
CREATE TABLE server_meta (
	meta_key TEXT PRIMARY KEY,
	meta_value {{BYTES}} NOT NULL
);
