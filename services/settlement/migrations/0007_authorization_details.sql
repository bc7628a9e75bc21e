-- An LoA's cooperative approach (AEF table 2) and the entities it authorizes (table 5).
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS cooperative_approach text NOT NULL DEFAULT '';
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS authorized_entities text[] NOT NULL DEFAULT '{}';
CREATE INDEX IF NOT EXISTS authorizations_by_host ON authorizations (host_party, authorization_id);
