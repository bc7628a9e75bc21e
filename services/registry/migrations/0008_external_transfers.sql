-- External transfers (domain/external.py): each proposal and how it ended. The scheduler
-- finds the proposals due to expire here.
CREATE TABLE IF NOT EXISTS external_transfers (
    transfer_id  text        PRIMARY KEY,
    account_id   text        NOT NULL,
    to_registry  text        NOT NULL,
    to_account   text        NOT NULL,
    quantity     bigint      NOT NULL,
    expires_at   timestamptz NOT NULL,
    state        text        NOT NULL,  -- proposed, completed, returned
    code         text        NOT NULL DEFAULT '',
    reason       text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS external_transfers_due ON external_transfers (expires_at, transfer_id)
    WHERE state = 'proposed';
CREATE INDEX IF NOT EXISTS external_transfers_by_account ON external_transfers (account_id, transfer_id);
