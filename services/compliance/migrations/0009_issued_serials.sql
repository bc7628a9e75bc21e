-- Serials compliance approved for issuance, under the issuance that issued them: its own
-- record of what exists, independent of the registry's index, so a namespace's serials
-- are issued once (DOUBLE_ISSUANCE). Disjoint per namespace, checked and written under the
-- namespace's lock, like used_serials.
CREATE TABLE IF NOT EXISTS issued_serials (
    namespace    text   COLLATE "C" NOT NULL,
    serial_start bigint NOT NULL,
    serial_end   bigint NOT NULL,
    proposal_id  text   NOT NULL,
    PRIMARY KEY (namespace, serial_start)
);
CREATE INDEX IF NOT EXISTS issued_serials_by_proposal ON issued_serials (proposal_id);
