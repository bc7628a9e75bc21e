-- The kernel's tables, created in every service's schema.

-- The service's own events: the truth its state is folded from.
CREATE TABLE IF NOT EXISTS events (
    position    bigserial   NOT NULL UNIQUE,
    stream_id   text        NOT NULL,
    version     integer     NOT NULL,
    event_id    uuid        NOT NULL UNIQUE,
    type        text        NOT NULL,
    envelope    bytea       NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (stream_id, version)
);

-- Records this service has consumed, written in the same transaction as their
-- effect: a redelivered or republished record is recognised and skipped.
CREATE TABLE IF NOT EXISTS tracking (
    consumer     text        NOT NULL,
    event_id     text        NOT NULL,
    topic        text        NOT NULL,
    partition    integer     NOT NULL,
    "offset"     bigint      NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (consumer, event_id)
);

-- Outgoing records, written with the effect and relayed to Kafka afterwards.
CREATE TABLE IF NOT EXISTS outbox (
    id           bigserial   PRIMARY KEY,
    topic        text        NOT NULL,
    key          bytea       NOT NULL,
    value        bytea       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    published_at timestamptz
);
CREATE INDEX IF NOT EXISTS outbox_unpublished ON outbox (id) WHERE published_at IS NULL;
