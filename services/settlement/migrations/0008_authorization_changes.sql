-- A host party changes (widens) or revokes its authorization: AEF table 2 shows the
-- terms in force, their version (1: as recorded) and whether it was revoked.
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS revoked boolean NOT NULL DEFAULT false;
