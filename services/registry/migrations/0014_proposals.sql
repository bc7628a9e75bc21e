-- Operations awaiting, or answered by, the transaction log (domain/screening.py): the API
-- reads a proposal's state here, the scheduler finds those unanswered past their time.
CREATE TABLE IF NOT EXISTS proposals (
    proposal_id      text        PRIMARY KEY,
    account_id       text        NOT NULL,
    transaction_type text        NOT NULL,
    quantity         bigint      NOT NULL,
    state            text        NOT NULL,  -- screening, completed, rejected
    expires_at       timestamptz NOT NULL,
    code             text        NOT NULL DEFAULT '',
    reason           text        NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS proposals_screening ON proposals (expires_at, proposal_id) WHERE state = 'screening';
