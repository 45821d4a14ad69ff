-- One-time keys are given out in the order they were uploaded (client-server API
-- POST /keys/claim, v1.13): upload_seq numbers a device's uploads, every key of one upload
-- sharing its number ("All keys uploaded within a given call to /keys/upload are considered
-- equivalent"). Keys stored before it count as the earliest.
ALTER TABLE one_time_keys ADD COLUMN upload_seq {{BIGINT}} NOT NULL DEFAULT 0;
