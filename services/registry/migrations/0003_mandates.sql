-- Which broker may act for which account: granted and not revoked (MandateGranted,
-- MandateRevoked on the account's stream). Mandate ids are unique across accounts.
CREATE TABLE IF NOT EXISTS mandates (
    mandate_id   text PRIMARY KEY,
    account_id   text NOT NULL,
    broker_id    text NOT NULL,
    jurisdiction text NOT NULL
);
-- A broker's authority over an account (the API's reads).
CREATE INDEX IF NOT EXISTS mandates_by_account ON mandates (account_id, broker_id);
