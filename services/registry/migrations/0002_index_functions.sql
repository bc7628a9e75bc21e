-- The block index's writes and the issuance's facts as server-side functions: one round
-- trip per event instead of one per statement (docs/decisions/0007-registry-index.md).
-- Every value arrives as a parameter; no dynamic SQL. Volatile plpgsql takes a fresh
-- snapshot per statement, so what is read after the namespace lock sees every earlier
-- writer's commit. SQLSTATE TN001 is the index's conflict: the service decides again.

-- Write block [p_start, p_end] (a gap in its namespace), merged with the block ending at
-- p_start - 1 and the one starting at p_end + 1 when holder, status, reservation and
-- attributes key are equal: the memory index's `_put`.
CREATE OR REPLACE FUNCTION registry_put_merged(
    p_namespace text, p_start bigint, p_end bigint,
    p_account_id text, p_status text, p_reservation_id text,
    p_standard smallint, p_host_party text, p_vintage integer, p_authorization_id text,
    p_attributes bytea, p_attributes_key bytea
) RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    near record;
BEGIN
    SELECT b.serial_start, b.serial_end, b.account_id, b.status, b.reservation_id, b.attributes_key INTO near
    FROM blocks b WHERE b.namespace = p_namespace AND b.serial_start < p_start
    ORDER BY b.serial_start DESC LIMIT 1;
    IF FOUND AND near.serial_end = p_start - 1 AND near.account_id = p_account_id AND near.status = p_status
       AND near.reservation_id = p_reservation_id AND near.attributes_key = p_attributes_key THEN
        DELETE FROM blocks WHERE namespace = p_namespace AND serial_start = near.serial_start;
        p_start := near.serial_start;
    END IF;
    IF p_end < 9223372036854775807 THEN
        SELECT b.serial_start, b.serial_end, b.account_id, b.status, b.reservation_id, b.attributes_key INTO near
        FROM blocks b WHERE b.namespace = p_namespace AND b.serial_start = p_end + 1;
        IF FOUND AND near.account_id = p_account_id AND near.status = p_status
           AND near.reservation_id = p_reservation_id AND near.attributes_key = p_attributes_key THEN
            DELETE FROM blocks WHERE namespace = p_namespace AND serial_start = near.serial_start;
            p_end := near.serial_end;
        END IF;
    END IF;
    INSERT INTO blocks (namespace, serial_start, serial_end, account_id, status, reservation_id,
                        standard, host_party, vintage, authorization_id, attributes, attributes_key)
    VALUES (p_namespace, p_start, p_end, p_account_id, p_status, p_reservation_id,
            p_standard, p_host_party, p_vintage, p_authorization_id, p_attributes, p_attributes_key);
END
$$;

-- UnitsIssued: the issuance row, the block (re-checked for overlap under the lock) and
-- the holder's holdings.
CREATE OR REPLACE FUNCTION registry_units_issued(
    p_issuance_id text, p_account_id text, p_namespace text, p_start bigint, p_end bigint,
    p_standard smallint, p_host_party text, p_vintage integer, p_authorization_id text,
    p_attributes bytea, p_attributes_key bytea
) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO issuances (issuance_id, account_id, namespace, serial_start, serial_end)
    VALUES (p_issuance_id, p_account_id, p_namespace, p_start, p_end);
    PERFORM pg_advisory_xact_lock(hashtext(p_namespace));
    -- Blocks are disjoint: only the last block starting at or before p_end can overlap.
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

-- UnitsReserved / ReservationReleased / UnitsTransferred: the reservation's row, then
-- serials [p_starts[i], p_ends[i]] of p_namespaces[i] move from the source holding to the
-- target holding (each must lie inside one block held as the source: else TN001), each
-- merged with equal neighbours (the memory index's `_move`); then the holdings deltas, in
-- key order. (One statement at a time measured faster than one read of the container
-- and both neighbours through a cursor.)
CREATE OR REPLACE FUNCTION registry_units_moved(
    p_kind text, p_reservation_id text, p_account_id text, p_quantity bigint,
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

-- An issuance's facts in one round trip: whether its id is used and, under the
-- namespace's lock (held to commit, so concurrent issuances into the namespace
-- serialise), the blocks sharing a serial with [p_start, p_end], at most p_limit.
-- A range that is not valid is not looked up (the ledger refuses it).
CREATE OR REPLACE FUNCTION registry_issuance_facts(
    p_issuance_id text, p_namespace text, p_start bigint, p_end bigint, p_limit integer
) RETURNS TABLE (
    used boolean, namespace text, serial_start bigint, serial_end bigint, account_id text, status text,
    reservation_id text, standard smallint, host_party text, vintage integer, authorization_id text,
    attributes bytea, attributes_key bytea
) LANGUAGE plpgsql AS $$
#variable_conflict use_column
DECLARE
    is_used boolean := EXISTS (SELECT 1 FROM issuances i WHERE i.issuance_id = p_issuance_id);
BEGIN
    IF p_namespace <> '' AND 1 <= p_start AND p_start <= p_end THEN
        PERFORM pg_advisory_xact_lock(hashtext(p_namespace));
        RETURN QUERY
        SELECT is_used, x.* FROM (
            (SELECT b.namespace, b.serial_start, b.serial_end, b.account_id, b.status, b.reservation_id, b.standard,
                    b.host_party, b.vintage, b.authorization_id, b.attributes, b.attributes_key
             FROM blocks b WHERE b.namespace = p_namespace AND b.serial_start <= p_start
             ORDER BY b.serial_start DESC LIMIT 1)
            UNION ALL
            (SELECT b.namespace, b.serial_start, b.serial_end, b.account_id, b.status, b.reservation_id, b.standard,
                    b.host_party, b.vintage, b.authorization_id, b.attributes, b.attributes_key
             FROM blocks b WHERE b.namespace = p_namespace AND b.serial_start > p_start AND b.serial_start <= p_end
             ORDER BY b.serial_start LIMIT p_limit)
        ) x WHERE x.serial_end >= p_start ORDER BY x.serial_start LIMIT p_limit;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    RETURN QUERY SELECT is_used, NULL::text, NULL::bigint, NULL::bigint, NULL::text, NULL::text, NULL::text,
        NULL::smallint, NULL::text, NULL::integer, NULL::text, NULL::bytea, NULL::bytea;
END
$$;
