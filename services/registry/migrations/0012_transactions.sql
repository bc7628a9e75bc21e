-- The registry's completed transactions, one row per account each touches
-- (domain/transactions.py): what GET /accounts/{id}/transactions pages through, newest last.
CREATE TABLE IF NOT EXISTS transactions (
    position         bigserial   PRIMARY KEY,
    transaction_id   text        NOT NULL,
    transaction_type text        NOT NULL,  -- primary-supplementary, "10-00"
    account_id       text        NOT NULL,
    direction        text        NOT NULL,  -- in, out
    quantity         bigint      NOT NULL,
    counterparty     text        NOT NULL,
    blocks           text        NOT NULL,
    recorded_at      timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS transactions_by_account ON transactions (account_id, position);

-- An event's entries, in one call: made inside the statement that appends the event when
-- that is the event's whole projection (a venue delivery stays one round trip).
CREATE OR REPLACE FUNCTION registry_transactions_logged(
    p_ids text[], p_types text[], p_accounts text[], p_directions text[], p_quantities bigint[],
    p_counterparties text[], p_blocks text[], p_at timestamptz
) RETURNS void LANGUAGE sql AS $$
    INSERT INTO transactions (transaction_id, transaction_type, account_id, direction, quantity, counterparty,
                              blocks, recorded_at)
    SELECT t.i, t.k, t.a, t.d, t.q, t.c, t.b, p_at FROM unnest(p_ids, p_types, p_accounts, p_directions, p_quantities, p_counterparties, p_blocks)
        WITH ORDINALITY AS t(i, k, a, d, q, c, b, n) ORDER BY t.n;
$$;
