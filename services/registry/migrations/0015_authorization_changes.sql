-- A host party changes (widens) or revokes its authorization (ChangeAuthorization,
-- RevokeAuthorization): the row holds the terms in force, their version and whether the
-- authorization is revoked (nothing more is issued under it).
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS version integer NOT NULL DEFAULT 1;
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS revoked boolean NOT NULL DEFAULT false;
