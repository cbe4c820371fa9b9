-- PostgreSQL's budget lease locks its counters before checking that they exist: a lease that started just before a counter was built reads and writes it unlocked, overwriting a concurrent lease's spend
-- tests: ./store TestBudgetCounterLeaseLocksWhatItReads|TestBudgetCounterFirstLeases
CREATE OR REPLACE FUNCTION budget_counter_lease(p_org uuid, p_amount bigint, p_div bigint, p_ids uuid[], p_limits bigint[],
    p_lows bigint[], p_buckets bigint[], p_ttl_ms bigint[], p_most bigint[],
    p_back_buckets bigint[], p_backs bigint[], p_back_gens bigint[])
RETURNS bigint[] LANGUAGE plpgsql SECURITY INVOKER SET search_path = public, pg_temp AS $$
DECLARE
    n int := cardinality(p_ids);
    missing bigint[] := '{-1}';
    spent bigint[] := '{}';
    gens bigint[] := '{}';
    refused int := 0;
    r budget_counters;
    bs bigint[];
    ss bigint[];
    s bigint;
    v bigint;
    extra bigint;
    out bigint[] := '{1}';
BEGIN
    PERFORM 1 FROM budget_counters WHERE organization_id = p_org AND budget_id = ANY (p_ids)
        ORDER BY budget_id FOR UPDATE;
    FOR i IN 1..n LOOP
        PERFORM 1 FROM budget_counters
            WHERE organization_id = p_org AND budget_id = p_ids[i] AND expires_at > now();
        IF NOT FOUND THEN
            missing := missing || i::bigint;
        END IF;
    END LOOP;
    IF cardinality(missing) > 1 THEN
        RETURN missing;
    END IF;
    FOR i IN 1..n LOOP
        SELECT * INTO r FROM budget_counters WHERE organization_id = p_org AND budget_id = p_ids[i];
        bs := '{}';
        ss := '{}';
        s := 0;
        FOR j IN 1..cardinality(r.buckets) LOOP
            IF r.buckets[j] >= p_lows[i] THEN
                v := r.spends[j];
                IF p_backs[i] > 0 AND r.generation = p_back_gens[i] AND r.buckets[j] = p_back_buckets[i] THEN
                    v := v - p_backs[i];
                END IF;
                bs := bs || r.buckets[j];
                ss := ss || v;
                s := s + v;
            END IF;
        END LOOP;
        UPDATE budget_counters SET buckets = bs, spends = ss
            WHERE organization_id = p_org AND budget_id = p_ids[i];
        spent := spent || s;
        gens := gens || r.generation;
        IF refused = 0 AND (s >= p_limits[i] OR s + p_amount > p_limits[i]) THEN
            refused := i;
        END IF;
    END LOOP;
    IF refused > 0 THEN
        RETURN '{0}'::bigint[] || spent || refused::bigint;
    END IF;
    FOR i IN 1..n LOOP
        extra := least(greatest((p_limits[i] - spent[i] - p_amount) / p_div, 0), p_most[i]);
        UPDATE budget_counters SET
            spends = CASE WHEN p_buckets[i] = ANY (buckets)
                THEN (SELECT array_agg(CASE WHEN u.b = p_buckets[i] THEN u.sp + p_amount + extra ELSE u.sp END ORDER BY u.o)
                      FROM unnest(buckets, spends) WITH ORDINALITY AS u (b, sp, o))
                ELSE spends || (p_amount + extra) END,
            buckets = CASE WHEN p_buckets[i] = ANY (buckets) THEN buckets ELSE buckets || p_buckets[i] END,
            expires_at = now() + p_ttl_ms[i] * interval '1 millisecond'
            WHERE organization_id = p_org AND budget_id = p_ids[i];
        out := out || (spent[i] + p_amount + extra) || extra || gens[i];
    END LOOP;
    RETURN out;
END
$$;
