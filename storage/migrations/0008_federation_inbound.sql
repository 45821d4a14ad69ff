-- Transactions received from other servers, with the response we gave, so that a repeated
-- transaction ID (a peer retrying after a timeout) is answered the same without processing
-- its PDUs again (server-server API "Transactions").
CREATE TABLE federation_inbound_txns (
    origin       TEXT NOT NULL,
    txn_id       TEXT NOT NULL,
    response     TEXT NOT NULL,
    received_ts  {{BIGINT}} NOT NULL,
    PRIMARY KEY (origin, txn_id)
);
