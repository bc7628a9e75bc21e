-- Article 6.2 reporting (domain/aef.py): every AEF action, per reporting party and year.
CREATE TABLE IF NOT EXISTS itmo_actions (
    action_id        text    PRIMARY KEY,
    party            text    NOT NULL,
    year             integer NOT NULL,
    action           bytea   NOT NULL  -- tonne.v1.ItmoAction, deterministic bytes
);
CREATE INDEX IF NOT EXISTS itmo_actions_by_party ON itmo_actions (party, year, action_id);
