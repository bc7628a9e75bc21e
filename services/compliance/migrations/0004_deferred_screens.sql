-- Screen requests whose reservation compliance has not seen yet: screened when the
-- registry's UnitsReserved arrives, or refused once they have waited too long.
CREATE TABLE IF NOT EXISTS deferred_screens (
    request_id     text        PRIMARY KEY,
    reservation_id text        NOT NULL,
    request        bytea       NOT NULL,
    deferred_at    timestamptz NOT NULL  -- the request envelope's occurred_at
);
CREATE INDEX IF NOT EXISTS deferred_screens_reservation ON deferred_screens (reservation_id);
CREATE INDEX IF NOT EXISTS deferred_screens_age ON deferred_screens (deferred_at);
