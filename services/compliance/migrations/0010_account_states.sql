-- Whether an account is frozen or closed, as the registry's AccountFrozen, AccountUnfrozen
-- and AccountClosed say: the accounts rules check it independently of the registry.
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS frozen boolean NOT NULL DEFAULT false;
ALTER TABLE accounts ADD COLUMN IF NOT EXISTS closed boolean NOT NULL DEFAULT false;
