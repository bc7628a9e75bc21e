-- Carbon-inclusion manifests (domain/manifest.py, services/registry/manifests.py): the
-- records a PHCER block aggregates and their Merkle tree, written once per manifest id
-- and never changed, so a participant's inclusion proof is served from here.

CREATE TABLE IF NOT EXISTS manifests (
    manifest_id  text        PRIMARY KEY,
    jurisdiction text        NOT NULL,  -- ISO 3166 alpha-2: whose registry operator uploaded it
    methodology  text        NOT NULL,
    root         bytea       NOT NULL,  -- RFC 6962 Merkle tree head, 32 bytes
    size         bigint      NOT NULL,  -- records (leaves)
    total_mg     numeric     NOT NULL,  -- sum of activity x factor: beyond int64 in general
    tonnes       bigint      NOT NULL,  -- total_mg rounded down to whole tonnes
    uploaded_by  text        NOT NULL,
    uploaded_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (size >= 1 AND octet_length(root) = 32)
);

-- One row per record; `position` is its leaf index (records sorted by id, "C" order as
-- Python sorts them). A proof looks the record up by (manifest, record id).
CREATE TABLE IF NOT EXISTS manifest_records (
    manifest_id    text   NOT NULL,
    record_id      text   COLLATE "C" NOT NULL,
    position       bigint NOT NULL,
    participant_id text   NOT NULL,
    activity       bigint NOT NULL,
    factor_mg      bigint NOT NULL,
    PRIMARY KEY (manifest_id, record_id)
);

-- Every level of the tree (0: the leaves), in pages of up to 4096 concatenated 32-byte
-- hashes: hash i of a level is at page i / 4096, bytes 32 * (i % 4096) + 1 .. + 32. A
-- proof reads one hash per level with substring(); uncompressed out-of-line storage
-- (EXTERNAL) lets PostgreSQL fetch only the TOAST chunk holding it, not the whole page.
CREATE TABLE IF NOT EXISTS manifest_levels (
    manifest_id text    NOT NULL,
    level       integer NOT NULL,
    page        integer NOT NULL,
    hashes      bytea   NOT NULL,
    PRIMARY KEY (manifest_id, level, page)
);
ALTER TABLE manifest_levels ALTER COLUMN hashes SET STORAGE EXTERNAL;

-- Which issuance issued a manifest's tonnes (a projection of UnitsIssued.manifest_id):
-- a manifest is issued once.
CREATE TABLE IF NOT EXISTS manifest_issuances (
    manifest_id text PRIMARY KEY,
    issuance_id text NOT NULL
);

-- The issuance's row, unless another issuance of the manifest committed since the
-- decision read it (TN001: decide again, and be refused with MANIFEST_ISSUED).
CREATE OR REPLACE FUNCTION registry_manifest_issued(p_manifest_id text, p_issuance_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO manifest_issuances (manifest_id, issuance_id) VALUES (p_manifest_id, p_issuance_id)
    ON CONFLICT (manifest_id) DO NOTHING;
    IF NOT FOUND AND NOT EXISTS (SELECT 1 FROM manifest_issuances
                                 WHERE manifest_id = p_manifest_id AND issuance_id = p_issuance_id) THEN
        RAISE EXCEPTION 'manifest % issued by another issuance', p_manifest_id USING ERRCODE = 'TN001';
    END IF;
END
$$;
