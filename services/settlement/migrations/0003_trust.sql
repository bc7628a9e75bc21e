-- Who may read what (docs/trust.md). Hashed projections, rebuilt by replay.

-- The brokers of each side of a trade (SettlementStarted).
ALTER TABLE settlements ADD COLUMN IF NOT EXISTS buyer_broker_id text NOT NULL DEFAULT '';
ALTER TABLE settlements ADD COLUMN IF NOT EXISTS seller_broker_id text NOT NULL DEFAULT '';

-- AccountOpened facts: a regulator reads the settlements and cash of its jurisdiction's accounts.
CREATE TABLE IF NOT EXISTS accounts (
    account_id   text PRIMARY KEY,
    jurisdiction text NOT NULL
);

-- MandateGranted / MandateRevoked facts: a broker reads the cash of the accounts it acts for.
CREATE TABLE IF NOT EXISTS mandates (
    mandate_id   text PRIMARY KEY,
    account_id   text NOT NULL,
    broker_id    text NOT NULL,
    jurisdiction text NOT NULL
);
CREATE INDEX IF NOT EXISTS mandates_by_broker ON mandates (broker_id, account_id);
