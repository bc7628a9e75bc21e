-- An authorization's cooperative approach and the entities it authorizes, for the
-- registry's API (GET /authorizations): the terms in force, as the latest change set them.
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS cooperative_approach text NOT NULL DEFAULT '';
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS authorized_entities text[] NOT NULL DEFAULT '{}';
