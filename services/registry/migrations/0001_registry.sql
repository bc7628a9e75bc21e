-- The registry's projections, folded from its events by services/registry/projector.py.
-- Amounts are bigint (every command is checked to int64); sums across namespaces are numeric.

CREATE TABLE IF NOT EXISTS accounts (
    account_id   text     PRIMARY KEY,
    holder       text     NOT NULL,
    jurisdiction text     NOT NULL,
    type         smallint NOT NULL
);

CREATE TABLE IF NOT EXISTS authorizations (
    authorization_id text     PRIMARY KEY,
    host_party       text     NOT NULL,
    quantity         bigint   NOT NULL,
    use              smallint NOT NULL,
    first_transfer   smallint NOT NULL,
    vintage_from     integer  NOT NULL,
    vintage_to       integer  NOT NULL
);

-- Issuance ids are used once.
CREATE TABLE IF NOT EXISTS issuances (
    issuance_id  text   PRIMARY KEY,
    account_id   text   NOT NULL,
    namespace    text   NOT NULL,
    serial_start bigint NOT NULL,
    serial_end   bigint NOT NULL
);

-- Reservation ids are used once; the row stays when the reservation is spent.
CREATE TABLE IF NOT EXISTS reservations (
    reservation_id text   PRIMARY KEY,
    account_id     text   NOT NULL,
    quantity       bigint NOT NULL,
    released       bigint NOT NULL DEFAULT 0,
    transferred    bigint NOT NULL DEFAULT 0
);

-- The serial-block index (docs/decisions/0007-registry-index.md): disjoint blocks per
-- namespace, adjacent blocks with equal holding and attributes merged. No-overlap is
-- enforced by the predecessor check under a per-namespace advisory lock.
CREATE TABLE IF NOT EXISTS blocks (
    -- "C": byte order, the order the memory index (and Python) sorts identifiers in.
    namespace        text     COLLATE "C" NOT NULL,
    serial_start     bigint   NOT NULL,
    serial_end       bigint   NOT NULL,
    account_id       text     COLLATE "C" NOT NULL,
    status           text     NOT NULL,
    reservation_id   text     COLLATE "C" NOT NULL DEFAULT '',
    -- The selector's attributes, for the reservation query.
    standard         smallint NOT NULL,
    host_party       text     NOT NULL,
    vintage          integer  NOT NULL,
    authorization_id text     NOT NULL,
    -- UnitAttributes, deterministic protobuf bytes, and the key blocks merge on.
    attributes       bytea    NOT NULL,
    attributes_key   bytea    NOT NULL,
    PRIMARY KEY (namespace, serial_start),
    CHECK (serial_start >= 1 AND serial_start <= serial_end)
);
-- Reservation covers an account's held blocks, the API pages an account's blocks.
CREATE INDEX IF NOT EXISTS blocks_by_account ON blocks (account_id, status, namespace, serial_start);
CREATE INDEX IF NOT EXISTS blocks_by_reservation ON blocks (reservation_id) WHERE reservation_id <> '';

-- Units per account, status and selector attributes: totals and availability in
-- O(attribute combinations), not O(blocks). A row that reaches zero stays.
CREATE TABLE IF NOT EXISTS holdings (
    account_id       text     NOT NULL,
    status           text     NOT NULL,
    standard         smallint NOT NULL,
    host_party       text     NOT NULL,
    vintage          integer  NOT NULL,
    authorization_id text     NOT NULL,
    quantity         numeric  NOT NULL,
    PRIMARY KEY (account_id, status, standard, host_party, vintage, authorization_id)
);
