-- Signed heads of the audit chains (domain/signing.py): a log beside audit_chain, written
-- in the same transaction as the record it signs.
CREATE TABLE IF NOT EXISTS audit_checkpoints (
    jurisdiction text    NOT NULL,
    sequence     bigint  NOT NULL,
    hash         text    NOT NULL,
    signature    bytea   NOT NULL,
    PRIMARY KEY (jurisdiction, sequence)
);
