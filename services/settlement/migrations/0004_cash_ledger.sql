-- The cash ledger (domain/cash.py): balances per account and currency, and every leg of
-- every posting. `cash_balances` booked a trade's cash after the units moved, with no
-- deposits and no holds, so buyers went negative: it is gone.
DROP TABLE IF EXISTS cash_balances;

CREATE TABLE IF NOT EXISTS cash_accounts (
    account_id text    NOT NULL,
    currency   text    NOT NULL,
    available  numeric NOT NULL DEFAULT 0,
    reserved   numeric NOT NULL DEFAULT 0,  -- for resting buy orders
    held       numeric NOT NULL DEFAULT 0,  -- for trades being settled
    PRIMARY KEY (account_id, currency)
);

-- One row per leg; a posting's legs sum to zero. `seq` orders an account's statement
-- (not hashed: concurrent writers may number legs in another order than replay does).
CREATE TABLE IF NOT EXISTS cash_legs (
    seq        bigserial,
    posting_id text    NOT NULL,
    account_id text    NOT NULL,
    currency   text    NOT NULL,
    bucket     text    NOT NULL,
    amount     numeric NOT NULL,
    trade_id   text    NOT NULL DEFAULT '',
    PRIMARY KEY (posting_id, account_id, currency, bucket)
);
CREATE INDEX IF NOT EXISTS cash_legs_statement ON cash_legs (account_id, currency, seq);

-- Which cash account covers each buy order (its cover itself is in the aggregate).
CREATE TABLE IF NOT EXISTS cash_covers (
    order_id   text PRIMARY KEY,
    account_id text NOT NULL,
    currency   text NOT NULL
);
