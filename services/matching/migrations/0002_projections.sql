-- Projections of the engine journal (the book-* streams), written in the recording
-- transaction and rebuilt by replay. Hashed: no wall-clock columns.

-- Every order the engine took, accepted or refused; its primary key is how a reused
-- order id is recognised (there is no in-memory set of ids).
CREATE TABLE IF NOT EXISTS orders (
    order_id        text    PRIMARY KEY,
    instrument_id   text    NOT NULL,
    broker_id       text    NOT NULL,
    account_id      text    NOT NULL,
    side            integer NOT NULL,  -- tonne.v1.Side; integer: a refused order may carry any enum value
    price           bigint  NOT NULL,
    quantity        bigint  NOT NULL,
    filled          bigint  NOT NULL,
    status          text    NOT NULL,  -- resting | filled | cancelled | rejected
    client_order_id text    NOT NULL,
    engine_sequence bigint  NOT NULL,  -- the instrument's input that accepted or refused it
    reject_code     text,
    reject_reason   text
);

-- Every trade; (instrument_id, version) is the trade's place in its book's stream: the
-- paging cursor order.
CREATE TABLE IF NOT EXISTS trades (
    instrument_id     text    NOT NULL,
    version           integer NOT NULL,  -- the event's version in stream book-<instrument_id>
    trade_id          text    NOT NULL UNIQUE,
    engine_sequence   bigint  NOT NULL,
    price             bigint  NOT NULL,
    quantity          bigint  NOT NULL,
    currency          text    NOT NULL,
    aggressor         integer NOT NULL,
    buy_order_id      text    NOT NULL,
    sell_order_id     text    NOT NULL,
    buyer_account_id  text    NOT NULL,
    seller_account_id text    NOT NULL,
    buyer_broker_id   text    NOT NULL,
    seller_broker_id  text    NOT NULL,
    PRIMARY KEY (instrument_id, version)
);
CREATE INDEX IF NOT EXISTS trades_buy_order ON trades (buy_order_id);
CREATE INDEX IF NOT EXISTS trades_sell_order ON trades (sell_order_id);

-- A broker's orders, oldest first, a page at a time (GET /orders).
CREATE INDEX IF NOT EXISTS intake_orders_by_broker ON intake_orders (broker_id, created_at, order_id);
