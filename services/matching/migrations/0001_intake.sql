-- Orders as intake saw them: before the engine, a sell order waits for its reservation.
CREATE TABLE IF NOT EXISTS intake_orders (
    order_id        text PRIMARY KEY,
    broker_id       text        NOT NULL,
    client_order_id text        NOT NULL,
    instrument_id   text        NOT NULL,
    side            smallint    NOT NULL,
    price           bigint      NOT NULL,
    quantity        bigint      NOT NULL,
    account_id      text        NOT NULL,
    status          text        NOT NULL,  -- reserving | submitted | rejected
    reject_code     text,
    reject_reason   text,
    correlation_id  text        NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE (broker_id, client_order_id)
);
