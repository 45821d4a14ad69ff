-- Account moderation by the server administrators (client-server API "Account locking",
-- "Account suspension"): both are reversible, unlike deactivation. The access-token lookup
-- (DeviceByToken) reads them with the account, so that enforcing them costs no query.
ALTER TABLE users ADD COLUMN locked BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE users ADD COLUMN suspended BOOLEAN NOT NULL DEFAULT FALSE;
