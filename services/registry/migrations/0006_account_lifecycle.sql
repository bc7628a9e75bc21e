-- Closed accounts, unique transfer ids, and the claim a retirement makes.

ALTER TABLE accounts ADD COLUMN IF NOT EXISTS closed boolean NOT NULL DEFAULT false;

-- Every transfer the registry records, once per id (the venue's deliveries and holders'
-- transfers alike): a second transfer under a used id is refused.
CREATE TABLE IF NOT EXISTS transfers (
    transfer_id     text   PRIMARY KEY,
    reservation_id  text   NOT NULL,
    from_account_id text   NOT NULL,
    to_account_id   text   NOT NULL,
    quantity        bigint NOT NULL
);
CREATE INDEX IF NOT EXISTS transfers_by_account ON transfers (from_account_id, transfer_id);

-- AccountClosed: under the account's exclusive lock, and only if it still holds nothing
-- (a transfer in may have committed since the decision read its holdings: TN001). A
-- transfer into the account holds the same lock shared (registry_units_moved, 0007).
CREATE OR REPLACE FUNCTION registry_account_closed(p_account_id text) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('account:' || p_account_id));
    IF EXISTS (SELECT 1 FROM holdings WHERE account_id = p_account_id AND status IN ('held', 'reserved')
               AND quantity <> 0) THEN
        RAISE EXCEPTION 'account % holds units', p_account_id USING ERRCODE = 'TN001';
    END IF;
    UPDATE accounts SET closed = true WHERE account_id = p_account_id;
END
$$;

-- What a retirement is used toward, and the year it claims for (0 for a cancellation).
ALTER TABLE retirements ADD COLUMN IF NOT EXISTS use smallint NOT NULL DEFAULT 0;
ALTER TABLE retirements ADD COLUMN IF NOT EXISTS claim_year integer NOT NULL DEFAULT 0;
