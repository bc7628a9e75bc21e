-- Orders of every type (issue 9): intake keeps the order as the broker placed it, so the
-- one sequenced after its cover carries every field, and so a repeated client order id
-- is compared on the whole request.
ALTER TABLE intake_orders ADD COLUMN IF NOT EXISTS request bytea NOT NULL;  -- SubmitOrder, deterministic bytes

-- Taken off without trading (self-trade decrement, a replace to a smaller size), and a
-- GTD order's expiry in nanoseconds since the epoch (an order's value, not a clock).
ALTER TABLE orders ADD COLUMN IF NOT EXISTS reduced bigint NOT NULL DEFAULT 0;
ALTER TABLE orders ADD COLUMN IF NOT EXISTS expire_ns bigint;
-- The next GTD order to expire, per instrument (the expiry timer's question).
CREATE INDEX IF NOT EXISTS orders_expiring ON orders (instrument_id, expire_ns)
    WHERE status = 'resting' AND expire_ns IS NOT NULL;
