-- Per-jurisdiction hash chains; compliance's own log of everything it has seen.
CREATE TABLE IF NOT EXISTS audit_chain (
    jurisdiction  text        NOT NULL,
    sequence      bigint      NOT NULL,
    previous_hash text        NOT NULL,
    hash          text        NOT NULL,
    source_topic  text        NOT NULL,
    event_id      text        NOT NULL,
    event_type    text        NOT NULL,
    envelope      bytea       NOT NULL,
    correlation_id text       NOT NULL,
    recorded_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (jurisdiction, sequence),
    UNIQUE (jurisdiction, event_id)
);
-- A flow's later steps reach every regulator its earlier steps reached.
CREATE INDEX IF NOT EXISTS audit_chain_correlation ON audit_chain (correlation_id);
