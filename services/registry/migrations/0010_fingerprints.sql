-- Issuances that carried a project fingerprint (domain/fingerprint.py): the same project
-- and monitoring period are issued once, across programmes.
CREATE TABLE IF NOT EXISTS issuance_fingerprints (
    issuance_id     text     PRIMARY KEY,
    fingerprint_key bytea    NOT NULL,
    standard        smallint NOT NULL,
    period_start    date     NOT NULL,
    period_end      date     NOT NULL
);
CREATE INDEX IF NOT EXISTS issuance_fingerprints_by_key ON issuance_fingerprints (fingerprint_key, period_start);

-- The issuance's fingerprint row, unless an issuance of the same fingerprint and a shared
-- day committed since the decision read them (TN001: decide again, and be refused).
CREATE OR REPLACE FUNCTION registry_fingerprint_recorded(
    p_issuance_id text, p_key bytea, p_standard smallint, p_start date, p_end date
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('fingerprint:' || encode(p_key, 'hex')));
    IF EXISTS (SELECT 1 FROM issuance_fingerprints WHERE fingerprint_key = p_key
               AND period_start <= p_end AND period_end >= p_start) THEN
        RAISE EXCEPTION 'fingerprint % issued for a shared day', encode(p_key, 'hex') USING ERRCODE = 'TN001';
    END IF;
    INSERT INTO issuance_fingerprints (issuance_id, fingerprint_key, standard, period_start, period_end)
    VALUES (p_issuance_id, p_key, p_standard, p_start, p_end);
END
$$;
