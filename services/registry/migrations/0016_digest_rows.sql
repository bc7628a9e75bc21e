-- The rows of each party's latest holdings digest (HoldingsDigestIssued, in parts): what
-- an answer that disagrees is compared with, looked up by key rather than kept whole in
-- the reconciliation aggregate. A new digest of the party replaces the old one's rows.
CREATE TABLE IF NOT EXISTS digest_rows (
    digest_id        text     NOT NULL,
    jurisdiction     text     NOT NULL,
    account_id       text     NOT NULL,
    status           text     NOT NULL,
    standard         smallint NOT NULL,
    host_party       text     NOT NULL,
    vintage          integer  NOT NULL,
    authorization_id text     NOT NULL,
    quantity         bigint   NOT NULL,
    PRIMARY KEY (digest_id, account_id, status, standard, host_party, vintage, authorization_id)
);
CREATE INDEX IF NOT EXISTS digest_rows_by_party ON digest_rows (jurisdiction, digest_id);
