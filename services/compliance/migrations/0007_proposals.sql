-- The transaction log of registry operations (domain/screening.py screen_proposal).

-- Serials compliance approved for use (retired, cancelled, expired), under the proposal
-- that used them: its own record, independent of the registry's index. Disjoint per
-- namespace (checked under the namespace's lock before an approval records them).
CREATE TABLE IF NOT EXISTS used_serials (
    namespace    text   COLLATE "C" NOT NULL,
    serial_start bigint NOT NULL,
    serial_end   bigint NOT NULL,
    proposal_id  text   NOT NULL,
    PRIMARY KEY (namespace, serial_start)
);
CREATE INDEX IF NOT EXISTS used_serials_by_proposal ON used_serials (proposal_id);

-- Every answer given, for the API and the state hash.
CREATE TABLE IF NOT EXISTS proposal_decisions (
    proposal_id text  PRIMARY KEY,
    account_id  text  NOT NULL,
    verdict     text  NOT NULL,
    decision    bytea NOT NULL
);

-- Proposals whose account compliance has not seen opened yet: screened when it is, or
-- with the facts as they are once they have waited too long.
CREATE TABLE IF NOT EXISTS deferred_proposals (
    proposal_id text        PRIMARY KEY,
    account_id  text        NOT NULL,
    proposal    bytea       NOT NULL,
    deferred_at timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS deferred_proposals_account ON deferred_proposals (account_id);
CREATE INDEX IF NOT EXISTS deferred_proposals_age ON deferred_proposals (deferred_at);
