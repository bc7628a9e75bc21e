-- Settlement's projections, folded from its events (and its fact streams) in the
-- recording transaction and rebuilt by replay. No wall-clock columns: all are hashed.

-- One row per trade: where its delivery versus payment stands.
CREATE TABLE IF NOT EXISTS settlements (
    trade_id          text   PRIMARY KEY,
    instrument_id     text   NOT NULL,
    seller_account_id text   NOT NULL,
    buyer_account_id  text   NOT NULL,
    reservation_id    text   NOT NULL,
    quantity          bigint NOT NULL,
    price             bigint NOT NULL,
    currency          text   NOT NULL,
    phase             text   NOT NULL,
    failure           text   NOT NULL DEFAULT ''
);

-- Corresponding adjustments applied, per trade (the id is unique within its trade).
CREATE TABLE IF NOT EXISTS adjustments (
    trade_id         text    NOT NULL,
    adjustment_id    text    NOT NULL,
    party            text    NOT NULL,
    side             integer NOT NULL,
    vintage          bigint  NOT NULL,
    quantity         bigint  NOT NULL,
    authorization_id text    NOT NULL,
    PRIMARY KEY (trade_id, adjustment_id)
);
-- GET /adjustments?party=..: one party's page in key order.
CREATE INDEX IF NOT EXISTS adjustments_by_party ON adjustments (party, trade_id, adjustment_id);

-- Cash leg balances in minor units (buyers go negative until the cash ledger exists).
CREATE TABLE IF NOT EXISTS cash_balances (
    account_id text   NOT NULL,
    currency   text   NOT NULL,
    balance    bigint NOT NULL,
    PRIMARY KEY (account_id, currency)
);

-- Letters of Authorization observed on registry.events (fact streams).
CREATE TABLE IF NOT EXISTS authorizations (
    authorization_id text    PRIMARY KEY,
    host_party       text    NOT NULL,
    quantity         bigint  NOT NULL,
    use              integer NOT NULL,
    first_transfer   integer NOT NULL,
    vintage_from     bigint  NOT NULL,
    vintage_to       bigint  NOT NULL
);

-- Serials of authorized units that have crossed a border, per namespace: disjoint,
-- maximal runs [start, "end"]. The primary key is the btree on (namespace, start) that
-- answers "which runs overlap this block" in O(log n + k).
CREATE TABLE IF NOT EXISTS first_transferred (
    namespace text   NOT NULL,
    start     bigint NOT NULL,
    "end"     bigint NOT NULL,
    PRIMARY KEY (namespace, start),
    CHECK (start <= "end")
);
