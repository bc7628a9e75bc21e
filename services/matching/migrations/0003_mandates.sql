-- Mandates observed on registry.events (fact streams fact-<event id>): a broker may act
-- for an account only while it holds one. Hashed, rebuilt by replay.
CREATE TABLE IF NOT EXISTS mandates (
    mandate_id   text PRIMARY KEY,
    account_id   text NOT NULL,
    broker_id    text NOT NULL,
    jurisdiction text NOT NULL
);
-- Intake's check (broker, account) and a broker's page of mandates (GET /mandates).
CREATE INDEX IF NOT EXISTS mandates_by_broker ON mandates (broker_id, account_id, mandate_id);

-- A revocation cancels the broker's open orders for the account.
CREATE INDEX IF NOT EXISTS intake_orders_by_account ON intake_orders (broker_id, account_id);
