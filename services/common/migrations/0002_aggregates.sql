-- Aggregates are restored from their latest snapshot plus the tail of their stream.
CREATE TABLE IF NOT EXISTS snapshots (
    stream_id      text        PRIMARY KEY,
    version        integer     NOT NULL,
    schema_version integer     NOT NULL,
    state          bytea       NOT NULL,
    taken_at       timestamptz NOT NULL DEFAULT now()
);

-- Retention: published outbox rows and old tracking ids are deleted by age.
CREATE INDEX IF NOT EXISTS outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
CREATE INDEX IF NOT EXISTS tracking_processed ON tracking (processed_at);

-- One row per stream: lists the aggregates of a kind (replay, state hash).
CREATE INDEX IF NOT EXISTS events_stream_starts ON events (stream_id) WHERE version = 1;
