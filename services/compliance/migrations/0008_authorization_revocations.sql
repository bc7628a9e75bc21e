-- A host party's revocation (registry AuthorizationRevoked): nothing more is
-- first-transferred under the authorization; outcomes already first-transferred move and
-- are used as before.
ALTER TABLE authorizations ADD COLUMN IF NOT EXISTS revoked boolean NOT NULL DEFAULT false;
