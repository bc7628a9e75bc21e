-- An authorization's usage is the aggregate `authorization-<id>` (domain/authorizations.py);
-- these are its projections. `authorization_used` summed every authorized transfer abroad,
-- resales included: it is gone.
DROP TABLE IF EXISTS authorization_used;

-- Units first-transferred abroad and units claimed by approved deliveries, per LoA.
CREATE TABLE IF NOT EXISTS authorization_usage (
    authorization_id text    PRIMARY KEY,
    used             numeric NOT NULL DEFAULT 0,
    claimed          numeric NOT NULL DEFAULT 0
);

-- The open claims: which LoAs an approved delivery (its request id) holds units of.
CREATE TABLE IF NOT EXISTS authorization_claims (
    request_id       text   NOT NULL,
    authorization_id text   NOT NULL,
    quantity         bigint NOT NULL,
    PRIMARY KEY (request_id, authorization_id)
);
