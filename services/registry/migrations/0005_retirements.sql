-- Units retired for a beneficiary, or cancelled: each retirement once (its id is also a
-- reservation id: the reservation that picked its serials, spent whole by it).
CREATE TABLE IF NOT EXISTS retirements (
    retirement_id text    PRIMARY KEY,
    account_id    text    NOT NULL,
    quantity      bigint  NOT NULL,
    cancelled     boolean NOT NULL,
    beneficiary   text    NOT NULL,
    purpose       text    NOT NULL,
    requested_by  text    NOT NULL
);
CREATE INDEX IF NOT EXISTS retirements_by_account ON retirements (account_id, retirement_id);
