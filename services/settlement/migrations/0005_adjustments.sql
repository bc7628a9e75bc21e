-- Corresponding adjustments at the event each LoA names (domain/adjustments.py): what
-- happened, and the party's ledger per vintage year and side, summed as they are recorded.
ALTER TABLE adjustments ADD COLUMN IF NOT EXISTS event integer NOT NULL DEFAULT 0;  -- tonne.v1.FirstTransfer

CREATE TABLE IF NOT EXISTS adjustment_ledger (
    party    text    NOT NULL,
    vintage  bigint  NOT NULL,
    side     integer NOT NULL,  -- tonne.v1.AdjustmentSide
    quantity numeric NOT NULL,
    PRIMARY KEY (party, vintage, side)
);
