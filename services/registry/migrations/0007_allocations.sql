-- registry_units_moved takes two more cases, in its one call per event: a transfer
-- between accounts (`p_transfer_id`: the transfer's row, and the target must be open) and
-- a move that touches no reservation (kind 'unreserved': an issuance's allocation, exported
-- units coming back). The pieces' move is 0002's, unchanged.

DROP FUNCTION IF EXISTS registry_units_moved(
    text, text, text, bigint, text, text, text, text, text, text, text[], bigint[], bigint[]
);

CREATE FUNCTION registry_units_moved(
    p_kind text, p_reservation_id text, p_transfer_id text, p_account_id text, p_quantity bigint,
    p_source_account text, p_source_status text, p_source_reservation text,
    p_target_account text, p_target_status text, p_target_reservation text,
    p_namespaces text[], p_starts bigint[], p_ends bigint[]
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    c record;
    i integer;
    ns text;
    s bigint;
    e bigint;
    d_account text[] := '{}';
    d_status text[] := '{}';
    d_standard smallint[] := '{}';
    d_host text[] := '{}';
    d_vintage integer[] := '{}';
    d_authorization text[] := '{}';
    d_quantity numeric[] := '{}';
BEGIN
    CASE p_kind
        WHEN 'reserved' THEN
            INSERT INTO reservations (reservation_id, account_id, quantity)
            VALUES (p_reservation_id, p_account_id, p_quantity);
        WHEN 'released' THEN
            UPDATE reservations SET released = released + p_quantity WHERE reservation_id = p_reservation_id;
        WHEN 'transferred' THEN
            UPDATE reservations SET transferred = transferred + p_quantity WHERE reservation_id = p_reservation_id;
            IF p_transfer_id <> '' THEN
                -- A transfer between accounts: its row (ids are unique), and the target must be
                -- open. The target's lock is taken shared and `closed` read after it; a closing
                -- takes it exclusive (registry_account_closed), so the two never both commit.
                PERFORM pg_advisory_xact_lock_shared(hashtext('account:' || p_target_account));
                IF EXISTS (SELECT 1 FROM accounts WHERE account_id = p_target_account AND closed) THEN
                    RAISE EXCEPTION 'account % is closed', p_target_account USING ERRCODE = 'TN001';
                END IF;
                INSERT INTO transfers (transfer_id, reservation_id, from_account_id, to_account_id, quantity)
                VALUES (p_transfer_id, p_reservation_id, p_source_account, p_target_account, p_quantity);
            END IF;
        WHEN 'unreserved' THEN
            NULL;  -- UnitsAllocated, returning exported units: no reservation moves
    END CASE;
    -- One lock order everywhere (byte order of the names): no deadlock between writers.
    PERFORM pg_advisory_xact_lock(hashtext(n))
    FROM (SELECT DISTINCT n COLLATE "C" AS n FROM unnest(p_namespaces) AS n ORDER BY 1) locked;
    FOR i IN 1 .. coalesce(array_length(p_namespaces, 1), 0) LOOP
        ns := p_namespaces[i];
        s := p_starts[i];
        e := p_ends[i];
        SELECT b.* INTO c FROM blocks b WHERE b.namespace = ns AND b.serial_start <= s
        ORDER BY b.serial_start DESC LIMIT 1;
        IF NOT FOUND OR c.serial_end < e OR c.account_id <> p_source_account OR c.status <> p_source_status
           OR c.reservation_id <> p_source_reservation THEN
            RAISE EXCEPTION '%:%-% is not held as (%, %, %)', ns, s, e, p_source_account, p_source_status,
                p_source_reservation USING ERRCODE = 'TN001';
        END IF;
        -- Split: the container goes, its remainders stay as they were; the piece is written
        -- merged with an equal neighbour (a remainder only if source = target).
        DELETE FROM blocks WHERE namespace = ns AND serial_start = c.serial_start;
        IF c.serial_start < s THEN
            INSERT INTO blocks (namespace, serial_start, serial_end, account_id, status, reservation_id,
                                standard, host_party, vintage, authorization_id, attributes, attributes_key)
            VALUES (ns, c.serial_start, s - 1, c.account_id, c.status, c.reservation_id,
                    c.standard, c.host_party, c.vintage, c.authorization_id, c.attributes, c.attributes_key);
        END IF;
        IF e < c.serial_end THEN
            INSERT INTO blocks (namespace, serial_start, serial_end, account_id, status, reservation_id,
                                standard, host_party, vintage, authorization_id, attributes, attributes_key)
            VALUES (ns, e + 1, c.serial_end, c.account_id, c.status, c.reservation_id,
                    c.standard, c.host_party, c.vintage, c.authorization_id, c.attributes, c.attributes_key);
        END IF;
        PERFORM registry_put_merged(ns, s, e, p_target_account, p_target_status, p_target_reservation,
                                    c.standard, c.host_party, c.vintage, c.authorization_id, c.attributes,
                                    c.attributes_key);
        d_account := d_account || ARRAY[p_source_account, p_target_account];
        d_status := d_status || ARRAY[p_source_status, p_target_status];
        d_standard := d_standard || ARRAY[c.standard, c.standard];
        d_host := d_host || ARRAY[c.host_party, c.host_party];
        d_vintage := d_vintage || ARRAY[c.vintage, c.vintage];
        d_authorization := d_authorization || ARRAY[c.authorization_id, c.authorization_id];
        d_quantity := d_quantity || ARRAY[-(e - s + 1)::numeric, (e - s + 1)::numeric];
    END LOOP;
    -- Rows that reach zero stay (see 0001): deleting them would cost a statement a move.
    INSERT INTO holdings AS h (account_id, status, standard, host_party, vintage, authorization_id, quantity)
    SELECT a, st, sd, hp, v, au, sum(q)
    FROM unnest(d_account, d_status, d_standard, d_host, d_vintage, d_authorization, d_quantity)
        AS d(a, st, sd, hp, v, au, q)
    GROUP BY a, st, sd, hp, v, au
    HAVING sum(q) <> 0
    ORDER BY a COLLATE "C", st COLLATE "C", sd, hp COLLATE "C", v, au COLLATE "C"
    ON CONFLICT (account_id, status, standard, host_party, vintage, authorization_id)
    DO UPDATE SET quantity = h.quantity + EXCLUDED.quantity;
END
$$;
