-- Serials whose host party's corresponding adjustment settlement applied (its
-- CorrespondingAdjustmentApplied, first-transferring side, consumed from
-- settlement.events): a block's corresponding-adjustment status is read from here.
-- Disjoint per namespace (an ITMO is adjusted once per side).
CREATE TABLE IF NOT EXISTS adjusted_serials (
    namespace     text   COLLATE "C" NOT NULL,
    serial_start  bigint NOT NULL,
    serial_end    bigint NOT NULL,
    adjustment_id text   NOT NULL,
    PRIMARY KEY (namespace, serial_start)
);
