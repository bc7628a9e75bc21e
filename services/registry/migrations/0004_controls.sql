-- The Union Registry's controls (services/registry/domain/controls.py), as projections.

ALTER TABLE accounts ADD COLUMN IF NOT EXISTS frozen boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS transfer_limit bigint NOT NULL DEFAULT 0;

-- Projects a freeze has named; their units neither reserve nor transfer while frozen.
CREATE TABLE IF NOT EXISTS projects (
    project_id text    PRIMARY KEY,
    host_party text    NOT NULL,
    frozen     boolean NOT NULL,
    reason     text    NOT NULL
);
CREATE INDEX IF NOT EXISTS frozen_projects ON projects (project_id) WHERE frozen;

-- Each account's trusted list: proposed (effective_at NULL) or approved.
CREATE TABLE IF NOT EXISTS trusted_accounts (
    account_id         text NOT NULL,
    trusted_account_id text NOT NULL,
    proposed_by        text NOT NULL,
    approved_by        text NOT NULL DEFAULT '',
    effective_at       timestamptz,
    PRIMARY KEY (account_id, trusted_account_id)
);

-- Transfers to accounts outside the trusted list, waiting for their time (the row goes
-- when the transfer completes or is cancelled).
CREATE TABLE IF NOT EXISTS scheduled_transfers (
    transfer_id   text        PRIMARY KEY,
    account_id    text        NOT NULL,
    to_account_id text        NOT NULL,
    quantity      bigint      NOT NULL,
    execute_at    timestamptz NOT NULL,
    requested_by  text        NOT NULL
);
CREATE INDEX IF NOT EXISTS scheduled_transfers_due ON scheduled_transfers (execute_at);
CREATE INDEX IF NOT EXISTS scheduled_transfers_by_account ON scheduled_transfers (account_id, transfer_id);
