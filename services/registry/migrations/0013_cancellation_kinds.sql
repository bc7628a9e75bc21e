-- Why units were cancelled (registry.proto CancellationKind: 1 voluntary, 2 mandatory,
-- 3 OMGE); 0 for a retirement. Cancellations recorded before kinds existed were voluntary.
ALTER TABLE retirements ADD COLUMN IF NOT EXISTS cancellation smallint NOT NULL DEFAULT 0;
UPDATE retirements SET cancellation = 1 WHERE cancelled AND cancellation = 0;
