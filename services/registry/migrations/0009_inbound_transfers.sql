-- Units transferred in from a registry tonne does not keep (domain/external.py `receive`):
-- each transfer once per sending registry, and its blocks put like an issuance's.
CREATE TABLE IF NOT EXISTS inbound_transfers (
    from_registry text   NOT NULL,
    transfer_id   text   NOT NULL,
    from_account  text   NOT NULL,
    to_account_id text   NOT NULL,
    quantity      bigint NOT NULL,
    PRIMARY KEY (from_registry, transfer_id)
);
CREATE INDEX IF NOT EXISTS inbound_transfers_by_account ON inbound_transfers (to_account_id, from_registry, transfer_id);

-- A block new to the index, held by p_account_id (re-checked for overlap under the
-- namespace's lock), merged with equal neighbours; the holder's holdings.
CREATE OR REPLACE FUNCTION registry_units_put(
    p_account_id text, p_namespace text, p_start bigint, p_end bigint,
    p_standard smallint, p_host_party text, p_vintage integer, p_authorization_id text,
    p_attributes bytea, p_attributes_key bytea
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext(p_namespace));
    IF EXISTS (SELECT 1 FROM (SELECT b.serial_end FROM blocks b WHERE b.namespace = p_namespace
                              AND b.serial_start <= p_end ORDER BY b.serial_start DESC LIMIT 1) last
               WHERE last.serial_end >= p_start) THEN
        RAISE EXCEPTION 'block %:%-% overlaps the index', p_namespace, p_start, p_end USING ERRCODE = 'TN001';
    END IF;
    PERFORM registry_put_merged(p_namespace, p_start, p_end, p_account_id, 'held', '',
                                p_standard, p_host_party, p_vintage, p_authorization_id, p_attributes, p_attributes_key);
    INSERT INTO holdings AS h (account_id, status, standard, host_party, vintage, authorization_id, quantity)
    VALUES (p_account_id, 'held', p_standard, p_host_party, p_vintage, p_authorization_id, p_end - p_start + 1)
    ON CONFLICT (account_id, status, standard, host_party, vintage, authorization_id)
    DO UPDATE SET quantity = h.quantity + EXCLUDED.quantity;
END
$$;
