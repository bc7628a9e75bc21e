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

-- UnitsTransferred: the transfer's row, then its serials move (registry_units_moved).
-- The target must be open: a transfer holds the target's lock shared and reads `closed`
-- after taking it, a closing holds it exclusive (registry_account_closed), so a transfer
-- into an account never commits beside its closing unseen. A closed target is the
-- index's conflict (TN001): the decision is taken again, and refused.
CREATE OR REPLACE FUNCTION registry_units_transferred(
    p_transfer_id text, p_reservation_id text, p_account_id text, p_quantity bigint,
    p_source_account text, p_source_status text, p_source_reservation text,
    p_target_account text, p_target_status text, p_target_reservation text,
    p_namespaces text[], p_starts bigint[], p_ends bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock_shared(hashtext('account:' || p_target_account));
    IF EXISTS (SELECT 1 FROM accounts WHERE account_id = p_target_account AND closed) THEN
        RAISE EXCEPTION 'account % is closed', p_target_account USING ERRCODE = 'TN001';
    END IF;
    INSERT INTO transfers (transfer_id, reservation_id, from_account_id, to_account_id, quantity)
    VALUES (p_transfer_id, p_reservation_id, p_source_account, p_target_account, p_quantity);
    PERFORM registry_units_moved('transferred', p_reservation_id, p_account_id, p_quantity,
                                 p_source_account, p_source_status, p_source_reservation,
                                 p_target_account, p_target_status, p_target_reservation,
                                 p_namespaces, p_starts, p_ends);
END
$$;

-- AccountClosed: under the account's exclusive lock, and only if it still holds nothing
-- (a transfer in may have committed since the decision read its holdings: TN001).
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
