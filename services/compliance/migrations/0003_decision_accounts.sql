-- The accounts a decision concerns (its request's): a regulator of either account's
-- jurisdiction may read the decision (docs/trust.md). Hashed, rebuilt by replay.
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS from_account_id text NOT NULL DEFAULT '';
ALTER TABLE decisions ADD COLUMN IF NOT EXISTS to_account_id text NOT NULL DEFAULT '';
