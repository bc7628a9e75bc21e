-- Projections folded from compliance's own events (fact-<event id> streams of observed
-- registry events, decision-<request id> streams); hashed, rebuilt by replay.

-- AccountOpened: the jurisdiction each account belongs to.
CREATE TABLE IF NOT EXISTS accounts (
    account_id   text PRIMARY KEY,
    jurisdiction text NOT NULL
);

-- AuthorizationRecorded: the host party's LoA (tonne.v1.RecordAuthorization, deterministic bytes).
CREATE TABLE IF NOT EXISTS authorizations (
    authorization_id text   PRIMARY KEY,
    host_party       text   NOT NULL,
    quantity         bigint NOT NULL,
    loa              bytea  NOT NULL
);

-- UnitsReserved: who reserved how much, and which blocks (tonne.v1.ReservationBlocks).
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id text   PRIMARY KEY,
    account_id     text   NOT NULL,
    quantity       bigint NOT NULL,
    blocks         bytea  NOT NULL
);

-- UnitsTransferred across a border: authorized quantity first-transferred, per LoA.
CREATE TABLE IF NOT EXISTS authorization_used (
    authorization_id text   PRIMARY KEY,
    quantity         bigint NOT NULL
);

-- ScreeningDecision: one per request id (tonne.v1.ScreeningDecision, deterministic bytes).
CREATE TABLE IF NOT EXISTS decisions (
    request_id text  PRIMARY KEY,
    trade_id   text  NOT NULL,
    verdict    text  NOT NULL,
    decision   bytea NOT NULL
);
